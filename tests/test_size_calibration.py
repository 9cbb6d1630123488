"""Size calibration (TrainConfig.size_calibration, crl_napari.size_calibration): corrections are made from the nets'
probability brought to the size of the given masks that look right. Checked on the sample set's lungs with nets
that draw them a known distance too small, on nets without a bias, too large or far off (nothing changes), and
through a run scored in chunks as `crl-napari train` and `score` do (the offset is found over every image, not each
chunk's), stopped while it looks for the offset and resumed."""

import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.special import expit

from crl_napari import cli, pipeline, rounds, scoring
from crl_napari.border_fit import signed_distance
from crl_napari.noise import simulate
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder
from crl_napari.settings import TrainConfig
from crl_napari.size_calibration import MAX_CHANGE, MAX_OFFSET, offset, shifted


@pytest.fixture(scope="module")
def lungs(tmp_path_factory):
    """48 true lung masks of the sample set at 256 px (a pixel's ring is about 6 % of a lung's area there)."""
    root = write_sample_set(tmp_path_factory.mktemp("data") / "set", n=48, size=256, noise_ratio=0.0, seed=3)
    files = sorted((root / "clean_masks").glob("*.png"))
    return np.stack([np.asarray(Image.open(p).convert("L")) > 0 for p in files])


def nets_view(masks: np.ndarray, inward: np.ndarray, n_nets: int = 3) -> np.ndarray:
    """Every net's probability (M, N, H, W) of nets that put each border ``inward`` pixels inside the true one
    (negative: outside), with a soft edge."""
    d = np.stack([signed_distance(m) for m in masks]) + np.asarray(inward, dtype=np.float32)[:, None, None]
    p = expit(-2.0 * d)
    return np.repeat(p[None].astype(np.float32), n_nets, axis=0)


def area(m) -> np.ndarray:
    return np.asarray(m).reshape(len(m), -1).astype(bool).sum(1)


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_nets_that_draw_every_lung_too_small_are_brought_to_the_given_size(lungs):
    given, records = simulate(lungs, [str(i) for i in range(len(lungs))], 0.75, seed=1)
    clean = np.array([not r.corrupted for r in records])
    probs = nets_view(lungs, np.full(len(lungs), 0.6))  # 0.6 px too small everywhere
    plain = scoring.score_probs(probs, given, border_fit=True)
    calibrated = scoring.score_probs(probs, given, border_fit=True, calibrate=True)
    b = calibrated.size_offset
    assert 0 < b < MAX_OFFSET
    # the masks that look most right are nearly all clean, and there the nets' mask now has the given mask's size
    sharp = plain.nets_prob
    chosen = np.argsort(plain.suspicion, kind="stable")[: round(0.2 * len(lungs))]
    assert clean[chosen].mean() >= 0.8
    before = np.median(area(sharp[chosen] > 0.5) / area(given[chosen]) - 1)
    after = np.median(area(shifted(sharp[chosen], b) > 0.5) / area(given[chosen]) - 1)
    assert before < -0.03 and abs(after) < 0.01
    # the queue is the nets' own opinion; the corrections of the clean and of the corrupted masks come closer
    np.testing.assert_array_equal(calibrated.suspicion, plain.suspicion)
    for cases in (clean, ~clean):
        d_plain = np.mean([dice(c, t) for c, t in zip(plain.corrected[cases], lungs[cases], strict=True)])
        d_cal = np.mean([dice(c, t) for c, t in zip(calibrated.corrected[cases], lungs[cases], strict=True)])
        assert d_cal > d_plain + 0.001
    # what the correction at the original size is made from is the calibrated probability too
    np.testing.assert_allclose(calibrated.nets_prob, shifted(plain.nets_prob, b), atol=1e-6)


def test_nets_without_a_bias_leave_the_corrections_as_they_were(lungs):
    """Nets a pixel off either way at random: the masks that look right do not agree on a bias, so no offset."""
    given, _ = simulate(lungs, [str(i) for i in range(len(lungs))], 0.5, seed=2)
    jitter = np.random.default_rng(0).uniform(-1, 1, len(lungs))
    probs = nets_view(lungs, jitter)
    calibrated = scoring.score_probs(probs, given, border_fit=True, calibrate=True)
    plain = scoring.score_probs(probs, given, border_fit=True)
    assert calibrated.size_offset == 0
    np.testing.assert_array_equal(calibrated.corrected, plain.corrected)
    np.testing.assert_array_equal(calibrated.prob, plain.prob)


def test_nets_that_draw_every_lung_too_large_are_left_as_they_are(lungs):
    """Only a bias towards too small is removed (offsets towards too large did not help on Shenzhen)."""
    given, _ = simulate(lungs, [str(i) for i in range(len(lungs))], 0.75, seed=1)
    probs = nets_view(lungs, np.full(len(lungs), -0.6))  # 0.6 px too large everywhere
    calibrated = scoring.score_probs(probs, given, border_fit=True, calibrate=True)
    assert calibrated.size_offset == 0
    np.testing.assert_array_equal(calibrated.corrected, scoring.score_probs(probs, given, border_fit=True).corrected)
    assert offset(probs[0], given, calibrated.suspicion) == 0


def test_too_few_masks_that_look_right_give_no_offset(lungs):
    probs = nets_view(lungs[:30], np.full(30, 0.6))[0]
    assert offset(probs[:10], lungs[:10], np.linspace(0, 1, 10)) == 0  # a fifth of 10 is 2 images
    assert offset(probs, lungs[:30], np.linspace(0, 1, 30)) > 0


