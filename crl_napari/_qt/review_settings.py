"""What the Review widget remembers across restarts: the reviewer's name (recorded with every decision, so a
radiologist types it once per machine, not once per session) and the last few run folders opened.

Stored with QSettings in the user's INI settings (``~/.config/crl-napari/review.ini`` on Linux); napari's own
settings have no place for a plugin's values. Tests point QSettings at a temporary folder (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QSettings

__all__ = ["ReviewSettings", "MAX_RECENT"]

MAX_RECENT = 6


class ReviewSettings:
    """The remembered reviewer and recent runs (read and written at once: no state of its own)."""

    def __init__(self) -> None:
        self._s = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "crl-napari", "review")

    @property
    def reviewer(self) -> str:
        """The last reviewer name entered ("" when none)."""
        value = self._s.value("reviewer", "")
        return value.strip() if isinstance(value, str) else ""

    @reviewer.setter
    def reviewer(self, name: str) -> None:
        self._s.setValue("reviewer", name.strip())
        self._s.sync()

    def recent_runs(self) -> list[str]:
        """Run folders opened before, newest first (those that no longer exist are left out)."""
        value = self._s.value("recent_runs", [])
        if isinstance(value, str):  # QSettings returns a one-element list as a plain string
            value = [value]
        if not isinstance(value, list):
            return []
        return [p for p in value if isinstance(p, str) and p and Path(p).is_dir()][:MAX_RECENT]

    def add_recent_run(self, path: str | Path) -> None:
        text = str(Path(path).expanduser().resolve())
        runs = [text] + [p for p in self.recent_runs() if p != text]
        self._s.setValue("recent_runs", runs[:MAX_RECENT])
        self._s.sync()
