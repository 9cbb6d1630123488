"""The run's on-disk cache: it holds what load_dataset decodes, a killed build resumes to the same bytes, a
changed file is decoded again alone, a tampered cache is refused in one line, and training from it equals
training from arrays (in process and with worker processes)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from crl_napari import cascade, pipeline
from crl_napari.atomic import atomic_write_png
from crl_napari.cache import CacheError, build, build_cache, open_cache
from crl_napari.data import load_dataset, read_image, resize_image, scan_dataset
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import CACHE, CACHE_IMAGES, CACHE_INDEX, CACHE_MASKS, RunFolder
from crl_napari.settings import TrainConfig
from crl_napari.sources import CacheSource

SIZE = 32
TINY = dict(epochs=2, batch_size=4, width=4, depth=2, lr=0.05, device="cpu", threads=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Twelve phantoms of 48 px (resized to 32 when cached), written by the project's own code."""
    return write_sample_set(tmp_path_factory.mktemp("data") / "set", n=12, size=48, noise_ratio=0.5)


def _maps(run) -> tuple[bytes, bytes, dict]:
    folder = run / CACHE
    return ((folder / CACHE_IMAGES).read_bytes(), (folder / CACHE_MASKS).read_bytes(),
            json.loads((folder / CACHE_INDEX).read_text())["entries"])


def test_the_cache_holds_what_load_dataset_decodes(folder, tmp_path):
    cache = build_cache(tmp_path, scan_dataset(folder), SIZE)
    ds = load_dataset(folder, size=SIZE)
    cases = cache.cases()
    assert [c.id for c in cases] == ds.ids and [c.split for c in cases] == [c.split for c in ds]
    for c, d in zip(cases, ds, strict=True):
        assert c.original_shape == d.original_shape == (48, 48)
        assert np.array_equal(cache.mask(c.slot), d.mask)
        # grey values are kept in 8 bits at training size; z-scored when read
        u8 = np.round(resize_image(read_image(d.image_path), SIZE) * 255).astype(np.uint8)
        assert np.array_equal(cache.slots(CACHE_IMAGES)[c.slot], u8)
        assert np.abs(cache.image(c.slot) - d.image).max() < 0.05
    assert open_cache(tmp_path).cases() == cases


def test_a_killed_build_resumes_to_the_uninterrupted_result(folder, tmp_path):
    listing = scan_dataset(folder)
    for run in ("whole", "killed"):
        (tmp_path / run).mkdir()
    build_cache(tmp_path / "whole", listing, SIZE)
    gen = build(tmp_path / "killed", listing, SIZE, chunk=3, save_every=0)
    with pytest.raises(KeyboardInterrupt):
        for p in gen:
            if p.done >= 6:
                raise KeyboardInterrupt  # the user's Ctrl-C (or a kill) in the middle of the build
    gen.close()
    half = json.loads((tmp_path / "killed" / CACHE / CACHE_INDEX).read_text())["entries"]
    assert sum(e is not None for e in half) == 6
    with pytest.raises(CacheError, match="never finished"):
        open_cache(tmp_path / "killed")
    seen = []
    build_cache(tmp_path / "killed", listing, SIZE, progress=seen.append, chunk=3, save_every=0, workers=2)
    assert seen[-1].decoded == 6 and seen[-1].done == 12  # only the other half was decoded
    assert _maps(tmp_path / "killed") == _maps(tmp_path / "whole")
    assert "caching 12/12 images" in seen[-1].text()


