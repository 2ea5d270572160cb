"""What a ``git_ref``/``base_ref`` may be: a ref name git's check-ref-format allows (one level
allowed) or a 7-40 digit hex commit id, never anything git could read as an option or a revision
expression. The service checks refs when a build is submitted; the workspace checks them again
before they reach git (:func:`xpresso_env.builds.workspace.checkout.prepare`). Both use the one
grammar, ``core.wire.GIT_REF``, through its rule ``core.validation.GitRef``."""
from __future__ import annotations

import re
from typing import Any

from ...core.errors import ValidationError
from ...core.validation import FieldError, git_ref
from ...core.wire import GIT_REF

__all__ = ["MAX_REF_LEN", "COMMIT_ID", "validate_ref"]

MAX_REF_LEN = GIT_REF.max_length
COMMIT_ID = re.compile(r"[0-9a-fA-F]{7,40}")  # a commit id as a client may write it (abbreviated)


def validate_ref(field: str, value: Any) -> str:
    """The ref, when ``wire.GIT_REF`` allows it.

    :raises ValidationError: with a message for ``field``.
    """
    try:
        return git_ref(value)
    except FieldError as exc:
        raise ValidationError.one(field, exc.message) from None
