"""TrainConfig.average_bn (ours, not the paper's): the averaged nets' BatchNorm statistics recomputed by one pass over
the training images. The pass is torch's own update_bn on real tiny nets; the run's checkpoint says which statistics
it holds, and a run stopped before the pass, or resumed after it, ends with the same nets."""

import copy

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import update_bn

from crl_napari import cascade, cli
from crl_napari.cache import CacheProgress
from crl_napari.checkpoint import read_checkpoint
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder
from crl_napari.settings import SETTING_HELP, TrainConfig, TrainingError
from crl_napari.unet import build_models
from crl_napari.weight_average import WeightAverage, pass_batches, recompute_batchnorm, update_batchnorm

TINY = dict(strategy="crl", k=2, epochs=3, batch_size=8, width=4, depth=2, lr=0.05, device="cpu")
RECOMPUTING = "recomputing the BatchNorm statistics:"
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets


def _images(n: int = 13, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        a = int(rng.integers(2, 6))
        y[i, a : size - a, a + 1 : size - a] = 1
    x = (rng.normal(0, 0.3, (n, 1, size, size)) + y[:, None]).astype(np.float32)
    return x, y


def _bn_buffers(models) -> list[torch.Tensor]:
    return [v.clone() for m in models for k, v in m.state_dict().items() if "running_" in k]


def _trained_nets(seed: int = 0):
    """Three tiny nets whose BatchNorm statistics are not those of one pass (a few noisy forwards in train mode)."""
    torch.manual_seed(seed)
    models = build_models(TrainConfig(**TINY), "cpu")
    with torch.no_grad():
        for m in models:
            m.train()
            for _ in range(3):
                m(torch.randn(4, 1, 16, 16) * 3 + 1)
            m.eval()
    return models


def test_the_setting_is_off_by_default_needs_an_average_and_is_explained():
    assert TrainConfig().average_bn == 0
    assert "ours, not the paper's" in SETTING_HELP["average_bn"] and "update_bn" in SETTING_HELP["average_bn"]
    with pytest.raises(TrainingError, match=r"average_bn = 1 recomputes .* needs average_last > 0") as err:
        TrainConfig(average_bn=1)
    assert "\n" not in str(err.value)
    with pytest.raises(TrainingError, match=r"average_bn must be in \[0, 1\], got 2"):
        TrainConfig(average_last=2, average_bn=2)
    assert TrainConfig(epochs=4, average_last=2, average_bn=1).average_bn == 1


def test_the_pass_gives_torch_update_bn_statistics_and_puts_back_momentum_and_mode():
    x, _ = _images()
    ours, theirs = _trained_nets(), _trained_nets()
    batches = [torch.as_tensor(x[i : i + 4]) for i in range(0, len(x), 4)]
    before = _bn_buffers(ours)
    ours[1].train()  # each net's mode is its own again after the pass
    done = list(recompute_batchnorm(ours, iter(batches)))
    assert done == [4, 8, 12, 13]
    for m in theirs:
        update_bn(batches, m)
    for a, b in zip(_bn_buffers(ours), _bn_buffers(theirs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(ours), strict=True))
    assert [m.training for m in ours] == [False, True, False]
    bns = [b for m in ours for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bns and all(b.momentum == 0.1 for b in bns)


def test_a_stop_between_batches_puts_the_statistics_back():
    x, _ = _images()
    models = _trained_nets()
    before = _bn_buffers(models)
    asked = []
    pass_ = recompute_batchnorm(models, (torch.as_tensor(x[i : i + 4]) for i in range(0, 12, 4)),
                                should_stop=lambda: bool(asked))
    assert next(pass_) == 4
    asked.append(True)
    assert list(pass_) == []
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(models), strict=True))
    assert all(b.momentum == 0.1 for m in models for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))


def _train(x, y, cfg, run_dir, resume=False, should_stop=None):
    events = list(cascade.train(x, y, cfg, run_dir=run_dir, resume=resume, should_stop=should_stop))
    return events, events[-1]


def _equal_nets(a, b) -> bool:
    return all(torch.equal(p, q) for m, n in zip(a, b, strict=True)
               for p, q in zip(m.state_dict().values(), n.state_dict().values(), strict=True))


