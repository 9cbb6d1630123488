"""Issue 12: a run folder from someone else must never touch anything outside itself.

One row per class of hostile run folder. Each builds a real run with the project's own code (a tiny CLI
training on the built-in phantom set), tampers with a copy, runs the command a user would run
(``cli.main``), and asserts: exit status 2 with one line naming the file and no traceback, and nothing
outside the run changed (checksums of the data folder and of a decoy folder beside it, before and after).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from test_data import write_dicom

from crl_napari import atomic, cli
from crl_napari import export as export_mod
from crl_napari.data import DataError, read_image
from crl_napari.phantoms import write_sample_set
from crl_napari.review import ReviewError, ReviewSession
from crl_napari.runs import CASES, CHECKPOINT, CONFIG, HISTORY, RunFolder, is_locked, writer_lock

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "2", "--batch-size", "4", "--lr", "0.05",
         "--quiet"]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1, err
    for n in needles:
        assert n in line[0], (n, err)
    return line[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """data/ (the originals), decoy/ (a folder beside it with a secret) and a trained, scored run/."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("world")
    data = write_sample_set(base / "data", n=12, size=64, noise_ratio=0.5, seed=3)
    decoy = base / "decoy"
    decoy.mkdir()
    (decoy / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    iio.imwrite(decoy / "photo.png", np.full((16, 16), 7, np.uint8))
    run = base / "run"
    assert cli.main(["train", str(data), "--out", str(run), *QUICK]) == 0
    torch.set_num_threads(n)
    return SimpleNamespace(base=base, data=data, decoy=decoy, run=run)


@pytest.fixture
def w(world, tmp_path, capsys) -> SimpleNamespace:
    """A fresh copy of the run to tamper with; on teardown, the data and the decoy are as they were."""
    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    before = (_tree(world.data), _tree(world.decoy))
    capsys.readouterr()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SimpleNamespace(run=run, data=world.data, decoy=world.decoy, base=world.base, tmp=tmp_path)
    torch.set_num_threads(n)
    assert (_tree(world.data), _tree(world.decoy)) == before, "something outside the run changed"


# ----------------------------------------------------------------------------------------------- ids


def test_traversal_id_in_cases_never_writes_beside_the_originals(w, capsys):
    rows = _rows(w.run / CASES)
    target = w.data / "masks" / rows[0]["id"]
    rows[0]["id"] = os.path.relpath(target, w.run / "corrected")  # ../../../data/masks/<id>
    _write_rows(w.run / CASES, rows)
    for argv in (["score", str(w.run)], ["export", str(w.run), "--to", str(w.tmp / "clean")], "unscored",
                 ["train", str(w.data), "--out", str(w.run), "--resume", "--quiet"]):
        if argv == "unscored":  # a run killed while scoring: the resume reads its cases and scores them
            (w.run / "scores.csv").unlink()
            continue
        assert cli.main(argv) == 2, argv
        _one_line_error(capsys, f"{w.run / CASES}: line 2: unsafe image id")
    assert not list(w.data.rglob("*_prob.png")) and not (w.tmp / "clean").exists()


# ------------------------------------------------------------------------------------- originals


@pytest.mark.parametrize("where", ["outside", "link", "not_an_image"])
def test_image_path_pointing_at_any_file_is_never_copied(w, capsys, where):
    rows = _rows(w.run / CASES)
    if where == "outside":
        rows[0]["image_path"] = str(w.decoy / "id_rsa")
    elif where == "not_an_image":
        rows[0]["image_path"] = str(w.data / "split.csv")
    _write_rows(w.run / CASES, rows)
    link = w.data / "images" / f"{rows[0]['id']}.png"
    saved = w.tmp / "saved.png"
    if where == "link":  # a link inside the data folder that leads out of it
        shutil.move(link, saved)
        link.symlink_to(w.decoy / "photo.png")
    try:
        assert cli.main(["export", str(w.run), "--to", str(w.tmp / "clean")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "refused" in err and rows[0]["id"] in err, err
        assert not (w.tmp / "clean").exists()
        assert not [p for p in w.tmp.iterdir() if "partial" in p.name]
    finally:
        if where == "link":
            link.unlink()
            shutil.move(saved, link)


# ------------------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("entry", ["corrected", "scores.csv", "scoring.json"])
def test_a_run_entry_linking_outside_is_refused(w, capsys, entry):
    target = w.decoy / "inside_decoy"
    if entry == "corrected":
        shutil.rmtree(w.run / entry)
        target.mkdir()
        (w.run / entry).symlink_to(target)
    else:
        (w.run / entry).unlink()
        (w.run / entry).symlink_to(w.decoy / "id_rsa")
    try:
        assert cli.main(["score", str(w.run)]) == 2
        _one_line_error(capsys, "is a symbolic link")
        if entry == "corrected":
            assert list(target.iterdir()) == []
    finally:
        (w.run / entry).unlink()
        if target.exists():
            target.rmdir()


@pytest.mark.parametrize("text", ['{"size_offset": "big"}', '{"size_offset": NaN}', '{"size_offset": Infinity}',
                                  '{"size_offset": true}', '[0.5]', 'not json', '{"size_offset": 0.5'])
def test_a_scoring_file_holding_anything_else_is_one_line_naming_it(w, capsys, text):
    assert isinstance(RunFolder(w.run).size_offset, float)  # the default calibrates: what its scoring wrote reads back
    (w.run / "scoring.json").write_text(text)
    assert cli.main(["info", str(w.run)]) == 2
    _one_line_error(capsys, "scoring.json")


def test_edits_folder_linking_outside_is_refused_by_the_review(w):
    (w.run / "edits").symlink_to(w.decoy)
    s = ReviewSession.open(w.run, reviewer="ana")
    with pytest.raises(ReviewError, match="is a symbolic link"):
        s.edit(s.ids[0], np.ones((32, 32), bool))
    assert s.status(s.ids[0]) == "pending"
    (w.run / "edits").unlink()


# -------------------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("section, field, value, why", [
    ("train", "width", 10**6, "width must be in [1, 256]"),
    ("train", "depth", 99, "depth must be in [1, 6]"),
    ("train", "epochs", "3", "epochs must be an integer"),
    ("train", "lr", float("nan"), "lr must be a finite number"),
    ("train", "device", "cuda; rm -rf /", "device must be auto"),
    ("data", "size", 100_000, "data.size must be in [8, 1024]"),
    ("data", "size", 34, "not divisible by 2**depth"),
    ("data", "root", 5, "data.root must be a folder path"),
])
def test_config_values_are_checked_before_anything_is_allocated(w, capsys, section, field, value, why):
    cfg = json.loads((w.run / CONFIG).read_text())
    cfg[section][field] = value
    (w.run / CONFIG).write_text(json.dumps(cfg))  # NaN is written as NaN: Python's json reads it back
    tracemalloc.start()
    try:
        for command in ("info", "score", "evaluate"):
            assert cli.main([command, str(w.run)]) == 2
            _one_line_error(capsys, f"{w.run / CONFIG}: invalid run configuration", why)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, peak  # nothing was built from the hostile values


# ----------------------------------------------------------------------------------------- the lock


def test_a_second_writer_is_refused_naming_the_holder(w, capsys):
    with writer_lock(w.run, "train"):
        assert is_locked(w.run).startswith(f"pid {os.getpid()}")
        for argv in (["score", str(w.run)], ["train", str(w.data), "--out", str(w.run), "--resume", "--quiet"]):
            assert cli.main(argv) == 2
            _one_line_error(capsys, f"{w.run}: in use by pid {os.getpid()}", "(train, since")
    assert is_locked(w.run) is None
    assert cli.main(["score", str(w.run)]) == 0  # released: the next writer goes ahead


def test_two_trainings_into_one_folder_one_wins_and_kill_9_releases_the_lock(w):
    out = w.tmp / "same"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [sys.executable, "-m", "crl_napari.cli", "train", str(w.data), "--out", str(out),
            *QUICK[:-3], "--epochs", "200", "--quiet"]
    kids = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    try:
        end = time.monotonic() + 180
        while all(k.poll() is None for k in kids) and time.monotonic() < end:
            time.sleep(0.05)
        loser = next(k for k in kids if k.poll() is not None)
        winner = next(k for k in kids if k is not loser)
        assert winner.poll() is None and is_locked(out) == is_locked(out) is not None
        err = loser.stderr.read()
        assert loser.returncode == 2 and f"in use by pid {winner.pid}" in err and "Traceback" not in err, err
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()  # SIGKILL: the kernel drops the flock with the process
            k.wait()
    assert is_locked(out) is None
    info = RunFolder(out).summary()
    assert info["epochs_done"] <= info["epochs"] == 200


# ------------------------------------------------------------------------ history, checkpoint, scores


def test_a_failed_checkpoint_save_never_leaves_history_ahead_of_the_weights(w, capsys, monkeypatch):
    out = w.tmp / "full"
    real = atomic._flush_to_disk
    saves = []

    def disk_full_at_the_second_checkpoint(fh, path):
        if path.name == CHECKPOINT:
            saves.append(path)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, path)

    monkeypatch.setattr(atomic, "_flush_to_disk", disk_full_at_the_second_checkpoint)
    assert cli.main(["train", str(w.data), "--out", str(out), *QUICK[:-3], "--epochs", "3", "--quiet"]) == 2
    _one_line_error(capsys, f"{out / CHECKPOINT}: disk full")
    run = RunFolder(out)
    from crl_napari.cascade import read_checkpoint

    assert read_checkpoint(out / CHECKPOINT)["epoch"] == 0
    assert [h.epoch for h in run.history_rows()] == [0]  # the epoch whose weights were lost is not listed
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(atomic, "_flush_to_disk", real)
    # a row someone appended beyond the checkpoint: resume trusts the weights and trims it
    with open(out / HISTORY, "a") as fh:
        fh.write("2,2,0.1,0.1,0.1,0.5,0.01,1,\n")
    assert cli.main(["train", str(w.data), "--out", str(out), "--resume", "--quiet"]) == 0
    assert [h.epoch for h in RunFolder(out).history_rows()] == [0, 1, 2]
    assert not RunFolder(out).scores_stale
    os.utime(out / CHECKPOINT, ns=(time.time_ns() + 10**9,) * 2)  # trained on after scoring
    capsys.readouterr()
    assert RunFolder(out).scores_stale and cli.main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["scores_stale"] is True


