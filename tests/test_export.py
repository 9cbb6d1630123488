"""export(): the right mask per decision, at the original size, written atomically and never over the data."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from test_review import ORIG, RANKED, SIZE, SUSPICION, TEST_IDS, TRAIN_IDS, make_run

from crl_napari import cli, export_files
from crl_napari.data import load_dataset
from crl_napari.export import ExportError, export, upsample_nearest
from crl_napari.native import native_mask
from crl_napari.review import ReviewSession
from crl_napari.runs import RunFolder


@pytest.fixture
def rf(tmp_path: Path):
    return make_run(tmp_path)


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(dest: Path) -> dict[str, dict[str, str]]:
    with open(dest / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "split", "mask_source", "suspicion", "status", "reviewer", "time",
                             "image_file", "mask_file", "comment"]
    return {r["id"]: r for r in rows}


def _mask(dest: Path, image_id: str) -> np.ndarray:
    m = iio.imread(dest / "masks" / f"{image_id}.png")
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    return m > 0


def _up(mask: np.ndarray) -> np.ndarray:
    return np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)


def _native(run: Path, image_id: str) -> np.ndarray:
    """The correction at the original size: the run's probability resampled smoothly, thresholded, cleaned."""
    return native_mask(RunFolder(run).prob(image_id), (ORIG, ORIG), cleanup=True).astype(bool)


def _decide(run: Path) -> np.ndarray:
    """accepted case00, kept case02, edited case04; the rest pending. Returns the drawn mask."""
    s = ReviewSession.open(run, reviewer="ana")
    s.accept("case00")
    s.keep("case02")
    drawn = np.zeros((SIZE, SIZE), bool)
    drawn[5:25, 3:13] = True
    s.edit("case04", drawn)
    return drawn


def test_export_chooses_the_right_mask_per_status(rf, tmp_path):
    drawn = _decide(rf.run)
    before_src, before_run = _tree(rf.src), _tree(rf.run)
    dest = tmp_path / "out" / "clean"
    report = export(rf.run, dest, unreviewed="keep")
    assert report.dest == dest and report.n_images == 8
    assert report.counts == {"original": 6, "corrected": 1, "edited": 1, "corrected_by_policy": 0}
    assert "8 images" in report.summary()

    # sanity: the three sources really differ, so equality below pins the choice
    assert not np.array_equal(_up(rf.corrected["case00"]), rf.orig_masks["case00"])
    np.testing.assert_array_equal(_mask(dest, "case00"), _native(rf.run, "case00"))  # accepted
    np.testing.assert_array_equal(_mask(dest, "case02"), rf.orig_masks["case02"])  # kept (0/1 file -> 0/255)
    np.testing.assert_array_equal(_mask(dest, "case04"), _up(drawn))  # edited
    for cid in ("case01", "case03", "case05", *TEST_IDS):  # pending (keep policy) and test split: originals
        np.testing.assert_array_equal(_mask(dest, cid), rf.orig_masks[cid])
    for cid in TRAIN_IDS + TEST_IDS:
        assert _mask(dest, cid).shape == (ORIG, ORIG)
        ext = rf.image_paths[cid].suffix
        assert (dest / "images" / f"{cid}{ext}").read_bytes() == rf.image_paths[cid].read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["images", "manifest.csv", "masks", "split.csv"]

    m = _manifest(dest)
    assert list(m) == RANKED + TEST_IDS
    assert m["case00"]["mask_source"] == "corrected" and m["case00"]["status"] == "accepted"
    assert m["case00"]["reviewer"] == "ana" and m["case00"]["time"].endswith("+00:00")
    assert float(m["case00"]["suspicion"]) == pytest.approx(SUSPICION["case00"])
    assert (m["case02"]["mask_source"], m["case02"]["status"]) == ("original", "kept")
    assert (m["case04"]["mask_source"], m["case04"]["status"]) == ("edited", "edited")
    assert (m["case01"]["mask_source"], m["case01"]["status"]) == ("original", "pending")
    assert m["case01"]["reviewer"] == m["case01"]["time"] == ""
    assert m["case01"]["image_file"] == "images/case01.bmp" and m["case01"]["mask_file"] == "masks/case01.png"
    assert (m["case06"]["split"], m["case06"]["status"], m["case06"]["suspicion"]) == ("test", "", "")

    # the originals and the run are untouched; no temporary folder is left
    assert _tree(rf.src) == before_src and _tree(rf.run) == before_run
    assert [p.name for p in dest.parent.iterdir()] == ["clean"]

    # and the export is a dataset again
    ds = load_dataset(dest, size=SIZE)
    assert sorted(ds.ids) == sorted(TRAIN_IDS + TEST_IDS)
    assert sorted(ds.subset("test").ids) == TEST_IDS
    assert ds.warnings == [] and all(c.original_shape == (ORIG, ORIG) for c in ds)


