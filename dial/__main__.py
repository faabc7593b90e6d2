"""`python -m dial ...`: the `dial` command."""

from .cli import main

raise SystemExit(main())
