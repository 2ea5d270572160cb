"""Counts in plain English for summaries people read: "1 harness", "3 harnesses", never
"harness(es)" or "history(s)"."""
from __future__ import annotations

from typing import Optional


def plural_of(noun: str) -> str:
    """English's regular plural; a caller with an irregular noun passes its plural to ``count``."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    """``n`` and the noun: singular for 1, else ``plural`` (default: ``plural_of(noun)``)."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {plural or plural_of(noun)}"
