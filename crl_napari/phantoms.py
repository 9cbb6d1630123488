"""The built-in, offline sample data set: synthetic chest radiograph phantoms in the project's data layout.

Every case is drawn from a seed by :mod:`crl_napari.phantom_drawing` (no real image is copied; the anatomy is
described there). :func:`write_sample_set` writes a folder in the project's data layout (with the paper's label
noise on half of the training masks); :func:`sample_root` finds the packaged copy.

Regenerate the repository's ``sample_data/`` with ``python -m crl_napari.phantoms``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .phantom_drawing import PHANTOM_VERSION, make_phantom, phantom_layers

__all__ = [
    "PHANTOM_VERSION",
    "make_phantom",
    "phantom_layers",
    "write_sample_set",
    "sample_root",
    "sample_ids",
    "case_seed",
    "train_indices",
    "main",
]

#: The repository's committed sample set (present in a source checkout / editable install).
_REPO_SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"

_DEFAULTS = {"n": 48, "size": 256, "noise_ratio": 0.5, "seed": 0}
_TRAIN_FRACTION = 0.75


# --------------------------------------------------------------------------------------------- the set


def sample_ids(n: int) -> list[str]:
    """The ids of an ``n``-case sample set: phantom_000, phantom_001, ..."""
    return [f"phantom_{i:03d}" for i in range(n)]


def case_seed(seed: int, index: int) -> int:
    """The :func:`make_phantom` seed of case ``index`` in the set drawn with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def train_indices(n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the training cases of an ``n``-case set: round(0.75 n) of them (at least one,
    and at least one test case), chosen by a seeded permutation."""
    n_train = min(n - 1, max(1, int(round(_TRAIN_FRACTION * n))))
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 7919])).permutation(n)
    return np.sort(order[:n_train])


def _write_png(path: Path, array: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, np.ascontiguousarray(array), extension=".png", optimize=True)


_README = """# sample_data: synthetic chest radiographs (crl-napari's built-in sample set)

{n} synthetic frontal chest radiographs ({size} x {size}, uint8 PNG) drawn by `crl_napari/phantoms.py`
(generator version {version}, seed {seed}). No real patient data: every image is a phantom (torso, lungs,
heart, spine, ribs, clavicles, diaphragm, exposure gradient, blur, film grain) drawn from a seed.

Layout (the project's data layout, so `crl-napari` and the napari plugin read it directly):

- `images/<id>.png`      the radiographs
- `masks/<id>.png`       the masks a user would have (0/255): the training masks carry the paper's label
                         noise (erosion or dilation, `crl_napari.noise.simulate`, ratio {ratio}), test masks
                         are clean
- `clean_masks/<id>.png` the true lung masks (lung fields minus heart), for evaluation
- `split.csv`            `id,split` ({n_train} train, {n_test} test)
- `noise.csv`            `id,corrupted,op,n`: which masks were corrupted and how ({n_corrupt} of them)

Regenerate (deterministic; run from the repository root):

    python -m crl_napari.phantoms sample_data

An installed wheel does not ship this folder: `crl_napari.phantoms.sample_root()` generates the same set
once into the user cache directory.
"""


def write_sample_set(dest: str | Path, n: int = 48, size: int = 256, noise_ratio: float = 0.5,
                     seed: int = 0) -> Path:
    """Write ``n`` phantoms to ``dest`` in the project's data layout and return ``dest``.

    ``dest/images/<id>.png``, ``dest/masks/<id>.png`` (noisy for the corrupted training cases, 0/255),
    ``dest/clean_masks/<id>.png`` (true masks), ``dest/split.csv`` (``id,split``: round(0.75 n) train,
    the rest test, assigned by a seeded permutation), ``dest/noise.csv`` (``id,corrupted,op,n``: exactly
    round(noise_ratio * n_train) training masks corrupted by :func:`crl_napari.noise.simulate` with
    ``seed``; test masks are never touched) and a README.md. Previous ``phantom_*.png`` files in those
    folders are removed first, so a smaller set leaves no stale cases. Deterministic for the arguments.
    """
    from . import noise

    if n < 2:
        raise ValueError(f"n must be >= 2 (a train and a test case), got {n}")
    if not 0.0 <= noise_ratio <= 1.0:
        raise ValueError(f"noise_ratio must be in [0, 1], got {noise_ratio}")
    dest = Path(dest).expanduser()
    dirs = {name: dest / name for name in ("images", "masks", "clean_masks")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("phantom_*.png"):
            old.unlink()

    ids = sample_ids(n)
    images, clean = [], []
    for i in range(n):
        image, mask = make_phantom(case_seed(seed, i), size)
        images.append(image)
        clean.append(mask)
    clean_arr = np.stack(clean)

    train_idx = train_indices(n, seed)
    n_train = len(train_idx)
    split = {cid: "test" for cid in ids}
    for i in train_idx:
        split[ids[i]] = "train"

    noisy_train, records = noise.simulate(
        clean_arr[train_idx], [ids[i] for i in train_idx], noise_ratio, seed=seed, reference_size=256
    )
    given = clean_arr.copy()
    given[train_idx] = noisy_train
    rec_by_id = {r.id: r for r in records}

    for i, cid in enumerate(ids):
        _write_png(dirs["images"] / f"{cid}.png", images[i])
        _write_png(dirs["masks"] / f"{cid}.png", given[i] * np.uint8(255))
        _write_png(dirs["clean_masks"] / f"{cid}.png", clean_arr[i] * np.uint8(255))

    with open(dest / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "split"])
        w.writerows([cid, split[cid]] for cid in ids)
    with open(dest / "noise.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "corrupted", "op", "n"])
        for cid in ids:
            r = rec_by_id.get(cid)
            w.writerow([cid, int(r.corrupted), r.op, r.n] if r is not None else [cid, 0, "none", 0])
    n_corrupt = sum(r.corrupted for r in records)
    (dest / "README.md").write_text(
        _README.format(n=n, size=size, version=PHANTOM_VERSION, seed=seed, ratio=noise_ratio,
                       n_train=n_train, n_test=n - n_train, n_corrupt=n_corrupt)
    )
    return dest


def _is_sample_set(root: Path, n: int | None = None) -> bool:
    """A complete sample set: the CSVs and the last case's three files are present."""
    last = sample_ids(_DEFAULTS["n"] if n is None else n)[-1]
    return (
        (root / "split.csv").is_file()
        and (root / "noise.csv").is_file()
        and all((root / d / f"{last}.png").is_file() for d in ("images", "masks", "clean_masks"))
    )


def _cache_dir() -> Path:
    """The user cache folder for crl-napari ($XDG_CACHE_HOME, %LOCALAPPDATA%, or ~/.cache)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"])
    else:
        base = Path.home() / ".cache"
    return base / "crl-napari"


def _ensure_generated(dest: Path, **kwargs) -> Path:
    """Generate the set into ``dest`` unless it is already complete; safe against concurrent callers.

    The set is written into a temporary sibling folder and renamed into place, so a reader never sees
    a half-written set."""
    n = kwargs.get("n", _DEFAULTS["n"])
    if _is_sample_set(dest, n):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        write_sample_set(tmp, **kwargs)
        if dest.exists() and not _is_sample_set(dest, n):
            shutil.rmtree(dest, ignore_errors=True)  # a broken earlier attempt
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _is_sample_set(dest, n):  # someone else finished first: theirs is identical
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def sample_root() -> Path:
    """The built-in sample set's folder (the layout of :func:`write_sample_set`).

    In a source checkout or editable install this is the repository's ``sample_data/``. An installed
    wheel does not carry that folder, so the same (deterministic) set is generated once into
    ``<user cache>/crl-napari/sample_data-v<PHANTOM_VERSION>`` (a few seconds) and reused.
    """
    if _is_sample_set(_REPO_SAMPLE):
        return _REPO_SAMPLE
    return _ensure_generated(_cache_dir() / f"sample_data-v{PHANTOM_VERSION}", **_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    """``python -m crl_napari.phantoms [DEST]``: (re)generate the sample set (default: the repo's)."""
    parser = argparse.ArgumentParser(prog="python -m crl_napari.phantoms", description=main.__doc__)
    parser.add_argument("dest", nargs="?", type=Path, default=_REPO_SAMPLE,
                        help=f"output folder (default: {_REPO_SAMPLE})")
    parser.add_argument("--n", type=int, default=_DEFAULTS["n"], help="number of cases (default 48)")
    parser.add_argument("--size", type=int, default=_DEFAULTS["size"], help="image size (default 256)")
    parser.add_argument("--noise-ratio", type=float, default=_DEFAULTS["noise_ratio"],
                        help="ratio of training masks corrupted (default 0.5)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="seed (default 0)")
    args = parser.parse_args(argv)
    dest = write_sample_set(args.dest, n=args.n, size=args.size, noise_ratio=args.noise_ratio, seed=args.seed)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {args.n} phantoms to {dest} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
