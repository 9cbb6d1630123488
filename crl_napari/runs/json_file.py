"""Reading a run's small JSON files (config, rounds, decisions, data root): bounded in size, and one line naming
the file when it cannot be read. What the object must hold is checked by each reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RunError

__all__ = ["read_json"]


def read_json(path: Path, max_bytes: int, unreadable: str) -> Any:
    """The JSON value in ``path``; RunError "<path>: <unreadable> (<why>)" when it is too large for what a run
    writes, not UTF-8, not JSON, or cannot be read."""
    try:
        if path.stat().st_size > max_bytes:
            raise ValueError("larger than any run writes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path}: {unreadable} ({exc})") from None
