"""The synthetic data sets of benchmarks/scale.py: phantoms drawn by crl_napari.phantoms, written once into a
scratch folder outside the repository and reused by every later run.

One source folder per image size holds the largest N (``src<size>/images|masks/phantom_NNNNNN.png``), written
case by case (a killed generation resumes: every file goes through a temporary name); the data set of N cases
is a folder of hard links to the first N of them (``n<N>-<size>/``), so 1,000 / 10,000 / 50,000 share files.

    python benchmarks/scale_data.py --scratch /tmp/crl-scale --size 64 --n 50000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl_napari.atomic import encode_png  # noqa: E402
from crl_napari.phantoms import case_seed, make_phantom  # noqa: E402


def case_id(i: int) -> str:
    return f"phantom_{i:06d}"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate(scratch: Path, size: int, n: int, log=print) -> Path:
    """The first ``n`` phantoms at ``size`` px in ``scratch/src<size>`` (what is there already is kept)."""
    src = scratch / f"src{size}"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True, exist_ok=True)
    t0, made = time.perf_counter(), 0
    for i in range(n):
        cid = case_id(i)
        img_path, mask_path = src / "images" / f"{cid}.png", src / "masks" / f"{cid}.png"
        if img_path.is_file() and mask_path.is_file():
            continue
        image, mask = make_phantom(case_seed(0, i), size)
        _write(mask_path, encode_png(mask.astype(np.uint8) * np.uint8(255)))
        _write(img_path, encode_png(image))  # the image last: a case counts as there when its image is
        made += 1
        if made % 1000 == 0:
            log(f"generated {i + 1}/{n} at {size} px ({made / (time.perf_counter() - t0):.0f} cases/s)")
    return src


def data_set(scratch: Path, size: int, n: int, log=print) -> Path:
    """The data folder of the first ``n`` phantoms at ``size`` px (hard links into the source folder)."""
    dest = scratch / f"n{n}-{size}"
    marker = dest / ".complete"
    if marker.is_file():
        return dest
    src = generate(scratch, size, n, log)
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{case_id(i)}.png"
            if not (dest / sub / name).exists():
                os.link(src / sub / name, dest / sub / name)
    marker.write_text(f"{n} phantoms at {size} px\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/crl-scale"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, nargs="+", default=[1000])
    args = ap.parse_args(argv)
    for n in sorted(args.n):
        print(data_set(args.scratch, args.size, n), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
