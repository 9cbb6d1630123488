"""A checkpoint is checked before any net is built: every bad one is one line naming the file and the fault.

Each test writes a real checkpoint with the project's own save (a one-epoch tiny run), then tampers with it.
"""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from crl_napari import cascade
from crl_napari.cascade import expected_state, load_models, read_checkpoint, save_checkpoint
from crl_napari.runs import CHECKPOINT
from crl_napari.settings import TrainConfig, TrainingError
from crl_napari.sgd import SGD
from crl_napari.unet import UNet, build_models

CFG = TrainConfig(strategy="ss", epochs=2, batch_size=4, width=4, depth=2, lr=0.05, device="cpu", threads=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real run's checkpoint after one epoch (momentum buffers included), as a loaded dict."""
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    y = (rng.random((8, 16, 16)) > 0.5).astype(np.uint8)
    x = (y + rng.normal(0, 0.3, y.shape)).astype(np.float32)[:, None]
    for ev in cascade.train(x, y, CFG, run_dir=run):
        if isinstance(ev, cascade.CheckpointSaved):
            break
    return read_checkpoint(run / CHECKPOINT)


def tampered(tmp_path, ckpt, change):
    """Write ``ckpt`` changed by ``change`` where a run's checkpoint lives; the folder."""
    ckpt = {k: v for k, v in ckpt.items()}
    ckpt["config"] = dict(ckpt["config"])
    ckpt["models"] = [dict(sd) for sd in ckpt["models"]]
    change(ckpt)
    torch.save(ckpt, tmp_path / CHECKPOINT)
    return tmp_path


def _set(path, value):
    def change(ckpt):
        *head, last = path
        target = ckpt
        for key in head:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value
    return change


BAD = {
    "wrong shape": (_set(("models", 0, "inc.0.weight"), lambda t: torch.zeros(8, 1, 3, 3)),
                    "net 1: the weights do not match the configuration (width 4, depth 2): inc.0.weight has shape "
                    "(8, 1, 3, 3), expected (4, 1, 3, 3)"),
    "NaN weight": (_set(("models", 2, "head.weight"), lambda t: torch.full_like(t, float("nan"))),
                   "net 3: head.weight holds NaN or infinite values"),
    "inf weight": (_set(("models", 1, "inc.1.running_var"), lambda t: torch.full_like(t, float("inf"))),
                   "net 2: inc.1.running_var holds NaN or infinite values"),
    "huge width": (_set(("config", "width"), 10**6), "its settings are not valid: invalid training configuration: "
                   "width must be in [1, 256], got 1000000"),
    "other width": (_set(("config", "width"), 8), "the weights do not match the configuration (width 8"),
    "missing tensor": (_set(("models", 0, "head.bias"), KeyError), "missing ['head.bias']"),
    "extra tensor": (_set(("models", 0, "evil"), torch.zeros(1)), "unexpected ['evil']"),
    "missing nets": (_set(("models",), KeyError), "the checkpoint has no models"),
    "non-tensor value": (_set(("models", 1, "head.bias"), [0.0, 1.0]), "net 2: head.bias is a list, not a tensor"),
    "integer weights": (_set(("models", 0, "head.weight"), lambda t: t.long()),
                        "head.weight is torch.int64, expected torch.float32"),
    "a net too few": (_set(("models",), lambda nets: nets[:2]), "holds 2 nets, strategy ss needs 3"),
    "not a state_dict": (_set(("models", 0), "weights"), "net 1: its weights are a str, not a state_dict"),
    "epoch out of range": (_set(("epoch",), 7), "epoch 7 is not an epoch of a 2-epoch run"),
    "config not a dict": (_set(("config",), [1, 2]), "training settings must be a mapping"),
    "bad momentum buffer": (_set(("optimizers", 0, "state", 0), {"momentum_buffer": torch.zeros(3)}),
                            "optimiser 1: the momentum buffer of parameter 0 does not fit the net"),
    "optimiser for other params": (_set(("optimizers", 1, "param_groups", 0, "params"), [0, 1]),
                                   "optimiser 2: its parameters are not the net's"),
}


@pytest.mark.parametrize("fault", list(BAD))
def test_a_bad_checkpoint_is_one_line_naming_the_file_and_the_fault(fault, saved, tmp_path):
    change, message = BAD[fault]
    if fault.startswith(("bad momentum", "optimiser")):  # deep-copy what the change reaches into
        saved = {**saved, "optimizers": [{"state": {k: dict(v) for k, v in o["state"].items()},
                                          "param_groups": [dict(g) for g in o["param_groups"]]}
                                         for o in saved["optimizers"]]}
    run = tampered(tmp_path, saved, change)
    for read in (lambda: read_checkpoint(run / CHECKPOINT), lambda: load_models(run)):
        with pytest.raises(TrainingError) as info:
            read()
        text = str(info.value)
        assert text.startswith(f"{run / CHECKPOINT}: ") and message in text and "\n" not in text, text


def test_the_untouched_checkpoint_loads_and_the_previous_release_too(saved, tmp_path):
    run = tampered(tmp_path, saved, lambda c: None)
    models, config = load_models(run, "cpu")
    assert config == CFG and len(models) == 3 and not models[0].training
    # a checkpoint written before `threads` existed has no such setting
    run = tampered(tmp_path, saved, _set(("config", "threads"), KeyError))
    assert load_models(run, "cpu")[1].threads is None


def test_a_huge_width_is_refused_before_any_net_is_built(saved, tmp_path, monkeypatch):
    """The expected shapes come from the meta device: no U-Net of the file's width is ever allocated."""
    built = []
    real_init = UNet.__init__

    def init(self, *args, **kwargs):
        built.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "__init__", init)
    run = tampered(tmp_path, saved, _set(("config", "width"), 256))
    run_cfg = TrainConfig.from_dict(dict(saved["config"], width=256))
    with pytest.raises(TrainingError, match="do not match the configuration"):
        load_models(run, "cpu")
    assert built == [(1, 2, 256, 2)]  # once, on the meta device, for the shapes
    shapes = expected_state(run_cfg)
    assert shapes["inc.0.weight"] == ((256, 1, 3, 3), torch.float32)


