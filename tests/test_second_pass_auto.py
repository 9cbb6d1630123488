"""Second pass mode 4 (second_pass.AUTO, the default): after the first pass is scored, fresh nets train again on every
image's correction when most given masks look wrong (where the scores' advice would offer a second pass), on the
recommended policy's corrections when more than AUTO_SHARE do, and there is no second pass otherwise. Real run
folders of tiny phantoms: the project's noise protocol at 75 % makes 7 of 9 masks look wrong, clean masks 3 of 9 (as
tests/test_second_pass_keep.py); trained by the command line with its defaults, as a user would, and by the engine;
a process ended between the two passes is resumed into the second."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from crl_napari import cascade, cli, runs, second_pass
from crl_napari.pipeline import ScoresReady
from crl_napari.rounds import RoundStarted
from crl_napari.runs import RunFolder
from crl_napari.scoring import noise_share
from crl_napari.second_pass import AUTO, OFF, NoSecondPass, train_passes
from crl_napari.settings import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(width=4, depth=2, epochs=6, batch_size=3, lr=0.1, augment=False, threads=1)
HEAVY, CLEAN = 0.75, 0.0
KEPT = ("config.json", "history.csv", "checkpoint.pt", "scores.csv")
CLI_TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "6", "--batch-size", "3", "--lr", "0.1",
            "--no-augment", "--threads", "1", "--quiet"]


class Kill(Exception):
    """The process ends (as a kill would, between two events of the stream)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from crl_napari.phantoms import write_sample_set

    return write_sample_set(tmp_path_factory.mktemp("auto") / "set", n=12, size=32, noise_ratio=0.0, seed=3)


def test_it_is_the_default():
    assert TrainConfig().second_pass == AUTO
    assert TrainConfig.from_dict({**asdict(TrainConfig()), "second_pass": OFF}).second_pass == OFF  # older runs


def test_the_command_line_default_trains_the_second_pass_on_every_correction_when_most_masks_look_wrong(
        data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", str(HEAVY), *CLI_TINY]) == 0
    out, err = capsys.readouterr()
    assert ("starting the second pass (round 2, fresh nets): trained on the first pass's corrections of 9 "
            "image(s)") in err
    assert json.loads(out[:out.rindex("}") + 1])["round"] == 2
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass, r.from_scratch) for r in rounds] == [(1, False, False), (2, True, True)]
    assert rounds[1].decisions == {"corrected": 9} and all(r.finished for r in rounds)
    first = RunFolder(runs.round_dir(run, 1))
    share = noise_share(np.array([r.suspicion for r in first.score_rows()]))  # what made it train the second pass
    assert share == pytest.approx(7 / 9)
    assert RunFolder(run).train_config.second_pass == AUTO == first.train_config.second_pass
    # the second pass's labels were the first pass's corrections, each image's (mode 2)
    assert runs.read_round_decisions(runs.round_dir(run, 2)) == {r.id: runs.CORRECTED for r in first.score_rows()}
    assert all((runs.round_dir(run, 2) / name).read_bytes() == (run / name).read_bytes() for name in KEPT)
    assert "a second pass on the corrections" not in err  # taken: the advice no longer offers one


