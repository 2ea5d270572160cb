"""UTC times in the wire format XPRESSO uses: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]

WIRE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime(WIRE_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; a naive time is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