def test_a_changed_file_is_decoded_again_alone(folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    build_cache(tmp_path, scan_dataset(data), SIZE)
    ids = [c.id for c in open_cache(tmp_path).cases()]
    changed = data / "images" / f"{ids[4]}.png"
    atomic_write_png(changed, np.full((48, 48), 200, np.uint8))
    os.utime(changed, ns=(1, 1))  # another mtime_ns and size
    seen = []
    cache = build_cache(tmp_path, scan_dataset(data), SIZE, progress=seen.append)
    assert seen[-1].decoded == 1
    assert (cache.slots(CACHE_IMAGES)[4] == 200).all()
    seen.clear()
    build_cache(tmp_path, scan_dataset(data), SIZE * 2, progress=seen.append)  # another size: all again
    assert seen[-1].decoded == 12


@pytest.mark.parametrize("tamper, message", [
    (lambda c: (c / CACHE_INDEX).write_text("{not json"), "unreadable cache index"),
    (lambda c: (c / CACHE_INDEX).write_text(json.dumps({"format": 1, "root": "/x", "size": 32, "entries": [
        ["a", None, ["../../etc/passwd", 1, 1], ["m.png", 1, 1], 32, 32, [], []]]})), "slot 0: not a cache entry"),
    (lambda c: (c / CACHE_INDEX).write_text(json.dumps({"format": 1, "root": "/x", "size": -3, "entries": []})),
     "bad image size"),
    (lambda c: os.truncate(c / CACHE_IMAGES, 100), "holds 100 bytes"),
])
def test_a_tampered_cache_is_refused_in_one_line_naming_the_file(folder, tmp_path, tamper, message):
    build_cache(tmp_path, scan_dataset(folder), SIZE)
    tamper(tmp_path / CACHE)
    with pytest.raises(CacheError, match=message) as err:
        open_cache(tmp_path)
    assert str(tmp_path / CACHE) in str(err.value) and "\n" not in str(err.value)
    build_cache(tmp_path, scan_dataset(folder), SIZE)  # building again repairs it: a cache is derived data
    assert len(open_cache(tmp_path).cases()) == 12


def test_a_map_that_links_out_of_the_run_is_refused(folder, tmp_path):
    (tmp_path / "run").mkdir()
    build_cache(tmp_path / "run", scan_dataset(folder), SIZE)
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"the user's file")
    (tmp_path / "run" / CACHE / CACHE_MASKS).unlink()
    (tmp_path / "run" / CACHE / CACHE_MASKS).symlink_to(outside)
    with pytest.raises(CacheError, match="symbolic link"):
        open_cache(tmp_path / "run")
    with pytest.raises(Exception, match="symbolic link"):
        build_cache(tmp_path / "run", scan_dataset(folder), SIZE)
    assert outside.read_bytes() == b"the user's file"


@pytest.mark.parametrize("workers", [0, 2])
def test_training_from_the_cache_equals_training_from_arrays(folder, tmp_path, workers):
    cache = build_cache(tmp_path, scan_dataset(folder), SIZE)
    cases = cache.cases()
    images = np.stack([cache.image(c.slot) for c in cases])[:, None]
    masks = np.stack([cache.mask(c.slot) for c in cases])
    cfg = TrainConfig(strategy="crl", k=1, workers=workers, **TINY)
    source = CacheSource(cache.folder, len(cache), SIZE, [c.slot for c in cases], masks)
    from_cache = [e for e in cascade.train_from(source, cfg) if isinstance(e, cascade.EpochEnd | cascade.Finished)]
    from_arrays = [e for e in cascade.train(images, masks, cfg) if isinstance(e, cascade.EpochEnd | cascade.Finished)]
    assert [e.losses for e in from_cache[:-1]] == [e.losses for e in from_arrays[:-1]]
    for a, b in zip(from_cache[-1].models, from_arrays[-1].models, strict=True):
        for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(ta, tb), name


def test_a_run_trains_and_scores_from_its_cache(folder, tmp_path):
    run = tmp_path / "run"
    events = list(pipeline.train_run(folder, run, TrainConfig(strategy="ss", **TINY), size=SIZE,
                                     simulate_noise=0.5))
    caching = [e for e in events if type(e).__name__ == "CacheProgress" and e.what == "caching"]
    assert caching and caching[-1].done == 12 and events.index(caching[-1]) < 2  # the whole data folder, first
    writing = [e for e in events if type(e).__name__ == "CacheProgress" and e.what.startswith("writing")]
    started = next(i for i, e in enumerate(events) if isinstance(e, cascade.Started))
    assert [e.done for e in writing] == [9] and events.index(writing[0]) == started - 1  # then the run folder
    assert writing[0].text() == "writing the run folder: 9/9 images" + (f" · {writing[0].per_second:.0f}/s")
    scoring = [e for e in events if type(e).__name__ == "CacheProgress" and e.what == "scoring"]
    finished = next(i for i, e in enumerate(events) if isinstance(e, cascade.Finished))
    assert [e.done for e in scoring] == [0, 9] and events.index(scoring[0]) > finished  # scoring after training
    assert scoring[-1].text().startswith("scoring 9/9 images · ")
    rf = RunFolder(run)
    train_ids = [r.id for r in rf.case_rows()]
    assert len(train_ids) == 9 and len(open_cache(run).cases()) == 12  # the test split is cached (and checked)
    given = np.memmap(run / CACHE / "given.u8", np.uint8, "r", shape=(9, SIZE, SIZE))
    for i, id_ in enumerate(train_ids):
        assert np.array_equal(rf.given(id_), given[i] > 0)
    before = (run / "scores.csv").read_text()
    pipeline.score_run(run)  # from the cache: what training read, so the same scores
    assert (run / "scores.csv").read_text() == before
