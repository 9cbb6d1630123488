"""Issue #4 - reliability and security: bad input, crashes and hostile files lose nothing and break nothing.

Real files, real processes, real signals. The map a reviewer reads: each row of the issue, what the tool does,
and the tests that fail if it stops doing it (``data::x`` is tests/test_data.py, ``cascade::`` test_cascade.py,
``review::`` test_review.py, ``export::`` test_export.py, ``pipeline::`` test_pipeline.py; bare names are here).

=================================  ============================================================================
row                                behaviour and tests
=================================  ============================================================================
truncated / corrupt image or mask  DataError naming the file ("cannot read image ... truncated or corrupt").
                                   Policy: *refuse with a list* by default (every problem of the folder, one per
                                   line, so it is fixed in one pass and no experiment silently runs on fewer
                                   images); ``--skip-bad`` *skips with a report* (stderr + config.json).
                                   data::test_truncated_png_names_the_file, data::test_raise_collects_every_
                                   problem_one_per_line, data::test_skip_mode_loads_the_rest;
                                   test_truncated_or_corrupt_file_of_every_format_names_it,
                                   test_cli_bad_files_one_clear_error_exit_2_no_traceback (subprocess),
                                   test_cli_skip_bad_trains_on_the_rest_and_records_what_was_skipped
image w/o mask, mask w/o image,    one message listing each file and what is wrong; exit 2, no traceback.
duplicate ids, mask of another     data::test_image_without_mask_and_mask_without_image, ::test_duplicate_ids,
size, empty folder                 ::test_mask_of_another_size, ::test_missing_folder_not_folder_no_images;
                                   test_cli_folder_mistakes_are_listed_without_traceback
RGB, 16-bit PNG/TIFF, DICOM        loaded with the right pixel values. data::test_rgb_and_rgba_become_luminance,
MONOCHROME1, masks 0/1, 0/255,     ::test_16bit_png_and_tiff_scaled_by_dtype_range, ::test_dicom_monochrome1_
two arbitrary values               inverted, ::test_two_valued_masks_binarised;
                                   test_mixed_formats_load_through_the_dataset_with_the_right_pixels
non-binary mask (> 2 values),      > 2 values: DataError naming the file and the count (refused / skipped);
all-empty mask                     all-empty: loads (an empty lung field is a legal label), with a warning
                                   printed by the CLI and kept in config.json. data::test_more_than_two_values_
                                   is_an_error, ::test_empty_mask_loads_with_warning;
                                   test_cli_bad_files_..., test_cli_skip_bad_...
NaN / inf loss                     training stops with a message (loss value, epoch, "--lr"), the last good
                                   checkpoint is kept and ``--resume`` goes on; non-finite *weights* are never
                                   checkpointed. cascade::test_nan_loss_stops_with_message_and_keeps_last_
                                   checkpoint; test_cli_inf_loss_stops_keeps_the_last_good_checkpoint_and_resumes,
                                   test_non_finite_weights_are_never_checkpointed
SIGKILL during training            every file of the run parses after the kill; ``--resume`` finishes with the
                                   very weights, history and scores of an uninterrupted run; a run killed
                                   before its first checkpoint starts over (with or without --resume).
                                   test_sigkill_during_training_then_resume_equals_an_uninterrupted_run,
                                   test_sigkill_before_the_first_checkpoint_then_train_again,
                                   test_resume_without_a_checkpoint_starts_over; pipeline::test_stop_then_resume
SIGKILL during review              every reported decision is in review.json, which always parses.
                                   review::test_sigkill_mid_review_loses_nothing_reported (random moment);
                                   test_sigkill_during_review_after_known_decisions (deterministic)
SIGKILL during export              the destination is absent or complete; originals and run untouched; the
                                   hidden ``.<dest>.partial-<pid>`` left behind is removed by the next export.
                                   export::test_crash_mid_export_leaves_no_dest_and_no_partial_folder (OSError);
                                   test_sigkill_during_export_never_leaves_a_partial_destination
export into the data / the run,    refused before anything is written (also through a symlink); nothing is
id such as ``../../x``             written outside the destination. export::test_refuses_dest_in_or_around_the_
                                   run_or_the_data, ::test_unsafe_id_is_refused_and_nothing_is_written,
                                   review::test_missing_scores_and_unsafe_ids_are_refused;
                                   test_cli_export_refuses_unsafe_destinations_and_ids
untrusted checkpoint / run folder  every torch.load is weights_only=True; a checkpoint carrying pickled code is
                                   rejected by score / evaluate / resume and never runs (the test proves the
                                   file really runs code when unpickled unsafely).
                                   cascade::test_checkpoint_with_pickled_code_is_rejected;
                                   test_every_torch_load_is_weights_only_and_nothing_unpickles,
                                   test_checkpoint_carrying_code_is_rejected_everywhere
checkpoint from another config /   refused with a message naming the settings: resume with other options,
version                            a checkpoint that is not the run's, unknown settings, unknown format.
                                   cascade::test_checkpoint_from_other_config_is_refused, ::test_resume_with_
                                   other_settings_is_refused; test_other_config_or_version_is_refused_by_name
plugin reads while the CLI trains  every read of the run folder (RunFolder, history, cases, checkpoint, models,
                                   summary, ReviewSession) parses at every moment; the only condition is the
                                   documented "not scored yet". test_run_folder_reads_while_the_cli_trains_into_it;
                                   the widgets themselves: test_plugin_review::test_review_and_reader_on_a_run_
                                   the_cli_is_still_training
out of GPU memory                  TrainingError suggesting a smaller --batch-size, wherever it happens (selection,
                                   training, stage 2, validation); the failed run's tensors are freed so the same
                                   process can retry; CLI exit 2; rerunning with the smaller batch just works.
                                   test_out_of_gpu_memory_is_a_clear_error_and_frees_the_run,
                                   test_cli_out_of_gpu_memory_exit_2_then_a_smaller_batch_trains.
                                   The viewer side (a notification, no traceback, napari alive, Start again with
                                   a smaller batch trains): test_plugin_train::test_out_of_gpu_memory_is_a_clear_
                                   message_and_the_viewer_stays_alive.
=================================  ============================================================================
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
import weakref
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from test_cascade import TINY, disks
from test_data import write_dicom
from test_review import make_run

from crl_napari import cascade, cli, pipeline, selection
from crl_napari.cascade import CHECKPOINT, TrainConfig, TrainingError, read_checkpoint
from crl_napari.data import DataError, load_dataset, read_image, read_mask, zscore
from crl_napari.export import export
from crl_napari.phantoms import write_sample_set
from crl_napari.review import ReviewError, ReviewSession
from crl_napari.runs import RunError, RunFolder
from crl_napari.unet import UNet

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12
# small enough for seconds on a busy CPU, big enough (about 0.1 s an epoch) to be killed mid-run
TRAIN = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", str(EPOCHS), "--batch-size", "4", "--quiet"]
QUICK = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "2", "--batch-size", "4", "--lr", "0.05",
         "--quiet"]


# ------------------------------------------------------------------------------------------------- helpers


def _with(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with the value after ``flag`` replaced."""
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _env() -> dict:
    # one thread each: the children and the reference are then bit-for-bit deterministic, and they do not
    # fight over the cores with the test process
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _start(args: list[str], log: Path, module: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "crl_napari.cli", *args] if module else [sys.executable, *args]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=_env(), cwd=log.parent)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.wait()


