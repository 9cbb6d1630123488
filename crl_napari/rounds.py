"""Review rounds: a reviewed run trains its next round with the radiologist's decisions, then rescores.

What a decision means for training (the masks at training size):
* accepted -> the correction the reviewer accepted (``corrected/<id>.png``), trusted;
* edited   -> the reviewer's drawing, resized to training size, trusted;
* kept     -> the given mask, trusted;
* flagged, pending -> the given mask, not trusted (the cascade selects and corrects it as before); in a warm round
  after a second pass on every correction, the correction that pass trained on (:func:`pending_labels`);
* excluded -> left out of training (still scored, so its decision stays attached to a listed image);
* corrected -> not a reviewer's: the correction on disk, not trusted (a second pass, crl_napari.second_pass,
  trains round 2 from scratch with ``labels`` in place of the review's decisions).
A trusted mask is always selected in stage 1 and never corrected in stage 2 (cascade.train(trusted=)).
A review round after a second pass warm-starts from the second pass's nets (it trained from scratch); after one on
every correction its images nobody decided on train on that pass's labels (kept as ROUND_LABELS), not on their
given masks, which would pull the nets back toward the noise they were trained away from (:func:`pending_labels`).

A round either warm-starts for a few epochs from the nets of the last round that trained in full (round 1, or a
later round from scratch: :func:`warm_base`), continuing the cascade in stage 2 with every decision so far
(selection at full strength, the learning rate annealed and the epochs' weights averaged: :func:`round_config`),
or trains from scratch with the first round's settings. It trains in ``rounds/<n>/``, streaming the images from
the run's cache when that is whole (older run folders: read into memory from the originals or display copies,
run_data.training_source); once done its files become the run's top level and every image is rescored
(runs.rounds keeps the files). Corrections accepted earlier keep their maps. The writer lock is held throughout;
a round killed midway resumes when started again (never a round n+2, never a lost round n).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import cascade, run_data, runs, scoring
from .cache import Slots
from .data import DataError, read_mask, resize_mask
from .pipeline import ScoresReady, accepted_corrections, record_history, score_saved, trained_models
from .review import ReviewError, ReviewSession
from .runs import RunError, RunFolder
from .settings import TrainConfig, TrainingError

#: a warm round trains this fraction of the first round's epochs unless told otherwise (at least one)
WARM_FRACTION = 0.1
#: a warm round's learning rate starts at WARM_LR_START x the first round's last one and decays to WARM_LR_END x
#: that start over the round's epochs (round_config says why)
WARM_LR_START = 0.1
WARM_LR_END = 0.1
TRUSTED_STATUSES = ("accepted", "edited", "kept")


@dataclass(frozen=True)
class RoundStarted:
    """A review round begins (or resumes): its number, how many masks it trusts and leaves out, how it trains."""

    round: int
    resumed: bool
    trusted: int
    excluded: int
    warm_epochs: int | None
    from_scratch: bool
    warm_from: int | None = None  # the round whose nets a warm round starts from (warm_base)
    second_pass: bool = False  # trained after the first pass by itself (crl_napari.second_pass), not a review
    keep_ratio: float | None = None  # a second pass's keep_ratio (its config's); None for a review round
    corrected: int = 0  # how many images train on the previous round's correction (a second pass's labels)
    pending_from: int | None = None  # the round whose labels the undecided images train on (None: their given masks)

    def text(self) -> str:
        """How the round trains, in a few words (the CLI's line and the Review dock's status say it)."""
        how = ("from scratch" if self.from_scratch
               else f"warm start from round {self.warm_from}, {self.warm_epochs} epoch(s)")
        parts = [how, f"{self.trusted} trusted", f"{self.excluded} left out"]
        if self.pending_from is not None:
            parts.append(f"the rest on round {self.pending_from}'s labels")
        return "; ".join(parts)


def default_warm_epochs(first: TrainConfig) -> int:
    """Epochs of a warm round when none are asked: WARM_FRACTION of the first round's, at least one."""
    return max(1, round(first.epochs * WARM_FRACTION))


