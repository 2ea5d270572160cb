"""The one renderer of every record a client receives, from the shapes in ``wire.py`` (keys, order,
v1 names): the API's answers (``http/resources``), webhook payloads (``journal/journal.py``)
and the ``/state`` answer all come from here.

Harnesses and engines are built from a record's stored body (``codec.record_body``), which
already holds wire-format values (id and time strings, enum values): a list answer needs no
decoding of its records at all. Each shape picks its keys explicitly, so engine credentials can
never leak.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from . import wire
from .codec import record_from_body
from .models import Image
from .timeutil import format_time

Body = dict[str, Any]
# Keys a stored body may lack (written by an older version, or by hand in a yaml store), with the
# value they stand for; any other key a body lacks is rendered as null.
_MISSING = {"support_liveview": False}


def _renderer(shape: wire.Shape) -> Callable[[Body], Body]:
    pairs = shape.sources

    def lenient(body: Body) -> Body:
        return {key: body[source] if source in body else _MISSING.get(source) for key, source in pairs}

    def render(body: Body) -> Body:
        try:  # the common case, a whole body: no per-key membership test
            return {key: body[source] for key, source in pairs}
        except KeyError:
            return lenient(body)

    return render


harness_v2 = _renderer(wire.HARNESS)
engine_v2 = _renderer(wire.ENGINE)
harness_v1 = _renderer(wire.HARNESS_V1)
engine_v1 = _renderer(wire.ENGINE_V1)
_META = {"id": _renderer(wire.RESOURCE_META), "uuid": _renderer(wire.RESOURCE_META_V1)}


def resource_meta(body: Body, category: str, id_key: str = "id") -> Body:
    """The name look-up's answer; ``id_key`` is ``uuid`` in v1."""
    return _META[id_key]({**body, "category": category})


# --------------------------------------------------------------------------- images

def image_data(image: Image) -> str:
    """The ``data`` string: a Python literal dict, as XPRESSO writes it (``ast.literal_eval``
    reads it back). No secret is in it."""
    data: dict[str, Any] = {"name": image.name, "tag": image.tag, "group": image.group, "git_ref": image.git_ref}
    if image.base_ref is not None:
        data["base_ref"] = image.base_ref
    data.update({"retention_day": image.retention_day, "submitter": image.submitter,
                 "is_nfs_storage": image.is_nfs_storage, "nfs_path": image.nfs_path, "is_polaris_image": True})
    return repr(data)


def _worker_meta(meta: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    return None if meta is None else {k: meta[k] for k in wire.WORKER_KEYS if k in meta}


# How each key of the image record is made; internal fields (claims, leases, log paths,
# visibility) never leave the service.
_IMAGE_VALUES: dict[str, Callable[[Image], Any]] = {
    "credentials": lambda i: None,
    "uuid": lambda i: str(i.id),
    "name": lambda i: i.name,
    "tag": lambda i: i.tag,
    "data": image_data,
    "status": lambda i: i.status.value,
    "group": lambda i: i.group,
    "git_ref": lambda i: i.git_ref,
    "date_created": lambda i: format_time(i.date_created),
    "date_updated": lambda i: format_time(i.date_updated),
    "container_details": lambda i: None,
    "yaml_content": lambda i: None,
    "worker_meta": lambda i: _worker_meta(i.worker_meta),
    "size": lambda i: int(i.size),
    "virtual_size": lambda i: int(i.virtual_size),
    "image_id": lambda i: i.image_id,
    "jobs": lambda i: i.jobs,
    "manifests": lambda i: i.manifests,
    "push_url": lambda i: (i.meta or {}).get("push_url"),  # set by a build pushed to registry.url
    "pin_version": lambda i: i.pin_version,
    "is_nfs_storage": lambda i: i.is_nfs_storage,
    "nfs_path": lambda i: i.nfs_path,
    "is_deleted": lambda i: i.is_deleted,
    "is_polaris_image": lambda i: True,
    "base_ref": lambda i: i.base_ref,
    "meta": lambda i: i.meta,
    "type": lambda i: "genie",
    "custom": lambda i: True,
}
_IMAGE_MAKERS = tuple((key, _IMAGE_VALUES[key]) for key in wire.IMAGE.keys)  # in the wire order


def image_v2(image: Image) -> Body:
    """Exactly the keys of CONTRACT section 4, in its order."""
    return {key: make(image) for key, make in _IMAGE_MAKERS}


# --------------------------------------------------------------------------- by kind, and /state

_BY_KIND: dict[str, Callable[[Body], Body]] = {
    "harness": harness_v2,
    "engine": engine_v2,
    "image": lambda body: image_v2(record_from_body(Image, body)),
}


def record_v2(kind: str, body: Body) -> Body:
    """The v2 wire record of a stored body of ``kind`` (harness, engine or image): what a webhook
    delivers. The journal has only stored bodies, inside a write transaction."""
    render = _BY_KIND.get(kind)
    if render is None:
        raise ValueError(f"no v2 shape for records of kind {kind!r}")
    return render(body)


def probe_state(values: Mapping[str, Any]) -> Body:
    """The ``/state`` answer: the keys of ``wire.PROBE_STATE``, in its order."""
    return {key: values[key] for key in wire.PROBE_STATE.keys}
