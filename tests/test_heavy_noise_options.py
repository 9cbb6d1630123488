"""Our options for heavy label noise (issue 11 item 4), each off by default: test-time flips (tta), weights averaged
over the last epochs (average_last) and the area-balanced selection (balance_area). Each is checked against what
it claims on real tiny nets; a run folder written without these settings still resumes."""

import copy
import json

import numpy as np
import pytest
import torch

from crl_napari import cascade, cli, pipeline, selection
from crl_napari.checkpoint import read_checkpoint
from crl_napari.data import load_dataset
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import CONFIG, RunFolder
from crl_napari.settings import SETTING_HELP, TrainConfig, TrainingError
from crl_napari.sgd import SGD
from crl_napari.strategies import make_stepper, peers
from crl_napari.unet import build_models
from crl_napari.weight_average import WeightAverage

NEW = ("tta", "average_last", "balance_area")
TINY = dict(epochs=4, batch_size=8, width=4, depth=2, lr=0.05, device="cpu")


def squares(n: int = 16, size: int = 16, seed: int = 0):
    """Squares of different sizes on noise, the masks the squares; images (N, 1, H, W), masks (N, H, W)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        a = int(rng.integers(2, 7))
        y[i, a : size - a, a + 1 : size - a] = 1  # not symmetric under a flip, so the flip view differs
    x = (rng.normal(0, 0.3, (n, 1, size, size)) + y[:, None]).astype(np.float32)
    return x, y


def test_the_new_settings_are_off_by_default_checked_and_explained():
    c = TrainConfig()
    assert (c.tta, c.average_last, c.balance_area) == (0, 0, 0)
    for name in NEW:
        assert "ours, not the paper's" in SETTING_HELP[name]
    with pytest.raises(TrainingError, match=r"tta must be in \[0, 1\], got 2.*balance_area must be in"):
        TrainConfig(tta=2, balance_area=-1)
    with pytest.raises(TrainingError, match="average_last must be in"):
        TrainConfig(epochs=5, average_last=6)


def test_tta_is_the_mean_over_the_image_and_its_flip():
    x, _ = squares(4)
    models = build_models(TrainConfig(strategy="crl", **TINY), "cpu")
    for m in models:
        m.eval()
    plain, flipped = cascade.peer_probs(models, x), cascade.peer_probs(models, x, tta=1)
    with torch.no_grad():
        for i, m in enumerate(models):
            t = torch.as_tensor(x)
            by_hand = (torch.softmax(m(t), 1)[:, 1] + torch.softmax(m(t.flip(-1)), 1)[:, 1].flip(-1)) / 2
            np.testing.assert_allclose(flipped[i], by_hand.numpy(), atol=1e-6)
    assert not np.allclose(plain, flipped)
    np.testing.assert_allclose(cascade.predict(models, x, tta=1), flipped.mean(0), atol=1e-6)


def test_balanced_selection_keeps_each_side_in_proportion_and_smallest_first():
    loss = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    larger = torch.tensor([True, True, True, True, True, True, False, False])
    kept = selection.balanced_smallest(loss, larger, 4)
    assert sorted(kept.tolist()) == [0, 1, 2, 6]  # 3 of the 6 larger ones, 1 of the 2 smaller, small loss first
    assert sorted(selection.balanced_smallest(loss, torch.zeros(8, dtype=torch.bool), 4).tolist()) == [0, 1, 2, 3]
    # one smaller mask among eight: it keeps its place (its share rounds to 1) however large its loss
    assert sorted(selection.balanced_smallest(loss, torch.tensor([True] * 7 + [False]), 7).tolist()) == [
        0, 1, 2, 3, 4, 5, 7]


def test_select_without_larger_is_the_papers_and_trusted_stay_on_top():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(16, generator=g), torch.rand(16, generator=g)
    assert torch.equal(selection.select(a, b, 0.5, 0.25), selection.select(a, b, 0.5, 0.25, larger=None))
    larger = torch.arange(16) % 4 == 0  # a quarter of the batch errs larger
    kept = selection.select(a, b, 0.5, 0.25, larger=larger)
    assert len(kept) == 8 and int(larger[kept].sum()) == pytest.approx(8 * float(larger[
        torch.argsort(selection.uncertainty(a, b), stable=True)[:12]].float().mean()), abs=0.5)
    trusted = torch.zeros(16, dtype=torch.bool)
    trusted[[1, 2]] = True
    kept = selection.select(a, b, 0.5, 0.25, trusted=trusted, larger=larger)
    assert {1, 2} <= set(kept.tolist()) and len(kept) == 2 + round(0.5 * 14)


def test_larger_than_predicted_compares_the_mask_with_the_peers_mean_area():
    given = torch.zeros(2, 4, 4)
    given[0, :2] = 1  # 8 pixels
    given[1, :1] = 1  # 4 pixels
    probs = torch.zeros(2, 2, 4, 4)
    probs[:, 1] = 0.375  # 6 pixels expected
    area = selection.predicted_area(probs)
    assert area.tolist() == [6.0, 6.0]
    assert selection.larger_than_predicted(given, [area, area]).tolist() == [True, False]


@pytest.mark.parametrize("strategy, stage", [("ss", 1), ("crl", 2)])
def test_the_steppers_pass_each_nets_peers_area_sign_to_the_selection(strategy, stage, monkeypatch):
    for balance in (0, 1):
        cfg = TrainConfig(strategy=strategy, augment=False, balance_area=balance, **TINY)
        models = build_models(cfg, "cpu")
        stepper = make_stepper(cfg, models, [SGD(m.parameters(), lr=cfg.lr) for m in models], torch.device("cpu"))
        for m in models:
            m.train()
        x, y = (torch.as_tensor(v) for v in squares(8))
        y[:3, 1:15, 1:15] = 1  # masks larger than an untrained net's guess (about half the image) as well
        with torch.no_grad():  # the areas the stepper sees: the same nets, the same batch, before any update
            areas = [selection.predicted_area(torch.softmax(m(x), 1)) for m in models]
        seen, real = [], selection.select
        monkeypatch.setattr(selection, "select",
                            lambda *a, seen=seen, real=real, **k: seen.append(k.get("larger")) or real(*a, **k))
        stepper(x, y, stage, 0.5, 0, 0)
        assert len(seen) == 3
        for i, larger in enumerate(seen):
            if balance:
                expect = selection.larger_than_predicted(y, [areas[j] for j in peers(i)])
                assert torch.equal(larger, expect) and 0 < int(expect.sum()) < 8
            else:
                assert larger is None
        monkeypatch.setattr(selection, "select", real)


def _train(x, y, cfg, run_dir, stop_after=None, resume=False):
    saved, models = [], None
    stop = (lambda: len(saved) >= stop_after) if stop_after else None
    for ev in cascade.train(x, y, cfg, run_dir=run_dir, resume=resume, should_stop=stop):
        if isinstance(ev, cascade.CheckpointSaved):
            saved.append(copy.deepcopy(read_checkpoint(ev.path)["models"]))
        elif isinstance(ev, cascade.Finished):
            models = ev.models
    return models, saved


def _states_equal(models, state_dicts):
    return all(torch.allclose(a, b, atol=1e-6) for m, sd in zip(models, state_dicts, strict=True)
               for a, b in zip(m.state_dict().values(), sd.values(), strict=True))


def test_average_last_gives_the_mean_of_the_last_epochs_weights_and_resumes_to_it(tmp_path):
    x, y = squares(16)
    plain_cfg = TrainConfig(strategy="crl", k=2, **TINY)
    plain, per_epoch = _train(x, y, plain_cfg, tmp_path / "plain")
    avg = WeightAverage()
    for sd in per_epoch[-3:]:
        avg.add(sd)
    cfg = TrainConfig(strategy="crl", k=2, average_last=3, **TINY)
    averaged, _ = _train(x, y, cfg, tmp_path / "avg")
    assert _states_equal(averaged, avg.nets) and not _states_equal(averaged, per_epoch[-1])
    loaded, _ = cascade.load_models(tmp_path / "avg")  # what scoring reads: the averaged nets
    assert _states_equal(loaded, avg.nets)
    # training itself is unchanged: the epoch before the last is the plain run's
    assert _states_equal(build_and_load(cfg, per_epoch[-2]), per_epoch[-2])
    # stopped inside the averaging window (after epoch 2 of 4) and resumed: the same average
    _train(x, y, cfg, tmp_path / "stopped", stop_after=2)
    assert read_checkpoint(tmp_path / "stopped" / cascade.CHECKPOINT)["average"]["count"] == 1
    resumed, _ = _train(x, y, cfg, tmp_path / "stopped", resume=True)
    assert _states_equal(resumed, avg.nets)


def build_and_load(cfg, state_dicts):
    models = build_models(cfg, "cpu")
    for m, sd in zip(models, state_dicts, strict=True):
        m.load_state_dict(sd)
    return models


def test_a_damaged_weight_average_in_a_checkpoint_is_one_clear_error(tmp_path):
    x, y = squares(16)
    cfg = TrainConfig(strategy="crl", k=2, average_last=2, **TINY)
    _train(x, y, cfg, tmp_path / "run")
    path = tmp_path / "run" / cascade.CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    ckpt["average"]["nets"] = ckpt["average"]["nets"][:2]
    torch.save(ckpt, path)
    with pytest.raises(TrainingError, match=r"checkpoint.pt: its weight average does not hold one set of weights"):
        cascade.load_models(tmp_path / "run")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("data") / "set", n=12, size=64, noise_ratio=0.5, seed=3)


def test_a_run_folder_from_before_these_settings_resumes(dataset, tmp_path):
    """config.json and the checkpoint of an older version lack tta, average_last and balance_area: the run
    resumes with them off (the paper's method) and says nothing about settings that differ."""
    out = tmp_path / "run"
    cfg = TrainConfig(strategy="crl", epochs=3, k=1, batch_size=4, width=4, depth=2, lr=0.05)
    saved = []
    for ev in pipeline.train_run(dataset, out, cfg, size=32, should_stop=lambda: len(saved) >= 1):
        if isinstance(ev, cascade.CheckpointSaved):
            saved.append(ev.epoch)
    run = RunFolder(out)
    config = json.loads((out / CONFIG).read_text())
    for name in NEW:
        del config["train"][name]
    (out / CONFIG).write_text(json.dumps(config))
    ckpt = torch.load(out / cascade.CHECKPOINT, weights_only=True)
    for name in NEW:
        del ckpt["config"][name]
    torch.save(ckpt, out / cascade.CHECKPOINT)
    assert run.path == out
    assert cli.main(["train", str(dataset), "--out", str(out), "--resume", "--quiet"]) == 0
    run = RunFolder(out)
    assert [int(h["epoch"]) for h in run.history()] == [0, 1, 2] and run.has_scores
    assert (run.train_config.tta, run.train_config.average_last, run.train_config.balance_area) == (0, 0, 0)


def test_the_command_line_trains_with_the_options_and_scores_and_evaluates_with_flips(dataset, tmp_path):
    """--tta 1 --average-last 2 --balance-area 1 from the settings' help; evaluate and score predict with flips."""
    out = tmp_path / "run"
    assert cli.main(["train", str(dataset), "--out", str(out), "--strategy", "crl", "--k", "3", "--epochs", "6",
                     "--size", "32", "--width", "8", "--depth", "2", "--batch-size", "4", "--lr", "0.2",
                     "--simulate-noise", "0.5", "--tta", "1", "--average-last", "2", "--balance-area", "1",
                     "--quiet"]) == 0
    run = RunFolder(out)
    assert (run.train_config.tta, run.train_config.average_last, run.train_config.balance_area) == (1, 2, 1)
    assert read_checkpoint(out / cascade.CHECKPOINT)["average"]["count"] == 2
    models, _ = cascade.load_models(out)
    test = load_dataset(dataset, size=32).subset("test")
    result = pipeline.evaluate_run(out)
    with_flips = cascade.dice_score(cascade.predict(models, test.images(), tta=1), test.masks())
    without = cascade.dice_score(cascade.predict(models, test.images()), test.masks())
    assert result["dice_mean"] == pytest.approx(float(with_flips.mean()), abs=1e-6)
    assert not np.allclose(with_flips, without)
