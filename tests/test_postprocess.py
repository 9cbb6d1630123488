"""postprocess: islands below a fraction of the mask's area go, holes are filled, two lungs survive."""

from pathlib import Path

import numpy as np
import pytest

from crl_napari.data import read_mask
from crl_napari.phantoms import make_phantom
from crl_napari.postprocess import clean_mask, extra_pieces, piece_areas, small_islands

SHENZHEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shenzhen"


@pytest.fixture(scope="module")
def lungs() -> np.ndarray:
    """A phantom's true lung mask at 128 px: two lungs, no holes."""
    mask = make_phantom(3, 128)[1]
    assert len(piece_areas(mask)) == 2 and extra_pieces(mask) == 0
    return mask


def _dirty(lungs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The lungs with a speck outside the body (9 px), an island of 2 % of the area and a hole in a lung."""
    mask = lungs.copy()
    area = int(lungs.sum())
    side = int(np.ceil(np.sqrt(0.02 * area)))
    mask[2:5, 2:5] = 1  # 9 px << 1 % of the area
    mask[-4 - side:-4, 2:2 + side] = 1  # >= 2 % of the area
    ys, xs = np.nonzero(lungs)
    cy, cx = int(np.median(ys[xs < 64])), int(np.median(xs[xs < 64]))
    assert lungs[cy - 3:cy + 4, cx - 3:cx + 4].all(), "the hole must lie inside a lung"
    mask[cy - 2:cy + 3, cx - 2:cx + 3] = 0
    return mask, {"island": (slice(-4 - side, -4), slice(2, 2 + side)), "hole": (cy, cx)}


def test_small_islands_go_holes_are_filled_larger_pieces_stay(lungs):
    dirty, where = _dirty(lungs)
    assert small_islands(dirty) == 1 and extra_pieces(dirty) == 2
    clean = clean_mask(dirty)
    assert clean.dtype == np.uint8 and set(np.unique(clean)) == {0, 1}
    assert not clean[2:5, 2:5].any(), "the speck below 1 % of the area is gone"
    assert clean[where["hole"]] == 1 and clean[where["island"]].all(), "hole filled, the 2 % island kept"
    assert extra_pieces(clean) == 1 and small_islands(clean) == 0
    assert np.array_equal(clean_mask(dirty, fill_holes=False)[where["hole"]], 0)
    assert dirty[where["hole"]] == 0 and dirty[2:5, 2:5].all(), "the input is not modified"


def test_holes_are_filled_as_scipy_fills_them(lungs):
    """Speckled lungs (holes of every shape, some touching the border): the same pixels as
    scipy.ndimage.binary_fill_holes."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    speckled = lungs.astype(bool) ^ (rng.random(lungs.shape) < 0.05)
    speckled[:, :3] = False
    speckled[40:60, 0] = True
    filled = clean_mask(speckled, min_island_fraction=0)
    assert np.array_equal(filled, ndimage.binary_fill_holes(speckled))
    assert np.array_equal(clean_mask(np.ones((6, 6))), np.ones((6, 6)))


def test_keep_largest_two_returns_the_two_lungs(lungs):
    dirty, _ = _dirty(lungs)
    two = clean_mask(dirty, keep_largest=2)
    assert np.array_equal(two, lungs), "exactly the two lungs, hole filled"
    assert extra_pieces(two) == 0
    assert clean_mask(lungs, keep_largest=2).sum() == lungs.sum(), "a clean mask is left alone"


def test_the_largest_piece_always_survives_and_empty_stays_empty(lungs):
    biggest = piece_areas(lungs)[0]
    kept = clean_mask(lungs, min_island_fraction=0.9)
    assert kept.sum() == biggest and len(piece_areas(kept)) == 1
    assert clean_mask(lungs, keep_largest=1).sum() == biggest
    empty = np.zeros((32, 40), np.uint8)
    assert clean_mask(empty).sum() == 0 and extra_pieces(empty) == 0 and small_islands(empty) == 0


def test_pieces_touching_at_a_corner_are_one_piece():
    mask = np.zeros((8, 8), bool)
    mask[2, 2] = mask[3, 3] = True
    assert len(piece_areas(mask)) == 1 and extra_pieces(mask, expected=1) == 0
    mask[6, 0] = True
    assert extra_pieces(mask, expected=1) == 1 and list(piece_areas(mask)) == [2, 1]


def test_bad_arguments_are_refused(lungs):
    with pytest.raises(ValueError, match="2-D"):
        clean_mask(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="keep_largest"):
        clean_mask(lungs, keep_largest=0)
    with pytest.raises(ValueError, match="min_island_fraction"):
        clean_mask(lungs, min_island_fraction=1.5)


@pytest.mark.data
def test_clean_up_leaves_real_lung_masks_almost_unchanged():
    """On the radiologists' masks of the Shenzhen set keep_largest=2 removes only what is not a lung."""
    if not SHENZHEN.is_dir():
        pytest.skip(f"the shared Shenzhen data set is not present at {SHENZHEN.resolve()}")
    files = sorted((SHENZHEN / "masks").glob("*.png"))[:80]
    assert len(files) == 80
    for f in files:
        mask = read_mask(f)
        clean = clean_mask(mask, keep_largest=2)
        assert extra_pieces(clean) == 0 and small_islands(clean) == 0, f.name
        dice = 2 * (clean & mask).sum() / (clean.sum() + mask.sum())
        assert dice > 0.99, f"{f.name}: Dice {dice:.4f}"
