"""The run's on-disk cache of its data: every pair decoded and resized once, so training and scoring stream
it from disk instead of holding the data set in memory (100,000 images at 256 px are 26 GiB as float32).

``RUN/cache/`` (names in runs/names.py) holds two uint8 arrays in files (Slots), images (grey values * 255 at training
size, z-scored when read) and masks ({0, 1}), one slot per pair of the data folder in id order, and an index
(JSON) saying what each slot holds: the pair's id, split, the fingerprint of its two files (path relative to
the data folder, size, mtime_ns), its original size, or the problems that made it unusable. The decode is
data.decode_pair's, the one load_dataset uses. A slot whose files changed (or that was never finished) is
decoded again; another training size rebuilds everything. The build is resumable: slots are written in
chunks, and after the files are fsynced the index records them atomically, so a build killed at any point
resumes where its index stops and ends equal to an uninterrupted one. An index that cannot be read is
rebuilt when building (a cache is derived data) and refused, in one line naming the file, when reading.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .data import Listing, Pair, decode_pair, zscore
from .eta import format_seconds
from .events import run_to_end
from .ids import is_safe_id
from .runs import CACHE, CACHE_IMAGES, CACHE_INDEX, CACHE_MASKS, RunError, inside

__all__ = ["FORMAT", "Cache", "CacheError", "CacheProgress", "CachedCase", "Slots", "build", "build_cache",
           "decode_threads", "open_cache"]

FORMAT = 1
MAX_CASES = 10_000_000
_SPLITS = (None, "train", "val", "test")


class CacheError(RunError):
    """The cache of a run is unusable (tampered, truncated, from another version); the message names the file."""


@dataclass(frozen=True)
class CacheProgress:
    """The cache build went on: ``done`` of ``total`` slots are in the cache, ``decoded`` of them decoded by
    this build in ``seconds``; a resumed or unchanged cache reuses the rest."""

    done: int
    total: int
    decoded: int
    seconds: float
    left: int  # slots still to decode
    #: the step before training this counts: "caching" the data folder, then "writing the run folder" (the
    #: cases' display copies and given masks, pipeline.train_run): at N = 50,000 each takes minutes
    what: str = "caching"

    @property
    def per_second(self) -> float | None:
        """Pairs (an image and its mask) decoded per second by this build; None before the first."""
        return self.decoded / self.seconds if self.decoded and self.seconds > 0 else None

    @property
    def eta(self) -> float | None:
        rate = self.per_second
        return self.left / rate if rate else None

    def text(self) -> str:
        """"caching 1200/50000 images · 310/s · about 2 min 37 s left" for a status line."""
        rate, eta = self.per_second, self.eta
        tail = f" · {rate:.0f}/s" if rate else ""
        tail += f" · about {format_seconds(eta)} left" if eta is not None and self.left else ""
        return f"{self.what} {self.done}/{self.total} images{tail}"


@dataclass(frozen=True)
class CachedCase:
    """A usable pair of the cache: what cases.csv records of it, and its slot in the files."""

    id: str
    split: str | None
    image_path: Path
    mask_path: Path
    original_shape: tuple[int, int]
    slot: int


# an index entry: [id, split, image (rel path, size, mtime_ns), mask (same), orig_h, orig_w, problems, warnings]
_Entry = list


def _fingerprint(root: Path, path: Path) -> list:
    st = path.stat()
    return [path.relative_to(root).as_posix(), int(st.st_size), int(st.st_mtime_ns)]


def _pair_key(root: Path, pair: Pair) -> list | None:
    """[id, split, image fingerprint, mask fingerprint] of a pair; None when a file cannot be looked at."""
    try:
        return [pair.id, pair.split, _fingerprint(root, pair.image_path), _fingerprint(root, pair.mask_path)]
    except (OSError, ValueError):
        return None


class Cache:
    """A built (or opened) cache: the index's entries and read-only access to the files."""

    def __init__(self, folder: Path, root: Path, size: int, entries: list[_Entry]) -> None:
        self.folder, self.root, self.size, self.entries = folder, root, size, entries
        self._slots: dict[str, Slots] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def cases(self) -> list[CachedCase]:
        """The usable pairs, in id order."""
        return [CachedCase(e[0], e[1], self.root / e[2][0], self.root / e[3][0], (e[4], e[5]), slot)
                for slot, e in enumerate(self.entries) if e[4] is not None]

    @property
    def problems(self) -> list[tuple[Path, str, str]]:
        """(path, reason, id) of every pair the decode refused."""
        return [(Path(p), r, e[0]) for e in self.entries for p, r in e[6]]

    @property
    def warnings(self) -> list[str]:
        return [w for e in self.entries for w in e[7]]

    def slots(self, name: str) -> Slots:
        """The read-only slots of ``name`` (CACHE_IMAGES or CACHE_MASKS), (N, size, size) uint8."""
        if name not in self._slots:
            self._slots[name] = Slots(self.folder / name, len(self), self.size)
        return self._slots[name]

    def image(self, slot: int) -> np.ndarray:
        """The network input of ``slot``: float32 (size, size), z-scored."""
        return zscore(self.slots(CACHE_IMAGES)[slot].astype(np.float32) / 255)

    def mask(self, slot: int) -> np.ndarray:
        return self.slots(CACHE_MASKS)[slot]


