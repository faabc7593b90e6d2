"""`python -m dial.plugin okx --listen 127.0.0.1:6666` / `python -m dial.plugin call URL METHOD`."""

from dial.plugin.cli import main

raise SystemExit(main())
