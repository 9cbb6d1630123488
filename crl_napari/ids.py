"""The one rule for an image id. Ids become file names (``images/<id>.png``, ``edits/<id>.png``, export
names), and run folders and data folders may come from anyone, so an id that could name another folder is
refused wherever it is read. Ground floor: imports nothing of the package, so every module may use it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["UnsafeIdError", "check_id", "is_safe_id", "ID_RULE"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_MAX_LEN = 200  # file systems allow 255 bytes per name; room for "_prob.png" and friends
ID_RULE = "ids may only use letters, digits, '.', '_' and '-', and may not start with '.' or contain '..'"


class UnsafeIdError(ValueError):
    """An id that is not a safe file name; the message names where it was read."""


def is_safe_id(image_id: object) -> bool:
    return (isinstance(image_id, str) and len(image_id) <= _MAX_LEN and bool(_SAFE_ID.match(image_id))
            and ".." not in image_id)


def check_id(image_id: object, where: str | Path = "") -> str:
    """``image_id`` when it is a safe file name, else UnsafeIdError naming ``where`` (a file and line, say)."""
    if not is_safe_id(image_id):
        prefix = f"{where}: " if str(where) else ""
        raise UnsafeIdError(f"{prefix}unsafe image id {image_id!r}: {ID_RULE}")
    return image_id  # type: ignore[return-value]
