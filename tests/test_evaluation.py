"""evaluate_run streams its split chunk by chunk: the same Dice as the whole split in memory, and a bad file is one
line naming it."""

from __future__ import annotations

import pytest

from crl_napari import cli, evaluation
from crl_napari.data import DataError, load_dataset
from crl_napari.phantoms import write_sample_set
from crl_napari.pipeline import evaluate_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_sample_set(root / "set", n=12, size=32, noise_ratio=0.0, seed=5)
    assert cli.main(["train", str(data), "--out", str(root / "run"), "--strategy", "vanilla", "--size", "32",
                     "--width", "4", "--depth", "2", "--epochs", "1", "--batch-size", "4", "--quiet"]) == 0
    return data, root / "run"


def test_chunks_give_the_dice_of_the_whole_split_in_memory(run, monkeypatch):
    data, out = run
    whole = evaluate_run(out, load_dataset(data, size=32), "train")  # a Dataset in memory: one chunk
    monkeypatch.setattr(evaluation, "CHUNK_PIXELS", 2 * 32 * 32)  # two images a chunk
    seen = []
    real = evaluation.EvalCases.chunks
    monkeypatch.setattr(evaluation.EvalCases, "chunks", lambda self, n: seen.append(n) or real(self, n))
    streamed = evaluate_run(out, data, "train")
    assert seen == [2] and streamed["n"] == whole["n"] == 9 and streamed["split"] == "train"
    assert list(streamed["per_image"]) == list(whole["per_image"])
    assert streamed["per_image"] == pytest.approx(whole["per_image"], abs=1e-6)
    assert evaluate_run(out, data)["n"] == 3  # the test split by default


def test_a_bad_file_of_the_split_is_one_line_naming_it(run, tmp_path):
    data, out = run
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(data, copy)
    victim = sorted((copy / "images").iterdir())[-1]
    victim.write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        evaluate_run(out, copy, "all-of-it")  # no such split: every case, the broken one among them
    assert str(err.value).startswith(f"{victim}: ") and "\n" not in str(err.value)
