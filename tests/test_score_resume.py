"""Scoring that was interrupted goes on where it was (runs.score_progress): the user's paths are Ctrl-C during
`crl-napari score` or during the scoring at the end of `crl-napari train`, then the same command again."""

import json
import os
import shutil

import pytest

from crl_napari import cli, pipeline
from crl_napari.cache import CacheProgress
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import SCORE_PROGRESS, RunError, RunFolder
from crl_napari.settings import TrainConfig

TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "4", "--batch-size", "4", "--lr", "0.05",
        "--second-pass", "0", "--quiet"]  # one pass: the scoring at the end of it is what these tests stop
CHUNK = 16  # images per scoring chunk (conftest's score_chunks_of_16)

pytestmark = pytest.mark.usefixtures("score_chunks_of_16")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("data") / "set", n=48, size=64, noise_ratio=0.5, seed=5)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A trained and scored run, and what its complete scoring wrote (scores.csv and every map's bytes)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", str(dataset), "--out", str(out), "--strategy", "crl", "--k", "1",
                     "--simulate-noise", "0.5", *TINY]) == 0
    return out, snapshot(out)


def snapshot(run) -> dict:
    files = {"scores.csv": (run / "scores.csv").read_bytes()}
    files.update({f"corrected/{p.name}": p.read_bytes() for p in sorted((run / "corrected").iterdir())})
    return files


