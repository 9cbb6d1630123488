"""The Qt-free review model over a real run folder (written by test_review.make_run): order, filters,
navigation, the edit state machine, counts, batch and undo — no display needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_review import RANKED, SIZE, SUSPICION, make_run

from crl_napari.review import ReviewSession
from crl_napari.review_model import ReviewModel, ReviewModelError


@pytest.fixture
def model(tmp_path):
    rf = make_run(tmp_path)
    m = ReviewModel(ReviewSession.open(rf.run, reviewer="ana"))
    m.heard = []
    m.subscribe(lambda event, ids: m.heard.append((event, ids)))
    return m


def _decisions(m) -> dict:
    """review.json's decisions ({} before the first one: opening writes nothing)."""
    return json.loads(m.session.path.read_text())["decisions"] if m.session.path.exists() else {}


def test_order_filters_and_navigation(model):
    m = model
    assert m.ids == RANKED and m.current == RANKED[0]  # worst first, the first pending shown
    assert m.next() == RANKED[1] and m.previous() == RANKED[0]
    assert m.previous() == RANKED[-1]  # wraps around
    m.select(RANKED[0])
    m.set_filter(min_score=0.5)
    assert m.visible_ids() == [i for i in RANKED if SUSPICION[i] >= 0.5] and ("filter", ()) in m.heard
    assert m.next() == RANKED[1] and m.next() == RANKED[2] and m.next() == RANKED[0]  # wraps within the filter
    m.set_filter(min_score=0.0, pending_only=True)
    m.decide("kept")  # advances to the next pending image; the decided row stays listed until left
    assert m.current == RANKED[1] and RANKED[0] not in m.visible_ids()
    m.select(RANKED[3])
    assert m.visible_ids() == [RANKED[1], *RANKED[2:]]
    m.set_filter(pending_only=False)
    assert m.visible_ids() == RANKED


def test_decisions_counts_and_undo(model):
    m = model
    for status in ("accepted", "flagged", "excluded", "kept"):
        m.decide(status)
    assert [m.status(i) for i in RANKED[:5]] == ["accepted", "flagged", "excluded", "kept", "pending"]
    assert _decisions(m)[RANKED[2]]["status"] == "excluded"
    c = m.counts()
    assert (c["accepted"], c["flagged"], c["excluded"], c["kept"], c["pending"]) == (1, 1, 1, 1, 2)
    m.advance = False
    m.decide("accepted")
    assert m.current == RANKED[4]
    assert m.undo() == [RANKED[4]] and m.current == RANKED[4] and m.status(RANKED[4]) == "pending"
    assert m.undo() == [RANKED[3]] and m.current == RANKED[3]
    m.set_comment("left lung cut off")
    assert m.session.comment(RANKED[3]) == "left lung cut off" and ("comment", (RANKED[3],)) in m.heard
    with pytest.raises(ValueError, match="unknown decision"):
        m.decide("edited")


def test_batch_accept_is_one_undo_step(model):
    m = model
    m.decide("kept")  # RANKED[0] (0.9): decided, so the batch leaves it alone
    ids = m.batch_candidates(0.3)
    assert ids == [i for i in RANKED[1:] if SUSPICION[i] >= 0.3]
    assert m.accept_batch(ids) == ids and all(m.status(i) == "accepted" for i in ids)
    assert m.undo() == ids and all(m.status(i) == "pending" for i in ids)
    assert m.status(RANKED[0]) == "kept"
    assert m.undo() == [RANKED[0]] and m.undo() == []


