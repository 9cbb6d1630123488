"""A second pass, trained by itself after the first (ours, not the paper's; issue 11 item 4).

After the first training is scored, three fresh nets train the cascade again, with the same settings, on labels
made from the first pass's corrections (modes 1, 2) or on the given masks with the keep ratio the first pass's
scores suggest (mode 3); a correction is the sharpened mean of the three nets, as scoring makes it. The second
pass's nets become the run's nets and score the run against the masks the user gave, as before.

Which corrections the second pass takes (TrainConfig.second_pass):

* 1: the recommended policy's labels. The correction where its suspicion reaches the recommended threshold
  (scoring.recommended_threshold), the given mask below it: what the tool would export with nobody reviewing.
  Why: a suspicion under the threshold says the nets agree with the given mask, and there the given mask is
  usually the better label (at 75 % noise a correction of a clean mask scores 0.934 against 0.975 for the mask
  itself, benchmarks/results/native_res.md), so replacing it would teach the second pass the first pass's
  boundary error. On Shenzhen this policy's labels were the better set: mean Dice 0.934 / 0.936 at 75 % and
  0.970 / 0.973 at 50 % against 0.925 / 0.928 and 0.950 / 0.953 for every correction
  (benchmarks/results/threshold_rules.md).
* 2: every image's correction (the plain reading of "train on the corrections").
* 4 (AUTO, the default): mode 2 when most given masks look wrong, mode 1 when more than AUTO_SHARE (40 %) do, either
  only when the nets can tell right masks from wrong ones; else no second pass (:func:`auto_choice`). "Most" is
  what the scores' advice offers a second pass at (scoring.keep_from_share against the run's keep_ratio setting:
  more than 55 % at the paper's 0.5); barely trained nets find every mask wrong (keep_estimate.nets_can_tell), and
  a short try is not doubled for that. Why (benchmarks/results/native_noise.md, "The product's default", the noise
  drawn at 256 px as the paper draws it, trained at 64 px; against the first pass alone, by seed):
  - 75 % (the scores read 63-71 % wrong): mode 2 won on every seed where the user sees it: the exported set with
    nobody reviewing (the recommended policy) 0.961 / 0.960 / 0.963 against 0.951 / 0.952 / 0.958, the corrections
    of the corrupted masks 0.954 against 0.949 at 256 px, test Dice 0.943 against 0.932; it loses on the
    corrections of the clean masks (0.966 against 0.970), which the recommended policy mostly leaves alone. Mode 1
    won there too, behind mode 2 on every seed's corrupted masks and test Dice.
  - 50 % (51-55 % wrong): mode 1 won on every seed, exported 0.9823 / 0.9811 / 0.9823 against 0.9802 / 0.9787 /
    0.9814, corrupted 0.967 against 0.964. So did mode 2 (0.9824 / 0.9803 / 0.9823), but on the built-in sample set
    (50 % noise, 47 % wrong, `crl-napari demo`) mode 2 lowered test Dice from 0.962 to 0.951 where mode 1 raised it
    to 0.971 (corrections 0.960 / 0.956 -> 0.970 / 0.979 at training size): mode 2 replaces the clean masks' labels
    by their corrections, and the sample set's nets correct a clean mask badly (0.956).
  - 25 % (29-31 % wrong): mode 1 lost the exported set on seeds 1 and 2 (0.98908 / 0.98972 against 0.98955 /
    0.98999), mode 2 on every seed: no second pass, hence the 40 % bar between those and the sample set's 47 %.
    Below 25 % noise nothing was measured.
* 3 (KEEP): not the corrections but the keep_ratio. The first pass's scores estimate how many given masks are wrong
  (scoring.noise_share); when that is more than the run's keep_ratio lets through, a lower one is suggested
  (scoring.keep_from_share, as `info` lists it) and the second pass trains on the GIVEN masks with it, every
  other setting unchanged: what the user did by hand after the advice, done by itself. When nothing is suggested
  there is no second pass (:class:`NoSecondPass` says why) and the run stays as the first pass made it.
  Measured as native_res.md's ``crl+keep-est`` cells (docs/paper.md): at 75 % noise it won on all 3 seeds; on
  the 110-image small set it was mixed, so it is not a default.

Neither kind of label is trusted: the second pass selects and corrects them as the first pass did its given masks.
In a run folder the second pass is a review round without decisions (crl_napari.rounds): round 1's files stay in
rounds/1/, the second pass trains in rounds/2/ from scratch (the first pass's settings and seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributed, pipeline, rounds, runs, scoring
from .keep_estimate import nets_can_tell
from .pipeline import ScoresReady
from .rounds import RoundStarted
from .runs import RunError, RunFolder
from .scoring import recommended_threshold
from .settings import TrainConfig, TrainingError

OFF, RECOMMENDED, EVERY, KEEP, AUTO = 0, 1, 2, 3, 4
MODES = (OFF, RECOMMENDED, EVERY, KEEP, AUTO)
#: AUTO trains a second pass on the recommended policy's labels (RECOMMENDED) when more than this share of the given
#: masks look wrong (scoring.noise_share of the first pass's scores), on every correction (EVERY) when most do; both
#: only when the nets can tell right masks from wrong ones (:func:`auto_choice`; the module docstring says why)
AUTO_SHARE = scoring.MANY_SHARE


@dataclass(frozen=True)
class NoSecondPass:
    """The run's settings ask for a second pass (KEEP) or leave it to the scores (AUTO) and there is none to train:
    ``reason`` in one line; the first pass's scoring metrics with it (``no_second_pass``: the reason), so the run's
    last metrics say it. ``auto``: AUTO decided (the default, nothing asked): the first pass simply was the run."""

    reason: str
    metrics: dict = field(default_factory=dict)
    auto: bool = False


def takes_correction(suspicion: np.ndarray, mode: int) -> np.ndarray:
    """(N,) bool: which images train the second pass on their correction (the rest on their given mask), from
    the first pass's suspicion scores (scores.csv's column, or scoring.score_probs)."""
    s = np.asarray(suspicion, dtype=np.float64)
    if mode == EVERY:
        return np.ones(len(s), dtype=bool)
    if mode == RECOMMENDED:
        return s >= recommended_threshold(s)  # as export's accept_above with the run's recommended threshold
    if mode == KEEP:
        return np.zeros(len(s), dtype=bool)  # the given masks, with a keep_ratio of its own
    raise ValueError(f"second_pass mode must be {RECOMMENDED}, {EVERY} or {KEEP}, got {mode!r}")


def training_labels(given: np.ndarray, corrected: np.ndarray, suspicion: np.ndarray, mode: int) -> np.ndarray:
    """The second pass's labels (N, H, W) uint8 {0, 1}: each image's correction or its given mask
    (:func:`takes_correction`)."""
    take = takes_correction(suspicion, mode)
    return np.where(take[:, None, None], np.asarray(corrected) > 0, np.asarray(given) > 0).astype(np.uint8)


def train_passes(data, out: Path | str, config: TrainConfig | None = None, *, resume: bool = False,
                 should_stop: Callable[[], bool] | None = None, **options) -> Iterator:
    """pipeline.train_run (same arguments), then the second pass when the run's settings ask for one
    (:func:`run_second_pass`); with ``resume``, a second pass that was stopped or killed goes on where it was,
    and one that was due when the process ended starts (the first pass is not touched again). Yields both passes'
    events, RoundStarted(second_pass=True) between; or the first pass's and then :class:`NoSecondPass`."""
    out = Path(out)
    multi = distributed.world_size() > 1
    second = _second_pass_round(out) if resume else None
    due = resume and second is None and _due(out)  # killed between the first pass's scores and the second's start
    if multi and due and RunFolder(out).train_config.second_pass == AUTO:
        due = False  # the default under torchrun: one pass, said below
    if multi and ((config is not None and config.second_pass not in (OFF, AUTO)) or second is not None or due):
        raise TrainingError("second_pass is not available under torchrun yet: train in one process, or without it")
    if second is not None:
        if second.finished is not None:
            raise RunError(f"{out}: trained, its second pass too: nothing to resume (a review round: next-round)")
        yield from rounds.next_round(out, should_stop=should_stop)  # the second pass goes on where it stopped
        return
    if due:
        yield from run_second_pass(out, should_stop=should_stop)
        return
    scored = None
    for event in pipeline.train_run(data, out, config, resume=resume, should_stop=should_stop, **options):
        scored = event if isinstance(event, ScoresReady) else scored
        yield event
    if scored is not None and distributed.is_writer() and RunFolder(out).train_config.second_pass:
        if multi:  # AUTO (any other mode was refused above): one pass, and why
            yield _no_second_pass_under_torchrun(RunFolder(out), out, scored.metrics)
            return
        yield from run_second_pass(out, should_stop=should_stop, metrics=scored.metrics)


