"""noise.simulate: the paper's erode/dilate label-noise protocol."""

from __future__ import annotations

import numpy as np
import pytest

from crl_napari.noise import NoiseRecord, simulate


def lung_masks(n=8, size=64, seed=0) -> np.ndarray:
    """n masks with two ellipses each (lung-like), sizes varying per case."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        ry, rx = rng.uniform(0.28, 0.35), rng.uniform(0.14, 0.18)
        for cx in (0.3, 0.7):
            out[i][((yy - 0.5) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 1
    return out


IDS8 = [f"case{i}" for i in range(8)]


@pytest.mark.parametrize("ratio,expected", [(0.0, 0), (0.25, 2), (0.5, 4), (0.75, 6), (1.0, 8)])
def test_exact_corrupted_count(ratio, expected):
    masks = lung_masks(8)
    noisy, records = simulate(masks, IDS8, ratio, seed=1, reference_size=64)
    assert sum(r.corrupted for r in records) == expected
    changed = [i for i in range(8) if not np.array_equal(noisy[i], masks[i])]
    assert len(changed) == expected
    assert changed == [i for i, r in enumerate(records) if r.corrupted]


def test_count_is_round_ratio_times_n():
    masks = lung_masks(10, size=32)
    ids = [str(i) for i in range(10)]
    for ratio in (0.1, 0.33, 0.45, 0.66, 0.9):
        _, records = simulate(masks, ids, ratio, n_range=(1, 2), reference_size=32)
        assert sum(r.corrupted for r in records) == round(ratio * 10)


def test_deterministic_for_a_seed():
    masks = lung_masks(8)
    a, ra = simulate(masks, IDS8, 0.5, seed=7, reference_size=64)
    b, rb = simulate(masks, IDS8, 0.5, seed=7, reference_size=64)
    np.testing.assert_array_equal(a, b)
    assert ra == rb
    others = [simulate(masks, IDS8, 0.5, seed=s, reference_size=64)[1] for s in range(8, 14)]
    assert any(o != ra for o in others)


def test_erosion_subset_dilation_superset_untouched_identical():
    masks = lung_masks(8)
    noisy, records = simulate(masks, IDS8, 1.0, n_range=(2, 4), seed=3, reference_size=64)
    ops = {r.op for r in records}
    assert ops == {"erode", "dilate"}  # 8 cases with a fair coin: both occur for this seed
    for i, r in enumerate(records):
        orig, new = masks[i].astype(bool), noisy[i].astype(bool)
        if r.op == "erode":
            assert not (new & ~orig).any() and new.sum() < orig.sum()
        else:
            assert not (orig & ~new).any() and new.sum() > orig.sum()
    noisy, records = simulate(masks, IDS8, 0.5, seed=3, reference_size=64)
    for i, r in enumerate(records):
        if not r.corrupted:
            assert r.op == "none" and r.n == 0
            np.testing.assert_array_equal(noisy[i], masks[i])
    assert noisy.dtype == np.uint8 and set(np.unique(noisy)) <= {0, 1}


def test_matches_scipy_with_cross():
    from scipy import ndimage

    masks = lung_masks(4)
    noisy, records = simulate(masks, IDS8[:4], 1.0, n_range=(2, 5), seed=11, reference_size=64)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    for i, r in enumerate(records):
        fn = ndimage.binary_erosion if r.op == "erode" else ndimage.binary_dilation
        expected = fn(masks[i].astype(bool), structure=cross, iterations=r.n)
        np.testing.assert_array_equal(noisy[i], expected.astype(np.uint8))


def test_n_within_range_and_ops_balanced():
    masks = lung_masks(200, size=16, seed=1)
    ids = [str(i) for i in range(200)]
    _, records = simulate(masks, ids, 1.0, n_range=(5, 15), seed=0, reference_size=16)
    ns = [r.n for r in records]
    assert min(ns) >= 5 and max(ns) <= 15
    assert set(ns) == set(range(5, 16))  # uniform over the whole inclusive range
    erode = sum(r.op == "erode" for r in records)
    assert 70 < erode < 130


def test_n_scaled_by_reference_size():
    masks = lung_masks(100, size=32, seed=2)
    ids = [str(i) for i in range(100)]
    _, full = simulate(masks, ids, 1.0, n_range=(5, 15), seed=4, reference_size=32)
    _, half = simulate(masks, ids, 1.0, n_range=(5, 15), seed=4, reference_size=64)
    for f, h in zip(full, half, strict=True):
        assert f.op == h.op
        assert h.n == max(1, round(f.n / 2))
    assert max(r.n for r in half) <= 8 and min(r.n for r in half) >= 2
    _, tiny = simulate(masks, ids, 1.0, n_range=(1, 2), seed=4, reference_size=1024)
    assert {r.n for r in tiny} == {1}  # at least one iteration


def test_records_match_ids():
    masks = lung_masks(8)
    noisy, records = simulate(masks, IDS8, 0.5, seed=2, reference_size=64)
    assert [r.id for r in records] == IDS8 and all(isinstance(r, NoiseRecord) for r in records)
    assert sum(r.corrupted for r in records) == 4 and all(r.op in ("erode", "dilate") for r in records if r.corrupted)
    assert masks is not noisy and masks.sum() == lung_masks(8).sum()  # input untouched


def test_bad_arguments():
    masks = lung_masks(2)
    with pytest.raises(ValueError, match="ids"):
        simulate(masks, ["a"], 0.5)
    with pytest.raises(ValueError, match="ratio"):
        simulate(masks, ["a", "b"], 1.5)
    with pytest.raises(ValueError, match="binary"):
        simulate(masks * 255, ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="n_range"):
        simulate(masks, ["a", "b"], 0.5, n_range=(5, 3))


def test_square_footprint_damages_more_than_the_cross_with_the_same_draws():
    """Same seed, same cases, ops and n; the 3x3 square moves the border further per iteration than the cross."""
    masks = lung_masks(8)
    cross, rc = simulate(masks, IDS8, 1.0, n_range=(2, 4), seed=3, reference_size=64)
    square, rs = simulate(masks, IDS8, 1.0, n_range=(2, 4), seed=3, reference_size=64, footprint="square")
    assert rc == rs
    for i, r in enumerate(rs):
        c, s = cross[i].astype(bool), square[i].astype(bool)
        if r.op == "erode":
            assert not (s & ~c).any() and s.sum() < c.sum()
        else:
            assert not (c & ~s).any() and s.sum() > c.sum()
    default, _ = simulate(masks, IDS8, 1.0, n_range=(2, 4), seed=3, reference_size=64)
    np.testing.assert_array_equal(default, cross)  # the cross stays the default


def test_unknown_footprint_is_refused():
    with pytest.raises(ValueError, match="footprint must be one of"):
        simulate(lung_masks(2), IDS8[:2], 0.5, footprint="disk")