def test_accept_above_policy(rf, tmp_path):
    _decide(rf.run)
    report = export(rf.run, tmp_path / "clean", unreviewed="accept_above", threshold=0.25)
    m = _manifest(tmp_path / "clean")
    # pending: case03 (0.3) and above -> corrected; case05 (0.2) and case01 (0.1) -> original
    assert m["case03"]["mask_source"] == "corrected_by_policy" and m["case03"]["status"] == "pending"
    np.testing.assert_array_equal(_mask(tmp_path / "clean", "case03"), _native(rf.run, "case03"))
    assert m["case05"]["mask_source"] == "original" and m["case01"]["mask_source"] == "original"
    # decisions win over the policy: case02 (0.7) was kept
    assert m["case02"]["mask_source"] == "original"
    np.testing.assert_array_equal(_mask(tmp_path / "clean", "case02"), rf.orig_masks["case02"])
    assert report.counts == {"original": 5, "corrected": 1, "edited": 1, "corrected_by_policy": 1}


def test_accept_above_without_a_threshold_takes_the_runs_recommended_one(rf, tmp_path):
    """The CLI's and demo's default, as the Review widget's: scoring.recommended_threshold of the run's scores."""
    from crl_napari.scoring import recommended_threshold

    suspicion = {r.id: r.suspicion for r in RunFolder(rf.run).score_rows()}
    t = recommended_threshold(np.array(list(suspicion.values())))
    report = export(rf.run, tmp_path / "clean", unreviewed="accept_above")
    assert report.threshold == t and f"suspicion >= {t:.3f}" in report.summary()
    m = _manifest(tmp_path / "clean")
    policy = {i for i, row in m.items() if row["mask_source"] == "corrected_by_policy"}
    assert policy and policy == {i for i, row in m.items() if row["status"] == "pending" and suspicion[i] >= t}


def test_unreviewed_images_get_what_the_review_chose_unless_told(rf, tmp_path, capsys):
    """No policy named: what the review chose for images nobody reviews (the choice its queue was ordered for);
    until it chooses, the recommended policy where the nets can tell right masks from wrong (these scores), the
    given masks where they cannot (the fixture's own scores); a policy named wins; a threshold with the review's
    "keep" is refused as with a "keep" named."""
    from test_review import POLICY_QUEUE, TELLING, rescore

    from crl_napari.scoring import recommended_threshold

    def sources(dest):
        m = _manifest(dest)
        return {i: m[i]["mask_source"] for i in TRAIN_IDS}

    untold = export(rf.run, tmp_path / "untold")  # the fixture's scores: nets that cannot tell, nothing replaced
    assert untold.threshold is None and set(sources(tmp_path / "untold").values()) == {"original"}
    rescore(rf.run, POLICY_QUEUE, TELLING)
    t = recommended_threshold(np.array(list(TELLING.values())))
    taken = {i for i in TRAIN_IDS if TELLING[i] >= t}
    assert 0 < len(taken) < len(TRAIN_IDS)  # some taken, some kept: the policies differ here
    first = export(rf.run, tmp_path / "default")  # nothing chosen yet: the recommended policy
    assert first.threshold == t and sources(tmp_path / "default") == {
        i: "corrected_by_policy" if i in taken else "original" for i in TRAIN_IDS}
    capsys.readouterr()
    assert cli.main(["export", str(rf.run), "--to", str(tmp_path / "cli-default")]) == 0  # the command line says so
    assert capsys.readouterr().err.rstrip().endswith(
        "unreviewed images: accept_above (the default where the nets can tell right masks from wrong ones); "
        "--unreviewed keep for the other")
    assert sources(tmp_path / "cli-default") == sources(tmp_path / "default")
    ReviewSession.open(rf.run, reviewer="ana").choose_unreviewed("keep")
    kept = export(rf.run, tmp_path / "kept")
    assert kept.threshold is None and set(sources(tmp_path / "kept").values()) == {"original"}
    assert cli.main(["export", str(rf.run), "--to", str(tmp_path / "cli-kept")]) == 0
    assert capsys.readouterr().err.rstrip().endswith(
        "unreviewed images: keep (the review's choice); --unreviewed accept_above for the other")
    named = export(rf.run, tmp_path / "named", unreviewed="accept_above")
    assert named.threshold == t and sources(tmp_path / "named") == sources(tmp_path / "default")
    with pytest.raises(ExportError, match="threshold only applies"):
        export(rf.run, tmp_path / "bad", threshold=0.5)
    assert not (tmp_path / "bad").exists()