def copy_unscored(trained, tmp_path):
    """The run as a kill during its scoring leaves it: trained, no scores.csv, no maps yet."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    (run / "scores.csv").unlink()
    shutil.rmtree(run / "corrected")
    (run / "corrected").mkdir()
    return run


class Interrupt(Exception):
    pass


def interrupt_after(chunks: int):
    """A progress callback that stops scoring (as Ctrl-C would) once ``chunks`` chunks are scored."""
    def progress(ev):  # the scoring's own progress (the size calibration's pass over the images comes first)
        if ev.what.startswith("scoring") and ev.decoded >= chunks * CHUNK:
            raise Interrupt
    return progress


def n_train(run) -> int:
    return sum(1 for line in (run / "cases.csv").read_text().splitlines()[1:] if line.strip())


def test_score_goes_on_after_an_interrupt_and_ends_as_an_uninterrupted_one(trained, tmp_path, capsys):
    run = copy_unscored(trained, tmp_path)
    n = n_train(run)
    assert n > 2 * CHUNK  # three chunks: the interrupt lands in the middle
    with pytest.raises(Interrupt):
        pipeline.score_run(run, interrupt_after(2))
    assert sorted(p.name for p in (run / SCORE_PROGRESS).iterdir()) == ["000000000.npz", "000000016.npz"]
    assert not (run / "scores.csv").exists()
    seen = []
    capsys.readouterr()
    assert cli.main(["info", str(run)]) == 0  # what `info` says of it
    info = json.loads(capsys.readouterr().out)
    assert info["scored"] is False and info["scoring_kept"] == 2 * CHUNK
    assert cli.main(["score", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"scoring (going on after a stop: {2 * CHUNK} scored before) {2 * CHUNK}/{n} images" in err, err
    assert f"{n}/{n} images" in err
    assert snapshot(run) == trained[1]  # the same scores and maps as one uninterrupted scoring
    assert not (run / SCORE_PROGRESS).exists() and pipeline.summary(run)["scoring_kept"] == 0
    # nothing left to go on from: a second scoring scores every image again
    pipeline.score_run(run, seen.append)
    assert seen[0].done == 0 and seen[-1].decoded == n and snapshot(run) == trained[1]


def test_train_resume_goes_on_with_the_scoring_it_was_in(trained, dataset, tmp_path, capsys):
    run = copy_unscored(trained, tmp_path)
    with pytest.raises(Interrupt):
        pipeline.score_run(run, interrupt_after(1))
    capsys.readouterr()
    assert cli.main(["train", str(dataset), "--out", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"scoring (going on after a stop: {CHUNK} scored before)" in err, err
    assert snapshot(run) == trained[1] and not (run / SCORE_PROGRESS).exists()


def test_chunks_that_are_not_this_scorings_are_scored_again(trained, dataset, tmp_path):
    """A torn or tampered chunk file, or one of other nets (another training's), is never trusted."""
    run = copy_unscored(trained, tmp_path)
    with pytest.raises(Interrupt):
        pipeline.score_run(run, interrupt_after(2))
    first, second = sorted((run / SCORE_PROGRESS).iterdir())
    first.write_bytes(first.read_bytes()[:100])  # torn
    other = tmp_path / "other"  # other nets: the same data trained with another seed
    assert cli.main(["train", str(dataset), "--out", str(other), "--strategy", "crl", "--k", "1",
                     "--simulate-noise", "0.5", "--seed", "7", *TINY]) == 0
    (other / "scores.csv").unlink()
    with pytest.raises(Interrupt):
        pipeline.score_run(other, interrupt_after(2))
    shutil.copy(other / SCORE_PROGRESS / second.name, second)
    seen = []
    pipeline.score_run(run, seen.append)
    assert seen[0].done == 0 and seen[-1].decoded == n_train(run)  # both chunks scored again
    assert snapshot(run) == trained[1]


def test_a_link_or_a_file_in_place_of_the_progress_folder_is_refused_in_one_line(trained, tmp_path, capsys):
    run = copy_unscored(trained, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, run / SCORE_PROGRESS)
    capsys.readouterr()
    assert cli.main(["score", str(run)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crl-napari score: error: ") and "symbolic link" in err[0], err
    assert str(run / SCORE_PROGRESS) in err[0]
    assert not any(outside.iterdir()) and (run / SCORE_PROGRESS).is_symlink()  # nothing written through it
    assert not any((run / "corrected").iterdir())  # refused before anything was scored
    (run / SCORE_PROGRESS).unlink()
    (run / SCORE_PROGRESS).write_text("a user's notes")
    with pytest.raises(RunError, match="is not a folder"):
        pipeline.score_run(run)
    assert (run / SCORE_PROGRESS).read_text() == "a user's notes" and not any((run / "corrected").iterdir())


def test_a_stop_while_scoring_keeps_the_chunks_and_resuming_goes_on(dataset, tmp_path):
    """The Train widget's path: Stop after training, while every image is scored; then Resume."""
    run = tmp_path / "run"
    config = TrainConfig(strategy="crl", k=1, epochs=2, batch_size=4, lr=0.05, width=4, depth=2)
    stop = []
    events = []
    for ev in pipeline.train_run(dataset, run, config, size=32, simulate_noise=0.5, should_stop=lambda: bool(stop)):
        events.append(ev)
        if isinstance(ev, CacheProgress) and ev.what == "scoring" and ev.decoded >= CHUNK:
            stop.append(True)  # pressed after the first chunk
    stopped = events[-1]
    n = n_train(run)
    assert isinstance(stopped, pipeline.ScoringStopped) and (stopped.done, stopped.total) == (CHUNK, n)
    assert not any(isinstance(e, pipeline.ScoresReady) for e in events)
    assert not (run / "scores.csv").exists() and RunFolder.can_resume(run)  # the widget offers Resume
    events = list(pipeline.train_run(dataset, run, config, size=32, simulate_noise=0.5, resume=True))
    scoring = [e for e in events if isinstance(e, CacheProgress) and e.what.startswith("scoring")]
    assert scoring[0].done == CHUNK and scoring[-1].decoded == n - CHUNK  # only the rest was scored
    assert isinstance(events[-1], pipeline.ScoresReady) and not (run / SCORE_PROGRESS).exists()
    went_on = snapshot(run)
    pipeline.score_run(run)
    assert snapshot(run) == went_on  # as one uninterrupted scoring


def test_train_resume_of_a_finished_run_is_refused_in_one_line_and_rewrites_nothing(trained, dataset, tmp_path,
                                                                                    capsys):
    """Scoring it again there would rewrite its maps, the corrections a reviewer accepted among them."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    capsys.readouterr()
    assert cli.main(["train", str(dataset), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"crl-napari train: error: {run}: trained and scored: nothing to resume (`crl-napari score` "
                   "scores it again, `crl-napari next-round` trains a review round)"]
    assert snapshot(run) == trained[1]


def test_the_nets_see_each_image_once_where_the_calibration_kept_its_maps(trained, tmp_path, monkeypatch):
    """With the size calibration (the default) the nets look at every image for the offset before any correction
    is made; the scoring that follows makes the corrections from the maps the calibration kept, within
    pipeline.CALIBRATION_KEEP_BYTES, instead of running the nets again. What it writes is the same to the byte
    whether every chunk's maps were kept, some, or none (the budget at 0: the nets run twice, as before)."""
    from crl_napari import cascade

    assert RunFolder(trained[0]).train_config.size_calibration == 1
    seen = []
    real = cascade.peer_probs

    def counted(models, images, *args, **kwargs):
        seen.append(len(images))
        return real(models, images, *args, **kwargs)

    monkeypatch.setattr(cascade, "peer_probs", counted)
    n = n_train(trained[0])
    assert n > 2 * CHUNK  # three chunks or more
    one_chunk = 3 * CHUNK * 32 * 32 * 4  # three nets' float32 maps of one chunk
    written = {}
    for name, budget in (("all", pipeline.CALIBRATION_KEEP_BYTES), ("one", one_chunk), ("none", 0)):
        run = copy_unscored(trained, tmp_path / name)
        monkeypatch.setattr(pipeline, "CALIBRATION_KEEP_BYTES", budget)
        seen.clear()
        pipeline.score_run(run)
        written[name] = (sum(seen), snapshot(run))
    assert written["all"][0] == n  # each image once
    assert written["one"][0] == 2 * n - CHUNK  # all but the kept chunk twice
    assert written["none"][0] == 2 * n
    assert written["all"][1] == written["one"][1] == written["none"][1] == trained[1]