def test_clean_masks_get_no_second_pass_and_the_run_is_exactly_the_one_pass_run(data, tmp_path):
    auto = list(train_passes(data, tmp_path / "auto", TrainConfig(**TINY), size=32, simulate_noise=CLEAN))
    off = list(train_passes(data, tmp_path / "off", TrainConfig(**TINY, second_pass=OFF), size=32,
                            simulate_noise=CLEAN))
    assert not any(isinstance(e, RoundStarted) for e in auto)
    assert [type(e) for e in auto[-2:]] == [ScoresReady, NoSecondPass]
    scored, none = auto[-2:]
    assert scored.metrics["noise_share"] == pytest.approx(3 / 9)
    assert none.reason == ("no second pass: 33% of the given masks look wrong; one trains by itself (second_pass 4) "
                           "only when more than 40% do")
    assert none.metrics == {**scored.metrics, "no_second_pass": none.reason}
    assert [type(e) for e in auto[:-1]] == [type(e) for e in off]
    assert not (tmp_path / "auto" / runs.ROUNDS).exists() and not (tmp_path / "auto" / "rounds").exists()
    assert (tmp_path / "auto" / "scores.csv").read_text() == (tmp_path / "off" / "scores.csv").read_text()
    for a, b in zip(cascade.load_models(tmp_path / "auto")[0], cascade.load_models(tmp_path / "off")[0], strict=True):
        assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.state_dict().values(),
                                                                        b.state_dict().values(), strict=True))
    assert not second_pass.stopped(tmp_path / "auto") and not RunFolder.can_resume(tmp_path / "auto")


def test_a_kill_between_the_passes_resumes_into_the_second_pass(data, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(Kill):
        for ev in train_passes(data, run, TrainConfig(**TINY), size=32, simulate_noise=HEAVY):
            if isinstance(ev, ScoresReady):
                raise Kill  # scores.csv is written; the second pass has not started
    assert RunFolder(run).has_scores and not (run / runs.ROUNDS).exists()
    assert not RunFolder.can_resume(run) and second_pass.stopped(run)  # Resume is offered for it
    first = {n: (run / n).read_bytes() for n in KEPT}
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--quiet"]) == 0
    assert "starting the second pass (round 2" in capsys.readouterr().err
    rounds = runs.read_rounds(run)
    assert [r.second_pass for r in rounds] == [False, True] and all(r.finished for r in rounds)
    assert rounds[1].decisions == {"corrected": 9}
    assert {n: (runs.round_dir(run, 1) / n).read_bytes() for n in KEPT} == first  # the first pass untouched


def test_the_rule_reads_the_share_of_wrong_looking_masks():
    wrong, right = [0.3 + i / 100 for i in range(7)], [0.01, 0.02]  # 7 of 9 look wrong, the rest agree with the nets
    choice = second_pass.auto_choice
    assert choice(np.array(wrong + right), 0.5) == (second_pass.EVERY, "")  # most look wrong: every correction
    assert choice(np.array(wrong[:5] + right * 3), 0.5) == (second_pass.RECOMMENDED, "")  # 45 %: the recommended ones
    assert choice(np.array(wrong[:5] + right * 3), 0.7) == (second_pass.EVERY, "")  # "most": against keep ratio 0.7
    assert choice(np.array(wrong[:4] + right * 3), 0.5) == (None, (
        "no second pass: 40% of the given masks look wrong; one trains by itself (second_pass 4) only when more than "
        "40% do"))
    mode, vague = choice(np.array(wrong + [0.2, 0.25]), 0.5)  # the nets cannot tell right from wrong yet
    assert mode is None and vague.startswith("no second pass: 78% of the given masks look wrong, but the nets cannot")
    assert vague.endswith("ask for one: second_pass 2)")
    assert "no image has a score" in choice(np.array([np.nan, np.nan]), 0.5)[1]


def test_where_many_but_not_most_masks_look_wrong_it_trains_on_the_recommended_corrections(data, tmp_path, capsys):
    """Between AUTO_SHARE and "most" (the sample set's and Shenzhen's 50 % kind): the second pass on the recommended
    policy's labels (mode 1), the given masks elsewhere; the command line goes on with it on --resume."""
    from _scores import raise_suspicions

    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", str(CLEAN), *CLI_TINY]) == 0
    assert "no second pass: 33% of the given masks look wrong" in capsys.readouterr().err
    raise_suspicions(run, 4)  # as a first pass that finds 4 of 9 masks wrong scores them: 44 %
    rows = RunFolder(run).score_rows()
    take = second_pass.takes_correction(np.array([r.suspicion for r in rows]), second_pass.RECOMMENDED)
    assert second_pass.auto_mode(RunFolder(run)) == (second_pass.RECOMMENDED, "") and 0 < take.sum() < len(rows)
    assert second_pass.stopped(run)  # due: --resume trains it
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"starting the second pass (round 2, fresh nets): trained on the first pass's corrections of "
            f"{int(take.sum())} image(s), the given masks elsewhere") in err
    assert runs.read_round_decisions(runs.round_dir(run, 2)) == {
        r.id: runs.CORRECTED for r, t in zip(rows, take, strict=True) if t}
    assert all(r.finished for r in runs.read_rounds(run))


