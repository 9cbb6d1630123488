"""The training loop: events, every strategy, stage 2, resume to the same result, safe checkpoints."""

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from crl_napari import cascade
from crl_napari.cascade import TrainConfig, TrainingError
from crl_napari.strategies import drop_fraction

TINY = dict(epochs=3, batch_size=4, width=4, depth=2, lr=0.05, lr_decay=0.95, device="cpu")


def disks(n: int = 12, size: int = 32, seed: int = 0):
    """Images of a bright disk on noise; the mask is the disk. Learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = m * 1.0 + rng.normal(0, 0.3, m.shape)
        imgs.append((img - img.mean()) / img.std())
        masks.append(m)
    return np.stack(imgs)[:, None].astype(np.float32), np.stack(masks).astype(np.uint8)


def run(config, images, masks, **kw):
    return list(cascade.train(images, masks, config, **kw))


@pytest.mark.parametrize("strategy", cascade.STRATEGIES)
def test_every_strategy_trains_and_emits_events(strategy):
    x, y = disks()
    cfg = TrainConfig(strategy=strategy, k=1, **TINY)
    events = run(cfg, x, y, val=(x[:4], y[:4]))
    assert isinstance(events[0], cascade.Started) and events[0].steps_per_epoch == 3
    assert isinstance(events[-1], cascade.Finished) and not events[-1].stopped
    ends = [e for e in events if isinstance(e, cascade.EpochEnd)]
    assert [e.epoch for e in ends] == [0, 1, 2]
    assert len(events[-1].models) == cascade.N_NETS[strategy]
    assert all(len(e.losses) == cascade.N_NETS[strategy] for e in ends)
    assert ends[-1].val_dice is not None and 0 <= ends[-1].val_dice <= 1
    assert np.mean(ends[-1].losses) < np.mean(ends[0].losses)
    steps = [e for e in events if isinstance(e, cascade.Step)]
    assert len(steps) == 9
    if strategy == "crl":
        changes = [e for e in events if isinstance(e, cascade.StageChanged)]
        assert [(c.epoch, c.stage) for c in changes] == [(1, 2)]
        assert [e.stage for e in ends] == [1, 2, 2]
    if strategy in ("ss", "crl", "coteaching"):
        # selection ramps up: by the last epoch each net learns from half the batch (2 of 4)
        assert ends[-1].selected == pytest.approx(0.5)


def test_selection_ramp_starts_by_keeping_everything():
    cfg = TrainConfig(strategy="ss", epochs=10, ramp=0.5, keep_ratio=0.5)
    fractions = [drop_fraction(cfg, e) for e in range(10)]
    assert fractions[0] == pytest.approx(0.1) and fractions[4:] == [pytest.approx(0.5)] * 6
    assert all(a <= b for a, b in zip(fractions, fractions[1:], strict=False))


def test_joint_all_mode_trains():
    x, y = disks()
    events = run(TrainConfig(strategy="crl", k=0, joint="all", **TINY), x, y)
    ends = [e for e in events if isinstance(e, cascade.EpochEnd)]
    assert all(e.stage == 2 and e.selected == 0.0 for e in ends)


def test_predict_is_mean_of_peer_probabilities():
    x, y = disks()
    models = run(TrainConfig(strategy="ss", **TINY), x, y)[-1].models
    peers = cascade.peer_probs(models, x)
    assert peers.shape == (3, 12, 32, 32)
    assert np.allclose(cascade.predict(models, x), peers.mean(0), atol=1e-6)
    assert cascade.dice_score(cascade.predict(models, x), y).mean() > 0.6


def test_should_stop_ends_between_steps():
    x, y = disks()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    events = run(TrainConfig(strategy="crl", **TINY), x, y, should_stop=stop)
    assert isinstance(events[-1], cascade.Finished) and events[-1].stopped
    assert len([e for e in events if isinstance(e, cascade.Step)]) == 2


def test_a_misspelt_option_is_refused_not_ignored(tmp_path):
    """train's options are keywords (cascade.TrainOptions); one it does not know must not pass silently."""
    x, y = disks()
    with pytest.raises(TypeError, match="unexpected keyword arguments: resmue"):
        run(TrainConfig(strategy="vanilla", **TINY), x, y, run_dir=tmp_path, resmue=True)
    assert not tmp_path.joinpath(cascade.CHECKPOINT).exists()


def test_resume_gives_the_same_result(tmp_path):
    x, y = disks()
    cfg = TrainConfig(strategy="crl", k=1, **TINY)
    full = run(cfg, x, y, run_dir=tmp_path / "a")[-1].models

    seen = []  # stop as soon as the first checkpoint is written: an interrupted run
    gen = cascade.train(x, y, cfg, run_dir=tmp_path / "c", should_stop=lambda: bool(seen))
    for ev in gen:
        if isinstance(ev, cascade.CheckpointSaved):
            seen.append(ev.epoch)
    assert seen == [0]
    assert cascade.read_checkpoint(tmp_path / "c" / cascade.CHECKPOINT)["epoch"] == 0
    resumed_events = run(cfg, x, y, run_dir=tmp_path / "c", resume=True)
    assert resumed_events[0].start_epoch == 1
    resumed = resumed_events[-1].models
    for a, b in zip(full, resumed, strict=True):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb
            assert torch.allclose(va.float(), vb.float(), atol=1e-5), ka


