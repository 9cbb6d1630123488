"""Batched atomic writes (atomic.AtomicBatch): each file whole or absent under its name, whatever fails."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from crl_napari import atomic
from crl_napari.atomic import AtomicBatch, DiskFullError, atomic_write_files, remove_stale_temps
from crl_napari.ids import UnsafeIdError
from crl_napari.runs import RunFolder
from crl_napari.settings import TrainConfig


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_batch_writes_every_file_and_replaces_old_content(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    atomic_write_files([(tmp_path / f"{n}.bin", n.encode() * 3) for n in "abc"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.bin": b"aaa", "b.bin": b"bbb",
                                                                    "c.bin": b"ccc"}


def test_nothing_takes_its_name_before_the_commit_and_a_discard_leaves_nothing(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    batch = AtomicBatch()
    batch.add(tmp_path / "a.bin", b"new")
    batch.add(tmp_path / "b.bin", b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"old" and not (tmp_path / "b.bin").exists()
    assert len(_temps(tmp_path)) == 2 and remove_stale_temps(tmp_path) == []  # this process still runs
    batch.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"old"


def test_a_full_disk_at_one_fsync_is_one_line_and_changes_no_name(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(b"old")
    real = atomic._flush_to_disk

    def full_at_c(fh, path):
        if path.name == "c.bin":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, path)

    monkeypatch.setattr(atomic, "_flush_to_disk", full_at_c)
    with pytest.raises(DiskFullError, match="c.bin: disk full"):
        atomic_write_files([(tmp_path / f"{n}.bin", b"new") for n in "abcd"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"old"


def test_an_error_inside_the_with_block_discards_the_batch(tmp_path):
    with pytest.raises(RuntimeError), AtomicBatch() as batch:
        batch.add(tmp_path / "a.bin", b"x")
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no-such: folder does not exist"):
        AtomicBatch().add(tmp_path / "no-such" / "a.bin", b"x")


def test_case_files_appear_by_the_case_table_and_temps_of_a_killed_writer_are_sweepable(tmp_path):
    run = RunFolder.create(tmp_path / "run", TrainConfig(width=4, depth=2), {
        "root": None, "size": 16, "simulate_noise": 0.0, "noise_seed": 0})
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(3)]
    for i in ids:
        run.write_case_files(i, rng.normal(size=(16, 16)).astype(np.float32), rng.random((16, 16)) > 0.5)
    images = run.path / "images"
    assert not any((images / f"{i}.png").exists() for i in ids)  # not yet: no cases.csv lists them
    assert len(_temps(images)) == 3
    # what a killed writer leaves (its pid gone) is what remove_stale_temps sweeps
    dead = images / ".x.png.999999999.0123abcd.tmp"
    dead.write_bytes(b"half")
    assert remove_stale_temps(images) == [dead]
    run.write_case_table([{"id": i, "split": "train", "image_path": f"/d/images/{i}.png",
                           "mask_path": f"/d/masks/{i}.png", "orig_h": 16, "orig_w": 16} for i in ids])
    assert _temps(images) == [] and _temps(run.path / "given") == []
    assert [r.id for r in run.case_rows()] == ids
    assert run.image(ids[0]).shape == (16, 16) and run.given(ids[2]).dtype == bool
    assert os.path.getsize(images / "c1.png") > 0


def test_encode_png_writes_what_imageio_wrote_and_reads_back_exactly():
    """encode_png calls Pillow itself (imageio's imwrite searched for optional modules on every call): the bytes are
    the ones imageio's Pillow plugin wrote, for every kind of array the run folder holds, and decode to the input."""
    import imageio.v3 as iio

    from crl_napari.atomic import encode_png

    rng = np.random.default_rng(7)
    arrays = [(rng.random((64, 64)) * 255).astype(np.uint8),  # display image
              (rng.random((40, 30)) * 65535).astype(np.uint16),  # 16-bit probability map
              rng.random((33, 17)) > 0.5,  # a mask as bool: 0/255
              (rng.random((12, 9, 3)) * 255).astype(np.uint8),  # RGB
              np.asfortranarray((rng.random((20, 30)) * 255).astype(np.uint8))[:, ::2]]  # not contiguous
    for arr in arrays:
        expected = arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
        data = encode_png(arr)
        assert data == bytes(iio.imwrite("<bytes>", expected, extension=".png")), arr.dtype
        assert np.array_equal(iio.imread(data), expected)
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros(5, np.uint8))


def test_case_files_from_a_stream_are_the_bytes_one_at_a_time_writes(tmp_path):
    """write_case_files_from encodes in threads, CASE_BATCH cases at a time: the same files as write_case_files
    one by one, progress after each batch, and the batches before the last already made durable."""
    from crl_napari.runs.folder import CASE_BATCH

    rng = np.random.default_rng(1)
    n = CASE_BATCH * 2 + 3
    cases = [(f"c{i:04d}", rng.normal(size=(8, 8)).astype(np.float32), rng.random((8, 8)) > 0.5) for i in range(n)]
    runs = {}
    for name in ("one", "stream"):
        runs[name] = RunFolder.create(tmp_path / name, TrainConfig(width=4, depth=2), {
            "root": None, "size": 8, "simulate_noise": 0.0, "noise_seed": 0})
    for case in cases:
        runs["one"].write_case_files(*case)
    done = list(runs["stream"].write_case_files_from(iter(cases), workers=3))
    assert done == [CASE_BATCH, 2 * CASE_BATCH, n]
    assert len(list((runs["stream"].path / "images").glob("c*.png"))) == 2 * CASE_BATCH  # named by the batches
    rows = [{"id": i, "split": "train", "image_path": f"/d/images/{i}.png", "mask_path": f"/d/masks/{i}.png",
             "orig_h": 8, "orig_w": 8} for i, _, _ in cases]
    for run in runs.values():
        run.write_case_table(rows)
    for sub in ("images", "given"):
        one, stream = runs["one"].path / sub, runs["stream"].path / sub
        assert sorted(p.name for p in stream.iterdir()) == sorted(p.name for p in one.iterdir())
        assert all((stream / p.name).read_bytes() == p.read_bytes() for p in one.iterdir())
    bad = RunFolder.create(tmp_path / "bad", TrainConfig(width=4, depth=2), {
        "root": None, "size": 8, "simulate_noise": 0.0, "noise_seed": 0})
    with pytest.raises(UnsafeIdError, match="unsafe image id .bad/id."):  # a worker refuses it: the stream stops
        list(bad.write_case_files_from([("bad/id", *cases[0][1:])]))