def test_training_recomputes_the_averaged_nets_statistics_and_a_resume_ends_with_the_same_nets(tmp_path):
    x, y = _images()
    cfg = TrainConfig(**TINY, average_last=2, average_bn=1)
    events, end = _train(x, y, cfg, tmp_path / "run")
    assert not end.stopped
    shown = [e for e in events if isinstance(e, CacheProgress)]
    # 13 images by batches of 8: 8, then the last 5 (a single last image would join the batch before)
    assert [(e.done, e.total, e.what) for e in shown] == [(8, 13, RECOMPUTING), (13, 13, RECOMPUTING)]
    ckpt = read_checkpoint(tmp_path / "run" / cascade.CHECKPOINT)
    assert ckpt["average"]["batchnorm_recomputed"] is True and ckpt["epoch"] == cfg.epochs - 1
    assert ckpt["history_line"]["epoch"] == cfg.epochs - 1
    # the nets are the averaged weights with the statistics of one pass over the images, as update_bn gives them
    expected = build_models(cfg, "cpu")
    WeightAverage.from_state(ckpt["average"]).load_into(expected)
    averaged_stats = _bn_buffers(expected)
    for m in expected:
        update_bn([torch.as_tensor(x[:8]), torch.as_tensor(x[8:])], m)
    assert _equal_nets(end.models, expected)
    assert not all(torch.equal(a, b) for a, b in zip(averaged_stats, _bn_buffers(end.models), strict=True))
    loaded, _ = cascade.load_models(tmp_path / "run")  # what scoring and the review read
    assert _equal_nets(loaded, expected)

    # stopped during the pass: the checkpoint keeps the averaged statistics and says so; the resume makes the pass
    seen = []
    events = []
    for ev in cascade.train(x, y, cfg, run_dir=tmp_path / "stopped", should_stop=lambda: bool(seen)):
        events.append(ev)
        if isinstance(ev, cascade.CheckpointSaved) and ev.epoch == cfg.epochs - 1:
            seen.append(ev)  # a stop asked once the last epoch is saved: before the first batch of the pass
    end = events[-1]
    assert end.stopped
    ckpt = read_checkpoint(tmp_path / "stopped" / cascade.CHECKPOINT)
    assert "batchnorm_recomputed" not in ckpt["average"] and ckpt["epoch"] == cfg.epochs - 1
    assert not any(isinstance(e, CacheProgress) for e in events)
    events, end = _train(x, y, cfg, tmp_path / "stopped", resume=True)
    assert [e.done for e in events if isinstance(e, CacheProgress)] == [8, 13] and not end.stopped
    assert _equal_nets(end.models, expected)
    assert read_checkpoint(tmp_path / "stopped" / cascade.CHECKPOINT)["average"]["batchnorm_recomputed"] is True

    # resumed after the pass: nothing is recomputed again, the same nets
    events, end = _train(x, y, cfg, tmp_path / "run", resume=True)
    assert not any(isinstance(e, CacheProgress) for e in events) and _equal_nets(end.models, expected)


def test_a_stop_asked_during_the_pass_keeps_the_averaged_checkpoint(tmp_path):
    x, y = _images(n=24)
    cfg = TrainConfig(**TINY, average_last=2, average_bn=1)
    asked = []

    def stop():
        return bool(asked)

    events = []
    for ev in cascade.train(x, y, cfg, run_dir=tmp_path / "run", should_stop=stop):
        events.append(ev)
        if isinstance(ev, CacheProgress):
            asked.append(True)  # after the first batch of the pass
    assert events[-1].stopped and [e.done for e in events if isinstance(e, CacheProgress)] == [8]
    ckpt = read_checkpoint(tmp_path / "run" / cascade.CHECKPOINT)
    assert "batchnorm_recomputed" not in ckpt["average"]
    averaged = build_models(cfg, "cpu")
    WeightAverage.from_state(ckpt["average"]).load_into(averaged)
    assert _equal_nets(events[-1].models, averaged)  # the stopped pass put the averaged statistics back


def test_a_damaged_marker_in_a_checkpoint_is_one_clear_error(tmp_path):
    x, y = _images()
    cfg = TrainConfig(**TINY, average_last=2, average_bn=1)
    _train(x, y, cfg, tmp_path / "run")
    path = tmp_path / "run" / cascade.CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    ckpt["average"]["batchnorm_recomputed"] = "yes"
    torch.save(ckpt, path)
    with pytest.raises(TrainingError, match=r"checkpoint.pt: its weight average's batchnorm_recomputed must be true"):
        _train(x, y, cfg, tmp_path / "run", resume=True)


