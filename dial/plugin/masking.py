"""Keep keys, secrets, passphrases and signatures out of logs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(r"secret|passphrase|password|passwd|sign|token|key", re.I)


def mask(value: Any) -> str:
    """`accesskey123` -> `acce***`: enough to tell keys apart, useless to an attacker."""
    text = str(value)
    return f"{text[:4]}***" if len(text) >= 12 else "***" if text else ""


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "***" if _SECRET_NAME.search(k) else v for k, v in params.items()}


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: mask(v) if _SECRET_NAME.search(k) else v for k, v in headers.items()}