def test_resume_with_other_settings_is_refused(tmp_path):
    x, y = disks()
    cfg = TrainConfig(strategy="vanilla", **{**TINY, "epochs": 1})
    run(cfg, x, y, run_dir=tmp_path)
    with pytest.raises(TrainingError, match="other settings"):
        run(replace(cfg, lr=0.1, epochs=2), x, y, run_dir=tmp_path, resume=True)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    x, y = disks()
    cfg = TrainConfig(strategy="crl", **{**TINY, "epochs": 2})
    seen = []
    for ev in cascade.train(x, y, cfg, run_dir=tmp_path, should_stop=lambda: bool(seen)):
        if isinstance(ev, cascade.CheckpointSaved):
            seen.append(ev.epoch)
    before = (tmp_path / cascade.CHECKPOINT).read_bytes()
    bad = x.copy()
    bad[:] = np.nan
    with pytest.raises(TrainingError, match="loss became nan.*last good checkpoint"):
        run(cfg, bad, y, run_dir=tmp_path, resume=True)
    assert (tmp_path / cascade.CHECKPOINT).read_bytes() == before
    models, loaded = cascade.load_models(tmp_path)
    assert loaded == cfg and len(models) == 3


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_checkpoint_with_pickled_code_is_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / cascade.CHECKPOINT
    torch.save({"format": 1, "epoch": 0, "config": {}, "models": [_Evil()]}, path, pickle_module=pickle)
    with pytest.raises(TrainingError, match="not a loadable"):
        cascade.load_models(tmp_path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_checkpoint_from_other_config_is_refused(tmp_path):
    x, y = disks()
    run(TrainConfig(strategy="vanilla", **{**TINY, "epochs": 1}), x, y, run_dir=tmp_path)
    ckpt = cascade.read_checkpoint(tmp_path / cascade.CHECKPOINT)
    ckpt["config"]["width"] = 8
    torch.save(ckpt, tmp_path / cascade.CHECKPOINT)
    with pytest.raises(TrainingError, match="do not match"):
        cascade.load_models(tmp_path)
    ckpt["config"]["brand_new_setting"] = 1
    torch.save(ckpt, tmp_path / cascade.CHECKPOINT)
    with pytest.raises(TrainingError, match="unknown training settings"):
        cascade.load_models(tmp_path)
    ckpt["format"] = 99
    torch.save(ckpt, tmp_path / cascade.CHECKPOINT)
    with pytest.raises(TrainingError, match="unknown checkpoint format"):
        cascade.load_models(tmp_path)


def test_bad_configuration_is_explained():
    with pytest.raises(TrainingError, match="strategy must be one of"):
        TrainConfig(strategy="magic")
    with pytest.raises(TrainingError, match="keep_ratio"):
        TrainConfig(keep_ratio=0.8, drop_uncertain=0.5)


def test_pick_device_prefers_accelerators():
    dev = cascade.pick_device()
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert dev.type == expected
    assert cascade.pick_device("cpu").type == "cpu"


def _twins(seed: int = 0):
    """Two identical small nets and a fixed batch."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1))
    twin = pickle.loads(pickle.dumps(net))
    x = torch.randn(6, 1, 16, 16)
    y = (torch.rand(6, 16, 16) > 0.5).long()
    return net, twin, x, y


def _sgd_step(net, opt, x, y, lr):
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def test_sgd_is_torch_sgd_step_for_step_and_shares_its_checkpoints():
    """The engine's SGD (which spares torch.optim's 2-3 s import of torch._dynamo) updates bit for bit like
    torch.optim.SGD with the paper's momentum and weight decay, and each loads the other's state."""
    from crl_napari.sgd import SGD

    net, twin, x, y = _twins()
    ours = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    ref = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for step in range(6):
        lr = 0.1 * 0.95**step  # the exponential decay, set through param_groups as the loop does
        _sgd_step(net, ours, x, y, lr)
        _sgd_step(twin, ref, x, y, lr)
        for a, b in zip(net.parameters(), twin.parameters(), strict=True):
            assert torch.equal(a, b), f"step {step}"

    # a checkpoint of either kind continues the same in both kinds
    for state in (ours.state_dict(), ref.state_dict()):
        runs = []
        for kind in (SGD, torch.optim.SGD):
            model = _twins()[0]
            model.load_state_dict(net.state_dict())
            opt = kind(model.parameters(), lr=1.0)
            opt.load_state_dict(pickle.loads(pickle.dumps(state)))  # as through a checkpoint file
            assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-3
            for _ in range(3):
                _sgd_step(model, opt, x, y, 0.05)
            runs.append(list(model.parameters()))
        for p, q in zip(*runs, strict=True):
            assert torch.equal(p, q)
    with pytest.raises(ValueError, match="other parameters"):
        SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1).load_state_dict(ours.state_dict())


def test_training_does_not_import_torch_dynamo():
    """The point of crl_napari.sgd: a whole run (both stages, a checkpoint) never pays torch._dynamo's import."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile, numpy as np\n"
        "from crl_napari import cascade\n"
        "cfg = cascade.TrainConfig(strategy='crl', epochs=2, k=1, batch_size=4, width=4, depth=2, device='cpu')\n"
        "x = np.random.rand(8, 1, 32, 32).astype(np.float32)\n"
        "for ev in cascade.train(x, x[:, 0] > 0.5, cfg, run_dir=tempfile.mkdtemp()):\n"
        "    pass\n"
        "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "no dynamo"