# ----------------------------------------------------------------------------------- decoding bombs


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 8x8 PNG whose IHDR (CRC fixed) claims width x height pixels."""
    iio.imwrite(path, np.zeros((8, 8), np.uint8))
    raw = bytearray(path.read_bytes())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def _bombs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bmp = folder / "bomb.bmp"
    iio.imwrite(bmp, np.zeros((8, 8, 3), np.uint8))
    raw = bytearray(bmp.read_bytes())
    raw[18:26] = struct.pack("<ii", 50_000, 50_000)
    bmp.write_bytes(bytes(raw))
    jpg = folder / "bomb.jpg"
    iio.imwrite(jpg, np.zeros((8, 8), np.uint8))
    raw = bytearray(jpg.read_bytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", 50_000, 50_000)
    jpg.write_bytes(bytes(raw))
    tif = folder / "bomb.tif"
    tifffile.imwrite(tif, np.zeros((8, 8), np.uint8))
    raw = bytearray(tif.read_bytes())
    with tifffile.TiffFile(tif) as t:  # patch the ImageWidth/ImageLength tag values in place
        for tag in ("ImageWidth", "ImageLength"):
            offset = t.pages[0].tags[tag].valueoffset
            size = t.pages[0].tags[tag].count * (2 if t.pages[0].tags[tag].dtype == 3 else 4)
            raw[offset:offset + size] = (50_000).to_bytes(size, "little")
    tif.write_bytes(bytes(raw))
    dcm = write_dicom(folder / "bomb.dcm", np.zeros((8, 8), np.uint16), Rows=50_000, Columns=50_000)
    return {"png": _png_claiming(folder / "bomb.png", 50_000, 50_000), "bmp": bmp, "jpg": jpg, "tif": tif,
            "dcm": dcm}


def test_a_decoding_bomb_of_every_format_is_refused_from_its_header(tmp_path):
    for kind, path in _bombs(tmp_path).items():
        assert path.stat().st_size < 10_000
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match=rf"{path.name}: claims 2500 megapixels"):
                read_image(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 << 20, (kind, peak)
    real = tmp_path / "real.png"
    iio.imwrite(real, np.zeros((64, 48), np.uint8))
    assert read_image(real).shape == (64, 48)
    with pytest.raises(DataError, match="more than the budget"):  # the budget is a setting
        read_image(real, max_pixels=64 * 48 - 1)


def test_skip_bad_skips_a_decoding_bomb(w, capsys):
    data = w.tmp / "data"
    shutil.copytree(w.data, data)
    victim = sorted((data / "images").iterdir())[0]
    _png_claiming(victim, 50_000, 50_000)
    out = w.tmp / "bombed"
    assert cli.main(["train", str(data), "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert f"{victim}: claims 2500 megapixels" in err and "Traceback" not in err, err
    assert cli.main(["train", str(data), "--out", str(out), "--skip-bad", *QUICK]) == 0
    skipped = RunFolder(out).config["data"]["skipped"]
    assert [s["path"] for s in skipped] == [str(victim)]


# ---------------------------------------------------------------------------------- disk full, races


def test_disk_full_during_export_is_one_line_and_leaves_nothing(w, capsys, monkeypatch):
    real = atomic._flush_to_disk
    calls = []

    def full(fh, path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, path)

    monkeypatch.setattr(atomic, "_flush_to_disk", full)
    before = _tree(w.run)
    assert cli.main(["export", str(w.run), "--to", str(w.tmp / "clean")]) == 2
    _one_line_error(capsys, "disk full")
    assert sorted(p.name for p in w.tmp.iterdir()) == ["run"] and _tree(w.run) == before


def test_a_lost_export_race_is_one_line_and_the_winner_stays_whole(w, capsys, monkeypatch):
    dest = w.tmp / "clean"
    real = export_mod._build
    winner = {}

    def build_then_lose_the_race(tmp, *args):
        real(tmp, *args)
        if not winner:  # another export to the same destination finishes first
            monkeypatch.setattr(export_mod, "_build", real)
            export_mod.export(w.run, dest)
            winner.update(_tree(dest))

    monkeypatch.setattr(export_mod, "_build", build_then_lose_the_race)
    assert cli.main(["export", str(w.run), "--to", str(dest)]) == 2
    _one_line_error(capsys, f"{dest}: another export finished there first")
    assert _tree(dest) == winner and len(winner) > 3
    assert sorted(p.name for p in w.tmp.iterdir()) == ["clean", "run"]


def test_the_pixel_budget_is_a_setting_of_train(w, capsys):
    """--max-megapixels lowers the budget: an ordinary image over it is refused by name before decoding (and
    --skip-bad skips it); a budget of 0 is one line, not a traceback."""
    data = w.tmp / "data-budget"
    shutil.copytree(w.data, data)
    big = sorted((data / "images").iterdir())[0]
    iio.imwrite(big, np.zeros((64, 64), np.uint8))  # 4096 px; the others are smaller
    out = w.tmp / "budget"
    assert cli.main(["train", str(data), "--out", str(out), "--max-megapixels", "0.002", *QUICK]) == 2
    err = capsys.readouterr().err
    assert str(big) in err and "megapixels" in err and "Traceback" not in err, err
    assert not out.exists()
    assert cli.main(["train", str(data), "--out", str(out), "--max-megapixels", "0", *QUICK]) == 2
    assert "--max-megapixels must be above 0" in capsys.readouterr().err
