"""native: a training-size probability brought to the radiograph's own size smoothly, never by blocks."""

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.transform import resize

from crl_napari import native
from crl_napari.atomic import encode_png
from crl_napari.data import read_mask, resize_image
from crl_napari.export import upsample_nearest
from crl_napari.phantoms import make_phantom
from crl_napari.postprocess import extra_pieces
from crl_napari.selection import sharpen

SHENZHEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shenzhen"


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """A phantom's lung mask at 128 px (the 'original')."""
    return make_phantom(5, 128)[1]


def _train_size_prob(mask: np.ndarray, size: int) -> np.ndarray:
    """A training-size probability: the original mask shrunk with anti-aliasing (soft at the edges)."""
    return np.clip(resize_image(mask.astype(np.float32), size), 0, 1).astype(np.float32)


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_encoding_is_lossless_enough_and_survives_a_16_bit_png(truth):
    rng = np.random.default_rng(0)
    prob = np.concatenate([rng.random((40, 64), dtype=np.float32), _train_size_prob(truth, 32)[:24].repeat(2, 1)])
    prob[0, :3] = [0.0, 1.0, 0.5]
    code = native.encode_prob(prob)
    assert code.dtype == np.uint16 and code.shape == prob.shape
    back = native.decode_prob(iio.imread(io.BytesIO(encode_png(code)), extension=".png"))
    assert back.dtype == np.float32
    err = np.abs(back - prob).max()
    assert 0 < err <= native.ENCODE_ERROR
    assert back[0, 0] == 0 and back[0, 1] == 1
    from_png, exact = (native.native_mask(p, (100, 90), cleanup=False) for p in (back, prob))
    assert np.mean(from_png != exact) < 1e-3, "the stored precision barely moves an edge"
    with pytest.raises(ValueError, match="uint16"):
        native.decode_prob(code.astype(np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        native.encode_prob(prob * 2)


def test_smooth_resampling_has_no_blocks_and_a_truer_boundary(truth):
    """128 -> 32 -> 128: nearest from the binary makes 4 x 4 blocks; the smooth way does not, and its
    contour lies closer to the original's."""
    prob = _train_size_prob(truth, 32)
    nearest = upsample_nearest((prob > 0.5).astype(np.uint8), truth.shape)
    smooth = native.native_mask(prob, truth.shape, cleanup=False)
    assert smooth.dtype == np.uint8 and set(np.unique(smooth)) == {0, 1}
    blocks = lambda m: m.reshape(32, 4, 32, 4).transpose(0, 2, 1, 3).reshape(32, 32, 16)  # noqa: E731
    assert (blocks(nearest).min(-1) == blocks(nearest).max(-1)).all(), "nearest is constant on every 4 x 4 block"
    mixed = (blocks(smooth).min(-1) != blocks(smooth).max(-1)).sum()
    assert mixed > 50, f"only {mixed} of the 4 x 4 blocks hold an edge"
    d_nearest, d_smooth = native.boundary_distance(nearest, truth), native.boundary_distance(smooth, truth)
    assert d_smooth < 0.6 * d_nearest, (d_smooth, d_nearest)
    assert _dice(smooth, truth) > _dice(nearest, truth)


def test_any_ratio_with_pixel_centres_aligned(truth):
    """Non-square, non-integer (64 -> 3000 x 2500 and 300 x 250): the same as scikit-image's pixel-centre
    bilinear resampling of the logit, and mirror images map to mirror images."""
    prob = _train_size_prob(truth, 64)
    big = native.native_mask(prob, (3000, 2500), cleanup=False)
    assert big.shape == (3000, 2500) and big.dtype == np.uint8
    assert abs(big.mean() - (prob > 0.5).mean()) < 0.01
    p = np.clip(prob, native.ENCODE_ERROR, 1 - native.ENCODE_ERROR)
    ref = resize(np.log(p / (1 - p)), (300, 250), order=1, mode="edge", anti_aliasing=False) > 0
    mine = native.native_mask(prob, (300, 250), cleanup=False)
    assert np.mean(mine != ref) < 1e-3
    flipped = native.native_mask(np.ascontiguousarray(prob[::-1, ::-1]), (300, 250), cleanup=False)
    assert np.mean(flipped != mine[::-1, ::-1]) < 1e-3
    small = native.native_mask(_train_size_prob(truth, 128), (50, 70), cleanup=False)  # shrinking works too
    assert small.shape == (50, 70) and 0.5 * truth.mean() < small.mean() < 1.5 * truth.mean()
    soft = native.resample_prob(prob, (300, 250))
    assert soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1 and np.array_equal(soft > 0.5, mine > 0)


def test_sharpening_does_not_move_the_edge(truth):
    """Sharpening scales the logit, so the mask from the sharpened probability is the plain one's."""
    prob = _train_size_prob(truth, 32)
    two = torch.stack([1 - torch.as_tensor(prob), torch.as_tensor(prob)])
    sharp = sharpen(two, 0.5, dim=0)[1].numpy()
    a = native.native_mask(prob, (150, 130), cleanup=False)
    b = native.native_mask(sharp, (150, 130), cleanup=False)
    assert np.mean(a != b) < 2e-3


def test_clean_up_is_applied_by_default(truth):
    prob = _train_size_prob(truth, 32)
    prob[1:3, 1:3] = 0.9  # a stray island outside the body
    assert extra_pieces(native.native_mask(prob, truth.shape, cleanup=False)) == 1
    assert extra_pieces(native.native_mask(prob, truth.shape)) == 0
    assert extra_pieces(native.native_mask(prob, truth.shape, cleanup={"keep_largest": 2})) == 0


def test_bad_input_is_refused(truth):
    prob = _train_size_prob(truth, 32)
    for bad, match in ((np.where(prob > 0.5, np.nan, prob), r"\[0, 1\]"), (prob[None], "2-D"),
                       ((prob > 0.5), "floating"), (prob + 0.5, r"\[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            native.native_mask(bad, (64, 64))
    for shape in ((0, 10), (10,), (10.5, 10)):
        with pytest.raises(ValueError, match="shape"):
            native.native_mask(prob, shape)
    with pytest.raises(ValueError, match="order"):
        native.native_mask(prob, (64, 64), order=2)


def test_boundary_distance():
    a = np.zeros((80, 80), bool)
    a[20:60, 20:60] = True
    b = np.zeros_like(a)
    b[17:63, 17:63] = True
    assert native.boundary_distance(a, a) == 0
    assert 3 <= native.boundary_distance(a, b) == native.boundary_distance(b, a) < 3.3
    assert np.isnan(native.boundary_distance(a, np.zeros_like(a)))
    assert native.boundary_distance(np.zeros_like(a), np.zeros_like(a)) == 0


@pytest.mark.data
def test_real_masks_come_back_closer_than_nearest():
    """Shenzhen masks at 256 px, shrunk to 64 px and brought back: smooth beats nearest on every one."""
    if not SHENZHEN.is_dir():
        pytest.skip(f"the shared Shenzhen data set is not present at {SHENZHEN.resolve()}")
    files = sorted((SHENZHEN / "masks").glob("*.png"))[:12]
    assert len(files) == 12
    for f in files:
        truth = read_mask(f)
        prob = _train_size_prob(truth, 64)
        nearest = upsample_nearest((prob > 0.5).astype(np.uint8), truth.shape)
        smooth = native.native_mask(prob, truth.shape)
        assert native.boundary_distance(smooth, truth) < native.boundary_distance(nearest, truth), f.name