def test_saved_and_read_back_is_the_same(tmp_path):
    models = build_models(CFG, "cpu")
    path = save_checkpoint(tmp_path, models, [SGD(m.parameters(), lr=0.1) for m in models], CFG, 1)
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 1 and ckpt["config"] == asdict(CFG)
    for m, sd in zip(models, ckpt["models"], strict=True):
        assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())


@pytest.fixture
def stopped_run(tmp_path):
    """A real run (pipeline.train_run on the phantom set) stopped after its second epoch's checkpoint."""
    from crl_napari import pipeline
    from crl_napari.phantoms import write_sample_set

    data = write_sample_set(tmp_path / "data", n=8, size=32, noise_ratio=0.5, seed=1)
    cfg = TrainConfig(strategy="crl", epochs=4, batch_size=4, width=4, depth=2, lr=0.05, device="cpu", threads=1)
    saved = []

    def stop() -> bool:
        return len(saved) >= 2

    for ev in pipeline.train_run(data, tmp_path / "run", cfg, size=32, should_stop=stop):
        if isinstance(ev, cascade.CheckpointSaved):
            saved.append(ev.epoch)
    return data, tmp_path / "run"


def test_a_resume_reads_the_weights_once_and_a_line_lost_to_a_kill_comes_back(stopped_run, monkeypatch):
    """A kill between the checkpoint and history.csv (the history follows its checkpoint) leaves the epoch's
    line only in the checkpoint: the resume puts it back. The worker's path (runs.open_for_resume, then the
    pipeline's own under the lock, then the loop) reads the tensors of the checkpoint once; the checks before
    only map the file."""
    from crl_napari import pipeline, runs

    data, run = stopped_run
    full = runs.RunFolder(run).history()
    assert [int(h["epoch"]) for h in full] == [0, 1]
    lines = (run / runs.HISTORY).read_text().splitlines(keepends=True)
    (run / runs.HISTORY).write_text("".join(lines[:-1]))  # as a kill after the checkpoint of epoch 2 leaves it

    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append("mapped" if kwargs.get("mmap") else "read")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    plan = runs.open_for_resume(run)
    assert plan.start_epoch == 2 and [h.as_dict() for h in plan.history] == full
    for _ in pipeline.train_run(data, run, resume=True):
        pass
    assert loads.count("read") == 1 and loads.count("mapped") >= 2, loads
    history = runs.RunFolder(run).history()
    assert [int(h["epoch"]) for h in history] == [0, 1, 2, 3] and history[:2] == full


def test_a_history_line_that_is_not_numbers_is_refused_naming_the_file(stopped_run):
    from crl_napari import runs

    _data, run = stopped_run
    ckpt = read_checkpoint(run / CHECKPOINT)
    torch.save({**ckpt, "history_line": {"epoch": "1; rm -rf"}}, run / CHECKPOINT)
    with pytest.raises(TrainingError, match=f"{run / CHECKPOINT}: its history line is not a row of numbers"):
        runs.open_for_resume(run)
    torch.save({**ckpt, "history_line": {**ckpt["history_line"], "epoch": 0}}, run / CHECKPOINT)
    (run / runs.HISTORY).write_text("epoch,stage,selected\n")
    with pytest.raises(runs.RunError, match="its history line is of epoch 0, not of its own epoch 1"):
        runs.open_for_resume(run)


def test_read_meta_maps_the_file_and_reads_one_it_cannot_map(saved, tmp_path):
    """read_meta checks what read_checkpoint checks but the tensors; a file torch cannot map (the legacy
    serialisation) is read as a whole instead of being refused."""
    from crl_napari.checkpoint import read_meta

    torch.save(saved, tmp_path / "zip.pt")
    torch.save(saved, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        meta = read_meta(tmp_path / name)
        assert meta["epoch"] == saved["epoch"] == 0 and meta["config"] == saved["config"]
        assert meta["history_line"] == saved["history_line"] and meta["history_line"]["epoch"] == 0
    torch.save({**saved, "epoch": 7}, tmp_path / "late.pt")
    with pytest.raises(TrainingError, match=r"late\.pt: epoch 7 is not an epoch of a 2-epoch run"):
        read_meta(tmp_path / "late.pt")