def _no_second_pass_under_torchrun(run: RunFolder, out: Path, metrics: dict) -> NoSecondPass:
    """AUTO under torchrun: the second pass is not trained there; where it would be, the line says how to get it."""
    suspicion = rounds.suspicions(run)
    mode, reason = auto_choice(suspicion, run.train_config.keep_ratio)
    if mode is not None:
        reason = (f"no second pass under torchrun yet, though {scoring.noise_share(suspicion):.0%} of "
                  f"the given masks look wrong: `crl-napari next-round {out} --second-pass {mode}` in one process "
                  "trains the one the default would")
    return NoSecondPass(reason, {**metrics, "no_second_pass": reason}, auto=True)


def stopped(run_dir: Path | str) -> bool:
    """A second pass that started and did not finish, or one that is due and never started (the process ended
    between the first pass's scoring and the second pass's start): :func:`train_passes` with ``resume`` goes on
    with it (the first pass's scores are there, so the run's own ``can_resume`` says no). False for anything
    unreadable."""
    try:
        second = _second_pass_round(Path(run_dir))
        return second.finished is None if second is not None else _due(Path(run_dir))
    except (RunError, TrainingError):
        return False


def started_and_stopped(run_dir: Path | str) -> bool:
    """A second pass that started (round 2 in rounds.json) and did not finish: going on means resuming that round
    (rounds.next_round), not starting one. False for anything unreadable."""
    try:
        second = _second_pass_round(Path(run_dir))
    except (RunError, TrainingError):
        return False
    return second is not None and second.finished is None


