"""The one credential redactor: what is printed or logged never shows a password or a token."""
from __future__ import annotations

import re

# user:password@ or token@ in a URL (https://user:token@host/..., postgresql://u:p@h/db)
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")
# key=value passwords in a libpq DSN
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL credentials and DSN passwords replaced by ``***``."""
    return _DSN_PASSWORD.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))
