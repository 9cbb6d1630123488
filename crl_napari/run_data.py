"""The training data of one run, case by case: from a data folder through the run's on-disk cache (cache.py),
or from a Dataset already in memory (the plugin's layers, tests). The pipeline asks it for one case's image,
clean mask and given mask at a time, so writing the run folder, simulating noise, training (sources.py)
and scoring hold a batch at most, never the data set. Once the run folder exists, :func:`image_reader`,
:func:`training_source`, :func:`input_image` and :func:`clean_masks` read a trained run's cases again (to
rescore it, train a review round) as training saw them: from the cache when it is whole.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache as _cache
from .data import DataError, Dataset, conclude, read_image, read_mask, resize_image, resize_mask, scan_dataset, zscore
from .runs import CACHE, CACHE_GIVEN, RunFolder, inside
from .sources import ArraySource, CacheSource, Source

__all__ = ["RunData", "cached_slots", "clean_masks", "from_dataset", "from_folder", "image_reader", "input_image",
           "training_source"]


@dataclass
class RunData:
    """``cases`` (every usable pair: .id .split .image_path .mask_path .original_shape), ``train`` (the ones
    trained on), and per training case: :meth:`image`, :meth:`clean` and the writable ``given`` (n, size,
    size) uint8 map that :meth:`source` trains on."""

    root: Path | None
    size: int
    cases: list
    train: list
    skipped: list[tuple[Path, str]]
    warnings: list[str]
    given: np.ndarray | _cache.Slots
    _cache: _cache.Cache | None = None
    _dataset: Dataset | None = None

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.train]

    def image(self, i: int) -> np.ndarray:
        """Training case ``i``'s network input: float32 (size, size), z-scored."""
        if self._cache is not None:
            return self._cache.image(self.train[i].slot)
        return self.train[i].image

    def images(self, idx: Sequence[int]) -> np.ndarray:
        """float32 (B, 1, size, size) of the training cases ``idx``."""
        return np.stack([self.image(int(i)) for i in idx])[:, None]

    def clean(self, i: int) -> np.ndarray:
        """Training case ``i``'s mask as the data folder gives it: uint8 (size, size) {0, 1}."""
        if self._cache is not None:
            return self._cache.mask(self.train[i].slot)
        return np.asarray(self.train[i].mask, np.uint8)

    def flush(self) -> None:
        """Write the given masks through to the disk (a map; arrays need nothing)."""
        if isinstance(self.given, _cache.Slots):
            self.given.flush()

    def source(self) -> Source:
        """What training reads: the images and the given masks."""
        if self._cache is not None:
            self.flush()
            given = self.given.path if isinstance(self.given, _cache.Slots) else self.given
            return CacheSource(self._cache.folder, len(self._cache), self.size, [c.slot for c in self.train], given)
        return ArraySource(self._dataset.images(), self.given)


def _train_part(cases: list) -> list:
    """The training split when there is one, else every case."""
    return [c for c in cases if c.split == "train"] if any(c.split == "train" for c in cases) else list(cases)


def from_dataset(ds: Dataset) -> RunData:
    """A Dataset in memory (its images stay where they are)."""
    train = _train_part(ds.cases)
    sub = ds if len(train) == len(ds.cases) else ds.subset("train")
    given = np.zeros((len(train), ds.size, ds.size), np.uint8)
    return RunData(ds.root, ds.size, list(ds.cases), train, list(ds.skipped), list(ds.warnings), given,
                   _dataset=sub)


def from_folder(run_dir: Path, root: Path | str, size: int, skip_bad: bool = False, max_pixels: int | None = None,
                workers: int | None = None) -> Generator[_cache.CacheProgress, None, RunData]:
    """Scan ``root``, bring ``run_dir``'s cache up to date (yielding its progress; ``workers`` threads decode,
    None: cache.decode_threads) and judge the folder as load_dataset does (every problem refused, or skipped
    with ``skip_bad``)."""
    listing = scan_dataset(root)
    built = yield from _cache.build(run_dir, listing, size, max_pixels, workers=workers)
    problems = list(listing.problems) + built.problems
    cases = built.cases()
    skipped = conclude(listing.root, problems, len(cases), "skip" if skip_bad else "raise")
    train = _train_part(cases)
    given = _cache.Slots(inside(run_dir, CACHE, CACHE_GIVEN), len(train), size, writable=True)
    return RunData(listing.root, size, cases, train, skipped, list(listing.warnings) + built.warnings, given,
                   _cache=built)


def cached_slots(run: RunFolder, rows: list, size: int) -> tuple[_cache.Cache, list[int]] | None:
    """(the run's cache, the slot of each of ``rows``) when the cache is whole and holds every case at ``size``:
    what training read. None otherwise: a run made before the cache, or a cache gone or broken (derived data)."""
    try:
        cache = _cache.open_cache(run.path)
    except _cache.CacheError:
        return None
    slots = {c.id: c.slot for c in cache.cases()}
    if cache.size != size or not all(r.id in slots for r in rows):
        return None
    return cache, [slots[r.id] for r in rows]


def image_reader(run: RunFolder, rows: list, size: int) -> Callable[[int], np.ndarray]:
    """Case i's network input (``rows[i]``): from the run's cache when it is whole (:func:`cached_slots`), else
    as :func:`input_image` finds it."""
    found = cached_slots(run, rows, size)
    if found is not None:
        cache, slots = found
        return lambda i: cache.image(slots[i])
    return lambda i: input_image(run, rows[i], size)


def training_source(run: RunFolder, rows: list, size: int, masks: np.ndarray | _cache.Slots) -> Source:
    """What a trained run's cases ``rows`` train on again (a review round), with ``masks`` (n, size, size)
    uint8 (an array, or Slots in a file): streamed from the run's cache when it is whole, else read into memory
    as :func:`input_image` finds them (run folders made before the cache)."""
    found = cached_slots(run, rows, size)
    if found is not None:
        cache, slots = found
        return CacheSource(cache.folder, len(cache), size, slots,
                           masks.path if isinstance(masks, _cache.Slots) else masks)
    return ArraySource(np.stack([input_image(run, r, size) for r in rows]).astype(np.float32)[:, None], masks)


def input_image(run: RunFolder, row, size: int) -> np.ndarray:
    """The network input as training saw it: from the original file (only inside the run's data root), or
    from the run's display copy when the run folder moved to a machine without the data."""
    path, _ = run.original(row.image_path, "images")
    if path is not None:
        try:
            return zscore(resize_image(read_image(path), size))
        except (DataError, OSError):
            pass
    return zscore(run.image(row.id).astype(np.float32) / 255)


def clean_masks(run: RunFolder, rows: list, size: int) -> np.ndarray | None:
    """The original masks (from the run's data root only), for the flagging metrics; None when one is gone."""
    masks = []
    for r in rows:
        path, _ = run.original(r.mask_path, "masks")
        if path is None:
            return None
        try:
            masks.append(resize_mask(read_mask(path), size))
        except DataError:
            return None
    return np.stack(masks).astype(np.uint8)
