"""Trusted samples (masks a reviewer decided): never dropped in stage 1, never corrected in stage 2.

Real tiny nets and the real selection functions, watched by test_steppers.Spy (it records arguments and calls
the real function); the samples selection would drop first (largest loss, largest peer uncertainty) are the
ones a reviewer trusted.
"""

import numpy as np
import pytest
import torch
from test_cascade import disks
from test_steppers import batch, stepper_for

from crl_napari import cascade, selection
from crl_napari.cascade import TrainConfig, TrainingError


def worst_batch():
    """A batch whose sample 0 has its mask inverted (a noisy label)."""
    x, y = batch()
    y = y.clone()
    y[0] = 1 - y[0]
    return x, y


def stage1(strategy, monkeypatch, trusted=None):
    """One stage-1 step (full drop): [(net, chosen, input the net trained on)], in net order."""
    with monkeypatch.context() as mp:
        _, _, step, spy = stepper_for(strategy, mp)
        x, y = worst_batch()
        step(x, y, 1, 0.5, 0, 0, trusted=trusted)
        name = "small_loss" if strategy == "coteaching" else "select"
        out = []
        for i, (pos, (_, args, chosen)) in enumerate(spy.calls(name)):
            net, seen = spy.next_trained(pos)
            assert net == i and torch.equal(seen, x[chosen])
            out.append((i, chosen, args))
        return x, out


@pytest.mark.parametrize("strategy", ["ss", "crl", "coteaching"])
def test_stage1_a_trusted_sample_of_largest_loss_and_uncertainty_is_trained_on_by_every_net(strategy, monkeypatch):
    _, untrusted = stage1(strategy, monkeypatch)
    # per net, the sample of largest (peer) loss and, for ss/crl, of largest peer uncertainty, as selection saw them
    if strategy == "coteaching":
        worst = {int(a[0].argmax()) for _, _, a in untrusted}
    else:
        worst = {int((a[0] + a[1]).argmax()) for _, _, a in untrusted}
        worst |= {int(selection.uncertainty(a[0], a[1]).argmax()) for _, _, a in untrusted}
    for _, chosen, _ in untrusted:  # without trust, selection drops them: the test below can fail
        assert not worst <= set(chosen.tolist())
    trusted = torch.zeros(8, dtype=torch.bool)
    trusted[sorted(worst)] = True
    _, picked = stage1(strategy, monkeypatch, trusted)
    assert len(picked) == (2 if strategy == "coteaching" else 3)
    rest = 8 - len(worst)
    for _, chosen, _ in picked:
        assert worst <= set(chosen.tolist())
        # the budget (half the batch at full drop) is taken from the untrusted rest; the trusted come on top
        assert len(chosen) == len(worst) + max(1, round(0.5 * rest))


def test_every_sample_trusted_is_all_trained_on(monkeypatch):
    _, picked = stage1("ss", monkeypatch, torch.ones(8, dtype=torch.bool))
    assert all(chosen.tolist() == list(range(8)) for _, chosen, _ in picked)


@pytest.mark.parametrize("joint", ["all", "unselected"])
def test_crl_stage2_a_trusted_sample_gets_plain_ce_on_its_given_label(joint, monkeypatch):
    trusted = torch.zeros(8, dtype=torch.bool)
    trusted[[0, 5]] = True
    for t in (None, trusted):
        with monkeypatch.context() as mp:
            cfg, _, step, spy = stepper_for("crl", mp, alpha=0.3, T=0.4, joint=joint)
            x, y = worst_batch()
            losses, frac = step(x, y, 2, 0.5, 0, 0, trusted=t)
            outs = {rec[1]: rec[3].detach().float() for _, rec in spy.calls("forward") if rec[4]}
            corrected = [out for _, (_, _, out) in spy.calls("corrected_label")]
            selects = [out for _, (_, _, out) in spy.calls("select")]
        for i in range(3):
            ce = selection.per_sample_ce(outs[i], y)
            joint_i = selection.joint_loss(outs[i], y, corrected[i], cfg.alpha)
            given = torch.zeros(8, dtype=torch.bool) if t is None else t.clone()
            if joint == "unselected":
                if t is not None:
                    assert set(t.nonzero().flatten().tolist()) <= set(selects[i].tolist())
                given[selects[i]] = True
            want = torch.where(given, ce, joint_i).mean()
            assert losses[i] == pytest.approx(want.item(), rel=1e-5)
            if t is not None:  # the corrected label would have given another loss: the assertion can fail
                assert not torch.allclose(want, torch.where(given & ~t, ce, joint_i).mean())
        if t is not None and joint == "all":
            assert frac == pytest.approx(2 / 8)