def _sigkill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode in (-signal.SIGKILL, 0), child.returncode


def _wait_until(cond, child: subprocess.Popen, what: str, log: Path, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if child.poll() is not None:
            raise AssertionError(f"the child ended (rc {child.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")


def _ckpt_epoch(run: Path) -> int:
    return int(read_checkpoint(run / CHECKPOINT)["epoch"]) if (run / CHECKPOINT).is_file() else -1


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(x, y) for ma, mb in zip(a["models"], b["models"], strict=True)
               for (ka, x), (kb, y) in zip(ma.items(), mb.items(), strict=True) if ka == kb)


def _losses(run: Path) -> list[tuple]:
    return [(h["epoch"], h["stage"], h["loss_0"], h["loss_1"], h["loss_2"], h["selected"])
            for h in RunFolder(run).history()]


def _train_id(data: Path, k: int = 0) -> str:
    return sorted(r["id"] for r in csv.DictReader(open(data / "split.csv")) if r["split"] == "train")[k]


def _snapshot(run: Path) -> dict:
    """Everything the plugin reads from a run folder, once. Any exception is a failure, except the
    documented 'not scored yet' of ReviewSession.open; files that a run writes later are checked for
    existence first, as the plugin does."""
    if not (run / "config.json").is_file():
        return {"state": "absent"}
    folder = RunFolder(run)
    snap = {"state": "config", "history": len(folder.history()), "ckpt": -1, "scored": False}
    epochs = [int(h["epoch"]) for h in folder.history()]
    assert epochs == list(range(len(epochs)))
    if (run / "cases.csv").is_file():
        cases = folder.cases()
        assert len(cases) == 9
        assert folder.image(cases[-1]["id"]).shape == (32, 32) and folder.given(cases[-1]["id"]).dtype == bool
    if folder.has_checkpoint:
        ckpt = read_checkpoint(run / CHECKPOINT)
        snap["ckpt"] = int(ckpt["epoch"])
        models, cfg = cascade.load_models(run, device="cpu")
        assert len(models) == 3 and cfg == folder.train_config
    info = pipeline.summary(run)
    assert info["epochs"] == EPOCHS
    try:
        session = ReviewSession.open(run, reviewer="reader")
    except ReviewError as exc:
        assert "not been scored yet" in str(exc)
    else:
        assert len(session.ids) == 9
        first = session.ids[0]
        assert folder.corrected(first).shape == (32, 32) and 0 <= folder.prob(first).max() <= 1
        snap["scored"] = True
    return snap


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process training on one thread, like the children: on a busy 2-core machine torch's default
    thread pool spins against other processes (measured: 45 s instead of 0.6 s for a tiny run)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_sample_set(tmp_path_factory.mktemp("data") / "set", n=12, size=64, noise_ratio=0.5, seed=3)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> SimpleNamespace:
    """An uninterrupted CLI run, read over and over by this process while the child trains and scores."""
    base = tmp_path_factory.mktemp("reference")
    run, log = base / "run", base / "train.log"
    child = _start(["train", str(data), "--out", str(run), *TRAIN], log)
    snaps, errors = [], []
    t0 = time.monotonic()
    try:
        while child.poll() is None and time.monotonic() - t0 < 300:
            try:
                snaps.append(_snapshot(run))
            except Exception:  # collected, asserted empty by the test
                errors.append(traceback.format_exc())
            time.sleep(0.03)  # leave the child a core
    finally:
        _stop(child)
    assert child.returncode == 0, log.read_text()
    return SimpleNamespace(run=run, snaps=snaps, errors=errors, final=_snapshot(run))