def test_policy_arguments_are_checked(rf, tmp_path):
    with pytest.raises(ExportError, match="finite threshold"):
        export(rf.run, tmp_path / "a", unreviewed="accept_above", threshold=float("nan"))
    with pytest.raises(ExportError, match="threshold only applies"):
        export(rf.run, tmp_path / "a", unreviewed="keep", threshold=0.5)
    with pytest.raises(ExportError, match="unreviewed must be one of"):
        export(rf.run, tmp_path / "a", unreviewed="accept_all")
    assert not (tmp_path / "a").exists()


def test_upsample_nearest():
    m = np.array([[1, 0], [0, 1]], bool)
    np.testing.assert_array_equal(upsample_nearest(m, (4, 4)), np.kron(m, np.ones((2, 2), bool)))
    out = upsample_nearest(np.eye(3, dtype=bool), (7, 5))
    assert out.shape == (7, 5) and out.dtype == bool and out[0, 0] and out[-1, -1] and not out[0, -1]


@pytest.mark.parametrize("where", ["run", "inside_run", "src", "inside_src", "inside_images", "run_parent"])
def test_refuses_dest_in_or_around_the_run_or_the_data(rf, tmp_path, where):
    dest = {
        "run": rf.run, "inside_run": rf.run / "export", "src": rf.src, "inside_src": rf.src / "clean",
        "inside_images": rf.src / "images" / "clean", "run_parent": tmp_path,
    }[where]
    before = _tree(tmp_path)
    with pytest.raises(ExportError, match="refusing to export"):
        export(rf.run, dest)
    assert _tree(tmp_path) == before


def test_refuses_non_empty_dest_but_accepts_an_empty_one(rf, tmp_path):
    dest = tmp_path / "clean"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(rf.run, dest)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export(rf.run, tmp_path / "file")
    (dest / "notes.txt").unlink()
    assert export(rf.run, dest).n_images == 8


@pytest.mark.parametrize("csv_name", ["cases.csv", "scores.csv"])
def test_unsafe_id_is_refused_and_nothing_is_written(rf, tmp_path, csv_name):
    path = rf.run / csv_name
    path.write_text(path.read_text().replace("case05", "../../x"))
    before = _tree(tmp_path)
    with pytest.raises(ExportError, match=r"unsafe image id '\.\./\.\./x'"):
        export(rf.run, tmp_path / "out" / "clean")
    assert _tree(tmp_path) == before
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x").exists()


def test_crash_mid_export_leaves_no_dest_and_no_partial_folder(rf, tmp_path, monkeypatch):
    _decide(rf.run)
    before_src, before_run = _tree(rf.src), _tree(rf.run)
    real = export_files._write_file
    calls = []

    def flaky(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 7:
            raise OSError("No space left on device")
        real(path, data)

    monkeypatch.setattr(export_files, "_write_file", flaky)
    dest = tmp_path / "clean"
    with pytest.raises(OSError, match="No space left"):
        export(rf.run, dest)
    assert len(calls) == 7 and ".clean.partial-" in str(calls[0])  # it was building in the temp folder
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".clean.partial-")]
    assert _tree(rf.src) == before_src and _tree(rf.run) == before_run
    monkeypatch.setattr(export_files, "_write_file", real)
    assert export(rf.run, dest).n_images == 8  # a retry just works


