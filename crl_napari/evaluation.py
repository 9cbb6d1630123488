"""Which masks a trained run is evaluated against, and a phrase that names them.

A data folder's masks/ count as clean only for the cases the run did not train on (a held-out test split): for
the others they are the imperfect masks the run was given, and a Dice against them would flatter the run. So
evaluating those needs clean masks kept elsewhere or the user's word that masks/ is clean.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .data import IMAGE_EXTENSIONS, DataError, Dataset, load_dataset, read_mask, resize_mask
from .runs import CONFIG, RunError, RunFolder

__all__ = ["evaluation_data", "read_clean_masks"]


def evaluation_data(run_dir: Path | str, data: Path | str | None, split: str, clean_masks: Path | str | None = None,
                    masks_are_clean: bool = False) -> tuple[Dataset, str]:
    """The cases of ``split`` (all cases when the data has none) with the masks to compare against, and a
    phrase naming those masks. Raises RunError when they would be masks the run trained on and neither
    ``clean_masks`` (a folder named like masks/) nor ``masks_are_clean`` says otherwise."""
    run = RunFolder(run_dir)
    root = data if data is not None else run.config["data"].get("root")
    if root is None:
        raise RunError(f"{run.path / CONFIG}: no data folder recorded; pass --data")
    ds = load_dataset(root, size=run.config["data"]["size"])
    has_split = any(c.split == split for c in ds)
    sub = ds.subset(split) if has_split else ds
    which = (f"the {len(sub)} cases of the {split} split" if has_split
             else f"the {len(sub)} cases (the data has no {split!r} split in split.csv)")
    if clean_masks is not None:
        masks = read_clean_masks(Path(clean_masks), sub.ids, ds.size)
        return replace(sub, cases=[replace(c, mask=masks[c.id]) for c in sub]), f"the clean masks in {clean_masks}"
    trained = {r["id"] for r in run.cases()}
    seen = [i for i in sub.ids if i in trained]
    if seen and not masks_are_clean:
        raise RunError(f"{ds.root}: {len(seen)} of {which} were trained on, so their masks in "
                       f"{ds.root / 'masks'} are the imperfect ones the run was given, not clean ones; pass "
                       "--clean-masks DIR (clean masks named like masks/) or, if they are clean, --masks-are-clean")
    why = "--masks-are-clean" if seen else "held out from training, taken as clean"
    return sub, f"the masks in {ds.root / 'masks'} ({why})"


def read_clean_masks(folder: Path, ids: list[str], size: int) -> dict:
    """``folder/<id>.<ext>`` (or ``<id>_mask.<ext>``) for every id, binary at ``size`` x ``size``."""
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
    return {i: resize_mask(read_mask(found[i]), size) for i in ids}
