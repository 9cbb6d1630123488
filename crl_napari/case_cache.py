"""Read a run's cases ahead of the reviewer, so switching images does not wait for the disk.

Showing a case reads an image and two masks; at a radiograph's own size (3000 px) that is a PNG decode of
~0.1-0.3 s plus the corrected mask made at that size (:func:`crl_napari.native_correction.corrected_mask`). The
:class:`CaseCache` does that in a background thread: first worst-ranked first (the order a review goes in) up to a
memory budget, then, once the budget is full, around the image asked for last (the next few and the previous
one), letting go of the cases used longest ago. A case not read yet is read on demand. No Qt here: the Review
widget owns one per open run and closes it when the run changes or the widget goes.

What a case holds comes from a reader: :class:`NativeCases` (what the Review widget shows: the original
radiograph, its mask and the correction at the original size) or, by default, :func:`run_copies` (the run's
own training-size copies).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .case_process import read_in_helper, warm_helper
from .data import DataError, read_image, read_mask
from .export import upsample_nearest  # masks kept only at training size (simulated noise, older edits)
from .native_correction import corrected_mask
from .runs import IMAGES, CaseRow, RunError, RunFolder

__all__ = ["Case", "CaseCache", "NativeCases", "run_copies", "display_uint8", "display_grid", "outline_width",
           "outline_coded", "outlined", "is_large", "LARGE_PX", "OUTLINE_PX"]

AHEAD = 6  # cases read around the one shown once the budget is full (the next ones and the previous one)
#: From this longer side on, the masks' outlines are drawn here, in the read-ahead thread, and coded into the masks
#: (:func:`outlined`): napari's own Labels contour filters the whole mask on every redraw, seconds at 3000 px.
OUTLINE_PX = 1024
#: From this longer side on, a case is slow to read (a second or more at 3000 px): :class:`NativeCases` reads it in
#: the helper process (:mod:`crl_napari.case_process`), and the Review widget shows the run's training-size copy
#: until it is read.
LARGE_PX = 1024
_keys = itertools.count(1)


class Case(NamedTuple):
    """What the Review widget shows of one case. Shared: callers must not write into these arrays.

    The masks are at the original size (H, W) for :class:`NativeCases`; the image too, unless the original
    could not be read (then it is the run's training-size copy, to be shown scaled: :func:`display_grid`)."""

    image: np.ndarray  # uint8 display image
    given: np.ndarray  # uint8, the mask training was given: 0/1, or 0/1/2 (:func:`outlined`) from OUTLINE_PX on
    corrected: np.ndarray  # uint8, the same coding


def display_uint8(image: np.ndarray) -> np.ndarray:
    """A grey image as uint8 for display, windowed between its 0.5th and 99.5th percentiles (as the run's
    training-size copies are); the percentiles of a large image are taken on every 4th pixel (the same to a
    grey level, ~20x faster at 3000 px)."""
    image = np.asarray(image, dtype=np.float32)
    sample = image[::4, ::4] if image.size > 1 << 20 else image
    lo, hi = np.percentile(sample, [0.5, 99.5])
    out = (image - lo) * np.float32(255 / max(hi - lo, 1e-6))
    return np.clip(np.rint(out, out=out), 0, 255, out=out).astype(np.uint8)


def outline_width(shape: tuple[int, ...]) -> int:
    """Outline width in the mask's pixels: thin on small images, still visible on a 3000 px radiograph fitted to
    the screen (about 2-3 screen pixels there)."""
    side = max(shape)
    return 1 if side < 192 else 2 if side < 800 else max(2, round(side / 400))


def outline_coded(shape: tuple[int, ...]) -> bool:
    """Whether masks of ``shape`` carry their outline in their data (:func:`outlined`): from OUTLINE_PX on."""
    return max(shape) >= OUTLINE_PX


def outlined(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """``mask`` as uint8 0 (outside), 1 (inside), 2 (the band of ``width`` pixels inside its border; default
    :func:`outline_width`): ``> 0`` is the mask, and a labels layer colouring only 2 draws its outline."""
    m = np.asarray(mask) > 0
    inner = m.copy()
    for _ in range(outline_width(m.shape) if width is None else width):  # erode by a cross, the border as outside
        e = inner.copy()
        e[1:] &= inner[:-1]
        e[:-1] &= inner[1:]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        e[0], e[-1], e[:, 0], e[:, -1] = False, False, False, False
        inner = e
    out = m.astype(np.uint8)
    out[m & ~inner] = 2
    return out


def display_grid(shape: tuple[int, int], native: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) that lay an array of ``shape`` over the original (H, W) ``native`` grid, pixel centres
    aligned: napari coordinates are original pixels whatever the array's size."""
    scale = (native[0] / shape[0], native[1] / shape[1])
    return scale, ((scale[0] - 1) / 2, (scale[1] - 1) / 2)


def is_large(shape: tuple[int, ...]) -> bool:
    """Whether a case of original ``shape`` is slow to read (:data:`LARGE_PX`)."""
    return max(shape) >= LARGE_PX


def _px(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} x {shape[1]} px"


def run_copies(run: RunFolder) -> Callable[[str], Case]:
    """The reader of the run's own training-size copies (images/, given/, corrected/)."""

    def read(id_: str) -> Case:
        return Case(run.image(id_), run.given(id_).astype(np.uint8), run.corrected(id_).astype(np.uint8))

    return read


class NativeCases:
    """The reader the Review widget uses: each case at the radiograph's own size (cases.csv's orig_h x orig_w).

    * image: the original file (found through :meth:`RunFolder.original`: the data folder of config.json, or
      the one the reviewer pointed at), windowed for display (:func:`display_uint8`);
    * given: the original mask file, or, when the run simulated noise, the noisy mask training saw (only kept
      at training size) up-sampled by nearest neighbour;
    * corrected: :func:`crl_napari.native_correction.corrected_mask`, as the export writes it (the original
      mask's border moved; where the original mask is not at hand, or is the truth of simulated noise, the
      training-size correction resampled).

    Where the original cannot be read (the data moved, a file is gone or of another size), the image is the
    run's training-size copy and the given mask is that copy's mask up-sampled; :meth:`note` says why. When the
    original is the training size, the run's copies are the original's pixels and are used as they are.
    """

    def __init__(self, run: RunFolder, cleanup: bool = True, helper: bool = True) -> None:
        self.run = run
        self.cleanup = cleanup
        self.rows: dict[str, CaseRow] = {r.id: r for r in run.case_rows()} if run.has_cases else {}
        self.simulated = run.noise_simulated
        self.notes: dict[str, str] = {}  # id -> why the training-size image is shown
        # large cases are read in the helper process (crl_napari.case_process); it is started now, while the
        # reviewer looks at the first training-size copy
        self.helper = helper and any(is_large((r.orig_h, r.orig_w)) for r in self.rows.values())
        self._key = next(_keys)  # this reader, to the helper (a new one reads the run's settings again)
        if self.helper:
            warm_helper()

    def shape(self, id_: str, fallback: tuple[int, int]) -> tuple[int, int]:
        row = self.rows.get(id_)
        return fallback if row is None else (row.orig_h, row.orig_w)

    def note(self, id_: str) -> str:
        """Why ``id_`` shows the training-size copy ("" when it shows the original)."""
        return self.notes.get(id_, "")

    def large(self, id_: str) -> bool:
        """Whether ``id_`` is slow to read (:func:`is_large` of its original size)."""
        row = self.rows.get(id_)
        return row is not None and is_large((row.orig_h, row.orig_w))

    def __call__(self, id_: str) -> Case:
        if self.helper and self.large(id_):
            read = read_in_helper(str(self.run.path), self.cleanup, self._key, id_)
            if read is not None:
                arrays, note = read
                if note:
                    self.notes[id_] = note
                else:
                    self.notes.pop(id_, None)
                return Case(*arrays)
        case = self._read(id_)
        if not outline_coded(case.corrected.shape):
            return case
        return Case(case.image, outlined(case.given), outlined(case.corrected))

    def _read(self, id_: str) -> Case:
        run = self.run
        small = run.given(id_).astype(np.uint8)
        shape = self.shape(id_, small.shape)
        if shape == small.shape:
            self.notes.pop(id_, None)
            return Case(run.image(id_), small, corrected_mask(run, id_, shape, cleanup=self.cleanup))
        image, given, why = self._originals(id_, shape)
        if image is None:
            self.notes[id_] = why
            return Case(run.image(id_), upsample_nearest(small, shape),
                        corrected_mask(run, id_, shape, cleanup=self.cleanup))
        self.notes.pop(id_, None)
        return Case(image, given, corrected_mask(run, id_, shape, given, cleanup=self.cleanup))

    def _originals(self, id_: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        row, run = self.rows[id_], self.run
        path, why = run.original(row.image_path, IMAGES, None)
        if path is None:
            return None, None, why
        try:
            image = read_image(path)
            if image.shape != shape:
                return None, None, f"{path}: {_px(image.shape)}, the run recorded {_px(shape)}"
            if self.simulated:  # the original mask is the truth the noise was simulated from, not what was given
                given = upsample_nearest(run.given(id_).astype(np.uint8), shape)
            else:
                mask_path, why = run.original(row.mask_path, "masks", None)
                if mask_path is None:
                    return None, None, why
                given = read_mask(mask_path).astype(np.uint8)
                if given.shape != shape:
                    return None, None, f"{mask_path}: {_px(given.shape)}, the image is {_px(shape)}"
        except (DataError, RunError, OSError) as exc:
            return None, None, str(exc)
        return display_uint8(image), given, ""


class CaseCache:
    """The cases of ``run`` by id, read ahead in a daemon thread: ``order`` first, until ``max_bytes`` are held;
    then, after each :meth:`get`, the :data:`AHEAD` cases around it, dropping those used longest ago.

    ``reader(id) -> Case`` makes a case (default :func:`run_copies`). A case the read-ahead cannot read is
    skipped: :meth:`get` reads it itself and raises the reader's own clear message (:class:`RunError`, naming
    the file).
    """

    def __init__(self, run: RunFolder, order: list[str], max_bytes: int = 512 << 20, read_ahead: bool = True,
                 reader: Callable[[str], Case] | None = None):
        self.run = run
        self.max_bytes = max_bytes
        self.reader = reader or run_copies(run)
        self._order = list(order)
        self._pos = {id_: i for i, id_ in enumerate(self._order)}
        self._cases: OrderedDict[str, Case] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        self._read_done = threading.Condition(self._lock)
        self._reading: str | None = None  # the case the thread is reading now (get waits for it, not reads it twice)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._todo: tuple[list[str], bool] | None = None
        self._wanted: tuple[str, Case | None] | None = None  # asked for by request(): held even over the budget
        self._errors: dict[str, Exception] = {}  # what the thread could not read, for peek() to say
        self._generation = 0
        self._read_ahead = read_ahead
        if read_ahead and order:
            self._start(self._order, evict=False)

    def _read(self, id_: str) -> Case:
        return self.reader(id_)

    def _keep(self, id_: str, case: Case, protect: set[str] | None = None) -> None:
        """Hold ``case`` if it fits; with ``protect``, first let go of the least recently used cases not in it."""
        size = sum(a.nbytes for a in case)
        with self._lock:
            if id_ in self._cases or self._stop.is_set():  # closed while the case was read: let it go
                return
            if protect is not None:
                for old in [k for k in self._cases if k not in protect]:
                    if self._bytes + size <= self.max_bytes:
                        break
                    self._bytes -= sum(a.nbytes for a in self._cases.pop(old))
            if self._bytes + size <= self.max_bytes:
                self._cases[id_] = case
                self._bytes += size

    def _start(self, ids: list[str], evict: bool) -> None:
        """Hand the thread a new list (it drops what it was doing); start one when none runs."""
        with self._lock:
            self._todo = (ids, evict)
            self._generation += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="crl-napari case read-ahead", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._todo is None or self._stop.is_set():
                    self._thread = None
                    return
                (ids, evict), self._todo, generation = self._todo, None, self._generation
            protect = set(ids) if evict else None
            for id_ in ids:
                if self._stop.is_set() or generation != self._generation:
                    break
                if id_ in self._cases:
                    continue
                if not evict and self._bytes >= self.max_bytes:
                    break
                with self._lock:
                    self._reading = id_
                try:
                    case = self._read(id_)
                    with self._lock:
                        if self._wanted is not None and self._wanted[0] == id_:
                            self._wanted = (id_, case)
                    self._keep(id_, case, protect)
                except Exception as exc:  # noqa: BLE001 - get() and peek() report it when the case is asked for
                    with self._lock:
                        self._errors[id_] = exc
                finally:
                    with self._lock:
                        self._reading = None
                        self._read_done.notify_all()

    def reorder(self, order: list[str]) -> None:
        """The queue was re-ordered (the same ids): read ahead around each image in the new order from now on."""
        with self._lock:
            self._order = list(order)
            self._pos = {id_: i for i, id_ in enumerate(self._order)}

    def _around(self, id_: str) -> list[str]:
        i, n = self._pos.get(id_), len(self._order)
        if i is None:
            return []
        nxt = [self._order[j] for j in range(i + 1, min(i + 1 + AHEAD, n))]
        return nxt + ([self._order[i - 1]] if i > 0 else [])

    def get(self, id_: str) -> Case:
        """The case ``id_``: from memory when read already, else read now (and kept); then the cases around it
        are read ahead."""
        with self._lock:
            if self._reading == id_:  # the thread is at it already (the first image, say): wait, not read it twice
                self._read_done.wait_for(lambda: self._reading != id_, timeout=60)
            case = self._held(id_)
        around = self._around(id_)
        if case is None:
            case = self._read(id_)
            self._keep(id_, case, protect={id_, *around})
        self._read_around(around)
        return case

    def _held(self, id_: str) -> Case | None:
        """The case if it is held (under the lock): in the cache, or the one :meth:`request` asked for."""
        case = self._cases.get(id_)
        if case is not None:
            self._cases.move_to_end(id_)
        elif self._wanted is not None and self._wanted[0] == id_:
            case = self._wanted[1]
        return case

    def _read_around(self, around: list[str]) -> None:
        if self._read_ahead and not self._stop.is_set() and any(i not in self._cases for i in around):
            self._start(around, evict=True)

    def request(self, id_: str) -> Case | None:
        """The case ``id_`` if it is held; else None at once, and the thread reads it before anything else
        (:meth:`peek` says when it is there). Without read-ahead, :meth:`get`."""
        if not self._read_ahead:
            return self.get(id_)
        with self._lock:
            case = self._held(id_)
            if case is None:
                self._wanted = (id_, None)
                self._errors.pop(id_, None)
        around = self._around(id_)
        if case is not None:
            self._read_around(around)
            return case
        self._start([id_, *around], evict=True)
        return None

    def peek(self, id_: str) -> Case | None:
        """The case ``id_`` if it is held, else None (never reads); raises what stopped the thread reading it."""
        with self._lock:
            error = self._errors.pop(id_, None)
            case = self._held(id_)
        if case is None and error is not None:
            raise error
        return case

    @property
    def cached(self) -> int:
        """How many cases are held."""
        return len(self._cases)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the read-ahead to end; True when it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive() and self._thread is None
        return True

    def close(self) -> None:
        """Stop reading ahead and let go of the arrays."""
        self._stop.set()
        self.wait(1.0)
        with self._lock:
            self._cases.clear()
            self._bytes = 0
            self._wanted = None
