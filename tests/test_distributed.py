"""Training and scoring under torchrun (gloo, CPU, two processes): the run folder is written by rank 0 alone and
is complete, the checkpoint loads, distributed scoring equals one process's, a resume works, world size 1 equals
the plain path (either selection), DDP's gradients are the mean of the shards' gradients, global selection picks
and steps as one process on the whole batch, and bad set-ups (SyncBatchNorm on CPU) stop every rank with one
line. Each launch is a real ``python -m torch.distributed.run ... -m crl_napari`` with a timeout and a free
port; tiny phantoms, width 4, one thread per process, so each takes seconds."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crl_napari import cascade, pipeline, runs
from crl_napari.distributed import check_shards, shard
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder
from crl_napari.settings import TrainConfig, TrainingError

TINY = ["--size", "32", "--width", "4", "--depth", "2", "--batch-size", "4", "--lr", "0.05", "--threads", "1",
        "--strategy", "crl", "--k", "1", "--simulate-noise", "0.5", "--quiet"]
LAUNCH_TIMEOUT = 240  # seconds: a hang fails the test instead of holding CI


def torchrun(nproc: int, *args: str, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc-per-node nproc [-m] args``; kill the whole group on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *(["-m", "crl_napari"] if module else []), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} did not finish in {LAUNCH_TIMEOUT} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def scores(run: Path) -> dict[str, dict]:
    with open(run / runs.SCORES, newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def leftovers(run: Path) -> list[str]:
    """Temporary files (atomic writes, scoring parts) left anywhere in the run folder."""
    return [str(p) for p in run.rglob(".*") if p.name != runs.LOCK]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_sample_set(tmp_path_factory.mktemp("ddp") / "set", n=16, size=32, noise_ratio=0.0, seed=3)


@pytest.fixture(scope="module")
def ddp_run(data) -> Path:
    """A run trained by two processes."""
    res = torchrun(2, "train", str(data), "--out", "run", "--epochs", "2", *TINY, cwd=data.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    # the default second_pass 4 under torchrun: one pass, and one line (from rank 0) says why there is no second
    assert res.stderr.count("no second pass") == 1 and not (data.parent / "run" / "rounds").exists(), res.stderr
    return data.parent / "run"


def test_two_processes_train_a_complete_run_folder_written_by_rank_0(ddp_run, data):
    run = RunFolder(ddp_run)
    cases = [r.id for r in run.case_rows()]
    assert len(cases) == 12  # the training split of 16 phantoms
    assert [h.epoch for h in run.history_rows()] == [0, 1]  # one row per epoch: written once, by one process
    assert sorted(scores(ddp_run)) == sorted(cases)  # every training case scored, once
    assert sorted(int(r["rank"]) for r in scores(ddp_run).values()) == list(range(1, 13))
    assert all(run.corrected_path(i).is_file() for i in cases)
    assert leftovers(ddp_run) == []  # no scoring part nor half-written file is left
    models, config = cascade.load_models(ddp_run, "cpu")  # the checkpoint loads into plain U-Nets
    assert len(models) == 3 and config.width == 4 and config.sync_batchnorm is False
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in models[0].modules()) > 0


def test_scoring_under_torchrun_equals_one_process(ddp_run, tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(ddp_run, alone)
    trained = scores(ddp_run)
    pipeline.score_run(alone)  # one process, from the checkpoint
    res = torchrun(2, "score", str(ddp_run), cwd=ddp_run.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    two, one = scores(ddp_run), scores(alone)
    assert list(two) == list(one)  # the same ids in the same (rank) order
    for id_ in one:
        for col in ("suspicion", "uncertainty", "disagreement", "dice_given_corrected"):
            assert float(two[id_][col]) == pytest.approx(float(one[id_][col]), abs=2e-6)
            # training's own scoring (every rank with rank 0's BatchNorm statistics) agrees too
            assert float(trained[id_][col]) == pytest.approx(float(one[id_][col]), abs=2e-6)
        assert np.array_equal(RunFolder(ddp_run).corrected(id_), RunFolder(alone).corrected(id_))
    assert leftovers(ddp_run) == []


def test_every_rank_corrects_with_the_same_size_offset(tmp_path):
    """The size calibration under torchrun: every rank finds the offset over every image before it corrects its
    own share, so on a run where the offset is not 0 the two processes' scoring.json and corrections equal one
    process's."""
    from crl_napari import cli

    data = write_sample_set(tmp_path / "set", n=64, size=64, noise_ratio=0.75, seed=5)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--size", "32", "--width", "4", "--depth", "2",
                     "--epochs", "6", "--batch-size", "4", "--lr", "0.05", "--strategy", "crl", "--k", "3",
                     "--simulate-noise", "0.75", "--second-pass", "0", "--size-calibration", "1", "--quiet"]) == 0
    alone = tmp_path / "alone"
    shutil.copytree(run, alone)
    b = pipeline.score_run(alone)["size_offset"]
    assert b != 0  # these seeded tiny nets draw the masks that look right too small
    res = torchrun(2, "score", str(run), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert RunFolder(run).size_offset == RunFolder(alone).size_offset == b
    for id_ in scores(alone):
        assert np.array_equal(RunFolder(run).corrected(id_), RunFolder(alone).corrected(id_))
    assert leftovers(run) == []


def test_a_stopped_run_resumes_under_torchrun(data, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(strategy="crl", epochs=2, k=1, batch_size=4, lr=0.05, width=4, depth=2, threads=1)
    saved = []
    for ev in pipeline.train_run(data, out, cfg, size=32, simulate_noise=0.5,
                                 should_stop=lambda: len(saved) >= 1):
        if isinstance(ev, cascade.CheckpointSaved):
            saved.append(ev)
    assert RunFolder.can_resume(out) and len(RunFolder(out).history_rows()) == 1
    res = torchrun(2, "train", str(data), "--out", str(out), "--resume", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming at epoch 2" in res.stderr
    run = RunFolder(out)
    assert [h.epoch for h in run.history_rows()] == [0, 1]
    assert cascade.read_checkpoint(out / runs.CHECKPOINT)["epoch"] == 1
    assert sorted(scores(out)) == sorted(r.id for r in run.case_rows())
    assert leftovers(out) == []


@pytest.mark.parametrize("selection", ["--shard-selection", "--global-selection"])
def test_world_size_1_equals_the_plain_path(selection, data, tmp_path):
    res = torchrun(1, "train", str(data), "--out", "ddp", "--epochs", "2", *TINY, selection, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert RunFolder(tmp_path / "ddp").train_config.global_selection is (selection == "--global-selection")
    cfg = TrainConfig(strategy="crl", epochs=2, k=1, batch_size=4, lr=0.05, width=4, depth=2, threads=1)
    for _ in pipeline.train_run(data, tmp_path / "plain", cfg, size=32, simulate_noise=0.5):
        pass
    a = cascade.read_checkpoint(tmp_path / "ddp" / runs.CHECKPOINT)
    b = cascade.read_checkpoint(tmp_path / "plain" / runs.CHECKPOINT)
    for net_a, net_b in zip(a["models"], b["models"], strict=True):
        assert all(torch.equal(net_a[k], net_b[k]) for k in net_b)
    assert scores(tmp_path / "ddp") == scores(tmp_path / "plain")
    losses = [[(h.losses, h.selected) for h in RunFolder(tmp_path / p).history_rows()] for p in ("ddp", "plain")]
    assert losses[0] == losses[1]


def run_helper(name: str, out: Path):
    """tests/<name>.py run on 2 processes writing to ``out``: the helper module and what each rank saved."""
    helper = Path(__file__).with_name(f"{name}.py")
    res = torchrun(2, str(helper), str(out), cwd=out, module=False)
    assert res.returncode == 0, res.stderr[-3000:]
    spec = importlib.util.spec_from_file_location(name, helper)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """tests/_ddp_one_step.py run on 2 processes: the helper module and what each rank saved."""
    return run_helper("_ddp_one_step", tmp_path_factory.mktemp("one-step"))


def test_ddp_gradients_are_the_mean_of_the_shards_gradients(one_step):
    """Every strategy's step (several forwards, no-grad ranking forwards, one backward per net or one for all
    three) moves each rank's nets by the mean of the steps one process takes on each shard alone."""
    one, ranks = one_step
    x, y = one.batch()
    for strategy, stage, drop in one.CASES:
        before = [torch.cat([p.detach().flatten() for p in m.parameters()]).numpy()
                  for m in one.build_models(one.config(strategy), "cpu")]
        alone = [one.step(strategy, stage, drop, x[shard(torch.arange(one.BATCH), r, 2)],
                          y[shard(torch.arange(one.BATCH), r, 2)], wrap=False) for r in range(2)]
        for i, start in enumerate(before):
            expected = start + np.mean([a[i] - start for a in alone], axis=0)
            assert np.array_equal(ranks[0][f"{strategy}_{i}"], ranks[1][f"{strategy}_{i}"]), (strategy, i)
            np.testing.assert_allclose(ranks[0][f"{strategy}_{i}"], expected, atol=1e-5, err_msg=f"{strategy} {i}")
            assert not np.allclose(expected, start)  # the step did move the net


def test_global_selection_picks_what_one_process_picks_on_the_whole_batch(one_step):
    """Each rank gathers the losses of every shard of an uneven batch (7 images: shards of 4 and 3) in the batch's
    order; the union of the ranks' picks is one process's picks, trusted masks and balance_area included."""
    one, ranks = one_step
    x, y = one.batch(one.GLOBAL_BATCH)
    alone = one.picks(x, y, one.TRUSTED, {"balance_area": 1})  # no process group: the whole batch
    shards = [shard(torch.arange(one.GLOBAL_BATCH), r, 2) for r in range(2)]
    for r in range(2):
        np.testing.assert_allclose(ranks[r]["picks_ce"], alone["ce"], atol=1e-6)  # every rank: the whole batch
    for i in range(3):
        mine = [shards[r][ranks[r][f"picks_picks{i}"]] for r in range(2)]
        assert sorted(torch.cat(mine).tolist()) == alone[f"picks{i}"].tolist(), f"net {i}"
        assert len(alone[f"picks{i}"]) == 2 + round(0.5 * 5)  # the 2 trusted on top of half the rest


def test_global_selection_steps_as_one_process_on_the_whole_batch(one_step):
    """One DDP step of every selecting stepper under global selection equals one process's step on the whole
    batch: the ranks train on their own picks, weighted by their share of them (here 4 and 3 images, and a
    coteaching step whose single pick leaves one rank idle). BatchNorm runs in eval mode on both sides, so a
    sample's loss does not depend on its shard (in training it does: docs/scaling.md). The per-shard
    selection's step (the mean of each shard's step alone) differs, so the check can fail."""
    one, ranks = one_step
    x, y = one.batch(one.GLOBAL_BATCH)
    shards = [shard(torch.arange(one.GLOBAL_BATCH), r, 2) for r in range(2)]
    for strategy, stage, drop, settings in one.GLOBAL_CASES:
        trusted = one.TRUSTED if settings.get("balance_area") else None
        alone = one.step(strategy, stage, drop, x, y, False, settings, trusted)
        per_shard = [one.step(strategy, stage, drop, x[sh], y[sh], False, settings,
                              None if trusted is None else trusted[sh]) for sh in shards]
        before = [torch.cat([p.detach().flatten() for p in m.parameters()]).numpy()
                  for m in one.stepper(strategy, False, settings)[0]]
        differs = []
        for i, want in enumerate(alone):
            got = ranks[0][f"global_{one.name(strategy, settings)}_{i}"]
            assert np.array_equal(got, ranks[1][f"global_{one.name(strategy, settings)}_{i}"]), (strategy, i)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{strategy} {settings} net {i}")
            assert not np.allclose(want, before[i])  # the step did move the net
            shard_mean = before[i] + np.mean([s[i] - before[i] for s in per_shard], axis=0)
            differs.append(not np.allclose(got, shard_mean, atol=1e-5))
        assert any(differs), f"{strategy} {settings}: per-shard selection would have stepped the same"


def test_a_shard_too_small_for_batchnorm_is_refused_before_anything_is_written(data, tmp_path):
    res = torchrun(2, "train", str(data), "--out", "run", "--epochs", "2", *TINY, "--batch-size", "3", cwd=tmp_path)
    assert res.returncode != 0
    line = "a batch of 3 images over 2 processes gives 1 per process; BatchNorm needs at least 2 per process"
    assert f"crl-napari train: error: {line}" in res.stderr
    assert f"crl-napari train (rank 1): error: {line}" in res.stderr  # the other rank stops with the same line
    assert not re.search(r'File ".*crl_napari/', res.stderr)  # no traceback of ours (torchrun prints its own)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingError, match="gives 1 per process"):
        check_shards(12, 3, world=2)
    check_shards(12, 4, world=2)


def test_sync_batchnorm_is_refused_on_cpu_processes_with_one_line(one_step, data, tmp_path):
    """torch's SyncBatchNorm synchronises GPU tensors only: under gloo its forward on CPU tensors raises. So the
    setting is refused on CPU processes, every rank with the same line. (If a torch allows it one day, the first
    assertion fails: lift the refusal in distributed.check_setup then.)"""
    _, ranks = one_step
    assert "expected input tensor to be on GPU" in str(ranks[0]["sync_batchnorm_on_cpu"])
    # nor, on GPUs, with global selection (an idle rank would skip SyncBatchNorm's collectives)
    assert str(ranks[0]["sync_batchnorm_global_selection"]).startswith(
        "sync_batchnorm and global_selection do not go together yet")
    res = torchrun(2, "train", str(data), "--out", "run", "--epochs", "2", *TINY, "--sync-batchnorm", cwd=tmp_path)
    assert res.returncode != 0
    line = "sync_batchnorm needs CUDA devices (this run trains on cpu); train without --sync-batchnorm"
    assert f"crl-napari train: error: {line}" in res.stderr
    assert f"crl-napari train (rank 1): error: {line}" in res.stderr
    assert not re.search(r'File ".*crl_napari/', res.stderr)
    assert not (tmp_path / "run").exists()  # refused before the cache was built or a run file written


def test_global_selection_is_a_true_or_false_setting():
    assert TrainConfig().global_selection is False  # per-shard selection unless asked (docs/scaling.md says why)
    with pytest.raises(TrainingError, match="global_selection must be true or false, got 'global'"):
        TrainConfig(global_selection="global")


def test_scoring_a_locked_run_stops_every_rank_with_the_lock_holder(ddp_run):
    with runs.writer_lock(ddp_run, "test"):
        res = torchrun(2, "score", str(ddp_run), cwd=ddp_run.parent)
    assert res.returncode != 0
    assert f"crl-napari score: error: {ddp_run}: in use by pid {os.getpid()}" in res.stderr
    assert f"crl-napari score (rank 1): error: {ddp_run}: in use by pid {os.getpid()}" in res.stderr
    assert leftovers(ddp_run) == []


def test_only_train_and_score_run_under_torchrun(ddp_run, tmp_path):
    res = torchrun(2, "export", str(ddp_run), "--to", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode != 0
    assert "only train and score run under torchrun; run export as one process" in res.stderr
    assert not (tmp_path / "out").exists()


def test_the_keep_ratio_estimate_counts_every_ranks_samples(tmp_path):
    """TrainConfig.keep_auto under torchrun: each rank saw only its shard; the estimate is the whole set's on every
    rank (tests/_ddp_keep.py), so every rank selects alike."""
    from crl_napari.keep_estimate import KeepEstimate
    from crl_napari.settings import TrainConfig

    keep, ranks = run_helper("_ddp_keep", tmp_path)
    alone = KeepEstimate(TrainConfig(epochs=10, ramp=0.1), keep.N)
    alone.record(torch.arange(keep.N), torch.as_tensor(keep.suspicions()))
    want = alone.epoch_end(0, 1)
    assert want is not None and want < 0.4
    for got in ranks:
        np.testing.assert_allclose(got["seen"], keep.suspicions())
        assert float(got["keep"]) == want