def test_the_pass_cuts_batches_in_order_and_keeps_no_single_image_at_a_one_pixel_bottom():
    assert pass_batches(17, 8) == [range(0, 8), range(8, 16), range(16, 17)]  # as the benchmark always cut them
    assert pass_batches(17, 8, one_pixel_bottom=True) == [range(0, 8), range(8, 17)]
    assert pass_batches(16, 8, one_pixel_bottom=True) == [range(0, 8), range(8, 16)]
    assert pass_batches(3, 8, one_pixel_bottom=True) == [range(0, 3)]


def test_update_batchnorm_is_the_whole_pass():
    x, _ = _images()
    a, b = _trained_nets(), _trained_nets()
    update_batchnorm(a, [torch.as_tensor(x)])
    list(recompute_batchnorm(b, [torch.as_tensor(x)]))
    assert _equal_nets(a, b) and not _equal_nets(a, _trained_nets())


def test_the_command_line_trains_with_average_bn(tmp_path, capsys):
    data = write_sample_set(tmp_path / "set", n=12, size=64, noise_ratio=0.5, seed=3)
    out = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(out), "--strategy", "crl", "--k", "1", "--epochs", "2",
                     "--size", "32", "--width", "4", "--depth", "2", "--batch-size", "4", "--lr", "0.05",
                     "--average-last", "1", "--average-bn", "1", "--quiet"]) == 0
    run = RunFolder(out)
    assert run.train_config.average_bn == 1 and run.has_scores
    assert read_checkpoint(out / cascade.CHECKPOINT)["average"]["batchnorm_recomputed"] is True
    assert cli.main(["train", str(data), "--out", str(tmp_path / "bad"), "--average-bn", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs average_last > 0" in err and "Traceback" not in err and not (tmp_path / "bad").exists()


def test_copies_keep_the_originals_statistics():
    """The benchmark recomputes on copies of its averaged nets (copy.deepcopy): the originals stay as they are."""
    x, _ = _images()
    models = _trained_nets()
    before = _bn_buffers(models)
    copies = [copy.deepcopy(m) for m in models]
    update_batchnorm(copies, [torch.as_tensor(x)])
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(models), strict=True))


def test_under_torchrun_every_rank_takes_the_statistics_of_one_pass_over_all_images(tmp_path):
    """Two processes: the checkpoint (rank 0) holds the statistics of one pass over every training image, and
    rank 1 scored its share with the same nets (its scores equal one process's rescoring of the run)."""
    import csv
    import shutil

    from test_distributed import TINY as DDP_TINY
    from test_distributed import torchrun

    from crl_napari import run_data, runs

    data = write_sample_set(tmp_path / "set", n=16, size=32, noise_ratio=0.0, seed=3)
    res = torchrun(2, "train", str(data), "--out", "run", "--epochs", "2", *DDP_TINY, "--average-last", "1",
                   "--average-bn", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "run"
    assert read_checkpoint(out / cascade.CHECKPOINT)["average"]["batchnorm_recomputed"] is True
    run = RunFolder(out)
    rows = run.case_rows()
    image = run_data.image_reader(run, rows, 32)
    images = np.stack([image(i) for i in range(len(rows))])[:, None].astype(np.float32)
    loaded, cfg = cascade.load_models(out, "cpu")
    again = copy.deepcopy(loaded)
    batches = pass_batches(len(images), cfg.batch_size)
    update_batchnorm(again, (torch.as_tensor(images[b.start : b.stop]) for b in batches))
    for a, b in zip(_bn_buffers(loaded), _bn_buffers(again), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    def suspicion(path):
        with open(path / runs.SCORES, newline="") as fh:
            return {r["id"]: float(r["suspicion"]) for r in csv.DictReader(fh)}

    shutil.copytree(out, tmp_path / "rescored")
    assert cli.main(["score", str(tmp_path / "rescored")]) == 0
    theirs, ours = suspicion(out), suspicion(tmp_path / "rescored")
    assert theirs.keys() == ours.keys() and len(ours) == len(rows)
    assert all(abs(theirs[k] - ours[k]) < 1e-5 for k in ours)
