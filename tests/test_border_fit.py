"""The border fit (TrainConfig.border_fit, crl_napari.border_fit): a correction starts from the given border moved
by the distance the nets agree with. Checked on drawn lungs with known shifts, through native resampling, and
on a trained run scored with and without it, as `crl-napari score` does."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from crl_napari import cli, native
from crl_napari.border_fit import corrected_prob, fit_shift, fitted_labels, signed_distance
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder
from crl_napari.settings import TrainConfig


def disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (np.hypot(yy + 0.5 - centre[0], xx + 0.5 - centre[1]) < radius).astype(np.uint8)


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_signed_distance_is_negative_exactly_inside():
    m = disk((40, 50), (20, 22), 11)
    d = signed_distance(m)
    assert np.array_equal(d < 0, m > 0)
    assert d[m > 0].max() == pytest.approx(-0.5) and d[m == 0].min() == pytest.approx(0.5)
    assert np.isposinf(signed_distance(np.zeros((8, 8)))).all()
    assert np.isneginf(signed_distance(np.ones((8, 8)))).all()


@pytest.mark.parametrize("true_shift", [-4, -2, 3, 5])
def test_the_fit_finds_how_far_a_drawn_border_is_off(true_shift):
    """Given: a lung drawn ``true_shift`` pixels too loose or too tight; the nets: the right lung, blurred."""
    truth = disk((64, 64), (30, 24), 14) | disk((64, 64), (34, 44), 11)
    given = (signed_distance(truth) < true_shift).astype(np.uint8)  # the border moved by true_shift
    nets = ndi.gaussian_filter(truth.astype(np.float32), 1.0)
    t = fit_shift(given, nets)
    assert t == pytest.approx(-true_shift, abs=0.5)
    fixed = corrected_prob(given, nets) > 0.5
    assert dice(fixed, truth) > 0.97
    assert dice(fixed, truth) > dice(given, truth) + 0.05


def test_stage_2_labels_are_the_given_borders_moved_as_each_nets_peers_agree():
    """TrainConfig.fit_labels: a batch of given masks drawn too loose or too tight, and per net a soft label
    (its peers' sharpened mean) of the right lungs; the labels come back moved onto the right lungs."""
    import torch

    truths = [disk((64, 64), (30, 24), 14) | disk((64, 64), (34, 44), 11), disk((64, 64), (32, 32), 20)]
    given = np.stack([(signed_distance(t) < s).astype(np.int64) for t, s in zip(truths, (4, -3), strict=True)])
    fg = torch.as_tensor(np.stack([ndi.gaussian_filter(t.astype(np.float32), 1.0) for t in truths]))
    soft = torch.stack([1 - fg, fg], dim=1)
    labels = fitted_labels(torch.as_tensor(given), [soft, soft.clone(), soft[[1, 0]]])
    assert len(labels) == 3 and all(lb.shape == soft.shape and lb.dtype == soft.dtype for lb in labels)
    for k, truth in enumerate(truths):
        assert dice(labels[0][k, 1] > 0.5, truth) > 0.97 > dice(given[k], truth) + 0.05
        torch.testing.assert_close(labels[0][k, 1], torch.as_tensor(corrected_prob(given[k], fg[k].numpy())))
    torch.testing.assert_close(labels[0].sum(dim=1), torch.ones(2, 64, 64))
    # the third net's peers say the other image's lungs: its labels follow them, each from its own given mask
    torch.testing.assert_close(labels[2][0, 1], torch.as_tensor(corrected_prob(given[0], fg[1].numpy())))
    assert dice(labels[2][0, 1] > 0.5, truths[0]) < dice(labels[0][0, 1] > 0.5, truths[0]) - 0.05


def test_a_clean_mask_comes_back_as_it_was():
    truth = disk((64, 64), (30, 30), 18)
    nets = np.clip(ndi.gaussian_filter(truth.astype(np.float32), 1.5) + 0.02, 0, 1)
    assert fit_shift(truth, nets) == 0
    assert np.array_equal(corrected_prob(truth, nets) > 0.5, truth > 0)


def test_an_empty_given_mask_takes_the_nets_opinion():
    nets = ndi.gaussian_filter(disk((32, 32), (16, 16), 8).astype(np.float32), 1.0)
    out = corrected_prob(np.zeros((32, 32), np.uint8), nets)
    assert np.array_equal(out, nets)
    assert fit_shift(np.zeros((32, 32)), nets) == 0


def test_the_fitted_border_is_smooth_at_the_original_size():
    """64 px training, a 256 px radiograph: the corrected mask at 256 px is a smooth disk of the shifted radius,
    not 4 x 4 blocks."""
    given = disk((64, 64), (32, 32), 16)  # drawn 3 px (training) too tight
    nets = ndi.gaussian_filter(disk((64, 64), (32, 32), 19).astype(np.float32), 1.0)
    mask = native.native_mask(corrected_prob(given, nets), (256, 256), cleanup=False)
    want = disk((256, 256), (128, 128), 19 * 4)
    assert dice(mask, want) > 0.99
    blocks = mask.reshape(64, 4, 64, 4).transpose(0, 2, 1, 3).reshape(64, 64, 16)
    assert (blocks.min(-1) != blocks.max(-1)).sum() > 50  # the border cuts through training pixels


def test_old_settings_keep_the_papers_correction():
    """A config.json written before the setting existed meant the paper's correction; a new one fits."""
    old = {k: v for k, v in TrainConfig().__dict__.items() if k != "border_fit"}
    assert TrainConfig.from_dict(old).border_fit == 0
    assert TrainConfig().border_fit == 1
    assert TrainConfig.from_dict({**old, "border_fit": 1}).border_fit == 1


SMALL = ["--size", "32", "--width", "8", "--depth", "2", "--epochs", "15", "--batch-size", "4", "--lr", "0.05",
         "--strategy", "crl", "--k", "5", "--simulate-noise", "0.5", "--second-pass", "0", "--quiet"]
# one pass each: the border fit changes the scoring only, while a second pass would train on each way's corrections


@pytest.fixture(scope="module")
def scored_both_ways(tmp_path_factory):
    """The same training twice, scored with the border fit (the default) and the paper's way (--border-fit 0)."""
    data = write_sample_set(tmp_path_factory.mktemp("data") / "set", n=24, size=64, noise_ratio=0.5, seed=7)
    runs = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", str(data), "--out", str(runs / "fit"), *SMALL]) == 0
    assert cli.main(["train", str(data), "--out", str(runs / "paper"), "--border-fit", "0", *SMALL]) == 0
    return data, RunFolder(runs / "fit"), RunFolder(runs / "paper")


def test_scoring_with_the_fit_keeps_the_queue_and_the_clean_masks(scored_both_ways):
    data, fit, paper = scored_both_ways
    assert fit.train_config.border_fit == 1 and paper.train_config.border_fit == 0
    rows_fit = {r.id: r for r in fit.score_rows()}
    rows_paper = {r.id: r for r in paper.score_rows()}
    assert {i: (r.rank, r.suspicion) for i, r in rows_fit.items()} == \
        {i: (r.rank, r.suspicion) for i, r in rows_paper.items()}  # the queue is the nets' opinion either way
    clean_ids = [i for i, r in rows_fit.items() if r.corrupted is False]
    assert clean_ids
    truth = {i: (np.asarray(fit.given(i)) > 0) for i in clean_ids}  # a clean case's given mask is its truth
    d_fit = np.mean([dice(fit.corrected(i), truth[i]) for i in clean_ids])
    d_paper = np.mean([dice(paper.corrected(i), truth[i]) for i in clean_ids])
    # tiny nets' own masks are poor (0.87 here); the fit brings the clean masks back closer to what they were (0.89)
    assert d_fit > d_paper + 0.01
    for i in clean_ids:
        assert rows_fit[i].dice_given_corrected == pytest.approx(dice(fit.corrected(i), fit.given(i)), abs=1e-5)



def test_the_export_writes_the_fitted_corrections_at_the_original_size(scored_both_ways, tmp_path):
    """Trained at 32 px on 64 px phantoms, every correction accepted: each exported mask, read back as a file, is
    the run's fitted map smoothly resampled to the original 64 px and cleaned up (not 2 x 2 blocks), and differs
    from what the paper's correction of the same nets exports."""
    from crl_napari.image_files import read_mask

    _data, fit, paper = scored_both_ways
    exported = {}
    for run in (fit, paper):
        dest = tmp_path / run.path.name
        assert cli.main(["export", str(run.path), "--to", str(dest), "--unreviewed", "accept_above",
                         "--threshold", "0"]) == 0
        exported[run.path.name] = {r.id: read_mask(dest / "masks" / f"{r.id}.png") > 0 for r in run.score_rows()}
    for i, mask in exported["fit"].items():
        assert mask.shape == (64, 64)
        assert np.array_equal(mask, native.native_mask(fit.prob(i), (64, 64)) > 0)
    assert any(not np.array_equal(m, exported["paper"][i]) for i, m in exported["fit"].items())


# ----------------------------------------------------------------------------------------- at the original size

def _lungs(shape, scale=1.0):
    """Two lung-like disks at ``shape``, with a slit 2 px tall (at 256 px) cut 30 px deep into the left one from
    its outer side: detail finer than a 64 px training pixel (4 px)."""
    h, w = shape
    m = disk(shape, (0.47 * h, 0.34 * w), 0.22 * min(h, w)) | disk(shape, (0.53 * h, 0.68 * w), 0.19 * min(h, w))
    m[int(0.46 * h):int(0.46 * h) + max(1, round(2 * scale)), :int(0.24 * w)] = 0
    return m


def test_at_the_original_size_the_correction_keeps_what_was_drawn_finer_than_a_training_pixel():
    """A clean 256 px mask trained at 64 px, the nets agreeing with it: the correction made from the original
    mask gives it back nearly pixel for pixel; the training-size correction resampled cannot (its 64 px mask lost
    what was finer). A slit narrower than a training pixel deep inside, where the nets are sure of lung, is
    theirs to fill: only its mouth, where they are not, stays as drawn."""
    from crl_napari.border_fit import native_logit
    from crl_napari.image_files import resize_mask

    truth = _lungs((256, 256))
    small = resize_mask(truth, 64)
    nets = ndi.gaussian_filter(small.astype(np.float32), 1.0)
    native_fit = native.mask_from_logit(native_logit(nets, small, truth), cleanup=False)
    resampled = native.native_mask(corrected_prob(small, nets), (256, 256), cleanup=False)
    assert dice(native_fit, truth) > 0.995 and dice(native_fit, truth) > dice(resampled, truth) + 0.005
    assert (native_fit != truth).sum() * 3 < (resampled != truth).sum()
    mouth = (slice(int(0.46 * 256), int(0.46 * 256) + 2), slice(32, 34))  # the slit's first pixels in the lung
    assert truth[mouth].sum() == 0 and native_fit[mouth].sum() == 0 and resampled[mouth].all()


@pytest.mark.parametrize(("shape", "size", "shift"), [((256, 256), 64, -12), ((256, 256), 64, 10),
                                                      ((300, 240), 32, -14), ((300, 240), 32, 10)])
def test_at_the_original_size_the_original_border_moves_by_the_fitted_shift(shape, size, shift):
    """A mask drawn ``shift`` original pixels too tight or too loose (non-square originals too): the correction
    moves the ORIGINAL border by what the nets agree with at training size; at the training size it is the
    training-size correction."""
    from crl_napari.border_fit import native_logit
    from crl_napari.image_files import resize_mask

    truth = _lungs(shape, scale=shape[0] / 256)
    given = (signed_distance(truth) < shift).astype(np.uint8)
    small, small_truth = resize_mask(given, size), resize_mask(truth, size)
    nets = ndi.gaussian_filter(small_truth.astype(np.float32), 1.0)
    fixed = native.mask_from_logit(native_logit(nets, small, given), cleanup=False)
    assert fixed.shape == shape
    resampled = native.native_mask(corrected_prob(small, nets), shape, cleanup=False)
    assert dice(fixed, truth) > 0.96 and dice(fixed, truth) > dice(given, truth) + 0.1
    assert dice(fixed, truth) > dice(resampled, truth) + 0.005
    at_size = native.mask_from_logit(native_logit(nets, small, small), cleanup=False)
    assert np.array_equal(at_size > 0, corrected_prob(small, nets) > 0.5)


def test_without_a_border_to_move_the_correction_is_the_nets_own():
    from crl_napari.border_fit import native_logit

    nets = ndi.gaussian_filter(disk((32, 32), (16, 16), 8).astype(np.float32), 1.0)
    out = native_logit(nets, np.zeros((32, 32), np.uint8), np.zeros((96, 96), np.uint8))
    assert np.array_equal(out.numpy() > 0, native.resample_logit(nets, (96, 96)).numpy() > 0)


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    """Phantoms whose noisy masks are drawn at 96 px (their own size: not simulated by training), trained at 32."""
    data = write_sample_set(tmp_path_factory.mktemp("data96") / "set", n=12, size=96, noise_ratio=0.5, seed=3)
    out = tmp_path_factory.mktemp("runs96") / "run"
    args = [a for a in SMALL if a not in ("--simulate-noise", "0.5")]
    assert cli.main(["train", str(data), "--out", str(out), *args]) == 0
    return data, RunFolder(out)


def test_review_and_export_make_the_correction_from_the_original_mask(native_run, tmp_path):
    """The run keeps the nets' map beside each correction; the export writes, per accepted correction, the
    original mask's border moved (native_correction.corrected_mask, what Review shows); a correction without
    the nets' map (a run scored before it was kept) or without its original mask is the resampled one."""
    from crl_napari.border_fit import native_logit
    from crl_napari.image_files import read_mask
    from crl_napari.native_correction import corrected_mask, uses_original

    data, run = native_run
    assert not run.noise_simulated
    ids = [r.id for r in run.score_rows()]
    rows = {r.id: r for r in run.case_rows()}
    dest = tmp_path / "clean"
    assert cli.main(["export", str(run.path), "--to", str(dest), "--unreviewed", "accept_above",
                     "--threshold", "0"]) == 0
    moved = 0
    for i in ids:
        original = read_mask(rows[i].mask_path)
        assert run.nets_prob(i) is not None and original.shape == (96, 96)
        want = native.mask_from_logit(native_logit(run.nets_prob(i), run.given(i), original))
        got = read_mask(dest / "masks" / f"{i}.png") > 0
        assert np.array_equal(got, want > 0) and np.array_equal(corrected_mask(run, i, (96, 96), original), want)
        moved += not np.array_equal(got, native.native_mask(run.prob(i), (96, 96)) > 0)
    assert moved >= len(ids) // 2  # not the resampled correction
    i = ids[0]
    resampled = native.native_mask(run.prob(i), (96, 96))
    assert np.array_equal(corrected_mask(run, i, (96, 96), None), resampled)
    assert np.array_equal(corrected_mask(run, i, (32, 32), read_mask(rows[i].mask_path)),
                          native.native_mask(run.prob(i), (32, 32)))  # at the training size: the run's own
    assert uses_original(run, i, (96, 96)) and not uses_original(run, i, (32, 32))  # the export reads it only then
    (run.path / "corrected" / f"{i}_nets16.png").unlink()  # as a run scored before the map was kept
    assert run.nets_prob(i) is None and not uses_original(run, i, (96, 96))
    assert np.array_equal(corrected_mask(run, i, (96, 96), read_mask(rows[i].mask_path)), resampled)


def test_a_scoring_without_the_fit_keeps_no_nets_map(scored_both_ways):
    _data, fit, paper = scored_both_ways
    ids = [r.id for r in fit.score_rows()]
    assert all(fit.nets_prob(i) is not None for i in ids) and all(paper.nets_prob(i) is None for i in ids)
    assert fit.noise_simulated and paper.noise_simulated  # simulated: the export resamples (test above)
