"""Records in their v2 wire shape, for code outside ``api/`` (webhook payloads, history).

``api/serialize.py`` renders answers for the API; the journal needs the same shapes inside a write
transaction, where it only has stored bodies. Harnesses and engines are read from the shapes of
``wire.py`` (so credentials can never appear: they are not among the shape's keys); images are
decoded and rendered by the same function the API uses.
"""
from __future__ import annotations

from typing import Any

from . import wire

Body = dict[str, Any]

_SHAPES = {"harness": wire.HARNESS, "engine": wire.ENGINE}


def record_v2(kind: str, body: Body) -> Body:
    """The v2 wire record of a stored body of ``kind`` (harness, engine or image)."""
    shape = _SHAPES.get(kind)
    if shape is not None:
        return {key: body.get(source) for key, source in shape.sources}
    if kind == "image":
        from .codec import record_from_body
        from .models import Image
        from .serialize import image_v2  # pure functions of wire/models: no falcon, no cycle

        return image_v2(record_from_body(Image, body))
    raise ValueError(f"no v2 shape for records of kind {kind!r}")
