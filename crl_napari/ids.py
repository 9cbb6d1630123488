"""The one rule for an image id. Ids become file names (``images/<id>.png``, ``edits/<id>.png``, export
names), and run folders and data folders may come from anyone, so an id that could name another folder is
refused wherever it is read. Ground floor: imports nothing of the package, so every module may use it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["UnsafeIdError", "all_safe", "check_id", "is_safe_id", "ID_RULE"]

_FIRST, _REST = "[A-Za-z0-9_-]", "[A-Za-z0-9._-]"
_SAFE_ID = re.compile(rf"^{_FIRST}{_REST}*$")
_MAX_LEN = 200  # file systems allow 255 bytes per name; room for "_prob.png" and friends
_ONE = rf"{_FIRST}{_REST}{{0,{_MAX_LEN - 1}}}"
_SAFE_COLUMN = re.compile(rf"{_ONE}(?:\n{_ONE})*")  # ids joined by newlines (all_safe)
ID_RULE = "ids may only use letters, digits, '.', '_' and '-', and may not start with '.' or contain '..'"


class UnsafeIdError(ValueError):
    """An id that is not a safe file name; the message names where it was read."""


def is_safe_id(image_id: object) -> bool:
    return (isinstance(image_id, str) and len(image_id) <= _MAX_LEN and _SAFE_ID.fullmatch(image_id) is not None
            and ".." not in image_id)


def all_safe(image_ids: list[str]) -> bool:
    """Whether every id of a (large) column is safe, in one pass of the rule over the ids joined by newlines (a
    table of 100,000 ids). False may also mean "look one by one" (an id holding a newline): callers then check
    each with :func:`check_id`, which names the bad one."""
    if not image_ids:
        return True
    if not all(isinstance(i, str) for i in image_ids):
        return False
    joined = "\n".join(image_ids)
    return (joined.count("\n") == len(image_ids) - 1 and ".." not in joined
            and _SAFE_COLUMN.fullmatch(joined) is not None)


def check_id(image_id: object, where: str | Path = "") -> str:
    """``image_id`` when it is a safe file name, else UnsafeIdError naming ``where`` (a file and line, say)."""
    if not is_safe_id(image_id):
        prefix = f"{where}: " if str(where) else ""
        raise UnsafeIdError(f"{prefix}unsafe image id {image_id!r}: {ID_RULE}")
    return image_id  # type: ignore[return-value]