def test_under_torchrun_the_line_names_the_command_where_a_second_pass_would_train(data, tmp_path):
    from _scores import raise_suspicions

    run = tmp_path / "run"
    list(train_passes(data, run, TrainConfig(**TINY), size=32, simulate_noise=CLEAN))
    folder = RunFolder(run)
    quiet = second_pass._no_second_pass_under_torchrun(folder, run, {"noise_share": 0.33})
    assert quiet.auto and quiet.reason == second_pass.auto_mode(folder)[1] and "40%" in quiet.reason
    raise_suspicions(run, 7)  # as a first pass that finds 7 of 9 masks wrong scores them
    told = second_pass._no_second_pass_under_torchrun(RunFolder(run), run, {"noise_share": 0.78})
    assert told.auto and told.reason == (f"no second pass under torchrun yet, though 78% of the given masks look "
                                         f"wrong: `crl-napari next-round {run} --second-pass 2` in one process trains "
                                         "the one the default would")
    assert told.metrics == {"noise_share": 0.78, "no_second_pass": told.reason}


def test_the_advice_and_the_review_docks_button_name_the_second_pass_the_default_would_train(data, tmp_path, capsys):
    """A run trained without AUTO (second_pass 0, the paper's one pass): the advice line, `info` and the mode the
    Review dock's "Second pass" trains (second_pass.asked_mode) follow AUTO's rule on the run's real scores with
    3 (its own), 4 and 7 of its 9 suspicions raised: nothing / the recommended corrections / every correction."""
    from _scores import raise_suspicions

    from crl_napari.cli.run_commands import say_keep_advice

    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", str(CLEAN), "--second-pass", "0",
                     *CLI_TINY]) == 0
    capsys.readouterr()
    seen = {}
    for raised in (None, 4, 7):
        if raised:
            raise_suspicions(run, raised)
        say_keep_advice(run)
        err = capsys.readouterr().err.strip()
        assert cli.main(["info", str(run)]) == 0
        queue = json.loads(capsys.readouterr().out)["queue"]
        seen[raised] = (err, queue["second_pass_advised"], second_pass.asked_mode(RunFolder(run)))
        assert queue["second_pass_offered"] is True  # no round yet: the button is there at any share
    assert seen[None] == ("", None, second_pass.RECOMMENDED)  # 33 %: no advice; pressed anyway, the mildest mode
    err, advised, asked = seen[4]
    assert err == (f"advice: 44% of the given masks look wrong: a second pass on the corrections the recommended "
                   f"threshold takes (the given masks elsewhere) may correct them better (crl-napari next-round {run} "
                   f"--second-pass 1)")
    assert advised == asked == second_pass.RECOMMENDED
    err, advised, asked = seen[7]
    assert err.startswith("advice: 78% of the given masks look wrong, more than the 0.5 of each batch training learns "
                          "from: a second pass on the corrections, or training again with keep ratio 0.22,")
    assert err.endswith(f"(crl-napari next-round {run} --second-pass 2, or crl-napari train ... --keep-ratio 0.22)")
    assert advised == asked == second_pass.EVERY
    own = RunFolder(run).train_config
    assert second_pass.share_mode(0.44, own.keep_ratio) == second_pass.RECOMMENDED  # the rule, as AUTO reads it
    assert second_pass.share_mode(float("nan"), own.keep_ratio) is None and second_pass.share_mode(0.4, 0.5) is None
