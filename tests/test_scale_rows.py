"""Large tables read fast and as strictly as before: cases.csv and scores.csv written by the run folder's own
writers read column by column to exactly the rows the row-by-row reader gives, and a bad cell anywhere still gets the
row-by-row reader's one line naming the file and line."""

from __future__ import annotations

import numpy as np
import pytest

from crl_napari.ids import UnsafeIdError, all_safe, is_safe_id
from crl_napari.runs import CASES, SCORES, RunError, RunFolder, rows
from crl_napari.scoring import ImageScores
from crl_napari.settings import TrainConfig

N = 300


@pytest.fixture
def run(tmp_path):
    folder = RunFolder.create(tmp_path / "run", TrainConfig(epochs=1, width=4, depth=2),
                              {"root": str(tmp_path / "data"), "size": 32, "simulate_noise": 0.25, "noise_seed": 0})
    rng = np.random.default_rng(0)
    ids = [f"case-{i:04d}.x_{i % 7}" for i in range(N)]
    corrupted = rng.random(N) < 0.3
    folder.write_case_table([{"id": i, "split": "train", "image_path": f"/d/images/{i}.png",
                              "mask_path": f"/d/masks/{i}.png", "orig_h": 32 + k, "orig_w": 40,
                              "corrupted": int(c), "noise_op": "dilate" if c else "none", "noise_n": 5 if c else 0}
                             for k, (i, c) in enumerate(zip(ids, corrupted, strict=True))])
    s = rng.uniform(0, 1, N)
    scores = ImageScores(suspicion=s, uncertainty=rng.uniform(0, 0.3, N), disagreement=rng.uniform(0, 1, N),
                         dice_given_corrected=1 - s, corrected=None, prob=None, pixel_uncertainty=None)
    folder.write_score_table(ids, scores, list(corrupted), [k % 3 for k in range(N)])
    return folder


def _row_by_row(path, kind):
    table = rows._read(path, ("id",))
    return rows._case_rows(table, set(), 10**9) if kind == "cases" else rows._score_rows(table)


def test_columns_read_to_the_rows_the_row_by_row_reader_gives(run):
    fast_cases, fast_scores = run.case_rows(), run.score_rows()
    assert fast_cases == _row_by_row(run.path / CASES, "cases") and len(fast_cases) == N
    assert fast_scores == _row_by_row(run.path / SCORES, "scores") and len(fast_scores) == N
    assert [r.rank for r in fast_scores] == list(range(1, N + 1))
    assert fast_cases[7].orig_h == 39 and isinstance(fast_cases[7].orig_h, int)
    assert {type(r.suspicion) for r in fast_scores} == {float} and {r.extra_pieces for r in fast_scores} == {0, 1, 2}


@pytest.mark.parametrize("file, column, value, message", [
    (SCORES, "suspicion", "nan", "line 151: suspicion is not finite"),
    (SCORES, "id", "../x", "line 151"),
    (SCORES, "extra_pieces", "1.5", "line 151: extra_pieces is not an integer"),
    (CASES, "orig_w", "0", "line 151: orig_w 0 is out of range"),
    (CASES, "split", "tran", "line 151: split 'tran'"),
    (CASES, "id", "case-0000.x_0", "line 151: id 'case-0000.x_0' listed twice"),
])
def test_a_bad_cell_anywhere_is_named_by_its_line(run, file, column, value, message):
    path = run.path / file
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[150].split(",")
    cells[header.index(column)] = value
    lines[150] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises((RunError, UnsafeIdError), match=message.replace("(", r"\(").replace(".", r"\.")) as err:
        run.case_rows() if file == CASES else run.score_rows()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_column_of_ids_is_safe_exactly_when_each_id_is():
    for column in (["a", "b"], ["a..b"], [".a"], ["a/b"], ["x" * 200], ["x" * 201], ["a\nb"], ["a", ""], [],
                   ["ok-1.2_3", "Z"]):
        assert all_safe(column) == all(map(is_safe_id, column)), column


def test_an_id_ending_in_a_newline_is_not_safe():
    """``$`` in a regular expression also matches before a final newline: the rule must hold to the last character
    (a case id 'a\\n' would name a file 'a\\n.png')."""
    for bad in ("a\n", "phantom_001\n", "a\r", "a\n\n"):
        assert not is_safe_id(bad), repr(bad)
        assert not all_safe(["ok", bad]), repr(bad)
    assert is_safe_id("phantom_001")