def test_checkpoint_streams_into_a_temp_file_and_a_failed_write_keeps_the_last_one(tmp_path, monkeypatch):
    """save_checkpoint writes through atomic_write (no in-memory copy): a save that fails midway leaves the
    previous checkpoint whole and no temp file."""
    from crl_napari.sgd import SGD

    x, y = disks()
    cfg = TrainConfig(strategy="crl", k=1, **TINY)
    for _ in cascade.train(x, y, cfg, run_dir=tmp_path):
        pass
    before = (tmp_path / cascade.CHECKPOINT).read_bytes()

    def half(obj, fh):  # torch.save running out of disk midway through the stream
        fh.write(before[:100])
        raise OSError("no space left on device")

    models = cascade.build_models(cfg, torch.device("cpu"))
    monkeypatch.setattr(cascade.torch, "save", half)
    with pytest.raises(OSError, match="no space"):
        cascade.save_checkpoint(tmp_path, models, [SGD(m.parameters(), lr=0.1) for m in models], cfg, 7)
    monkeypatch.undo()
    assert (tmp_path / cascade.CHECKPOINT).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    ckpt = cascade.read_checkpoint(tmp_path / cascade.CHECKPOINT)
    assert ckpt["epoch"] == TINY["epochs"] - 1 and len(ckpt["models"]) == 3


def test_grad_scaler_drives_the_engine_sgd():
    """Mixed precision on CUDA steps the optimiser through torch.amp.GradScaler; its CPU twin runs the same
    unscale / inf-check / step code, so the engine's SGD must work under it (here: the updates match)."""
    from crl_napari.sgd import SGD

    net, twin, x, y = _twins()
    plain = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scaled = SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=True)
    for _ in range(3):
        _sgd_step(net, plain, x, y, 0.1)
        scaled.zero_grad(set_to_none=True)
        scaler.scale(torch.nn.functional.cross_entropy(twin(x), y)).backward()
        scaler.step(scaled)
        scaler.update()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(scaled.state) == len(list(twin.parameters()))


def test_bad_size_or_setting_is_refused_before_the_run_folder_is_made(tmp_path):
    x, y = disks(n=4, size=32)
    cfg = TrainConfig(strategy="vanilla", **{**TINY, "depth": 3})
    with pytest.raises(TrainingError, match=r"image size 36 is not a multiple of 2\*\*depth = 8"):
        run(cfg, np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), np.pad(y, ((0, 0), (2, 2), (2, 2))),
            run_dir=tmp_path / "run")
    cfg.width = 10**6  # changed after construction: train checks again
    with pytest.raises(TrainingError, match="width must be in"):
        run(cfg, x, y, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_threads_apply_while_training_and_amp_is_reported_as_used_or_not(tmp_path):
    x, y = disks(n=4)
    before = torch.get_num_threads()
    seen = []
    for ev in cascade.train(x, y, TrainConfig(strategy="vanilla", threads=1, **{**TINY, "epochs": 1})):
        seen.append(torch.get_num_threads())
        if isinstance(ev, cascade.Started):
            started = ev
    assert set(seen) == {1} and started.threads == 1 and torch.get_num_threads() == before
    assert started.config.amp and started.amp is False  # asked for, but only cuda uses it


def test_resume_may_change_threads_but_nothing_that_changes_the_result(tmp_path):
    x, y = disks(n=4)
    cfg = TrainConfig(strategy="vanilla", threads=1, **{**TINY, "epochs": 2})
    seen = []
    for ev in cascade.train(x, y, cfg, run_dir=tmp_path, should_stop=lambda: bool(seen)):
        if isinstance(ev, cascade.CheckpointSaved):
            seen.append(ev)
    events = run(replace(cfg, threads=2), x, y, run_dir=tmp_path, resume=True)
    assert events[0].start_epoch == 1 and events[0].threads == 2 and not events[-1].stopped


def test_dice_of_two_empty_masks_is_a_perfect_match_everywhere():
    from crl_napari import selection

    empty = np.zeros((1, 8, 8))
    full = np.ones((1, 8, 8))
    assert cascade.dice_score(empty, empty)[0] == 1.0
    assert selection.dice(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))[0] == 1.0
    assert cascade.dice_score(empty, full)[0] == 0.0 and cascade.dice_score(full, full)[0] == pytest.approx(1.0)
