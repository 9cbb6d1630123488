"""The synthetic data sets of benchmarks/scale.py: phantoms drawn by crl_napari.phantoms, written once into a
scratch folder outside the repository and reused by every later run.

One source folder per image size holds the largest N (``src<size>/images|masks/phantom_NNNNNN.png``), written
case by case (a killed generation resumes: every file goes through a temporary name); the data set of N cases
is a folder of hard links to the first N of them (``n<N>-<size>/``), so 1,000 / 10,000 / 50,000 share files.

:func:`scored_rows` makes a run folder of N scored cases without training or any image (config.json, cases.csv and
scores.csv written by the run folder's own writers, scores drawn at random): what opening a review of N rows
reads, at N = 100,000 without decoding or scoring 100,000 images.

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


def data_name(size: int, n: int, distinct: int | None = None) -> str:
    """The folder name of a data set (and of its run): ``n<N>-<size>``, ``-of<K>`` when only K phantoms are drawn."""
    k = n if distinct is None else min(n, distinct)
    return f"n{n}-{size}" if k == n else f"n{n}-{size}-of{k}"


def data_set(scratch: Path, size: int, n: int, log=print, distinct: int | None = None) -> Path:
    """The data folder of the first ``n`` phantoms at ``size`` px (hard links into the source folder). With
    ``distinct`` K < n only K phantoms are drawn and case i links phantom i mod K under its own id: what scaling
    measures (files decoded, cache slots, memory, time per step) does not depend on the pictures, and drawing
    50,000 at 256 px takes hours (0.15 s each on a quiet core)."""
    k = n if distinct is None else min(n, distinct)
    dest = scratch / data_name(size, n, distinct)
    marker = dest / ".complete"
    if marker.is_file():
        return dest
    src = generate(scratch, size, k, log)
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{case_id(i)}.png"
            if not (dest / sub / name).exists():
                os.link(src / sub / f"{case_id(i % k)}.png", dest / sub / name)
    marker.write_text(f"{n} phantoms at {size} px" + (f", {k} of them drawn\n" if k < n else "\n"))
    return dest


def scored_rows(scratch: Path, size: int, n: int, train: dict) -> Path:
    """A scored run folder of ``n`` synthetic cases (``scratch/runs/rows<n>-<size>``), made once: config.json
    (``train``'s settings), cases.csv and scores.csv by RunFolder's writers; no image, mask or map."""
    from crl_napari.runs import RunFolder
    from crl_napari.scoring import ImageScores
    from crl_napari.settings import TrainConfig

    run_dir = scratch / "runs" / f"rows{n}-{size}"
    if (run_dir / "scores.csv").is_file():
        return run_dir
    data = scratch / f"n{n}-{size}"
    run = RunFolder.create(run_dir, TrainConfig(**train), {"root": str(data), "size": size, "simulate_noise": 0.25,
                                                           "noise_seed": 0})
    rng = np.random.default_rng(0)
    corrupted = rng.random(n) < 0.25
    ids = [case_id(i) for i in range(n)]
    run.write_case_table([{"id": i, "split": "train", "image_path": str(data / "images" / f"{i}.png"),
                           "mask_path": str(data / "masks" / f"{i}.png"), "orig_h": size, "orig_w": size,
                           "corrupted": int(c), "noise_op": "erode" if c else "none", "noise_n": 7 if c else 0}
                          for i, c in zip(ids, corrupted, strict=True)])
    # bimodal as real scores are: a few per cent for clean masks, tens of per cent for damaged ones
    suspicion = np.where(corrupted, rng.uniform(0.15, 0.9, n), rng.uniform(0.005, 0.06, n))
    scores = ImageScores(suspicion=suspicion, uncertainty=rng.uniform(0, 0.3, n), disagreement=rng.uniform(0, 1, n),
                         dice_given_corrected=1 - suspicion, corrected=None, prob=None, pixel_uncertainty=None)
    run.write_score_table(ids, scores, list(corrupted), [0] * n)
    return run_dir


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