def _weights(events):
    return [torch.cat([p.detach().flatten() for p in m.state_dict().values()]) for m in events[-1].models]


@pytest.mark.parametrize("strategy", ["crl", "coteaching"])
def test_trusted_none_or_all_false_trains_bit_identically(strategy):
    x, y = disks(n=8, size=16)
    cfg = TrainConfig(strategy=strategy, epochs=2, k=1, batch_size=4, width=4, depth=2, lr=0.05, device="cpu",
                      joint="all")
    plain = _weights(list(cascade.train(x, y, cfg)))
    for trusted in (None, np.zeros(8, bool)):
        again = _weights(list(cascade.train(x, y, cfg, trusted=trusted)))
        assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))
    marked = np.zeros(8, bool)
    marked[:3] = True
    other = _weights(list(cascade.train(x, y, cfg, trusted=marked)))
    assert not all(torch.equal(a, b) for a, b in zip(plain, other, strict=True))


def test_the_loop_hands_each_batch_its_own_trusted_flags(monkeypatch):
    x, y = disks(n=10, size=16)
    trusted = np.arange(10) % 3 == 0
    seen = []
    real = cascade._Stepper.__call__

    def call(self, xb, yb, stage, drop, epoch, step, trusted=None):
        seen.append((xb.clone(), trusted.clone()))
        return real(self, xb, yb, stage, drop, epoch, step, trusted=trusted)

    monkeypatch.setattr(cascade._Stepper, "__call__", call)
    cfg = TrainConfig(strategy="ss", epochs=1, batch_size=4, width=4, depth=2, device="cpu", augment=False)
    list(cascade.train(x, y, cfg, trusted=trusted))
    assert len(seen) == 3
    for xb, tb in seen:
        rows = [int(np.flatnonzero((x[:, 0] == r[0].numpy()).all(axis=(1, 2)))[0]) for r in xb]
        assert tb.tolist() == trusted[rows].tolist()


def test_trusted_of_the_wrong_shape_is_refused():
    x, y = disks(n=4, size=16)
    cfg = TrainConfig(strategy="ss", epochs=1, batch_size=4, width=4, depth=2, device="cpu")
    with pytest.raises(TrainingError, match=r"trusted must be a bool array of shape \(4,\)"):
        list(cascade.train(x, y, cfg, trusted=np.zeros(3, bool)))


def test_init_from_warm_starts_the_weights_and_refuses_other_nets(tmp_path):
    x, y = disks(n=4, size=16)
    cfg = TrainConfig(strategy="ss", epochs=1, batch_size=4, width=4, depth=2, device="cpu")
    first = _weights(list(cascade.train(x, y, cfg, run_dir=tmp_path)))
    ckpt = tmp_path / cascade.CHECKPOINT
    # stopped before its first step: the nets are exactly the checkpoint's
    warm = _weights(list(cascade.train(x, y, TrainConfig(**{**cfg.__dict__, "seed": 7}), init_from=ckpt,
                                       should_stop=lambda: True)))
    assert all(torch.equal(a, b) for a, b in zip(first, warm, strict=True))
    cold = _weights(list(cascade.train(x, y, TrainConfig(**{**cfg.__dict__, "seed": 7}), should_stop=lambda: True)))
    assert not all(torch.equal(a, b) for a, b in zip(first, cold, strict=True))
    wider = TrainConfig(**{**cfg.__dict__, "width": 8})
    with pytest.raises(TrainingError, match=r"checkpoint\.pt: cannot warm-start from it, .*width \(4, 8\)"):
        list(cascade.train(x, y, wider, init_from=ckpt))
