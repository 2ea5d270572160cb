"""The OpenAPI 3.1 description of the API, generated from the sources the server itself uses:
record shapes and string grammars from ``wire.py``, body fields (each rule states its own schema),
required fields and list filters from the services' tables. Tests check it with a real validator,
against the mounted routes, and with schemathesis against the running app.

``document.py`` puts it together from the groups of paths (``paths.py``, ``identity.py``) and the
named schemas (``schemas.py``), all made of the building blocks in ``parts.py``."""
from .document import build_openapi
from .schemas import SCHEMAS

__all__ = ["SCHEMAS", "build_openapi"]
