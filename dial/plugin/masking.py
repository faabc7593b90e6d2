"""Keep keys, secrets, passphrases and signatures out of logs, errors and reprs.

Nothing of a secret is ever shown, not even a prefix: `acce***` gives away a third of a short
passphrase. Access keys, which a reader needs to tell apart, are shown as a hash fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(r"secret|passphrase|password|passwd|sign|token|key", re.I)


def mask(value: Any) -> str:
    """`***` for anything non-empty: a masked value tells nothing about the original."""
    return "***" if str(value) else ""


def fingerprint(value: str) -> str:
    """`#3fa4c1d2`: tells two access keys apart in a log without revealing any of either."""
    if not value:
        return "(none)"
    return "#" + hashlib.sha256(value.encode()).hexdigest()[:8]


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "***" if _SECRET_NAME.search(k) else v for k, v in params.items()}


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: mask(v) if _SECRET_NAME.search(k) else v for k, v in headers.items()}
