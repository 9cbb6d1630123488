"""benchmarks/cleaning_curve.py: the simulated reviewer, the recommended threshold, and the script end to end on
a few phantoms (table1's smoke profile), resumed after a kill."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from crl_napari import cascade, noise, scoring, second_pass
from crl_napari.data import load_dataset
from crl_napari.image_files import read_mask, resize_mask
from crl_napari.phantoms import write_sample_set
from crl_napari.scoring import recommended_threshold

ROOT = Path(__file__).resolve().parents[1]
SHENZHEN = ROOT / ".." / "shared" / "data" / "shenzhen"


@pytest.fixture(scope="module")
def cc():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("cleaning_curve", ROOT / "benchmarks" / "cleaning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cleaning_curve"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_reviewer_accepts_better_corrections_keeps_good_masks_and_redraws_the_rest(cc):
    assert cc.decide(0.80, 0.95) == "accept"
    assert cc.decide(0.995, 0.97) == "keep"  # within 0.01 of the truth: the correction is not better
    assert cc.decide(0.99, 0.98) == "keep"
    assert cc.decide(0.98, 0.97) == "redraw"  # neither is good enough
    assert cc.decide(0.90, 0.90) == "redraw"  # a tie is not closer


def test_walk_measures_the_exported_set_under_both_policies(cc):
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    given = truth.copy()
    given[0] = 0
    given[0, 3:5, 3:5] = 1  # eroded: Dice 0.4
    given[1, 1:7, 1:7] = 1  # dilated: Dice 16*2/(16+36) = 0.615
    given[2, 2:6, 2:5] = 1  # a column short: Dice 24/28 = 0.857
    given[2, :, 5] = 0
    corrected = truth.copy()
    corrected[2] = given[2]  # the nets agree with the short mask: not closer, so a redraw
    walk = cc.Walk(given, truth)
    walk.review(np.array([2, 0]), corrected)
    assert walk.decisions == ["redraw", "accept"] and walk.reviewed.tolist() == [True, False, True, False]
    suspicion = np.array([0.9, 0.8, 0.2, 0.0])
    pt = walk.point(corrected, suspicion, threshold=0.5, test_dice=0.9)
    assert (pt["reviewed"], pt["accepted"], pt["kept"], pt["redraws"]) == (2, 1, 0, 1)
    # keep: image 1 stays dilated; recommended: its suspicion 0.8 >= 0.5, so its correction (the truth) is taken
    assert pt["keep"]["mean_dice"] == pytest.approx((1 + 32 / 52 + 1 + 1) / 4, abs=1e-5)
    assert pt["keep"]["frac_good"] == 0.75
    assert pt["recommended"] == {"mean_dice": pytest.approx(1.0, abs=1e-5), "frac_good": 1.0}


def test_the_random_order_does_not_follow_the_noise(cc):
    """noise.simulate picks the corrupted cases from default_rng(seed): a random order drawn from the same stream
    would review exactly the corrupted masks first."""
    truth = np.zeros((40, 16, 16), np.uint8)
    truth[:, 4:12, 4:12] = 1
    given, records = cc.noise.simulate(truth, [str(i) for i in range(40)], 0.75, seed=0, reference_size=16)
    queue = cc.static_queue(SimpleNamespace(seed=0, given=given), "c")
    assert sorted(queue) == list(range(40))
    corrupted = np.array([r.corrupted for r in records])
    assert not corrupted[queue[:30]].all()  # 10 clean masks among 40: some come before the 30th place


def test_budgets_reach_the_fraction_in_whole_batches(cc):
    assert cc.budgets(385) == [0, 20, 40, 60, 80, 100, 120, 140, 160]  # 160 / 385 = 41.6 % >= 40 %
    assert cc.budgets(12, 2) == [0, 2, 4, 6]
    assert cc.budgets(5, 20) == [0, 5]


def test_the_queue_puts_the_images_under_the_threshold_first_then_the_uncertain_corrections():
    suspicion = np.array([0.6, 0.1, 0.45, 0.3, 0.05, 0.7])
    uncertainty = np.array([0.1, 0.9, 0.0, 0.0, 0.0, 0.3])
    # 2 of 6 at or above 0.5 (not many): under it 0.45, 0.3, 0.1, 0.05; then the most uncertain correction first
    assert scoring.rank(suspicion, uncertainty, threshold=0.5).tolist() == [6, 3, 1, 2, 4, 5]
    # exactly 40 % at or above it is not "many" yet: the same kind of order
    assert scoring.rank([0.6, 0.1, 0.45, 0.3, 0.05], [0] * 5, threshold=0.4).tolist() == [4, 2, 5, 1, 3]
    assert scoring.rank([0.2, 0.2], [0.0, 0.0], threshold=0.5).tolist() == [1, 2]  # ties: input order
    # without a threshold, the recommended one of these scores
    t = recommended_threshold(suspicion)
    assert scoring.rank(suspicion, uncertainty).tolist() == scoring.rank(suspicion, uncertainty, t).tolist()


def test_where_many_masks_look_wrong_the_queue_starts_closest_to_the_threshold():
    """3 of 6 at or above 0.4: more than 40 % look wrong, so the images nearest the threshold on the log scale come
    first, either side; whether "many" or "most" (the second pass the default trains differs), one order."""
    suspicion = np.array([0.6, 0.1, 0.45, 0.3, 0.05, 0.7])
    uncertainty = np.array([0.1, 0.9, 0.0, 0.0, 0.0, 0.3])
    # |log(s / 0.4)|: 0.45 (0.12), 0.3 (0.29), 0.6 (0.41), 0.7 (0.56), 0.1 (1.39), 0.05 (2.08)
    assert scoring.rank(suspicion, uncertainty, threshold=0.4).tolist() == [3, 5, 1, 2, 6, 4]
    # 5 of 6 at or above 0.25 ("most" at the paper's keep ratio): the same kind of order, |log(s / 0.25)|
    assert scoring.wrong_share(5 / 6, 0.5) == scoring.MOST
    assert scoring.rank(suspicion, uncertainty, threshold=0.25).tolist() == [3, 4, 2, 1, 6, 5]
    assert [scoring.many_look_wrong(x) for x in (0.4, 0.41, 0.56, None, float("nan"))] == [
        False, True, True, False, False]
    # a score nobody could compute comes last; ties (0.2 and 0.8 are as far from 0.4) in input order
    assert scoring.rank([np.nan, 0.8, 0.2, 0.4, 0.1], [0] * 5, threshold=0.4).tolist() == [5, 2, 3, 1, 4]


def test_the_queue_and_the_second_pass_read_the_share_alike():
    for share in (0.0, 0.3, 0.4, 0.41, 0.5, 0.55, 0.56, 0.8, float("nan"), None):
        for keep_ratio in (0.3, 0.5, 0.7):
            got = scoring.wrong_share(share, keep_ratio)
            assert second_pass.share_mode(share, keep_ratio) == {scoring.MOST: second_pass.EVERY,
                                                                  scoring.MANY: second_pass.RECOMMENDED}.get(got)
    assert [scoring.wrong_share(s, 0.5) for s in (0.4, 0.41, 0.55, 0.56)] == [None, "many", "many", "most"]


@pytest.mark.data
def test_on_real_masks_the_queue_gains_more_per_look_than_suspicion_first(cc):
    """Shenzhen's lung masks with the paper's noise (75 %), scored against three imperfect "nets" (the true
    masks blurred): a first batch of 20 taken from the tool's queue improves the exported set under the
    recommended policy more than the 20 most suspicious images do, since the policy already corrects those."""
    masks_dir = SHENZHEN / "masks"
    if not masks_dir.is_dir():
        pytest.skip(f"the Shenzhen data set is not at {SHENZHEN.resolve()} (see ../shared/data/README.md)")
    files = sorted(masks_dir.glob("*.png"))[:120]
    truth = np.stack([resize_mask(read_mask(f), 64) for f in files])
    given, _ = noise.simulate(truth, [f.stem for f in files], 0.75, seed=0)
    probs = np.stack([np.clip(ndimage.gaussian_filter(truth.astype(np.float32), (0, s, s)), 0, 1)
                      for s in (1.0, 1.5, 2.0)])
    scores = scoring.score_probs(probs, given)
    # a policy threshold with damaged masks on both sides of it (these blurred "nets" correct so well that the
    # recommended threshold itself leaves nothing to gain): the queue is ranked for whatever threshold applies
    threshold = float(np.quantile(scores.suspicion, 0.6))
    assert (given != truth).any(axis=(1, 2))[scores.suspicion < threshold].sum() >= 10
    queue = scoring.rank(scores.suspicion, scores.uncertainty, threshold)
    gained = {}
    for name, rank in (("queue", queue), ("suspicion first", cc.keep_rank(scores))):
        walk = cc.Walk(given, truth)
        walk.review(np.argsort(rank)[:20], scores.corrected)
        gained[name] = walk.point(scores.corrected, scores.suspicion, threshold, 0)["recommended"]["mean_dice"]
    before = cc.Walk(given, truth).point(scores.corrected, scores.suspicion, threshold, 0)["recommended"]["mean_dice"]
    assert gained["queue"] - before > 2 * (gained["suspicion first"] - before) and gained["queue"] > before + 0.005


def test_recommended_threshold_splits_two_groups_of_scores_and_never_goes_under_its_floor():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.04, 0.01, 100), rng.normal(0.30, 0.03, 300)
    t = recommended_threshold(np.r_[low, high])
    assert low.max() < t < high.min()
    assert recommended_threshold(rng.normal(0.02, 0.005, 300)) == 0.05  # one group: nothing worth replacing
    assert recommended_threshold(np.r_[low, high, np.nan]) == t  # a NaN score is ignored
    assert recommended_threshold([0.3, 0.3]) == 0.05 and recommended_threshold([]) == 0.05
    assert recommended_threshold(np.r_[low, high], floor=0.5) == 0.5


def test_two_invocations_share_the_results_file_without_losing_cells(cc, tmp_path):
    pt = {"reviewed": 0, "threshold": 0.1, "test_dice": 0.9, "accepted": 0, "kept": 0, "redraws": 0,
          "keep": {"mean_dice": 0.8, "frac_good": 0.2}, "recommended": {"mean_dice": 0.85, "frac_good": 0.3}}
    base = {"machine": "m", "profile": "quick", "batch": 20, "round_epochs": 2, "n_train": 385}
    a0, b1 = "order=a | noise=75% | seed=0", "order=b | noise=75% | seed=1"
    first = {**base, "commands": ["one"], "cells": {a0: {"order": "a", "noise": 0.75, "seed": 0, "points": [pt]}}}
    second = {**base, "commands": ["two"], "cells": {b1: {"order": "b", "noise": 0.75, "seed": 1, "points": [pt]}}}
    cc.save(first, tmp_path, [0, 1], {a0})
    cc.save(second, tmp_path, [0, 1], {b1})  # never saw a0
    stale = json.loads((tmp_path / "cleaning_curve.json").read_text())  # a third loads b1 at one point
    second["cells"][b1]["points"].append(pt | {"reviewed": 20})  # a round later
    cc.save(second, tmp_path, [0, 1], {b1})
    cc.save(stale, tmp_path, [0, 1], {a0})  # its old copy of b1 is not its own: the disk's stays
    disk = json.loads((tmp_path / "cleaning_curve.json").read_text())
    assert set(disk["cells"]) == {a0, b1} and len(disk["cells"][b1]["points"]) == 2
    assert disk["commands"] == ["one", "two"]
    assert "| (a) tool's queue (n=1) |" in (tmp_path / "cleaning_curve.md").read_text()


def _run(cc, tmp_path, capsys, *extra):
    assert cc.main(["--profile", "smoke", "--data", str(tmp_path / "set"), "--results", str(tmp_path / "res"),
                    "--runs", str(tmp_path / "runs"), "--batch", "2", "--seeds", "0", "--noise", "0.75", *extra]) == 0
    name = cc.stem("--border-fit" in extra)
    return capsys.readouterr().out, json.loads((tmp_path / "res" / f"{name}.json").read_text())


def test_the_script_runs_end_to_end_on_phantoms(cc, tmp_path, capsys):
    write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.0, seed=1)  # 12 train / 4 test, clean masks
    out, res = _run(cc, tmp_path, capsys, "--orders", "a", "c", "d", "s")
    cells = res["cells"]
    for o in ("a", "c", "s"):
        c = cells[f"order={o} | noise=75% | seed=0"]
        assert c["complete"] and [p["reviewed"] for p in c["points"]] == [0, 2, 4, 6]
        for p in c["points"]:
            assert p["accepted"] + p["kept"] + p["redraws"] == p["reviewed"]
            assert 0 <= p["keep"]["mean_dice"] <= 1 and 0 <= p["recommended"]["frac_good"] <= 1
    first = [cells[f"order={o} | noise=75% | seed=0"]["points"][0] for o in ("a", "c", "s")]
    assert first[0] == first[1] == first[2]  # nothing reviewed: the same set, whatever the order
    assert first[0]["keep"]["mean_dice"] < 0.95  # 9 of the 12 training masks were corrupted
    if importlib.util.find_spec("cleanlab") is None:
        assert "cleanlab not installed, order (d) skipped" in out and "order=d | noise=75% | seed=0" not in cells
    else:
        assert [p["reviewed"] for p in cells["order=d | noise=75% | seed=0"]["points"]] == [0, 2, 4, 6]
    md = (tmp_path / "res" / "cleaning_curve.md").read_text()
    assert "PARTIAL" in md and "| (a) tool's queue (n=1) |" in md  # order b (and 50 %) still to do
    assert (tmp_path / "res" / "cleaning_curve.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun finds every cell done and trains nothing
    out, again = _run(cc, tmp_path, capsys, "--orders", "a", "c", "d", "s")
    assert "training" not in out and again["cells"] == cells
    # order b: a round after every batch, the reviewed masks trusted; killed after round 2, it resumes there
    out, res = _run(cc, tmp_path, capsys, "--orders", "b")
    b = res["cells"]["order=b | noise=75% | seed=0"]
    assert b["complete"] and [p["reviewed"] for p in b["points"]] == [0, 2, 4, 6]
    assert b["points"][0] == first[0]  # before any review: the crl run itself, as order a
    assert all(p["round_seconds"] > 0 and p["round_fraction_of_first"] > 0 for p in b["points"][1:])
    n_done = 5 if importlib.util.find_spec("cleanlab") else 4  # of the grid's 10: 50 % noise was not asked
    assert f"PARTIAL: {n_done} of 10 cells finished" in (tmp_path / "res" / "cleaning_curve.md").read_text()
    killed = json.loads((tmp_path / "res" / "cleaning_curve.json").read_text())
    cell = killed["cells"]["order=b | noise=75% | seed=0"]
    del cell["complete"], cell["points"][-1]
    (tmp_path / "res" / "cleaning_curve.json").write_text(json.dumps(killed))
    out, res = _run(cc, tmp_path, capsys, "--orders", "b")
    assert "resumed after round 2 (4 reviewed)" in out and "round 3: 6 reviewed" in out and "round 1" not in out
    again = res["cells"]["order=b | noise=75% | seed=0"]
    assert again["complete"] and again["points"][:3] == b["points"][:3] and len(again["points"]) == 4


def test_border_fit_scores_as_the_product_does_into_files_of_its_own(cc, tmp_path, capsys):
    """--border-fit: the reviewer is shown (and the recommended policy exports) scoring.score_probs(...,
    border_fit=True)'s corrections; the paper's curve, from the same first round, keeps its own files."""
    write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.0, seed=1)
    _, fit = _run(cc, tmp_path, capsys, "--orders", "a", "--border-fit")
    assert not (tmp_path / "res" / "cleaning_curve.json").exists()
    out, paper = _run(cc, tmp_path, capsys, "--orders", "a")
    assert "training" not in out  # the same crl run
    train = load_dataset(tmp_path / "set", size=64).subset("train")
    truth = train.masks()
    given, _ = noise.simulate(truth, train.ids, 0.75, seed=0)
    models, cfg = cascade.load_models(cc.table1.cell_dir("smoke", cc.table1.cell_key(cc.CRL, 0.75, 0)))
    probs = cascade.peer_probs(models, train.images())
    key = "order=a | noise=75% | seed=0"
    want = {}
    for flag, res in ((True, fit), (False, paper)):
        sc = scoring.score_probs(probs, given, cfg.T, border_fit=flag)
        want[flag] = cc.Walk(given, truth).point(sc.corrected, sc.suspicion, recommended_threshold(sc.suspicion), 0)
        assert res["cells"][key]["points"][0]["recommended"] == pytest.approx(want[flag]["recommended"], abs=1e-6)
    assert want[True]["recommended"]["mean_dice"] != pytest.approx(want[False]["recommended"]["mean_dice"], abs=1e-4)
    md = (tmp_path / "res" / "cleaning_curve-fit.md").read_text()
    assert md.startswith("# Cleaning curve (issue 14), border fit") and "--border-fit" in md
    assert "border fit" not in (tmp_path / "res" / "cleaning_curve.md").read_text()
    assert (tmp_path / "res" / "cleaning_curve-fit.png").read_bytes()[:4] == b"\x89PNG"
    assert cc.rounds_dir("smoke", key, True) != cc.rounds_dir("smoke", key, False)


def test_second_pass_starts_from_native_res_second_pass_nets_into_files_of_its_own(cc, tmp_path, capsys,
                                                                                     monkeypatch):
    """--second-pass: the queue and the corrections (border fit) come from the nets of native_res.py's finished
    crl+second-all-fit cell of the same noise and seed, and order f's rounds start from its checkpoint; without
    that cell the script says which command trains it (and its first pass), in one line. --second-pass
    crl+keep-auto+second-all-fit (the advised path after the default first pass) does the same from that cell, into
    files and round folders of its own."""
    import native_res

    write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.0, seed=1)
    monkeypatch.setattr(native_res, "RUNS", tmp_path / "native_res")
    with pytest.raises(SystemExit) as exc:
        _run(cc, tmp_path, capsys, "--orders", "a", "--second-pass")
    assert "no finished second pass" in str(exc.value) and "--methods crl crl+second-all-fit --noise 0.75" in str(
        exc.value)
    with pytest.raises(SystemExit) as exc:
        _run(cc, tmp_path, capsys, "--orders", "a", "--second-pass", "crl+keep-auto+second-all-fit")
    assert "--methods crl+keep-auto crl+keep-auto+second-all-fit --noise 0.75" in str(exc.value)
    _run(cc, tmp_path, capsys, "--orders", "a")  # trains the smoke crl run; stands in here for a second pass's nets
    crl_dir = cc.table1.cell_dir("smoke", cc.table1.cell_key(cc.CRL, 0.75, 0))
    second = native_res.cell_dir(native_res.cell_key("full", "crl+second-all-fit", 0.75, 0))
    shutil.copytree(crl_dir, second)
    ckpt = torch.load(second / cascade.CHECKPOINT, weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for state in ckpt["models"]:  # other nets than crl's: the curve must be scored by these
        for name, t in state.items():
            if name.endswith("weight") and t.is_floating_point() and t.numel() > 1:
                t.add_(torch.randn(t.shape, generator=gen) * 0.5 * t.std())
    torch.save(ckpt, second / cascade.CHECKPOINT)

    assert cc.main(["--profile", "smoke", "--data", str(tmp_path / "set"), "--results", str(tmp_path / "res"),
                    "--runs", str(tmp_path / "runs"), "--batch", "2", "--seeds", "0", "--orders", "a",
                    "--second-pass"]) == 0
    res = json.loads((tmp_path / "res" / "cleaning_curve-second.json").read_text())
    assert res["second_pass"] and res["border_fit"]
    train = load_dataset(tmp_path / "set", size=64).subset("train")
    given, _ = noise.simulate(train.masks(), train.ids, 0.75, seed=0)
    models, cfg = cascade.load_models(second)
    sc = scoring.score_probs(cascade.peer_probs(models, train.images()), given, cfg.T, border_fit=True)
    want = cc.Walk(given, train.masks()).point(sc.corrected, sc.suspicion, recommended_threshold(sc.suspicion), 0)
    got = res["cells"]["order=a | noise=75% | seed=0"]["points"][0]
    assert got["recommended"] == pytest.approx(want["recommended"], abs=1e-6)
    ds = load_dataset(tmp_path / "set", size=64)
    ctx = cc.Context(train, ds.subset("test"), "smoke", cc.table1.PROFILES["smoke"], 0.75, 0, 1, {}, True,
                     cc.SECOND_CELL)
    crl_models, _ = cascade.load_models(crl_dir)
    by_crl = scoring.score_probs(cascade.peer_probs(crl_models, train.images()), given, cfg.T, border_fit=True)
    assert np.allclose(ctx.scores.prob, sc.prob) and not np.allclose(ctx.scores.prob, by_crl.prob, atol=1e-3)
    assert ctx.first_checkpoint == second / cascade.CHECKPOINT  # where order f's rounds warm-start
    md = (tmp_path / "res" / "cleaning_curve-second.md").read_text()
    assert md.startswith("# Cleaning curve (issue 14), after the second pass") and "PARTIAL: 1 of 5" in md
    key = "order=f | noise=75% | seed=0"
    assert len({cc.rounds_dir("smoke", key, True, cc.SECOND_CELL), cc.rounds_dir("smoke", key, True)}) == 2
    assert cc.second_cell(res) == cc.SECOND_CELL == cc.second_cell({"second_pass": True})  # files before the choice

    after_default = native_res.cell_dir(native_res.cell_key("full", "crl+keep-auto+second-all-fit", 0.75, 0))
    shutil.copytree(second, after_default)
    assert cc.main(["--profile", "smoke", "--data", str(tmp_path / "set"), "--results", str(tmp_path / "res"),
                    "--runs", str(tmp_path / "runs"), "--batch", "2", "--seeds", "0", "--orders", "a",
                    "--second-pass", "crl+keep-auto+second-all-fit"]) == 0
    other = json.loads((tmp_path / "res" / "cleaning_curve-keep-auto-second.json").read_text())
    assert other["second_pass"] == "crl+keep-auto+second-all-fit"
    assert other["cells"]["order=a | noise=75% | seed=0"]["points"][0]["recommended"] == pytest.approx(
        got["recommended"], abs=1e-6)  # the same nets here, so the same point; the earlier file is untouched
    assert json.loads((tmp_path / "res" / "cleaning_curve-second.json").read_text())["cells"] == res["cells"]
    assert (tmp_path / "res" / "cleaning_curve-keep-auto-second.md").read_text().startswith(
        "# Cleaning curve (issue 14), after the second pass on the default crl")
    assert len({cc.rounds_dir("smoke", key, True, c) for c in cc.SECOND_CELLS}) == 2


def test_native_measures_the_curve_at_the_original_size_from_native_noise_nets(cc, tmp_path, capsys, monkeypatch):
    """--native: noise drawn on the 256 px masks, the nets of benchmarks/native_noise.py's cell (the default crl
    trained at 64 px on them shrunk), the reviewer and the exported set at 256 px with the corrections the export
    writes (the original border moved); order f's rounds train on the exported set shrunk. Without the cell the
    script names the command that trains it."""
    import native_noise

    write_sample_set(tmp_path / "set", n=16, size=256, noise_ratio=0.0, seed=1)
    monkeypatch.setattr(native_noise, "RUNS", tmp_path / "native_noise")
    monkeypatch.setattr(native_noise, "RESULTS", tmp_path / "nn_res")
    monkeypatch.setattr(native_noise, "PROFILE", cc.table1.PROFILES["smoke"])
    args = ["--profile", "smoke", "--data", str(tmp_path / "set"), "--results", str(tmp_path / "res"), "--runs",
            str(tmp_path / "runs"), "--batch", "4", "--seeds", "0", "--native"]
    with pytest.raises(SystemExit) as exc:
        cc.main([*args, "--orders", "a"])
    assert "no finished native_noise cell" in str(exc.value) and "native_noise.py --threads 1 --noise 0.75" in str(
        exc.value)
    assert native_noise.main(["--noise", "0.75", "--seeds", "0", "--data", str(tmp_path / "set"), "--results",
                              str(tmp_path / "nn_res")]) == 0
    cell = json.loads((tmp_path / "nn_res" / "native_noise.json").read_text())["cells"]["crl default | noise=75% | "
                                                                                         "seed=0"]
    assert set(cell["variants"]) == {"given", "resampled", "native"} and cell["n_corrupted"] == 9
    assert cell["variants"]["given"]["dice_clean"] == 1.0  # a clean case's given mask is its truth at 256 px
    assert "| default | 75 % | 0 |" in (tmp_path / "nn_res" / "native_noise.md").read_text()
    # the advised path: a second pass on every correction of that cell, measured the same way, in a cell of its own
    assert native_noise.main(["--noise", "0.75", "--seeds", "0", "--second", "--data", str(tmp_path / "set"),
                              "--results", str(tmp_path / "nn_res")]) == 0
    cells = json.loads((tmp_path / "nn_res" / "native_noise.json").read_text())["cells"]
    assert cells["crl default+second | noise=75% | seed=0"]["second"] and cells[
        "crl default | noise=75% | seed=0"] == {**cell, "second": False}
    assert "| second pass | 75 % | 0 |" in (tmp_path / "nn_res" / "native_noise.md").read_text()
    # the second pass on the recommended corrections (what the default trains where 40-55 % look wrong): its own cell
    assert native_noise.main(["--noise", "0.75", "--seeds", "0", "--second", "--second-mode", "1", "--data",
                              str(tmp_path / "set"), "--results", str(tmp_path / "nn_res")]) == 0
    cells = json.loads((tmp_path / "nn_res" / "native_noise.json").read_text())["cells"]
    assert cells["crl default+second-recommended | noise=75% | seed=0"]["second_mode"] == 1
    assert (native_noise.RUNS / native_noise.run_name(0.75, 0, True, mode=1)).is_dir()
    md = (tmp_path / "nn_res" / "native_noise.md").read_text()
    assert "| second pass (recommended corrections) | 75 % | 0 |" in md
    # a probe: the default with a training setting changed, trained with it, in a cell and a row of its own
    with pytest.raises(SystemExit, match="--set bogus=1: expected NAME=VALUE"):
        native_noise.main(["--noise", "0.75", "--set", "bogus=1", "--data", str(tmp_path / "set")])
    assert native_noise.main(["--noise", "0.75", "--seeds", "0", "--set", "alpha=0.35", "--data",
                              str(tmp_path / "set"), "--results", str(tmp_path / "nn_res")]) == 0
    cells = json.loads((tmp_path / "nn_res" / "native_noise.json").read_text())["cells"]
    assert cells["crl default+alpha=0.35 | noise=75% | seed=0"]["probe"] == {"alpha": 0.35}
    _, probe_cfg = cascade.load_models(native_noise.RUNS / native_noise.run_name(0.75, 0, probe={"alpha": 0.35}), "cpu")
    assert probe_cfg.alpha == 0.35 and probe_cfg.keep_auto == 1 and probe_cfg.border_fit == 1
    assert "| probe alpha=0.35 | 75 % | 0 |" in (tmp_path / "nn_res" / "native_noise.md").read_text()
    assert cells["crl default | noise=75% | seed=0"] == {**cell, "second": False}
    assert cc.main([*args, "--orders", "a", "s", "f"]) == 0
    res = json.loads((tmp_path / "res" / "cleaning_curve-native.json").read_text())
    assert res["native"] and res["border_fit"]
    train = load_dataset(tmp_path / "set", size=256).subset("train")
    given256, given64, _ = native_noise.noisy(train.masks(), train.ids, 0.75, 0, 64)
    assert given256.shape[1:] == (256, 256) and given64.shape[1:] == (64, 64)
    a = res["cells"]["order=a | noise=75% | seed=0"]["points"]
    assert a[0]["keep"]["mean_dice"] == pytest.approx(float(cc.dice(given256, train.masks()).mean()), abs=1e-6)
    f = res["cells"]["order=f | noise=75% | seed=0"]
    assert f["complete"] and [p["reviewed"] for p in f["points"]] == [0, 4, 8]
    assert f["points"][0] == a[0]  # before any review: the native_noise nets themselves, as order a
    md = (tmp_path / "res" / "cleaning_curve-native.md").read_text()
    assert md.startswith("# Cleaning curve (issue 14), at the radiograph's own size") and "PARTIAL: 3 of 5" in md
    assert cc.rounds_dir("smoke", "k", True, None, True) != cc.rounds_dir("smoke", "k", True)
    assert a[0]["recommended"]["mean_dice"] == pytest.approx(cell["exported"]["mean_dice"], abs=1e-6)  # one policy

    # --default-nets: the product's default nets, the second pass where native_noise decided the default trains one
    with pytest.raises(SystemExit):
        cc.main([*[x for x in args if x != "--native"], "--default-nets", "--orders", "a"])  # only with --native
    nn_json = tmp_path / "nn_res" / "native_noise.json"
    saved = json.loads(nn_json.read_text())
    assert 0 <= cell["noise_share"] <= 1 and isinstance(cell["auto_second"], bool)  # the first pass decided
    older = json.loads(nn_json.read_text())
    del older["cells"]["crl default | noise=75% | seed=0"]["auto_second"]  # a cell measured before it was kept
    nn_json.write_text(json.dumps(older))
    with pytest.raises(SystemExit, match="--remeasure --noise 0.75 --seeds 0"):
        cc.main([*args, "--default-nets", "--orders", "a"])
    saved["cells"]["crl default | noise=75% | seed=0"].update(auto_second=True, auto_mode=2)  # as at 75 % on Shenzhen
    nn_json.write_text(json.dumps(saved))
    assert cc.main([*args, "--default-nets", "--orders", "a", "--noise", "0.75"]) == 0  # 50 %: not trained here
    res = json.loads((tmp_path / "res" / "cleaning_curve-native-default.json").read_text())
    second = saved["cells"]["crl default+second | noise=75% | seed=0"]
    a2 = res["cells"]["order=a | noise=75% | seed=0"]["points"]
    assert res["native"] == "default" and a2[0]["test_dice"] == pytest.approx(second["test_dice"], abs=1e-6)
    assert a2[0]["recommended"]["mean_dice"] == pytest.approx(second["exported"]["mean_dice"], abs=1e-6)
    assert a2[0]["keep"] == a[0]["keep"]  # the same given masks
    assert "From the product's DEFAULT nets" in (tmp_path / "res" / "cleaning_curve-native-default.md").read_text()
    assert cc.rounds_dir("smoke", "k", True, None, "default") != cc.rounds_dir("smoke", "k", True, None, True)
