"""Where training and scoring read their images and labels: in-memory arrays, or the run's on-disk cache.

A source answers ``batch(idx) -> (x float32 (B, 1, H, W), y int64 (B, H, W))`` for a batch of indices; the
training loop keeps drawing its seeded order and cutting it into batches, and :func:`read` turns those very
batches into tensors through a torch DataLoader (its batch sampler is the list of batches), in worker
processes when asked and into pinned memory on CUDA. So the order, the augmentation draws and a resumed run
are the same whichever source and however many workers. A CacheSource opens its files lazily, in the
process that reads them: a worker opens the files instead of receiving a copy of the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .cache import Slots
from .data import zscore
from .runs import CACHE_IMAGES

__all__ = ["ArraySource", "CacheSource", "Source", "read"]


class Source:
    """``n`` training cases of ``size`` x ``size``; subclasses give ``images(idx)`` and ``labels(idx)``."""

    n: int
    size: int

    def __len__(self) -> int:
        return self.n

    def images(self, idx: Sequence[int]) -> np.ndarray:
        """float32 (B, 1, size, size), z-scored: the network's input."""
        raise NotImplementedError

    def labels(self, idx: Sequence[int]) -> np.ndarray:
        """uint8 (B, size, size) {0, 1}: the masks training sees."""
        raise NotImplementedError

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(idx, x, y) as the loop trains on them."""
        idx = np.asarray(idx, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images(idx), dtype=np.float32))
        y = torch.from_numpy((self.labels(idx) > 0).astype(np.int64))
        return torch.from_numpy(idx), x, y


class ArraySource(Source):
    """Images (N, 1, H, W) float32 and masks (N, H, W) held in memory (the plugin's layers, tests)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self._images, self._masks = images, masks
        self.n, self.size = int(images.shape[0]), int(images.shape[-1])
        self.shape = tuple(images.shape)

    def images(self, idx: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(idx)]

    def labels(self, idx: Sequence[int]) -> np.ndarray:
        return np.asarray(self._masks[np.asarray(idx)])


class CacheSource(Source):
    """Training cases read from a cache's image map (``slots`` of it, in order) and a given-mask map
    (``given``: a path to a uint8 (n, size, size) file, or an array)."""

    def __init__(self, cache_folder: Path | str, n_slots: int, size: int, slots: Sequence[int],
                 given: Path | str | np.ndarray) -> None:
        self.folder, self.n_slots, self.size = Path(cache_folder), int(n_slots), int(size)
        self.slots = np.asarray(slots, dtype=np.int64)
        self.n = len(self.slots)
        self.shape = (self.n, 1, self.size, self.size)
        self._images = Slots(self.folder / CACHE_IMAGES, self.n_slots, self.size)
        self._given = given if isinstance(given, np.ndarray) else Slots(given, self.n, self.size)

    def images(self, idx: Sequence[int]) -> np.ndarray:
        raw = self._images[self.slots[np.asarray(idx)]]
        return np.stack([zscore(r.astype(np.float32) / 255) for r in raw])[:, None]

    def labels(self, idx: Sequence[int]) -> np.ndarray:
        return np.asarray(self._given[np.asarray(idx)])


class _Batches(torch.utils.data.Dataset):
    """The DataLoader's view of a source: whole batches at once (``__getitems__``), never single cases."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.source.batch([i])

    def __getitems__(self, idx: list[int]):
        return self.source.batch(idx)


def _as_is(batch):
    return batch


def read(source: Source, batches: Sequence[torch.Tensor | Sequence[int]], workers: int = 0,
         device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(idx, x, y) of every batch in ``batches``, in that order, read by ``workers`` processes (0: here);
    pinned for a CUDA ``device``. The DataLoader's workers end with the iteration (or when it is dropped)."""
    sampler = [[int(i) for i in b] for b in batches]
    loader = torch.utils.data.DataLoader(
        _Batches(source), batch_sampler=sampler, num_workers=int(workers), collate_fn=_as_is,
        pin_memory=device is not None and device.type == "cuda",
    )
    yield from loader
