"""The synthetic sample set: phantoms are deterministic and anatomically sane, the set's layout and noise
bookkeeping are consistent, and the committed sample_data/ is what the generator produces."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from crl_napari import noise, phantoms
from crl_napari._sample_data import make_sample_data, sample_case_id, sample_dataset_path

REPO_SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png(path: Path) -> np.ndarray:
    return np.asarray(iio.imread(path))


# ------------------------------------------------------------------------------------------ phantoms


def test_same_seed_same_bytes_different_seeds_differ():
    a_img, a_mask = phantoms.make_phantom(3, size=128)
    b_img, b_mask = phantoms.make_phantom(3, size=128)
    assert a_img.dtype == np.uint8 and a_mask.dtype == np.uint8
    assert a_img.shape == a_mask.shape == (128, 128)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, c_mask = phantoms.make_phantom(4, size=128)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)


@pytest.mark.parametrize("seed", [0, 1, 7, 123456])
def test_mask_is_binary_two_lungs_plausible_area_and_lungs_dark(seed):
    layers = phantoms.phantom_layers(seed, size=128)
    image, mask = layers["image"], layers["mask"]
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert 0.10 <= mask.mean() <= 0.40
    # two lungs: two large connected components, one on each side of the image
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    big = np.flatnonzero(sizes > 0.02 * mask.size) + 1
    assert len(big) == 2, f"expected two lungs, got component sizes {sorted(sizes)}"
    cols = sorted(np.nonzero(labels == lab)[1].mean() for lab in big)
    assert cols[0] < 64 < cols[1]
    # X-ray grey levels: air in the lungs is darker than the soft tissue and bone around it
    body_not_lung = layers["body"] & ~layers["lungs"]
    assert image[mask > 0].mean() + 30 < image[body_not_lung].mean()
    assert image[mask > 0].mean() < 160


@pytest.mark.parametrize("seed", [0, 5, 11, 55])
def test_heart_overlaps_lung_field_but_is_excluded_from_the_mask(seed):
    layers = phantoms.phantom_layers(seed, size=128)
    heart, lungs, mask = layers["heart"], layers["lungs"], layers["mask"]
    assert (heart & lungs).sum() > 0.01 * heart.size  # the heart really covers part of a lung field
    assert not mask[heart].any()
    # the notch is on the image-right lung (patient's left), on its medial side
    _, cols = np.nonzero(heart & lungs)
    assert cols.mean() > 64
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    big = np.argsort(sizes)[-2:]  # the two lungs
    by_col = sorted(big, key=lambda lab: np.nonzero(labels == lab)[1].mean())
    assert sizes[by_col[1]] < sizes[by_col[0]]  # the image-right (patient's left) lung is the smaller


def test_geometry_is_resolution_independent():
    _, m256 = phantoms.make_phantom(2, size=256)
    _, m128 = phantoms.make_phantom(2, size=128)
    assert abs(m256.mean() - m128.mean()) < 0.01
    down = m256.reshape(128, 2, 128, 2).mean(axis=(1, 3)) >= 0.5
    assert (down != m128.astype(bool)).mean() < 0.02


# ------------------------------------------------------------------------------------------ the set


def test_write_sample_set_layout_split_and_noise(tmp_path):
    n, size = 8, 64
    dest = phantoms.write_sample_set(tmp_path / "set", n=n, size=size, noise_ratio=0.5, seed=3)
    ids = phantoms.sample_ids(n)
    for sub in ("images", "masks", "clean_masks"):
        assert sorted(p.stem for p in (dest / sub).glob("*.png")) == ids
    assert (dest / "README.md").read_text().startswith("# sample_data")

    split = {r["id"]: r["split"] for r in _read_csv(dest / "split.csv")}
    assert list(split) == ids
    train = [i for i in ids if split[i] == "train"]
    assert len(train) == round(0.75 * n) and set(split.values()) == {"train", "test"}

    rows = {r["id"]: r for r in _read_csv(dest / "noise.csv")}
    assert list(rows) == ids
    corrupted = [i for i in ids if rows[i]["corrupted"] == "1"]
    assert len(corrupted) == round(0.5 * len(train))
    assert set(corrupted) <= set(train)

    for cid in ids:
        img = _png(dest / "images" / f"{cid}.png")
        given = _png(dest / "masks" / f"{cid}.png")
        clean = _png(dest / "clean_masks" / f"{cid}.png")
        assert img.shape == given.shape == clean.shape == (size, size) and img.dtype == np.uint8
        assert set(np.unique(given).tolist()) <= {0, 255} and set(np.unique(clean).tolist()) <= {0, 255}
        row = rows[cid]
        if cid in corrupted:
            assert row["op"] in ("erode", "dilate") and int(row["n"]) >= 1
            assert not np.array_equal(given, clean)
            g, c = given > 0, clean > 0
            assert (g <= c).all() if row["op"] == "erode" else (g >= c).all()
        else:
            assert (row["op"], row["n"]) == ("none", "0")
            assert np.array_equal(given, clean)  # test masks (and clean train masks) are untouched


def test_rewriting_a_smaller_set_leaves_no_stale_cases(tmp_path):
    phantoms.write_sample_set(tmp_path, n=5, size=32)
    phantoms.write_sample_set(tmp_path, n=3, size=32)
    assert sorted(p.stem for p in (tmp_path / "images").glob("*.png")) == phantoms.sample_ids(3)
    assert len(_read_csv(tmp_path / "noise.csv")) == 3


def test_main_writes_a_set(tmp_path, capsys):
    assert phantoms.main([str(tmp_path / "out"), "--n", "4", "--size", "32", "--seed", "1"]) == 0
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4
    assert "wrote 4 phantoms" in capsys.readouterr().out


def test_committed_sample_data_is_current():
    """sample_data/ must equal what `python -m crl_napari.phantoms` writes (regenerate it if this fails)."""
    root = REPO_SAMPLE
    assert phantoms.sample_root() == root
    ids = phantoms.sample_ids(48)
    assert sorted(p.stem for p in (root / "images").glob("*.png")) == ids

    # a few cases redrawn: identical up to last-bit floating-point differences between machines
    for i in (0, 1, 47):
        image, mask = phantoms.make_phantom(phantoms.case_seed(0, i), 256)
        stored = _png(root / "images" / f"{ids[i]}.png")
        diff = np.abs(stored.astype(int) - image.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"{ids[i]}: regenerate sample_data/"
        stored_mask = _png(root / "clean_masks" / f"{ids[i]}.png") > 0
        assert (stored_mask != mask.astype(bool)).sum() <= 5, f"{ids[i]}: regenerate sample_data/"

    # the split and the noise: recomputed from the committed clean masks
    split = {r["id"]: r["split"] for r in _read_csv(root / "split.csv")}
    train_idx = phantoms.train_indices(48, 0)
    assert [i for i in ids if split[i] == "train"] == [ids[i] for i in train_idx]
    train_ids = [ids[i] for i in train_idx]
    clean = np.stack([_png(root / "clean_masks" / f"{c}.png") > 0 for c in train_ids]).astype(np.uint8)
    noisy, records = noise.simulate(clean, train_ids, 0.5, seed=0, reference_size=256)
    rows = {r["id"]: r for r in _read_csv(root / "noise.csv")}
    for k, rec in enumerate(records):
        row = rows[rec.id]
        assert (int(row["corrupted"]), row["op"], int(row["n"])) == (int(rec.corrupted), rec.op, rec.n)
        given = _png(root / "masks" / f"{rec.id}.png") > 0
        assert (given != noisy[k].astype(bool)).sum() <= 5 * max(rec.n, 1)
    for cid in ids:
        if split[cid] == "test":
            assert rows[cid]["corrupted"] == "0"
            assert np.array_equal(_png(root / "masks" / f"{cid}.png"), _png(root / "clean_masks" / f"{cid}.png"))
    assert sum(r["corrupted"] == "1" for r in rows.values()) == round(0.5 * len(train_ids))


def test_sample_root_falls_back_to_a_generated_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(phantoms, "_REPO_SAMPLE", tmp_path / "no-such-checkout" / "sample_data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(phantoms._DEFAULTS, "n", 4)
    monkeypatch.setitem(phantoms._DEFAULTS, "size", 32)
    root = phantoms.sample_root()
    assert root.is_relative_to(tmp_path / "cache" / "crl-napari")
    assert len(list((root / "images").glob("*.png"))) == 4
    stamp = (root / "noise.csv").stat().st_mtime_ns
    assert phantoms.sample_root() == root and (root / "noise.csv").stat().st_mtime_ns == stamp  # reused
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


# ------------------------------------------------------------------------------------------ napari sample


def test_make_sample_data_returns_a_corrupted_training_case():
    layers = make_sample_data()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("sample image", "image"),
        ("given mask", "labels"),
        ("true mask", "labels"),
    ]
    (image, _, _), (given, _, _), (true, _, _) = layers
    assert image.shape == given.shape == true.shape == (256, 256)
    assert np.issubdtype(given.dtype, np.integer) and set(np.unique(given).tolist()) == {0, 1}
    assert not np.array_equal(given, true)  # the sample shows a mask that needs correcting
    cid = sample_case_id()
    rows = {r["id"]: r for r in _read_csv(sample_dataset_path() / "noise.csv")}
    assert rows[cid]["corrupted"] == "1"
    assert sample_dataset_path() == REPO_SAMPLE