def round_config(previous: TrainConfig, first: TrainConfig, warm_epochs: int | None, from_scratch: bool) -> TrainConfig:
    """The settings of the next round: the first round's from scratch, with the keep ratio the run trains with now
    (a second pass of mode 3 lowered it: second_pass.KEEP); else the nets of the last round trained in
    full (:func:`warm_base`) go on for ``warm_epochs`` epochs, in stage 2 from the start (crl), selection at full
    strength (the nets can already tell), and they move little:

    * the learning rate starts at WARM_LR_START of the first round's last one and decays to WARM_LR_END of
      that start over the round's epochs, every round alike (not compounding round after round);
    * the round's nets are the mean of its epochs' weights (average_last = warm_epochs, weight_average.py),
      set here whatever the first round used, so it never exceeds the round's epochs.

    Why (benchmarks/results/round_schedules.md, quick profile, the lr 0.018 where the first round stopped): at
    that lr a warm round made the nets worse even with no decision at all (test Dice 0.925 -> 0.921 -> 0.896
    at 75 % noise, 0.951 -> 0.948 -> 0.944 at 50 %), and annealing from it to a tenth with the average did
    no better after one round (0.917, 0.947): more stage 2 at that lr moves the nets away from where the first
    round's decay left them (in table1, a longer stage 2 did worse too). From a tenth of it, with no decision:
    0.925 -> 0.933 -> 0.931 and 0.951 -> 0.952. With the reviewer's decisions (cleaning_curve.py's order b) the
    nets still lose about 0.002 test Dice per round after the first (75 %: 0.933 -> 0.918 and 0.929 -> 0.912
    over 8 rounds): open (not the lr alone)."""
    if from_scratch:
        return replace(first, keep_ratio=previous.keep_ratio)
    start = first.lr * first.lr_decay**first.epochs * WARM_LR_START
    return replace(previous, epochs=warm_epochs, k=0 if previous.strategy == "crl" else None, ramp=0.0, lr=start,
                   lr_decay=WARM_LR_END ** (1 / max(1, warm_epochs - 1)), average_last=warm_epochs)


def warm_base(rounds: list, number: int) -> int:
    """The round whose nets warm round ``number`` starts from: the last one before it that trained in full (round 1,
    or a round from scratch), with every decision so far; not the previous warm round. Why
    (benchmarks/results/cleaning_curve.md, orders b and f, 75 % noise, 8 rounds of 20 decisions): warm rounds
    chained one on another drift, test Dice 0.9247 -> 0.9177 and 0.9291 -> 0.9121 on seeds 0 and 1, each round a
    little further from where the full training left the nets; started each time from the full round's nets they
    do not drift (order f)."""
    return max(r.number for r in rounds if r.number < number and r.warm_epochs is None)


def pending_labels(run_dir: Path, rounds: list, number: int) -> int | None:
    """The round whose labels (its ROUND_LABELS file) the images nobody decided on train on in round ``number``, or
    None for their given masks: a warm round's base (:func:`warm_base`) when that is a second pass on every
    correction that kept them. Why (benchmarks/results/cleaning_curve-native-default-cal.md, the default's second
    pass on every correction at 75 % noise, rounds of 20 decisions, seeds 0 / 1 / 2): on their given masks, three
    in four of them wrong, the rounds pulled the nets back toward the noise (test Dice 0.9411 / 0.9449 / 0.9512 ->
    0.9389 / 0.9391 / 0.9506 after 8 rounds) and the exported set after 80 decisions fell below the queue's with no
    round at all (0.9635 / 0.9639 / 0.9739 against 0.9648 / 0.9684 / 0.9746); on the second pass's labels the nets
    rose (0.9444 / 0.9463 / 0.9518) and the exported set beat those rounds at every budget on every seed (0.9668 /
    0.9686 / 0.9746 after 80). After a second pass on the recommended corrections only (the default at 50 %) the
    same lost seed 2 at every budget (0.9827 against 0.9842 after 80), so there the rest keep their given masks."""
    this = next((r for r in rounds if r.number == number), None)
    if this is None or this.warm_epochs is None:  # round 1, or a round from scratch: the first round's labels
        return None
    base = warm_base(rounds, number)
    if not next(r for r in rounds if r.number == base).second_pass:
        return None
    return base if runs.inside(runs.round_dir(run_dir, base), runs.ROUND_LABELS).is_file() else None


