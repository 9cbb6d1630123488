"""CheXmask-style tables (issue 15): the project's own encoder writes them; they become a masks/ folder that
loads as a data set; a hostile table is one line naming the file and line, and leaves nothing behind."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest

from crl_napari import cli
from crl_napari.chexmask import read_masks, rle_decode, rle_encode, write_mask_folder
from crl_napari.data import DataError, load_dataset
from crl_napari.phantoms import make_phantom


def _table(path, rows, columns=("dicom_id", "Dice RCA (Mean)", "Left Lung", "Right Lung", "Height", "Width")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def _lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image-left and image-right halves of a lung mask (CheXmask stores the lungs apart)."""
    left, right = mask.copy(), mask.copy()
    left[:, mask.shape[1] // 2:] = False
    right[:, : mask.shape[1] // 2] = False
    return left, right


def test_encode_decode_round_trip_matches_chexmask_convention():
    m = np.zeros((3, 4), bool)
    m[0, 1:3] = m[2, 3] = True
    assert rle_encode(m) == "2 2 12 1"  # 1-based starts over the row-major pixels
    np.testing.assert_array_equal(rle_decode("2 2 12 1", 3, 4), m)
    assert rle_encode(np.zeros((2, 2), bool)) == "" and not rle_decode("", 2, 2).any()
    rng = np.random.default_rng(0)
    for _ in range(5):
        r = rng.random((17, 23)) > 0.6
        np.testing.assert_array_equal(rle_decode(rle_encode(r), 17, 23), r)


def test_a_table_becomes_a_masks_folder_that_loads(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rows, truth = [], {}
    for k in range(4):
        image, mask = make_phantom(k, 64)
        iio.imwrite(data / "images" / f"cxr{k}.png", image)
        left, right = _lungs(mask > 0)
        truth[f"cxr{k}"] = mask > 0
        rows.append([f"files/p1/cxr{k}.jpg", "0.9", rle_encode(left), rle_encode(right), 64, 64])
    table = _table(tmp_path / "chexmask.csv", rows)
    assert cli.main(["import-chexmask", str(table), "--masks", str(data / "masks")]) == 0
    ds = load_dataset(data, size=32)
    assert sorted(ds.ids) == sorted(truth)
    for image_id, mask in read_masks(table):
        np.testing.assert_array_equal(mask, truth[image_id])
        np.testing.assert_array_equal(iio.imread(data / "masks" / f"{image_id}.png") > 0, truth[image_id])


@pytest.mark.parametrize(("row", "why"), [
    (["a", "", "1 5", "", "2", "2"], "run lies outside the 2x2 image"),
    (["a", "", "1 x", "", "4", "4"], "not a whole number"),
    (["a", "", "1 2 3", "", "4", "4"], "odd number of values"),
    (["a", "", "", "", "50000", "50000"], "outside the pixel budget"),
    (["../../etc/x", "", "", "", "4", "4"], None),  # the stem "x" is a safe id: paths are reduced to names
    (["..", "", "", "", "4", "4"], "unsafe"),
])
def test_a_hostile_table_is_one_line_and_leaves_nothing(tmp_path, capsys, row, why):
    table = _table(tmp_path / "t.csv", [["ok", "", "1 2", "", "4", "4"], row])
    dest = tmp_path / "masks"
    code = cli.main(["import-chexmask", str(table), "--masks", str(dest)])
    err = capsys.readouterr().err
    if why is None:
        assert code == 0 and sorted(p.name for p in dest.iterdir()) == ["ok.png", "x.png"]
        return
    assert code == 2 and f"{table}: line 3" in err and why in err and "Traceback" not in err, err
    assert not dest.exists() and list(tmp_path.iterdir()) == [table]  # no half folder, no temp folder


def test_an_existing_masks_folder_is_never_written_over(tmp_path):
    dest = tmp_path / "masks"
    dest.mkdir()
    (dest / "mine.png").write_bytes(b"a user's file")
    table = _table(tmp_path / "t.csv", [["ok", "", "1 2", "", "4", "4"]])
    with pytest.raises(DataError, match="already exists"):
        write_mask_folder(table, dest)
    assert [p.name for p in dest.iterdir()] == ["mine.png"]