def test_edit_state_machine(model):
    m = model
    drawing = {"now": None}
    seed = np.zeros((SIZE, SIZE), np.uint8)
    assert m.seed_source("original") == "original" and m.edit_state == "idle"
    m.start_edit(seed, lambda: drawing["now"])
    drawing["now"] = seed.copy()
    assert m.edit_state == "editing" and m.editing == RANKED[0] and not m.edit_modified()
    # moving on with an unchanged drawing drops it; nothing recorded
    m.next()
    assert m.edit_state == "idle" and m.last_edit_outcome == "discarded" and RANKED[0] not in _decisions(m)
    # a changed drawing left behind is saved, not lost
    m.start_edit(seed, lambda: drawing["now"])
    drawing["now"] = seed.copy()
    drawing["now"][4:20, 4:12] = 1
    assert m.edit_modified()
    with pytest.raises(ReviewModelError, match="before undoing"):
        m.undo()
    m.select(RANKED[3])
    assert m.status(RANKED[1]) == "edited" and m.last_autosaved == RANKED[1] and m.edit_state == "idle"
    assert m.last_edit_outcome == "saved"
    m.select(RANKED[1])
    assert m.seed_source() == "edit"
    # save: editing -> idle (saved), then on to the next pending image
    m.start_edit(seed, lambda: drawing["now"])
    m.save_edit()  # then on to the next pending image after RANKED[1]
    assert m.edit_state == "idle" and m.last_edit_outcome == "saved" and m.current == RANKED[2]
    # cancel: editing -> idle (discarded)
    m.start_edit(seed, lambda: drawing["now"])
    assert m.cancel_edit() == RANKED[2] and m.edit_state == "idle" and RANKED[2] not in _decisions(m)
    assert m.last_edit_outcome == "discarded"
    with pytest.raises(ReviewModelError, match="start an edit"):
        m.save_edit()
    # a decision key while drawing drops the drawing and records the decision
    m.start_edit(seed, lambda: drawing["now"])
    m.decide("accepted")
    assert m.edit_state == "idle" and m.status(RANKED[2]) == "accepted"
    assert [e for e, _ in m.heard].count("edit") >= 8


def test_an_image_shown_from_outside_the_filter_is_listed_until_left(model):
    m = model
    m.set_filter(min_score=0.6)
    assert m.visible_ids() == [RANKED[0], RANKED[1]]
    m.heard.clear()
    m.select(RANKED[5])  # e.g. undo brings back a low-score image
    assert ("filter", ()) in m.heard and m.visible_ids() == [RANKED[0], RANKED[1], RANKED[5]]
    m.next()
    assert m.current == RANKED[0] and m.visible_ids() == [RANKED[0], RANKED[1]]


def test_requeue_orders_the_queue_for_the_export_and_keeps_the_image_and_the_filter(tmp_path):
    """The model's queue follows the export's choice for unreviewed images (ReviewSession.choose_unreviewed): the
    image shown, the filter and every decision stay, the table hears "filter", the positions are the new order."""
    from test_review import BY_TELLING, POLICY_QUEUE, TELLING, rescore

    rf = make_run(tmp_path)
    policy_queue = POLICY_QUEUE
    rescore(rf.run, policy_queue, TELLING)
    m = ReviewModel(ReviewSession.open(rf.run, reviewer="ana"))
    heard = []
    m.subscribe(lambda event, ids: heard.append(event))
    assert m.ids == policy_queue and m.current == "case03" and m.position("case03") == 1
    m.decide("kept")
    m.set_filter(min_score=0.02)
    shown = m.current
    heard.clear()
    m.requeue("keep")
    assert m.ids == BY_TELLING and m.current == shown and heard == ["filter"]
    assert [m.position(i) for i in BY_TELLING] == [1, 2, 3, 4, 5, 6]
    assert m.visible_ids() == [i for i in BY_TELLING if TELLING[i] >= 0.02 or i == shown]
    assert m.status("case03") == "kept" and m.session.unreviewed == "keep"
    k = BY_TELLING.index(shown)
    assert m.next_pending() == next(i for i in BY_TELLING[k + 1:] + BY_TELLING[:k]  # the new order, wrapping
                                    if TELLING[i] >= 0.02 and m.status(i) == "pending")
