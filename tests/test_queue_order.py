"""The review queue a run folder writes follows the share of masks that look wrong (scoring.many_look_wrong):
closest to the threshold first where more than 40 % do, whatever the run's keep_ratio setting (the default's second
pass reads it; the queue does not since 1 Dec 2026 23:00), under the threshold first elsewhere; `info` names the
order."""

from __future__ import annotations

import numpy as np
import pytest

from crl_napari import rounds, scoring
from crl_napari.runs import RunFolder
from crl_napari.scoring import ImageScores
from crl_napari.settings import TrainConfig

N = 40


def _run(tmp_path, keep_ratio: float, share: float) -> tuple[RunFolder, np.ndarray]:
    """A run folder whose scores.csv holds ``N`` scores, ``share`` of them above the rest (two groups apart on the
    log scale, as noisy masks score), written by the run folder's own writer."""
    folder = RunFolder.create(tmp_path / f"run-{keep_ratio}-{share}", TrainConfig(epochs=1, width=4, depth=2,
                                                                                  keep_ratio=keep_ratio),
                              {"root": str(tmp_path / "data"), "size": 32, "simulate_noise": 0.0, "noise_seed": 0})
    rng = np.random.default_rng(1)
    high = rng.permutation(N) < round(share * N)
    s = np.where(high, rng.uniform(0.12, 0.5, N), rng.uniform(0.01, 0.05, N))
    ids = [f"case-{i:03d}" for i in range(N)]
    folder.write_case_table([{"id": i, "split": "train", "image_path": f"/d/images/{i}.png",
                              "mask_path": f"/d/masks/{i}.png", "orig_h": 32, "orig_w": 32, "corrupted": "",
                              "noise_op": "", "noise_n": ""} for i in ids])
    scores = ImageScores(suspicion=s, uncertainty=rng.uniform(0, 0.3, N), disagreement=rng.uniform(0, 1, N),
                         dice_given_corrected=1 - s, corrected=None, prob=None, pixel_uncertainty=None)
    folder.write_score_table(ids, scores, None, [0] * N)
    return folder, s


@pytest.mark.parametrize("keep_ratio, share, many", [(0.5, 0.5, True), (0.7, 0.5, True), (0.5, 0.75, True),
                                                     (0.5, 0.25, False), (0.7, 0.25, False)])
def test_the_written_queue_follows_the_share_whatever_the_runs_keep_ratio(tmp_path, keep_ratio, share, many):
    folder, s = _run(tmp_path, keep_ratio, share)
    listed = np.array([r.suspicion for r in folder.score_rows()])  # scores.csv in rank order
    t = scoring.recommended_threshold(listed)
    assert scoring.noise_share(listed) == pytest.approx(share)
    if many:  # nearest the threshold on the log scale first, from both sides
        far = np.abs(np.log(listed / t))
        assert (np.diff(far) >= -1e-4).all()
        above = np.flatnonzero(listed >= t)
        assert above[0] < np.flatnonzero(listed < t)[-1]  # an image above it comes before one under it
    else:  # every image under the threshold before any above it
        below = listed < t
        assert below[: below.sum()].all()
    assert rounds.info(folder.path)["queue"]["order"] == (
        "closest to the threshold first" if many else
        "under the threshold first, most suspicious first; then the most uncertain corrections")