def offered(run_dir: Path | str) -> bool:
    """A trained and scored run that can still take a second pass (:func:`run_second_pass`): no round yet, the
    scores current. False for anything unreadable."""
    try:
        run = RunFolder(run_dir)
        return (run.has_scores and run.has_checkpoint and not run.scores_stale
                and not runs.read_rounds(Path(run_dir)))
    except (RunError, TrainingError):
        return False


def _due(run_dir: Path) -> bool:
    """A first pass trained and scored whose settings ask for a second pass that has not started (no rounds yet):
    for KEEP only when its scores suggest a keep_ratio, for AUTO only when :func:`auto_mode` chooses one (else the
    run is finished as it is)."""
    if not offered(run_dir):
        return False
    run = RunFolder(run_dir)
    mode = run.train_config.second_pass
    if mode == AUTO:
        return auto_mode(run)[0] is not None
    return mode != OFF and (mode != KEEP or rounds.keep_advice(run)[1] is not None)


def auto_mode(run: RunFolder) -> tuple[int | None, str]:
    """What AUTO trains for a scored run: :func:`auto_choice` of its scores and its keep_ratio setting."""
    return auto_choice(rounds.suspicions(run), run.train_config.keep_ratio)


def auto_choice(suspicion: np.ndarray, keep_ratio: float) -> tuple[int | None, str]:
    """AUTO's second pass after a first pass scored ``suspicion`` (scores.csv's column) with the ``keep_ratio``
    setting: (EVERY, "") when most given masks look wrong (scoring.keep_from_share: where the advice offers a second
    pass, more than 55 % at 0.5), (RECOMMENDED, "") when more than AUTO_SHARE do, either only when the nets can tell
    right masks from wrong ones (keep_estimate.nets_can_tell: barely trained nets find every mask wrong, and a
    second pass would double a short try for nothing); else (None, why not in one line)."""
    s = np.asarray(suspicion, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not s.size:
        return None, ("no second pass: no image has a score to estimate the wrong masks from; the run stays as the "
                      "first pass made it")
    share = scoring.noise_share(s)
    mode = share_mode(share, keep_ratio)
    if mode is None:
        return None, (f"no second pass: {share:.0%} of the given masks look wrong; one trains by itself (second_pass "
                      f"{AUTO}) only when more than {AUTO_SHARE:.0%} do")
    if not nets_can_tell(s):
        return None, (f"no second pass: {share:.0%} of the given masks look wrong, but the nets cannot yet tell right "
                      f"masks from wrong ones (train longer, or ask for one: second_pass {mode})")
    return mode, ""


def share_mode(share: float | None, keep_ratio: float) -> int | None:
    """The second pass a first pass's estimate of the wrong masks asks for (scoring.noise_share, with the run's
    keep_ratio setting): EVERY when most look wrong (scoring.keep_from_share suggests a lower keep ratio),
    RECOMMENDED when more than AUTO_SHARE do, else None (scoring.wrong_share). AUTO's rule (:func:`auto_choice`),
    the advice's and the Review dock's "Second pass" (:func:`advised`, :func:`asked_mode`): one rule, so what the
    tool offers is what its default trains. The review queue starts closest to the threshold wherever there is
    one (scoring.many_look_wrong, scoring.rank)."""
    return {scoring.MOST: EVERY, scoring.MANY: RECOMMENDED}.get(scoring.wrong_share(share, keep_ratio))


def advised(run_dir: Path | str, suspicion: np.ndarray | None = None) -> int | None:
    """The second pass the scores' advice names for a run that can still take one (:func:`offered`): the mode AUTO
    would have trained after these scores (:func:`auto_choice`), None for none (no second pass advised, or the run
    cannot take one). For runs trained without AUTO (second_pass 0, or before it was the default) and runs whose
    second pass was stopped before it started. ``suspicion``: scores.csv's, when already read."""
    if not offered(run_dir):
        return None
    run = RunFolder(run_dir)
    return auto_choice(rounds.suspicions(run) if suspicion is None else suspicion, run.train_config.keep_ratio)[0]


def asked_mode(run: RunFolder) -> int:
    """The second pass to train when the user asks for one without naming it (the Review dock's "Second pass"): the
    run's own setting where it named a mode (1-3) that never started, else the one its scores ask for
    (:func:`share_mode`, even where the nets cannot yet tell right masks from wrong ones: the user asked), and the
    recommended policy's corrections where they ask for none (the mode that replaces fewest given masks)."""
    own = run.train_config.second_pass
    if own not in (OFF, AUTO):
        return own
    mode = share_mode(scoring.noise_share(rounds.suspicions(run)), run.train_config.keep_ratio)
    return RECOMMENDED if mode is None else mode


def _second_pass_round(run_dir: Path) -> runs.Round | None:
    """The run's second pass in rounds.json (started or finished), or None."""
    if not RunFolder.is_run(run_dir):
        return None
    return next((r for r in runs.read_rounds(run_dir) if r.second_pass), None)


def run_second_pass(run_dir: Path | str, *, should_stop: Callable[[], bool] | None = None,
                    threads: int | None = None, metrics: dict | None = None, mode: int | None = None) -> Iterator:
    """Train the second pass of a trained and scored run: round 2 from scratch with the first round's settings
    (crl_napari.rounds: round 1's checkpoint and scores stay in rounds/1/), on each image's correction where
    :func:`takes_correction` says so (scores.csv's suspicion, TrainConfig.second_pass) and its given mask
    elsewhere; with KEEP on every given mask with the keep_ratio the scores suggest (rounds.keep_advice), or
    no training at all when they suggest none (:class:`NoSecondPass`, with the first pass's ``metrics``). The
    second pass's nets rescore the run. Only once, right after the first training (before any review round).

    ``mode`` (1-4) asks for a second pass the run's settings did not ask for: after the scores' advice
    (scoring.advice_sentence), from `next-round --second-pass` or the Review widget's "Second pass"; the run's
    own setting when None. AUTO trains the mode :func:`auto_mode` chooses, or none (:class:`NoSecondPass`). A
    stopped one resumes from rounds.json, whatever its mode was."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    if runs.read_rounds(run_dir):
        raise RunError(f"{run_dir / runs.ROUNDS}: the run already has rounds; a second pass follows the first "
                       "training directly")
    if mode is not None and (isinstance(mode, bool) or mode not in MODES[1:]):
        raise TrainingError(f"second pass must be {RECOMMENDED}, {EVERY}, {KEEP} or {AUTO}, got {mode!r}")
    mode, keep = run.train_config.second_pass if mode is None else mode, None
    if mode == AUTO:
        mode, reason = auto_mode(run)
        if mode is None:
            yield NoSecondPass(reason, {**(metrics or {}), "no_second_pass": reason}, auto=True)
            return
    if mode == KEEP:
        share, keep = rounds.keep_advice(run)
        if keep is None:
            reason = no_keep_reason(share, run.keep_ratio)
            yield NoSecondPass(reason, {**(metrics or {}), "no_second_pass": reason})
            return
    rows = run.score_rows()
    suspicion = np.array([np.nan if r.suspicion is None else r.suspicion for r in rows], dtype=np.float64)
    take = takes_correction(suspicion, mode)
    labels = {r.id: runs.CORRECTED for r, t in zip(rows, take, strict=True) if t}
    yield from rounds.next_round(run_dir, from_scratch=True, labels=labels, should_stop=should_stop, threads=threads,
                                 keep_ratio=keep)


def no_keep_reason(share: float, keep_ratio: float) -> str:
    """Why KEEP trains no second pass, in one line (scoring.keep_from_share suggested nothing)."""
    if not np.isfinite(share):
        return ("no second pass: no image has a score to estimate the wrong masks from; the run stays as the first "
                "pass made it")
    return (f"no second pass: {share:.0%} of the given masks look wrong, so no keep ratio below the run's "
            f"{keep_ratio:g} is suggested; the run stays as the first pass made it")


def labels_text(ev: RoundStarted) -> str:
    """What a second pass trains on, for its start line (the command line, the Train widget)."""
    if ev.corrected:
        return f"on the first pass's corrections of {ev.corrected} image(s), the given masks elsewhere"
    keep = "" if ev.keep_ratio is None else f" with keep ratio {ev.keep_ratio:g}"
    return f"on the given masks{keep}"
