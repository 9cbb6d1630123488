"""A failure on one torchrun rank stops every rank at the same point, with one line naming the rank and the step,
instead of leaving the others waiting in an all-reduce that never comes (distributed.agree, distributed.Together).

Two gloo processes on CPU, tiny nets; every launch has a timeout, so a regression (a hang) fails the test instead
of holding CI. tests/_ddp_faults.py meets three faults on rank 1 alone inside the engine's loop (a NaN loss, a
cache file that loses a slot, a stop asked by one rank) and calls the vote itself; the command line's ``score``
meets a damaged file that only rank 1 reads, and torchrun ends with a non-zero status.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import _ddp_faults as helper
import pytest
from test_distributed import leftovers, scores, torchrun

from crl_napari import pipeline, runs
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder
from crl_napari.settings import TrainConfig


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict[str, list[dict]]:
    """tests/_ddp_faults.py run once on 2 processes: what each rank saw, per fault."""
    out = tmp_path_factory.mktemp("faults")
    res = torchrun(2, helper.__file__, str(out), cwd=out, module=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return {name: [json.loads((out / f"{name}-rank{r}.json").read_text()) for r in range(2)] for name in helper.FAULTS}


def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step_and_the_run_resumes(seen):
    epoch, step = helper.NAN_AT
    first, second = seen["nan"]
    assert first["error"] == second["error"] == "TrainingError"
    assert first["message"] == second["message"]  # the same line on every rank
    line = first["message"]
    assert re.match(rf"rank 1 of 2: the loss became (nan|inf) at epoch {epoch + 1}, step {step + 1}; training "
                    r"stopped\. The last good checkpoint is kept in .*checkpoint\.pt\.", line), line
    for rank in (first, second):
        assert rank["first"]["stopped"] is True and rank["first"]["epochs"] == [0]  # epoch 1, checkpointed
        assert rank["steps"][-1] == [epoch, step - 1]  # resumed: no rank went past the step (nor reported it)
        assert rank["epochs"] == []
        assert rank["checkpoint_epoch"] == epoch - 1  # the last good epoch stays on disk
        resumed = rank["resumed"]  # the run resumes (the image fixed) and finishes
        assert resumed["error"] is None and resumed["stopped"] is False
        assert resumed["epochs"] == [1] and resumed["checkpoint_epoch"] == 1


def test_a_read_error_on_one_rank_stops_every_rank_with_the_same_line(seen):
    epoch, step = helper.READ_AT
    first, second = seen["read"]
    assert first["error"] == second["error"] == "CacheError"  # the package's error keeps its class
    assert first["message"] == second["message"]
    assert re.fullmatch(rf"rank 1 of 2 at epoch {epoch + 1}, step {step + 1}: .*images\.u8: ends inside slot 15; "
                        r"delete .* to rebuild the cache", first["message"]), first["message"]
    for rank in (first, second):
        assert rank["steps"][-1] == [epoch, step - 1]
        assert rank["checkpoint_epoch"] is None  # stopped in epoch 1: nothing was checkpointed


def test_a_stop_asked_by_one_rank_stops_every_rank_at_the_same_step(seen):
    for rank in seen["stop"]:
        assert rank["error"] is None and rank["stopped"] is True
        assert rank["steps"] == [[0, s] for s in range(helper.STOP_AT[1])]


def test_the_vote_raises_the_package_s_errors_everywhere_and_a_bug_s_where_it_happened(seen):
    first, second = seen["votes"]
    assert first["bug on rank 1"] == {"error": "TrainingError", "own": False,
                                      "message": "rank 1 of 2 at bug on rank 1: ValueError: bad value"}
    assert second["bug on rank 1"] == {"error": "ValueError", "message": "bad value", "own": True}  # its traceback
    for rank in (first, second):  # the lowest failing rank's words, in its class, on every rank
        assert rank["error on every rank"] == {"error": "RunError", "own": False,
                                               "message": "every rank of 2 at error on every rank: file-0: unreadable"}
        assert rank["stop on rank 0"] == {"returned": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run trained in one process (torchrun scores it below)."""
    root = tmp_path_factory.mktemp("score-fault")
    data = write_sample_set(root / "set", n=16, size=32, noise_ratio=0.0, seed=3)
    # size calibration off: with it every rank first reads every image (pipeline._calibration_offset), so no file
    # would be rank 1's alone
    cfg = TrainConfig(strategy="ss", epochs=1, batch_size=4, lr=0.05, width=4, depth=2, threads=1, size_calibration=0)
    for _ in pipeline.train_run(data, root / "run", cfg, size=32, simulate_noise=0.5):
        pass
    return root / "run"


def test_a_file_only_rank_1_reads_stops_scoring_on_every_rank_with_one_line(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = scores(run_dir)
    ids = [r.id for r in RunFolder(run_dir).case_rows()]
    damaged = run_dir / runs.GIVEN / f"{ids[-1]}.png"  # the last case: rank 1's block
    good = damaged.read_bytes()
    damaged.write_bytes(good[: len(good) // 2])
    res = torchrun(2, "score", str(run_dir), cwd=tmp_path)
    assert res.returncode != 0  # torchrun reports the failure
    line = rf"rank 1 of 2 at scoring: {re.escape(str(damaged))}: unreadable image \(.*\)"
    assert re.search(rf"^crl-napari score: error: {line}$", res.stderr, re.M), res.stderr[-3000:]
    assert re.search(rf"^crl-napari score \(rank 1\): error: {line}$", res.stderr, re.M)
    assert not re.search(r'File ".*crl_napari/', res.stderr)  # one line, no traceback of ours
    assert scores(run_dir) == before  # nothing half-written
    progress = run_dir / runs.SCORE_PROGRESS  # rank 0's finished block kept for going on; no part, no temp file
    assert leftovers(run_dir) == [str(progress)] and [p.name for p in progress.iterdir()] == ["000000000.npz"]
    print(res.stderr)
    damaged.write_bytes(good)
    pipeline.score_run(run_dir)  # the file repaired, the run scores (the writer lock was let go)
    assert sorted(scores(run_dir)) == sorted(ids) and leftovers(run_dir) == []
