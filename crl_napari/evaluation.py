"""Which masks a trained run is evaluated against, a phrase that names them, and the evaluation itself.

A data folder's masks/ count as clean only for the cases the run did not train on (a held-out test split): for
the others they are the imperfect masks the run was given, and a Dice against them would flatter the run. So
evaluating those needs clean masks kept elsewhere or the user's word that masks/ is clean.

The cases are decoded chunk by chunk while they are evaluated (:class:`EvalCases`), as scoring reads a run's
images: memory holds one chunk, not the split (a 100,000-image test split at 256 px is 26 GiB as float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import (
    IMAGE_EXTENSIONS,
    DataError,
    Dataset,
    Pair,
    conclude,
    decode_pair,
    read_mask,
    resize_mask,
    scan_dataset,
    zscore,
)
from .runs import CONFIG, RunError, RunFolder

__all__ = ["EvalCases", "evaluate", "evaluation_data", "read_clean_masks", "split_cases"]

CHUNK_PIXELS = 1 << 22  # pixels of one evaluation chunk (1,024 images at 64 px, 64 at 256 px)


@dataclass(frozen=True)
class EvalCases:
    """The cases of an evaluation, read one at a time: ``read(i)`` is case ``i``'s z-scored image (float32) and
    mask (uint8 {0, 1}) at ``size``; ``split`` is the split evaluated, or "all" when the data has none."""

    ids: list[str]
    split: str
    size: int
    read: Callable[[int], tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images (B, 1, size, size), masks (B, size, size)) of ``n`` consecutive cases at a time."""
        for start in range(0, len(self.ids), n):
            pairs = [self.read(i) for i in range(start, min(len(self.ids), start + n))]
            yield np.stack([p[0] for p in pairs])[:, None], np.stack([p[1] for p in pairs])


def _from_dataset(ds: Dataset, split: str) -> EvalCases:
    has_split = any(c.split == split for c in ds)
    sub = ds.subset(split) if has_split else ds
    return EvalCases(sub.ids, split if has_split else "all", ds.size,
                     lambda i: (sub.cases[i].image, np.asarray(sub.cases[i].mask, np.uint8)))


def _decode(pair: Pair, size: int, clean: Path | None) -> tuple[np.ndarray, np.ndarray]:
    decoded, problems, _ = decode_pair(pair, size)
    if decoded is None:
        path, reason, _ = problems[0]
        raise DataError(f"{path}: {reason}", [(p, r) for p, r, _ in problems])
    mask = decoded.mask if clean is None else resize_mask(read_mask(clean), size)
    return zscore(decoded.image), mask


def _from_folder(root: Path | str, size: int, split: str, clean: dict[str, Path] | None = None
                 ) -> tuple[EvalCases, Path]:
    listing = scan_dataset(root)
    conclude(listing.root, listing.problems, len(listing.pairs), "raise")
    has_split = any(p.split == split for p in listing.pairs)
    pairs = [p for p in listing.pairs if p.split == split] if has_split else listing.pairs
    return EvalCases([p.id for p in pairs], split if has_split else "all", size,
                     lambda i: _decode(pairs[i], size, None if clean is None else clean[pairs[i].id])), listing.root


def split_cases(data: Path | str | Dataset, size: int, split: str) -> EvalCases:
    """The cases of ``split`` in ``data`` (a data folder, or a Dataset already in memory), all of them when it
    has no such split, each with its own mask."""
    return _from_dataset(data, split) if isinstance(data, Dataset) else _from_folder(data, size, split)[0]


def evaluate(models, cases: EvalCases, masks: str | None = None, tta: int = 0) -> dict:
    """Dice of the ensemble prediction against each case's mask, chunk by chunk; ``masks`` names those masks
    (recorded); ``tta`` the run's test-time flips (TrainConfig.tta). What ``RUN/evaluation.json`` holds."""
    from .inference import dice_score, predict

    chunk = max(1, CHUNK_PIXELS // (cases.size * cases.size))
    parts = [dice_score(predict(models, images, tta=tta), target) for images, target in cases.chunks(chunk)]
    dice = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return {"split": cases.split, "n": len(cases), "masks": masks, "dice_mean": float(dice.mean()),
            "dice_std": float(dice.std()), "per_image": dict(zip(cases.ids, map(float, dice), strict=True))}


def evaluation_data(run_dir: Path | str, data: Path | str | None, split: str, clean_masks: Path | str | None = None,
                    masks_are_clean: bool = False) -> tuple[EvalCases, str]:
    """The cases of ``split`` (all cases when the data has none) with the masks to compare against, and a
    phrase naming those masks. Raises RunError when they would be masks the run trained on and neither
    ``clean_masks`` (a folder named like masks/) nor ``masks_are_clean`` says otherwise."""
    run = RunFolder(run_dir)
    root = data if data is not None else run.config["data"].get("root")
    if root is None:
        raise RunError(f"{run.path / CONFIG}: no data folder recorded; pass --data")
    size = run.config["data"]["size"]
    sub, root = _from_folder(root, size, split)
    which = (f"the {len(sub)} cases of the {split} split" if sub.split == split
             else f"the {len(sub)} cases (the data has no {split!r} split in split.csv)")
    if clean_masks is not None:
        clean = _clean_mask_files(Path(clean_masks), sub.ids)
        return _from_folder(root, size, split, clean)[0], f"the clean masks in {clean_masks}"
    trained = {r["id"] for r in run.cases()}
    seen = [i for i in sub.ids if i in trained]
    if seen and not masks_are_clean:
        raise RunError(f"{root}: {len(seen)} of {which} were trained on, so their masks in "
                       f"{root / 'masks'} are the imperfect ones the run was given, not clean ones; pass "
                       "--clean-masks DIR (clean masks named like masks/) or, if they are clean, --masks-are-clean")
    why = "--masks-are-clean" if seen else "held out from training, taken as clean"
    return sub, f"the masks in {root / 'masks'} ({why})"


def _clean_mask_files(folder: Path, ids: list[str]) -> dict[str, Path]:
    """``folder/<id>.<ext>`` (or ``<id>_mask.<ext>``) for every id; DataError naming the folder when any lacks one."""
    if not folder.is_dir():
        raise DataError(f"{folder}: clean-mask folder does not exist")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
            stem = p.name[: -len(p.suffix)]
            found.setdefault(stem[: -len("_mask")] if stem.endswith("_mask") else stem, p)
    missing = [i for i in ids if i not in found]
    if missing:
        raise DataError(f"{folder}: no clean mask for {len(missing)} of the {len(ids)} cases evaluated "
                        f"(e.g. {', '.join(missing[:3])}); name them like masks/: <id>.png or <id>_mask.png")
    return {i: found[i] for i in ids}


def read_clean_masks(folder: Path, ids: list[str], size: int) -> dict:
    """``folder/<id>.<ext>`` (or ``<id>_mask.<ext>``) for every id, binary at ``size`` x ``size``."""
    return {i: resize_mask(read_mask(p), size) for i, p in _clean_mask_files(folder, ids).items()}