class Slots:
    """A uint8 (n, size, size) array in a file, read and written one slot at a time (pread / pwrite): the pages
    stay in the kernel's page cache, which the kernel may drop, instead of in the process, where a memory map's
    pages would count as its own memory and grow with N. Indexing: an int, a slice or a list of slots."""

    def __init__(self, path: Path | str, n: int, size: int, writable: bool = False) -> None:
        self.path, self.n, self.size, self.writable = Path(path), int(n), int(size), writable
        self.shape = (self.n, self.size, self.size)
        self._fd: int | None = None
        nbytes = self.n * self.size * self.size
        if writable:
            with open(self.path, "ab"):  # created when missing
                pass
            os.truncate(self.path, nbytes)
        elif self.path.stat().st_size != nbytes:
            raise CacheError(f"{self.path}: holds {self.path.stat().st_size} bytes, the index says {n} images of "
                             f"{size}x{size} ({nbytes} bytes); the cache is damaged: delete {self.path.parent} to "
                             "rebuild it")

    def __getstate__(self) -> dict:  # a worker process opens the file itself
        return {**self.__dict__, "_fd": None}

    def __len__(self) -> int:
        return self.n

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
        return self._fd

    def _read(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(f"slot {i} of {self.n}")
        nbytes = self.size * self.size
        data = os.pread(self._file(), nbytes, i * nbytes)
        if len(data) != nbytes:
            raise CacheError(f"{self.path}: ends inside slot {i}; delete {self.path.parent} to rebuild the cache")
        return np.frombuffer(data, np.uint8).reshape(self.size, self.size).copy()

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = range(*key.indices(self.n))
        if np.ndim(key) == 0:
            return self._read(int(key))
        return np.stack([self._read(int(i)) for i in key]) if len(key) else np.zeros((0, self.size, self.size),
                                                                                     np.uint8)

    def __setitem__(self, i: int, value) -> None:
        nbytes = self.size * self.size
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(value, np.uint8), (self.size, self.size)))
        os.pwrite(self._file(), data.tobytes(), int(i) * nbytes)

    def flush(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _check_entry(e: object, where: str) -> _Entry:
    def fp(v: object) -> bool:
        return (isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and not v[0].startswith("/")
                and ".." not in v[0].split("/") and all(type(x) is int and x >= 0 for x in v[1:]))

    ok = (isinstance(e, list) and len(e) == 8 and isinstance(e[0], str) and is_safe_id(e[0]) and e[1] in _SPLITS
          and fp(e[2]) and fp(e[3])
          and ((e[4] is None and e[5] is None) or all(type(v) is int and 0 < v <= 1 << 20 for v in e[4:6]))
          and isinstance(e[6], list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                                             for p in e[6])
          and isinstance(e[7], list) and all(isinstance(w, str) for w in e[7]))
    if not ok:
        raise CacheError(f"{where}: not a cache entry of this version ({str(e)[:80]})")
    return e


def read_index(path: Path) -> dict:
    """The checked index: {"root", "size", "entries" (None for a slot not built yet)}; CacheError naming the
    file for anything else."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path}: missing; the run has no cache (train it again, or score from its images)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable cache index ({str(exc)[:120]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CacheError(f"{path}: not a cache index of this version (format {FORMAT} expected)")
    size, entries, root = doc.get("size"), doc.get("entries"), doc.get("root")
    if type(size) is not int or not 1 <= size <= 4096:
        raise CacheError(f"{path}: bad image size {size!r}")
    if not isinstance(root, str) or not root:
        raise CacheError(f"{path}: bad data folder {root!r}")
    if not isinstance(entries, list) or len(entries) > MAX_CASES:
        raise CacheError(f"{path}: 'entries' must be a list of at most {MAX_CASES}")
    checked = [None if e is None else _check_entry(e, f"{path}: slot {i}") for i, e in enumerate(entries)]
    return {"root": root, "size": size, "entries": checked}


def _write_index(folder: Path, run_dir: Path, root: Path, size: int, entries: list) -> None:
    text = json.dumps({"format": FORMAT, "root": str(root), "size": size, "entries": entries},
                      separators=(",", ":"), allow_nan=False)
    atomic_write_text(inside(run_dir, CACHE, CACHE_INDEX), text + "\n")


def _decode(args: tuple) -> tuple:
    return decode_pair(*args)


def decode_threads(n_pairs: int) -> int:
    """Threads that decode a build of ``n_pairs`` by default: one per core (at most 4), one below 64 pairs. More
    threads than cores still pay on a first build, whose files come from the disk: their reads overlap."""
    return max(1, min(os.cpu_count() or 1, 4, n_pairs // 64))


def build(run_dir: Path | str, listing: Listing, size: int, max_pixels: int | None = None, chunk: int = 256,
          save_every: float = 5.0, workers: int | None = None, clock: Callable[[], float] = time.monotonic
          ) -> Generator[CacheProgress, None, Cache]:
    """Bring ``run_dir``'s cache up to date with ``listing`` at ``size``, yielding progress after every chunk;
    returns the Cache (``cache = yield from build(...)``). The index is saved at most every ``save_every``
    seconds and at the end: a build stopped between saves decodes that stretch again when resumed.
    ``workers`` threads decode (None: :func:`decode_threads`; 0 or 1: this thread); what they return is written
    here, in order. Threads, not processes: Pillow and numpy decode with the GIL released, and a forked process
    could inherit a lock that torch's or napari's threads held at the fork (export's forked workers deadlocked
    so), while a spawned one starts a new interpreter and re-imports the caller's script."""
    workers = decode_threads(len(listing.pairs)) if workers is None else workers
    pool = ThreadPoolExecutor(workers, thread_name_prefix="crl-napari cache decode") if workers > 1 else None
    try:
        return (yield from _build(Path(run_dir), listing, size, max_pixels, chunk, save_every, pool, clock))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _build(run_dir: Path, listing: Listing, size: int, max_pixels: int | None, chunk: int, save_every: float, pool,
           clock: Callable[[], float]) -> Generator[CacheProgress, None, Cache]:
    folder = inside(run_dir, CACHE)
    folder.mkdir(exist_ok=True)
    root = Path(listing.root).resolve()
    old: list = []
    try:
        idx = read_index(folder / CACHE_INDEX)
        if idx["size"] == size and idx["root"] == str(root):
            old = idx["entries"]
    except CacheError:
        pass  # nothing to reuse: derived data, rebuilt
    n = len(listing.pairs)
    maps = {name: Slots(inside(run_dir, CACHE, name), n, size, writable=True) for name in (CACHE_IMAGES, CACHE_MASKS)}
    keys = [_pair_key(root, p) for p in listing.pairs]
    entries: list = [None] * n
    for i, key in enumerate(keys):
        e = old[i] if i < len(old) else None
        if key is not None and e is not None and e[:4] == key:
            entries[i] = e
    todo = [i for i in range(n) if entries[i] is None]
    t0 = last_save = clock()
    decoded = 0
    yield CacheProgress(n - len(todo), n, 0, 0.0, len(todo))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        args = [(listing.pairs[i], size, max_pixels) for i in part]
        results = pool.map(_decode, args) if pool is not None else map(_decode, args)
        for i, (out, problems, warnings) in zip(part, results, strict=True):
            pair = listing.pairs[i]
            key = keys[i] or [pair.id, pair.split, [pair.image_path.name, 0, 0], [pair.mask_path.name, 0, 0]]
            if out is None:
                entries[i] = key + [None, None, [[str(p), r] for p, r, _ in problems], warnings]
                maps[CACHE_IMAGES][i] = 0
                maps[CACHE_MASKS][i] = 0
            else:
                maps[CACHE_IMAGES][i] = np.round(np.clip(out.image, 0, 1) * 255).astype(np.uint8)
                maps[CACHE_MASKS][i] = out.mask
                entries[i] = key + [out.original_shape[0], out.original_shape[1], [], warnings]
            decoded += 1
        done = start + chunk >= len(todo)
        if done or clock() - last_save >= save_every:
            for m in maps.values():
                m.flush()  # the pixels reach the disk before the index says they are there
            _write_index(folder, run_dir, root, size, entries)
            last_save = clock()
        left = max(0, len(todo) - start - chunk)
        yield CacheProgress(n - left, n, decoded, clock() - t0, left)
    if not todo:
        _write_index(folder, run_dir, root, size, entries)
    for m in maps.values():
        m.close()
    return Cache(folder, root, size, entries)


def build_cache(run_dir: Path | str, listing: Listing, size: int, max_pixels: int | None = None,
                progress: Callable[[CacheProgress], object] | None = None, **kwargs) -> Cache:
    """:func:`build` run to its end, handing each progress record to ``progress``."""
    return run_to_end(build(run_dir, listing, size, max_pixels, **kwargs), progress)


def open_cache(run_dir: Path | str) -> Cache:
    """The finished cache of ``run_dir`` for reading; CacheError (one line naming the file) when it is missing,
    unfinished, tampered with, or its maps are links or do not fit the index."""
    run_dir = Path(run_dir)
    folder = run_dir / CACHE
    idx = read_index(folder / CACHE_INDEX)
    if any(e is None for e in idx["entries"]):
        raise CacheError(f"{folder / CACHE_INDEX}: the cache was never finished (train or resume the run)")
    for name in (CACHE_IMAGES, CACHE_MASKS):
        try:
            inside(run_dir, CACHE, name)
        except RunError as exc:
            raise CacheError(str(exc)) from None
        if not (folder / name).is_file():
            raise CacheError(f"{folder / name}: missing; delete {folder} to rebuild the cache")
    cache = Cache(folder, Path(idx["root"]), idx["size"], idx["entries"])
    for name in (CACHE_IMAGES, CACHE_MASKS):
        cache.slots(name)  # the sizes are checked now, not at the first batch
    return cache