# ------------------------------------------------------------------------- data: bad, odd and hostile files


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_or_corrupt_file_of_every_format_names_it(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    files = {
        "a.png": lambda p: iio.imwrite(p, img), "b.jpg": lambda p: iio.imwrite(p, img),
        "c.bmp": lambda p: iio.imwrite(p, img), "d.tif": lambda p: tifffile.imwrite(p, img),
        "e.dcm": lambda p: write_dicom(p, img.astype(np.uint16) * 4),
    }
    for name, write in files.items():
        p = tmp_path / name
        write(p)
        _truncate(p, 0.6)
        for reader, what in ((read_image, "image"), (read_mask, "mask")):
            with pytest.raises(DataError) as err:
                reader(p)
            assert str(err.value).startswith(f"{p}: cannot read {what}"), str(err.value)
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.png: cannot read image"):
        read_image(empty)


def _bad_copy(data: Path, dest: Path) -> SimpleNamespace:
    """A copy of the sample set with a truncated image, a label-map mask and an all-empty mask (train cases)."""
    shutil.copytree(data, dest)
    trunc, labels, empty = _train_id(dest, 0), _train_id(dest, 1), _train_id(dest, 2)
    _truncate(dest / "images" / f"{trunc}.png", 0.5)
    m = iio.imread(dest / "masks" / f"{labels}.png")
    m = (m > 0).astype(np.uint8)
    m[:8, :8] = 2  # {0, 1, 2}: a label map, not a binary mask
    iio.imwrite(dest / "masks" / f"{labels}.png", m)
    iio.imwrite(dest / "masks" / f"{empty}.png", np.zeros((64, 64), np.uint8))
    return SimpleNamespace(root=dest, trunc=dest / "images" / f"{trunc}.png", labels=dest / "masks" / f"{labels}.png",
                           empty=dest / "masks" / f"{empty}.png", ids=(trunc, labels, empty))


def test_cli_bad_files_one_clear_error_exit_2_no_traceback(data, tmp_path):
    bad = _bad_copy(data, tmp_path / "bad")
    out, log = tmp_path / "run", tmp_path / "train.log"
    child = _start(["train", str(bad.root), "--out", str(out), *QUICK], log)
    try:
        child.wait(timeout=180)
    finally:
        _stop(child)
    text = log.read_text()
    assert child.returncode == 2, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert lines[0] == f"crl-napari train: error: 2 problems in {bad.root}:", text
    assert f"  {bad.trunc}: cannot read image (unreadable, truncated or corrupt file" in text
    assert f"  {bad.labels}: mask has 3 distinct values (0, 1, 2)" in text
    assert len(lines) == 3  # the two problems, one line each; the empty mask is no error
    assert not out.exists()  # nothing was created


def test_cli_skip_bad_trains_on_the_rest_and_records_what_was_skipped(data, tmp_path, capsys):
    bad = _bad_copy(data, tmp_path / "bad")
    out = tmp_path / "run"
    assert cli.main(["train", str(bad.root), "--out", str(out), "--skip-bad", *QUICK]) == 0
    err = capsys.readouterr().err
    assert f"skipped 2 file(s) that could not be used (listed in {out}/config.json):" in err
    assert f"  {bad.trunc}: cannot read image" in err and f"  {bad.labels}: mask has 3 distinct values" in err
    assert f"warning: {bad.empty}: mask is empty" in err
    recorded = json.loads((out / "config.json").read_text())["data"]
    assert {s["path"] for s in recorded["skipped"]} == {str(bad.trunc), str(bad.labels)}
    assert any("truncated" in s["reason"] for s in recorded["skipped"])
    assert any(str(bad.empty) in w and "empty" in w for w in recorded["warnings"])
    ids = {r["id"] for r in RunFolder(out).cases()}
    assert len(ids) == 7 and bad.ids[0] not in ids and bad.ids[1] not in ids and bad.ids[2] in ids
    assert not RunFolder(out).given(bad.ids[2]).any()  # the empty mask trained as empty
    assert RunFolder(out).has_scores


def test_cli_folder_mistakes_are_listed_without_traceback(data, tmp_path, capsys):
    root = tmp_path / "messy"
    shutil.copytree(data, root)
    (root / "split.csv").unlink()
    ids = sorted(p.stem for p in (root / "images").glob("*.png"))
    (root / "masks" / f"{ids[0]}.png").unlink()  # image without mask
    iio.imwrite(root / "masks" / "stray.png", np.zeros((64, 64), np.uint8))  # mask without image
    tifffile.imwrite(root / "images" / f"{ids[1]}.tif", np.zeros((64, 64), np.uint8))  # duplicate id
    iio.imwrite(root / "masks" / f"{ids[2]}.png", np.zeros((64, 48), np.uint8))  # another size
    out = tmp_path / "run"
    assert cli.main(["train", str(root), "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"crl-napari train: error: 4 problems in {root}:")
    assert f"{root}/images/{ids[0]}.png: image without mask" in err
    assert f"{root}/masks/stray.png: mask without image" in err
    assert f"duplicate id '{ids[1]}'" in err and f"{ids[1]}.tif" in err
    assert f"{root}/masks/{ids[2]}.png: mask size 48x64 (WxH) differs from its image" in err
    assert len(err.strip().splitlines()) == 5 and not out.exists()

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert cli.main(["train", str(empty), "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert f"{empty}/images: no images found" in err and "Traceback" not in err
    assert cli.main(["train", str(tmp_path / "nowhere"), "--out", str(out), *QUICK]) == 2
    assert "data folder does not exist" in capsys.readouterr().err


def test_mixed_formats_load_through_the_dataset_with_the_right_pixels(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    block = np.zeros((16, 16), bool)
    block[3:11, 5:13] = True
    expected = {}
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "images" / "rgb.png", rgb)
    iio.imwrite(tmp_path / "masks" / "rgb.png", block.astype(np.uint8))  # 0/1
    expected["rgb"] = rgb.astype(float) @ [0.2125, 0.7154, 0.0721]
    deep = rng.integers(0, 65536, (16, 16), dtype=np.uint16)  # low bits matter: 8-bit reading would show
    iio.imwrite(tmp_path / "images" / "deep_png.png", deep)
    iio.imwrite(tmp_path / "masks" / "deep_png_mask.png", block.astype(np.uint8) * 255)  # 0/255, _mask suffix
    expected["deep_png"] = deep.astype(float)
    tifffile.imwrite(tmp_path / "images" / "deep_tif.tif", deep[::-1].copy())
    tifffile.imwrite(tmp_path / "masks" / "deep_tif.tif", np.where(block, 200, 17).astype(np.uint8))  # 17/200
    expected["deep_tif"] = deep[::-1].astype(float)
    stored = rng.integers(0, 4096, (16, 16)).astype(np.uint16)
    write_dicom(tmp_path / "images" / "mono1", stored, photometric="MONOCHROME1")  # DICOM, no extension
    tifffile.imwrite(tmp_path / "masks" / "mono1.tif", np.where(block, 0, 1000).astype(np.uint16))  # fg = larger
    expected["mono1"] = -stored.astype(float)  # MONOCHROME1: high values are dark
    ds = load_dataset(tmp_path, size=16)
    assert ds.ids == sorted(expected) and not ds.skipped
    for case in ds:
        np.testing.assert_allclose(case.image, zscore(expected[case.id]), atol=1e-4, err_msg=case.id)
        want = ~block if case.id == "mono1" else block
        np.testing.assert_array_equal(case.mask, want.astype(np.uint8), err_msg=case.id)


# --------------------------------------------------------------------------------------- NaN / inf losses


def test_cli_inf_loss_stops_keeps_the_last_good_checkpoint_and_resumes(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    saved = []
    real_save, real_ce = cascade.save_checkpoint, selection.per_sample_ce

    def save(run_dir, models, optims, config, epoch, **kw):
        path = real_save(run_dir, models, optims, config, epoch, **kw)
        saved.append(epoch)
        return path

    def ce(logits, target):  # the loss explodes in the third epoch
        loss = real_ce(logits, target)
        return loss * float("inf") if len(saved) >= 2 else loss

    monkeypatch.setattr(cascade, "save_checkpoint", save)
    monkeypatch.setattr(selection, "per_sample_ce", ce)
    args = ["train", str(data), "--out", str(out), *_with(QUICK, "--epochs", "4")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the loss became inf at epoch 3, step 1; training stopped." in err
    assert f"The last good checkpoint is kept in {out / CHECKPOINT}" in err and "--lr" in err
    ckpt = read_checkpoint(out / CHECKPOINT)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(t).all() for m in ckpt["models"] for t in m.values())
    assert [int(h["epoch"]) for h in RunFolder(out).history()] == [0, 1] and not RunFolder(out).has_scores
    monkeypatch.undo()
    assert cli.main(["train", str(data), "--out", str(out), "--resume", "--quiet"]) == 0
    assert [int(h["epoch"]) for h in RunFolder(out).history()] == [0, 1, 2, 3] and RunFolder(out).has_scores


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """A finite loss can still give an infinite update; that epoch's checkpoint must not be written."""
    x, y = disks()
    real = cascade._Stepper.__call__

    def step(self, xb, yb, stage, drop, epoch, step_):
        out = real(self, xb, yb, stage, drop, epoch, step_)
        if epoch == 1 and step_ == 2:  # the last step of epoch 2: the loss was finite, the weights are not
            with torch.no_grad():
                next(self.models[0].parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(cascade._Stepper, "__call__", step)
    with pytest.raises(TrainingError, match=r"weights of net 1 .* became NaN or infinite in epoch 2.*last good"):
        list(cascade.train(x, y, TrainConfig(strategy="crl", **TINY), run_dir=tmp_path))
    ckpt = read_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(t).all() for m in ckpt["models"] for t in m.values())


# ----------------------------------------------------------------------------- killed during training


def test_sigkill_during_training_then_resume_equals_an_uninterrupted_run(data, reference, tmp_path, capsys):
    seed = random.randrange(1 << 30)
    extra = random.Random(seed).uniform(0.0, 0.15)  # lands anywhere in an epoch: a step, history, checkpoint
    run, log = tmp_path / "run", tmp_path / "train.log"
    child = _start(["train", str(data), "--out", str(run), *TRAIN], log)
    try:
        _wait_until(lambda: _ckpt_epoch(run) >= 1, child, "the checkpoint of epoch 2", log)
        time.sleep(extra)
        _sigkill(child)
    finally:
        _stop(child)
    msg = f"seed={seed} extra={extra:.3f}s"
    assert child.returncode == -signal.SIGKILL, f"{msg}: finished before the kill\n{log.read_text()}"

    # every file of the killed run parses
    folder = RunFolder(run)
    json.loads((run / "config.json").read_text())
    epoch = _ckpt_epoch(run)
    assert 1 <= epoch < EPOCHS - 1, msg
    assert len(cascade.load_models(run, device="cpu")[0]) == 3
    hist = [int(h["epoch"]) for h in folder.history()]
    # history follows its checkpoint: a kill between the two leaves the last epoch's line in the checkpoint only
    assert hist == list(range(len(hist))) and len(hist) in (epoch, epoch + 1), msg
    assert len(folder.cases()) == 9 and not folder.has_scores
    for png in [*run.glob("images/*.png"), *run.glob("given/*.png")]:
        assert iio.imread(png).shape == (32, 32)
    stale = run / f".{CHECKPOINT}.{child.pid}.deadbeef.tmp"  # what a kill mid-checkpoint leaves
    stale.write_bytes(b"half a checkpoint")

    # resumed in this process (one torch thread, as the children: the same arithmetic, bit for bit)
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--quiet"]) == 0
    assert f"resuming at epoch {epoch + 2}" in capsys.readouterr().err
    assert [int(h["epoch"]) for h in RunFolder(run).history()] == list(range(EPOCHS))
    # the interrupted run is the uninterrupted one: same weights, same per-epoch losses, same scores
    assert _same_weights(read_checkpoint(run / CHECKPOINT), read_checkpoint(reference.run / CHECKPOINT)), msg
    assert _losses(run) == _losses(reference.run), msg
    assert (run / "scores.csv").read_text() == (reference.run / "scores.csv").read_text(), msg
    assert not list(run.rglob("*.tmp")), "the stale temporary file was not swept"


def test_sigkill_before_the_first_checkpoint_then_train_again(data, tmp_path, capsys):
    run, log = tmp_path / "run", tmp_path / "train.log"
    child = _start(["train", str(data), "--out", str(run), *QUICK], log)
    try:
        _wait_until(lambda: (run / "config.json").is_file(), child, "config.json", log)
        _sigkill(child)
    finally:
        _stop(child)
    assert child.returncode == -signal.SIGKILL, log.read_text()
    RunFolder(run)  # whole, even at this moment
    # whatever was left (no checkpoint, most likely), both ways of going on work
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--quiet"]) == 0
    assert [int(h["epoch"]) for h in RunFolder(run).history()] == [0, 1] and RunFolder(run).has_scores
    assert cli.main(["train", str(data), "--out", str(run), *QUICK]) == 2  # now it holds a trained run
    assert "already exists and is not empty; choose another --out or pass --resume" in capsys.readouterr().err


def test_resume_without_a_checkpoint_starts_over(data, tmp_path):
    """The state a kill during the writing of the cases leaves, made deterministically."""
    run = tmp_path / "run"
    cfg = TrainConfig(strategy="ss", epochs=2, batch_size=4, width=4, depth=2, lr=0.05)
    events = list(pipeline.train_run(data, run, cfg, size=32, should_stop=lambda: True))
    assert events[-1].stopped and not (run / CHECKPOINT).exists()
    (run / "cases.csv").unlink()
    for png in sorted(run.glob("given/*.png"))[4:]:
        png.unlink()
    events = list(pipeline.train_run(data, run, resume=True))
    assert isinstance(events[-1], pipeline.ScoresReady)
    assert len(RunFolder(run).cases()) == 9 and len(list(run.glob("given/*.png"))) == 9
    assert [int(h["epoch"]) for h in RunFolder(run).history()] == [0, 1]


# ----------------------------------------------------------------------- reading while the CLI trains


def test_run_folder_reads_while_the_cli_trains_into_it(reference):
    assert reference.errors == [], reference.errors[0]
    snaps = [s for s in reference.snaps if s["state"] != "absent"]
    assert len(snaps) >= 10, f"only {len(snaps)} reads during training"
    assert any(0 <= s["ckpt"] < EPOCHS - 1 and not s["scored"] for s in snaps), "never read a run mid-training"
    ckpts = [s["ckpt"] for s in snaps]
    assert ckpts == sorted(ckpts)  # never went back: each read saw whole, current files
    assert reference.final == {"state": "config", "history": EPOCHS, "ckpt": EPOCHS - 1, "scored": True}


# ------------------------------------------------------------------------------------ killed in review


_REVIEW_CHILD = """
import sys
import numpy as np
from crl_napari.review import ReviewSession
s = ReviewSession.open(sys.argv[1], reviewer="child")
mask = np.eye(8, dtype=bool)
while True:
    for i, image_id in enumerate(s.ids):
        [s.accept, s.keep, lambda j: s.edit(j, mask ^ (i % 2 == 0))][i % 3](image_id)
        print(image_id, s.status(image_id), flush=True)
"""


def test_sigkill_during_review_after_known_decisions(tmp_path):
    run = tmp_path / "run"
    (run / "given").mkdir(parents=True)
    ids = [f"x{i:03d}" for i in range(60)]
    for i in ids:
        iio.imwrite(run / "given" / f"{i}.png", np.zeros((8, 8), np.uint8))
    with open(run / "scores.csv", "w") as fh:
        fh.write("id,rank,suspicion\n" + "".join(f"{i},{r + 1},{1 - r / 100}\n" for r, i in enumerate(ids)))
    target = random.randrange(5, 55)  # the kill comes after this many reported decisions (first pass)
    child = subprocess.Popen([sys.executable, "-c", _REVIEW_CHILD, str(run)], stdout=subprocess.PIPE, text=True,
                             env=_env())
    reported = {}
    try:
        for _ in range(target):
            image_id, status = child.stdout.readline().split()
            reported[image_id] = status  # the second pass overwrites: the latest decision counts
        _sigkill(child)
    finally:
        _stop(child)
    data = json.loads((run / "review.json").read_text())  # strict JSON, whole
    for image_id, status in reported.items():
        assert data["decisions"][image_id]["status"] == status, (target, image_id)
    assert len(data["log"]) - target in (0, 1), target  # at most the change in flight when killed
    session = ReviewSession.open(run)
    assert session.counts()["reviewed"] >= len(reported)
    session.keep(ids[0])  # and the review goes on
    assert ReviewSession.open(run).status(ids[0]) == "kept"


# ------------------------------------------------------------------------------------ killed in export


N_EXPORT = 100


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> SimpleNamespace:
    """A scored run of 100 images of 256 x 256 (made directly with numpy) to export."""
    base = tmp_path_factory.mktemp("export")
    src, run = base / "data", base / "run"
    for d in (src / "images", src / "masks", run / "corrected"):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    cases, scores = [], []
    for k in range(N_EXPORT):
        cid = f"cxr{k:03d}"
        iio.imwrite(src / "images" / f"{cid}.png", rng.integers(0, 256, (256, 256), dtype=np.uint8))
        mask = (yy - 128) ** 2 / 90**2 + (xx - 100 - k % 50) ** 2 / 60**2 < 1
        iio.imwrite(src / "masks" / f"{cid}.png", mask.astype(np.uint8) * 255)
        iio.imwrite(run / "corrected" / f"{cid}.png", mask[::4, ::4].T.astype(np.uint8) * 255)
        iio.imwrite(run / "corrected" / f"{cid}_prob.png", mask[::4, ::4].T.astype(np.uint8) * 230)  # what scoring
        # leaves beside the mask: the export makes the correction at the original size from this probability
        cases.append(f"{cid},train,{src}/images/{cid}.png,{src}/masks/{cid}.png,256,256\n")
        scores.append(f"{cid},{k + 1},{1 - k / N_EXPORT:.6f}\n")
    (run / "cases.csv").write_text("id,split,image_path,mask_path,orig_h,orig_w\n" + "".join(cases))
    (run / "scores.csv").write_text("id,rank,suspicion\n" + "".join(scores))
    (run / "config.json").write_text(json.dumps({"train": {"epochs": 1}, "data": {
        "root": str(src), "size": 64, "simulate_noise": 0.0, "noise_seed": 0}}))
    ref = base / "reference"
    export(run, ref, unreviewed="accept_above", threshold=0.5)
    return SimpleNamespace(base=base, src=src, run=run, ref=_tree(ref))


_EXPORT_CHILD = """
import sys
from crl_napari.export import export
export(sys.argv[1], sys.argv[2], unreviewed="accept_above", threshold=0.5)
"""


def test_sigkill_during_export_never_leaves_a_partial_destination(big_run, tmp_path):
    before_src, before_run = _tree(big_run.src), _tree(big_run.run)
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    # kill points, in files written into the hidden folder: at once, mid-way, and with every file written
    # (then the manifest and the rename race the kill: either outcome must be whole)
    targets = [0, rnd.randrange(1, 2 * N_EXPORT), 2 * N_EXPORT]
    outcomes = []
    for t, target in enumerate(targets):
        dest = tmp_path / f"clean{t}"
        log = tmp_path / f"export{t}.log"
        child = _start(["-c", _EXPORT_CHILD, str(big_run.run), str(dest)], log, module=False)
        partial = tmp_path / f".{dest.name}.partial-{child.pid}"

        def written(partial=partial, dest=dest, target=target) -> bool:
            if dest.exists():
                return True
            try:
                return len(os.listdir(partial / "images")) + len(os.listdir(partial / "masks")) >= target
            except FileNotFoundError:
                return target == 0 and partial.is_dir()

        try:
            _wait_until(written, child, f"{target} files", log)
            _sigkill(child)
        finally:
            _stop(child)
        msg = f"seed={seed} target={target}"
        if dest.exists():  # the rename happened: complete, byte for byte the uninterrupted export
            assert _tree(dest) == big_run.ref, msg
            outcomes.append("complete")
        else:
            assert partial.is_dir(), msg  # what a kill leaves: a hidden folder, never the final name
            outcomes.append("absent")
        assert _tree(big_run.src) == before_src and _tree(big_run.run) == before_run, msg
    assert outcomes[0] == "absent"
    # the next export sweeps the dead exports' hidden folders and writes a whole destination
    for t, outcome in enumerate(outcomes):
        if outcome == "absent":
            export(big_run.run, tmp_path / f"clean{t}", unreviewed="accept_above", threshold=0.5)
            assert _tree(tmp_path / f"clean{t}") == big_run.ref
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_cli_export_refuses_unsafe_destinations_and_ids(tmp_path, capsys):
    rf = make_run(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link_to_images").symlink_to(rf.src / "images")
    (tmp_path / "link_to_empty").symlink_to(tmp_path / "elsewhere")
    before = _tree(tmp_path)
    for dest, why in [(rf.run / "clean", "refusing to export into the run folder"),
                      (rf.src / "clean", "refusing to export into the source data folder"),
                      (tmp_path / "link_to_images" / "clean", "refusing to export into"),
                      (tmp_path / "link_to_empty", "exists and is not a folder"),
                      (tmp_path, "refusing to export to a folder that contains")]:
        assert cli.main(["export", str(rf.run), "--to", str(dest)]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, (dest, err)
    scores = rf.run / "scores.csv"
    scores.write_text(scores.read_text().replace("case05", "../../x"))
    assert cli.main(["export", str(rf.run), "--to", str(tmp_path / "out" / "clean")]) == 2
    assert "unsafe image id '../../x'" in capsys.readouterr().err
    after = _tree(tmp_path)
    after.pop("run/scores.csv")
    before.pop("run/scores.csv")
    assert after == before  # nothing written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "elsewhere", "link_to_empty", "link_to_images",
                                                          "run"]
    assert not (tmp_path.parent / "x").exists() and not list((tmp_path / "elsewhere").iterdir())


# ---------------------------------------------------------------------------------- untrusted files


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    """Static guard over the whole package, plugin included: a new loader cannot slip in unsafely."""
    offences = []
    for py in sorted((ROOT / "crl_napari").rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{py.relative_to(ROOT)}:{node.lineno}: {name}"
            if name.endswith("torch.load"):
                safe = kw.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    offences.append(f"{where} without weights_only=True")
            elif name.split(".")[-1] in ("load", "loads") and name.split(".")[0] in ("pickle", "dill", "joblib",
                                                                                     "cloudpickle"):
                offences.append(where)
            elif name.endswith(("np.load", "numpy.load")):
                if "allow_pickle" in kw and not (isinstance(kw["allow_pickle"], ast.Constant)
                                                 and kw["allow_pickle"].value is False):
                    offences.append(f"{where} with allow_pickle")
            elif name.endswith(("torch.jit.load", "torch.package.PackageImporter")):
                offences.append(where)
    assert offences == []


class _Payload:
    """Pickles as a call to os.mkdir: unpickling this file runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_checkpoint_carrying_code_is_rejected_everywhere(reference, data, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    good = read_checkpoint(reference.run / CHECKPOINT)
    hostile = tmp_path / "hostile.pt"
    torch.save({**good, "models": [_Payload(str(marker)), *good["models"][1:]]}, hostile)
    torch.load(hostile, weights_only=False)  # proof: the unsafe loader runs the payload
    assert marker.is_dir()
    marker.rmdir()
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    shutil.copy(hostile, run / CHECKPOINT)
    for argv in (["score", str(run)], ["evaluate", str(run)], ["info", str(run)],
                 ["train", str(data), "--out", str(run), "--resume", "--quiet"]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        if argv[0] == "info":  # reads config/history/cases only: no checkpoint involved
            assert code == 0
            continue
        assert code == 2 and f"{run / CHECKPOINT}: not a loadable crl-napari checkpoint" in err, (argv, err)
        assert "Traceback" not in err
    with pytest.raises(TrainingError, match="not a loadable"):
        cascade.load_models(run)
    assert not marker.exists()
    ReviewSession.open(run).accept(ReviewSession.open(run).ids[0])  # review never reads the checkpoint


def test_other_config_or_version_is_refused_by_name(reference, data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    # resuming with other settings: refused, naming each one (not silently ignored)
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--lr", "0.1", "--quiet"]) == 2
    assert "the run was trained with other settings; a resumed run keeps its own (saved, asked): " \
           "{'lr': (0.001, 0.1)}" in capsys.readouterr().err
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--size", "64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the run was made with other data settings" in err and "{'size': (32, 64)}" in err, err
    # a checkpoint copied in from a run with other settings
    ckpt = read_checkpoint(run / CHECKPOINT)
    ckpt["config"]["T"] = 0.25
    torch.save(ckpt, run / CHECKPOINT)
    for command in ("score", "evaluate"):
        assert cli.main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert f"{run / CHECKPOINT}: does not belong to this run" in err and "'T': (0.5, 0.25)" in err, err
    # files from another version
    ckpt["format"] = 2
    torch.save(ckpt, run / CHECKPOINT)
    assert cli.main(["score", str(run)]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["brand_new_setting"] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match=r"config\.json: invalid run configuration .*another version"):
        RunFolder(run)
    assert cli.main(["info", str(run)]) == 2
    assert "written by another version" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- out of memory


def _oom_forward(monkeypatch, when: str, refs: list) -> None:
    """UNet.forward raising CUDA's out-of-memory error at one kind of call; the nets are weakly recorded."""
    real = UNet.forward
    seen = {"n": 0}

    def forward(self, x):
        refs.append(weakref.ref(self))
        kind = ("validation" if not self.training else "training" if torch.is_grad_enabled() else "selection")
        if kind == when or (when == "stage2" and kind == "training"):
            seen["n"] += 1
            if seen["n"] == 2:  # the second such call: the first step went through
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB)")
        return real(self, x)

    monkeypatch.setattr(UNet, "forward", forward)


@pytest.mark.parametrize("when", ["selection", "training", "stage2", "validation"])
def test_out_of_gpu_memory_is_a_clear_error_and_frees_the_run(when, monkeypatch):
    x, y = disks()
    refs: list = []
    _oom_forward(monkeypatch, when, refs)
    cfg = TrainConfig(strategy="crl", k=0 if when == "stage2" else 1, **TINY)
    with pytest.raises(TrainingError) as err:
        list(cascade.train(x, y, cfg, val=(x[:4], y[:4])))
    msg = str(err.value)
    assert msg.startswith("out of GPU memory at batch size 4") and "try a smaller batch size, e.g. 2" in msg
    assert "--batch-size 2" in msg
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in msg
    assert err.value.__cause__ is None and err.value.__context__ is None  # no traceback pins the tensors
    assert refs and all(r() is None for r in refs), "the failed run's nets are still alive"
    monkeypatch.undo()  # the same process retries, with the smaller batch
    events = list(cascade.train(x, y, TrainConfig(strategy="crl", k=1, **{**TINY, "batch_size": 2})))
    assert isinstance(events[-1], cascade.Finished) and not events[-1].stopped


def test_cli_out_of_gpu_memory_exit_2_then_a_smaller_batch_trains(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _oom_forward(monkeypatch, "training", [])
    assert cli.main(["train", str(data), "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "crl-napari train: error: out of GPU memory at batch size 4" in err and "--batch-size 2" in err
    monkeypatch.undo()
    # what the message says to do, in the same folder: nothing was trained there yet, so it starts over
    assert cli.main(["train", str(data), "--out", str(out), *_with(QUICK, "--batch-size", "2")]) == 0
    assert RunFolder(out).train_config.batch_size == 2 and RunFolder(out).has_scores
