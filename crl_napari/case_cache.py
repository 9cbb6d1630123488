"""Read a run's cases ahead of the reviewer, so switching images does not wait for the disk.

Showing a case reads three PNGs (image, original mask, corrected mask): about 6 ms at 128 px, a noticeable
share of a row switch. :class:`CaseCache` reads them in a background thread, worst-ranked first (the order a
review goes in), up to a memory budget; a case not read yet is read on demand. No Qt here: the Review widget
owns one per open run and closes it when the run changes or the widget goes.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from .runs import RunFolder

__all__ = ["Case", "CaseCache"]


class Case(NamedTuple):
    """What the Review widget shows of one case. Shared: callers must not write into these arrays."""

    image: np.ndarray  # uint8, training size
    given: np.ndarray  # uint8 0/1, the mask training saw
    corrected: np.ndarray  # uint8 0/1


class CaseCache:
    """The cases of ``run`` by id, read ahead in ``order`` in a daemon thread until ``max_bytes`` are held.

    A case the read-ahead cannot read is skipped: :meth:`get` reads it itself and raises the run's own clear
    message (:class:`crl_napari.runs.RunError`), naming the file.
    """

    def __init__(self, run: RunFolder, order: list[str], max_bytes: int = 512 << 20, read_ahead: bool = True):
        self.run = run
        self.max_bytes = max_bytes
        self._cases: dict[str, Case] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if read_ahead and order:
            self._thread = threading.Thread(
                target=self._read_ahead, args=(list(order),), name="crl-napari case read-ahead", daemon=True
            )
            self._thread.start()

    def _read(self, id_: str) -> Case:
        run = self.run
        return Case(run.image(id_), run.given(id_).astype(np.uint8), run.corrected(id_).astype(np.uint8))

    def _keep(self, id_: str, case: Case) -> None:
        size = sum(a.nbytes for a in case)
        with self._lock:
            if id_ not in self._cases and self._bytes + size <= self.max_bytes:
                self._cases[id_] = case
                self._bytes += size

    def _read_ahead(self, order: list[str]) -> None:
        for id_ in order:
            if self._stop.is_set() or self._bytes >= self.max_bytes:
                return
            if id_ in self._cases:
                continue
            try:
                self._keep(id_, self._read(id_))
            except Exception:  # noqa: BLE001 - get() reports it when the case is asked for
                continue

    def get(self, id_: str) -> Case:
        """The case ``id_``: from memory when read already, else from the run folder (and kept)."""
        case = self._cases.get(id_)
        if case is None:
            case = self._read(id_)
            self._keep(id_, case)
        return case

    @property
    def cached(self) -> int:
        """How many cases are held."""
        return len(self._cases)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the read-ahead to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self) -> None:
        """Stop reading ahead and let go of the arrays."""
        self._stop.set()
        self.wait(1.0)
        with self._lock:
            self._cases.clear()
            self._bytes = 0