def test_a_difference_beyond_a_bias_is_left_alone(lungs):
    """Nets that draw every lung two pixels too small (a fifth of the area here): not the few per cent a bias of
    trained nets was measured at, so no offset (MAX_CHANGE)."""
    probs = nets_view(lungs[:30], np.full(30, 2.0))[0]
    assert np.median(area(probs > 0.5) / area(lungs[:30]) - 1) < -MAX_CHANGE
    assert offset(probs, lungs[:30], np.linspace(0, 1, 30)) == 0


def test_old_settings_and_the_default():
    """A config.json written before the setting existed scores as it did; a new run calibrates."""
    old = {k: v for k, v in TrainConfig().__dict__.items() if k != "size_calibration"}
    assert TrainConfig.from_dict(old).size_calibration == 0
    assert TrainConfig().size_calibration == 1


TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "6", "--batch-size", "4", "--lr", "0.05",
        "--strategy", "crl", "--k", "3", "--simulate-noise", "0.75", "--second-pass", "0", "--quiet"]


@pytest.mark.usefixtures("score_chunks_of_16")
def test_a_run_scored_in_chunks_finds_one_offset_over_every_image(tmp_path, monkeypatch):
    """`train --size-calibration 1` scores in chunks of 16 images; `score` on a copy in one chunk: the same
    offset and the same corrections, and they differ from the nets' own where the offset is not 0, in the exported
    files at the originals' size too."""
    data = write_sample_set(tmp_path / "set", n=64, size=64, noise_ratio=0.75, seed=5)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--size-calibration", "1", *TINY]) == 0
    assert RunFolder(run).train_config.size_calibration == 1
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    monkeypatch.setattr(pipeline, "SCORE_CHUNK_PIXELS", 1 << 22)
    metrics = pipeline.score_run(copy)
    b = metrics["size_offset"]
    assert b > 0  # these tiny nets (seeded) draw the lungs of the masks that look right too small
    # the run folder records it (scoring.json, kept by every round) and `info` says it
    assert RunFolder(run).size_offset == RunFolder(copy).size_offset == b
    assert rounds.info(run)["queue"]["size_offset"] == b
    chunked, whole = RunFolder(run), RunFolder(copy)
    ids = [r.id for r in chunked.score_rows()]
    for i in ids:
        np.testing.assert_array_equal(chunked.corrected(i), whole.corrected(i))
    assert [r.suspicion for r in chunked.score_rows()] == [r.suspicion for r in whole.score_rows()]
    # the same training without it (seeded: the same nets): the same queue, other corrections
    plain = tmp_path / "plain"
    assert cli.main(["train", str(data), "--out", str(plain), "--size-calibration", "0", *TINY]) == 0
    assert [r.suspicion for r in RunFolder(plain).score_rows()] == [r.suspicion for r in whole.score_rows()]
    assert any(not np.array_equal(RunFolder(plain).corrected(i), whole.corrected(i)) for i in ids)
    assert RunFolder(plain).size_offset is None and rounds.info(plain)["queue"]["size_offset"] is None
    (plain / "scoring.json").unlink()  # scored before the file existed: the same
    assert rounds.info(plain)["queue"]["size_offset"] is None
    # what the user takes away: every correction exported (at the originals' 64 px, read back from the files) is the
    # calibrated one, and the offset grew them against the same nets' uncalibrated corrections
    from crl_napari.image_files import read_mask
    from crl_napari.native_correction import corrected_mask

    sizes = {}
    for name in ("run", "plain"):
        dest = tmp_path / f"export-{name}"
        assert cli.main(["export", str(tmp_path / name), "--to", str(dest), "--unreviewed", "accept_above",
                         "--threshold", "0"]) == 0
        masks = {i: read_mask(dest / "masks" / f"{i}.png") > 0 for i in ids}
        assert all(m.shape == (64, 64) for m in masks.values())
        if name == "run":
            for i, m in masks.items():
                assert np.array_equal(m, corrected_mask(chunked, i, (64, 64)) > 0)
        sizes[name] = np.mean([m.sum() for m in masks.values()])
    assert sizes["run"] > sizes["plain"]


@pytest.mark.usefixtures("score_chunks_of_16")
def test_a_stop_while_the_size_is_calibrated_scores_nothing_and_resuming_scores_all(tmp_path):
    """The Train widget's Stop lands while the nets look at every image for the offset (before any correction):
    nothing is written, Resume scores the whole run with the offset found again."""
    from crl_napari.cache import CacheProgress
    from crl_napari.cascade import TrainConfig as Config

    data = write_sample_set(tmp_path / "set", n=64, size=64, noise_ratio=0.75, seed=5)
    run = tmp_path / "run"
    config = Config(strategy="crl", k=3, epochs=6, batch_size=4, lr=0.05, width=4, depth=2, second_pass=0)
    assert config.size_calibration == 1
    stop, events = [], []
    for ev in pipeline.train_run(data, run, config, size=32, simulate_noise=0.75, should_stop=lambda: bool(stop)):
        events.append(ev)
        if isinstance(ev, CacheProgress) and ev.what == "size calibration":
            stop.append(True)
    assert isinstance(events[-1], pipeline.ScoringStopped) and events[-1].done == 0
    assert not (run / "scores.csv").exists() and not list((run / "corrected").glob("*.png"))
    events = list(pipeline.train_run(data, run, config, size=32, simulate_noise=0.75, resume=True))
    assert isinstance(events[-1], pipeline.ScoresReady) and "size_offset" in events[-1].metrics
    assert len(RunFolder(run).score_rows()) == 48