def _kept_labels(run: RunFolder, base: int) -> Slots:
    """Round ``base``'s kept labels, one per case of the run (checked: a run folder is untrusted)."""
    path = runs.inside(runs.round_dir(run.path, base), runs.ROUND_LABELS)
    n, size = len(run.case_rows()), run.config["data"]["size"]
    if path.stat().st_size != n * size * size:
        raise RunError(f"{path}: holds {path.stat().st_size} bytes, not the {n} masks of {size}x{size} of the "
                       f"run's cases; delete it to train the images nobody decided on on their given masks")
    return Slots(path, n, size)


def decisions_of(run_dir: Path) -> dict[str, str]:
    """{id: status} of every decided image in review.json (checked by ReviewSession)."""
    session = ReviewSession.open(run_dir, reviewer="crl-napari")
    return {i: session.status(i) for i in session.ids if session.status(i) != "pending"}


def _decisions_now(run_dir: Path) -> dict[str, str]:
    try:
        return decisions_of(run_dir)
    except ReviewError as exc:
        raise RunError(str(exc)) from None


def write_training_masks(run: RunFolder, decisions: dict[str, str], path: Path,
                         pending: Slots | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Write the masks the round trains on, one case at a time, into ``path`` (uint8 (n trained, S, S), read
    back slot by slot as training reads the cache: memory holds one mask, not the data set); returns (trusted
    (N,) bool, trained (N,) bool) for the run's training cases in cases.csv order (see the module docstring).
    ``pending``: the labels of the images nobody decided on, one per case (:func:`pending_labels`); else their
    given masks."""
    size = run.config["data"]["size"]
    rows = run.case_rows()
    statuses = [decisions.get(r.id, "pending") for r in rows]
    trained = np.array([s != "excluded" for s in statuses], dtype=bool)
    masks = Slots(path, int(trained.sum()), size, writable=True)
    try:
        slot = 0
        for i, (row, status) in enumerate(zip(rows, statuses, strict=True)):
            if status == "excluded":
                continue
            if status in ("accepted", runs.CORRECTED):
                mask = run.corrected(row.id)
            elif status == "edited":
                mask = _edit(run, row.id, size)
            elif status in TRUSTED_STATUSES or pending is None:  # kept, or no labels of a second pass to go on
                mask = run.given(row.id)
            else:
                mask = pending[i]
            masks[slot] = np.asarray(mask) > 0
            slot += 1
        masks.flush()
    finally:
        masks.close()
    return np.array([s in TRUSTED_STATUSES for s in statuses]), trained


def _edit(run: RunFolder, image_id: str, size: int) -> np.ndarray:
    """The reviewer's drawing at training size (drawn at any size)."""
    path = run.edit_path(image_id)
    try:
        mask = read_mask(path)
    except (DataError, OSError) as exc:
        raise RunError(f"{path}: the edited mask of {image_id!r} cannot be read ({exc})") from None
    return mask if mask.shape == (size, size) else resize_mask(mask, size)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def next_round(run_dir: Path | str, *, warm_epochs: int | None = None, from_scratch: bool = False,
               should_stop: Callable[[], bool] | None = None, threads: int | None = None,
               labels: dict[str, str] | None = None, keep_ratio: float | None = None) -> Iterator:
    """Train the next review round of a reviewed run and rescore it; yields RoundStarted, on a resume the
    round's own plan (runs.Resume: the epochs it trained before, as the first pass's resume shows them), the
    training events and ScoresReady (its metrics hold ``round``). A round that was stopped or killed resumes with
    the settings and decisions it started with (``warm_epochs``/``from_scratch``/``labels``/``keep_ratio`` then
    do not apply). ``threads`` (CPU threads of torch, a runtime setting) overrides the run's own: napari trains
    with the viewer's count. ``labels`` ({id: "corrected"}, from_scratch only; {} = every given mask) replace the
    review's decisions: the round is a second pass (crl_napari.second_pass), recorded as such in rounds.json;
    ``keep_ratio`` (a second pass only) replaces the first round's. rounds.json records every round's
    keep_ratio."""
    run_dir = Path(run_dir)
    if warm_epochs is not None and from_scratch:
        raise TrainingError("a round either warm-starts (warm_epochs) or trains from scratch, not both")
    if labels is not None and (not from_scratch or any(v != runs.CORRECTED for v in labels.values())):
        raise TrainingError(f"a second pass trains from scratch on {runs.CORRECTED!r} labels only")
    if keep_ratio is not None and labels is None:
        raise TrainingError("only a second pass trains with a keep_ratio of its own")
    if warm_epochs is not None and (isinstance(warm_epochs, bool) or not isinstance(warm_epochs, int)
                                    or warm_epochs < 1):
        raise TrainingError(f"warm_epochs must be a positive number of epochs, got {warm_epochs!r}")
    RunFolder(run_dir)  # not a run folder: refused before the lock file is made
    with runs.writer_lock(run_dir, "next-round"):
        yield from _next_round_locked(run_dir, warm_epochs, from_scratch, should_stop, threads, labels, keep_ratio)


def _start(run_dir: Path, rounds: list, warm_epochs: int | None, from_scratch: bool,
           labels: dict[str, str] | None = None, keep_ratio: float | None = None) -> list:
    """Keep the current round's files, make the next round's folder, record it in rounds.json (``labels``,
    ``keep_ratio``: a second pass's, in place of the review's decisions and the first round's keep_ratio)."""
    run = RunFolder(run_dir)
    if not run.has_scores or not run.has_checkpoint:
        raise RunError(f"{run.scores_path}: the run is not trained and scored yet; a review round starts from one")
    if run.scores_stale:
        raise RunError(f"{run.scores_path}: older than the checkpoint; score the run first (crl-napari score)")
    decisions = _decisions_now(run_dir) if labels is None else labels
    if not decisions and labels is None:
        raise RunError(f"{run.review_path}: no decisions yet; review some images before training a round with them")
    trained_keep = run.keep_ratio  # what the nets trained with (with keep_auto, the estimate; history.csv read once)
    if not rounds:  # a run made before rounds (or never retrained): it was round 1
        created = run.config.get("created")
        rounds = [runs.Round(1, created if isinstance(created, str) else "", _mtime(run.scores_path),
                             keep_ratio=trained_keep)]
    current = rounds[-1].number
    runs.keep_round_files(run_dir, current)
    first = RunFolder(runs.round_dir(run_dir, 1)).train_config
    warm = None if from_scratch else (warm_epochs or default_warm_epochs(first))
    previous = run.train_config
    if not from_scratch:  # a warm crl round has no stage 1 to estimate in: it goes on with the nets' keep ratio
        previous = replace(previous, keep_ratio=trained_keep)
    config = round_config(previous, first, warm, from_scratch)
    if keep_ratio is not None:
        config = replace(config, keep_ratio=keep_ratio)  # checked as every setting is (TrainingError)
    nxt = runs.Round(current + 1, _now(), None, warm, from_scratch, {}, labels is not None, config.keep_ratio)
    if (base := pending_labels(run_dir, [*rounds, nxt], nxt.number)) is not None:
        _kept_labels(run, base).close()  # a damaged file refused before the round is written
    runs.write_round_start(run, current + 1, config, decisions)
    counts = {s: sum(v == s for v in decisions.values()) for s in sorted(set(decisions.values()))}
    rounds = [*rounds, replace(nxt, decisions=counts)]
    runs.write_rounds(run_dir, rounds)
    return rounds


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def _next_round_locked(run_dir: Path, warm_epochs, from_scratch, should_stop, threads=None, labels=None,
                       keep_ratio=None) -> Iterator:
    rounds = runs.read_rounds(run_dir)
    resumed = bool(rounds) and rounds[-1].finished is None
    if not resumed:
        rounds = _start(run_dir, rounds, warm_epochs, from_scratch, labels, keep_ratio)
    this = rounds[-1]
    folder = runs.round_dir(run_dir, this.number)
    plan = runs.open_for_resume(folder)  # the round's own folder: its checkpoint, if any, and history
    run = RunFolder(run_dir)
    decisions = runs.read_round_decisions(folder)
    mask_file = runs.inside(folder, runs.ROUND_MASKS)
    pending_from = pending_labels(run_dir, rounds, this.number)
    pending = None if pending_from is None else _kept_labels(run, pending_from)
    try:  # again on a resume: decisions.json decides
        trusted, trained = write_training_masks(run, decisions, mask_file, pending)
    finally:
        if pending is not None:
            pending.close()
    rows, size = run.case_rows(), run.config["data"]["size"]
    # the images streamed from the run's cache when it is whole, else read as before (run folders made before the
    # cache); the masks streamed from the round's own file
    source = run_data.training_source(run, [r for r, t in zip(rows, trained, strict=True) if t], size,
                                      Slots(mask_file, int(trained.sum()), size))
    base = None if this.warm_epochs is None else warm_base(rounds, this.number)
    corrected = sum(v == runs.CORRECTED for v in decisions.values())
    keep = plan.config.keep_ratio if this.second_pass else None
    yield RoundStarted(this.number, resumed, int(trusted.sum()), int((~trained).sum()), this.warm_epochs,
                       this.from_scratch, base, this.second_pass, keep, corrected, pending_from)
    if resumed:
        yield plan  # the epochs the round trained before it stopped (the Train widget plots them)
    warm_from = None
    if base is not None and plan.start_epoch == 0:
        warm_from = runs.round_dir(run_dir, base) / runs.CHECKPOINT
    config = plan.config if threads is None else replace(plan.config, threads=threads)
    events = cascade.train_from(source, config, run_dir=folder, resume=plan.start_epoch > 0,
                                should_stop=should_stop, trusted=trusted[trained], init_from=warm_from)
    models = yield from trained_models(record_history(events, plan.run, [h.as_dict() for h in plan.history]))
    if models is None:
        return
    _keep_or_drop(folder, mask_file, this.second_pass and corrected == len(rows))
    runs.promote(run_dir, this.number)  # the weights first: until the scores follow, they read as stale
    run = RunFolder(run_dir)
    # accepted while the round trained, too: a correction someone accepted keeps the mask they saw
    accepted = frozenset(i for i, s in decisions.items() if s == "accepted") | accepted_corrections(run)
    metrics = yield from score_saved(run, models, keep_maps=accepted, should_stop=should_stop)
    if metrics is None:  # stopped while scoring: the round resumes into the rest of its scoring
        return
    runs.keep_round_files(run_dir, this.number)
    runs.write_rounds(run_dir, [*rounds[:-1], replace(this, finished=_now())])
    yield ScoresReady(run.scores_path, {**metrics, "round": this.number})


def _keep_or_drop(folder: Path, mask_file: Path, keep: bool) -> None:
    """A finished round's masks: a second pass on every correction keeps them as its labels (ROUND_LABELS, for
    :func:`pending_labels`; once: a resume into its scoring remade them from corrections its scoring had begun to
    replace), any other drops them (decisions.json makes them again)."""
    labels = runs.inside(folder, runs.ROUND_LABELS)
    if keep and not labels.exists():
        mask_file.replace(labels)
    else:
        mask_file.unlink(missing_ok=True)


def info(run_dir: Path | str) -> dict:
    """What `info` says of the queue and the rounds: which round's nets scored the review queue (None before
    scoring; while a round trains, the one before it), the recommended threshold the queue is ordered for, how many
    images are under it, the queue's order (:func:`queue_order`), the share at or above it (the scores' estimate
    of how many given masks are wrong) with the keep_ratio to train again with when that is most of them
    (scoring.suggested_keep_ratio) against the keep ratio its nets trained with (RunFolder.keep_ratio: with
    TrainConfig.keep_auto the estimate), whether the run can still take a second pass (second_pass.offered) and
    the one its scores ask for (second_pass.advised: `next-round RUN --second-pass MODE`), the size calibration's
    offset the corrections were made with (RunFolder.size_offset), and every round (:func:`describe`)."""
    from .review import default_unreviewed
    from .review_file import read_unreviewed
    from .second_pass import advised, offered  # it trains through this module: imported when asked, not at load

    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    queue = None
    if run.has_scores:
        suspicion = suspicions(run)
        threshold = scoring.recommended_threshold(suspicion)
        share, keep = keep_advice(run, suspicion)
        queue = {"recommended_threshold": round(threshold, 4), "order": queue_order(share),
                 "under_threshold": int((suspicion < threshold).sum()), "images": len(suspicion),
                 "noise_share": _finite(share), "suggested_keep_ratio": keep,
                 "trained_keep_ratio": run.keep_ratio, "second_pass_offered": offered(run_dir),
                 "second_pass_advised": advised(run_dir, suspicion),
                 # the size calibration's logit offset the corrections were made with (None: not calibrated)
                 "size_offset": run.size_offset,
                 # what the export gives images nobody reviewed unless told, and what the queue is ordered for
                 "unreviewed": read_unreviewed(run_dir) or default_unreviewed(suspicion)}
    return {"queue_scored_by_round": runs.current_round(run_dir) if run.has_scores else None, "queue": queue,
            "rounds": describe(run_dir)}


def queue_order(share: float | None) -> str:
    """The review queue's order for the recommended policy in words (scoring.rank's two)."""
    if scoring.many_look_wrong(share):
        return "closest to the threshold first"
    return "under the threshold first, most suspicious first; then the most uncertain corrections"


def suspicions(run: RunFolder) -> np.ndarray:
    """scores.csv's suspicion of every scored image."""
    return np.array([r.suspicion for r in run.score_rows() if r.suspicion is not None], dtype=np.float64)


def keep_advice(run: RunFolder, suspicion: np.ndarray | None = None) -> tuple[float, float | None]:
    """(noise share, suggested keep_ratio or None) of a scored run, from scores.csv against the run's own
    keep_ratio (scoring.noise_share, scoring.keep_from_share): what `info` lists, and the keep_ratio a second
    pass of mode KEEP trains with (crl_napari.second_pass). ``suspicion``: scores.csv's, when already read."""
    share = scoring.noise_share(suspicions(run) if suspicion is None else suspicion)
    return share, scoring.keep_from_share(share, run.keep_ratio)


def _finite(x: float) -> float | None:
    """``x`` to 4 places, None for NaN (no score): `info` prints strict JSON."""
    return round(x, 4) if np.isfinite(x) else None


def describe(run_dir: Path | str) -> list[dict]:
    """The rounds of a run for `info`: number, started, decisions used, epochs trained, test Dice if evaluated."""
    run_dir = Path(run_dir)
    rounds = runs.read_rounds(run_dir)
    if not rounds:
        run = RunFolder(run_dir)
        created = run.config.get("created")
        rounds = [runs.Round(1, created if isinstance(created, str) else "",
                             _mtime(run.scores_path) if run.has_scores else None)]
    out = []
    for r in rounds:
        folder = runs.round_dir(run_dir, r.number)
        where = folder if (folder / runs.CONFIG).is_file() else run_dir
        try:
            epochs = len(RunFolder(where).history_rows())
        except (RunError, TrainingError):
            epochs = None
        test = runs.round_test_dice(folder) if where is folder else None
        if r is rounds[-1] and r.finished is not None:
            test = runs.round_test_dice(run_dir) or test  # evaluated since it became the top level
        out.append({"round": r.number, "started": r.started, "finished": r.finished, "decisions": r.decisions,
                    "warm_epochs": r.warm_epochs, "from_scratch": r.from_scratch, "second_pass": r.second_pass,
                    "keep_ratio": r.keep_ratio, "epochs": epochs,
                    "test_dice": test})
    return out