def test_moved_data_needs_data_root(rf, tmp_path):
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(str(rf.src), moved)
    with pytest.raises(ExportError, match="data_root") as err:
        export(rf.run, tmp_path / "clean")
    assert "case01.bmp" in str(err.value)
    assert not (tmp_path / "clean").exists()
    with pytest.raises(ExportError, match="refusing"):
        export(rf.run, moved / "clean", data_root=moved)
    report = export(rf.run, tmp_path / "clean", data_root=moved, unreviewed="keep")
    assert report.n_images == 8
    np.testing.assert_array_equal(_mask(tmp_path / "clean", "case02"), rf.orig_masks["case02"])


def test_missing_corrected_mask_or_corrupt_review_is_an_error(rf, tmp_path):
    _decide(rf.run)
    (rf.run / "corrected" / "case00.png").rename(rf.run / "corrected" / "case00.bak")
    with pytest.raises(ExportError, match=r"case00\.png: corrected mask of 'case00' missing"):
        export(rf.run, tmp_path / "clean")
    (rf.run / "corrected" / "case00.bak").rename(rf.run / "corrected" / "case00.png")
    (rf.run / "review.json").write_text("{not json")
    with pytest.raises(ExportError, match="review.json"):
        export(rf.run, tmp_path / "clean")
    assert sorted(os.listdir(tmp_path)) == ["data", "run"]


def test_an_exported_correction_is_smooth_not_blocks_and_has_no_islands(rf, tmp_path):
    """Issue 11: a correction is resampled from the probability, not a binary mask blown up in 2x2 blocks,
    and clean-up drops an island below 1 % of the mask (here one drawn into the run's probability map)."""
    run = RunFolder(rf.run)
    prob = run.prob("case00")
    prob[1:3, 1:3] = prob[1:3, 28:30] = 0.9  # two 4-pixel islands far from the lung: three pieces in all
    iio.imwrite(rf.run / "corrected" / "case00_prob.png", (prob * 255).round().astype(np.uint8))
    ReviewSession.open(rf.run, reviewer="ana").accept("case00")
    report = export(rf.run, tmp_path / "clean")
    got = _mask(tmp_path / "clean", "case00")
    blocks = _up(prob > 0.5)
    assert not np.array_equal(got, blocks)  # not nearest-neighbour blocks of the training-size mask
    np.testing.assert_array_equal(got, _native(rf.run, "case00"))
    assert not got[:8, :8].any() and not got[:8, -8:].any() and report.extra_pieces == 0  # the islands are gone
    raw = export(rf.run, tmp_path / "raw", cleanup=False)
    assert _mask(tmp_path / "raw", "case00")[:8, :8].any() and raw.extra_pieces == 1


def test_worker_processes_write_the_same_files_as_one_process_with_progress(rf, tmp_path):
    _decide(rf.run)
    ReviewSession.open(rf.run, reviewer="ana").exclude("case05")
    seen = {1: [], 3: []}
    for workers in seen:
        report = export(rf.run, tmp_path / f"w{workers}", workers=workers, progress=seen[workers].append)
        assert report.n_images == 7 and report.excluded == 1
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w3")
    assert _manifest(tmp_path / "w3")["case05"]["status"] == "excluded"
    for events in seen.values():
        assert (events[-1].done, events[-1].total) == (7, 7) and "exporting 7/7 images" in events[-1].text()


def test_a_failure_in_a_worker_is_one_error_and_leaves_nothing(rf, tmp_path):
    rf.image_paths["case03"].write_bytes(b"not an image at all")
    dest = tmp_path / "clean"
    with pytest.raises(ExportError, match="cannot export the image of 'case03'"):
        export(rf.run, dest, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir() if "clean" in p.name) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ExportError, match="workers must be a whole number"):
            export(rf.run, dest, workers=bad)
