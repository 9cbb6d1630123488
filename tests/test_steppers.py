"""The wiring of each strategy's stepper: which net learns from which samples and labels.

Real tiny nets (width 4, depth 2) on 16x16 images; the selection functions are wrapped by spies that record
their arguments and call the real function, and each net's forward is wrapped the same way, so the test sees
what a net was trained on and whose losses chose it.
"""

import numpy as np
import pytest
import torch

from crl_napari import selection
from crl_napari.settings import TrainConfig
from crl_napari.sgd import SGD
from crl_napari.strategies import STEPPERS, make_stepper, peers
from crl_napari.unet import build_models

TINY = dict(epochs=4, batch_size=8, width=4, depth=2, lr=0.05, device="cpu", augment=False)


def batch(n: int = 8, size: int = 16, seed: int = 0):
    """Squares of different sizes on noise; the masks are the squares."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        a = int(rng.integers(2, 7))
        y[i, a : size - a, a : size - a] = 1
    x[:, 0] += y
    return torch.as_tensor(x), torch.as_tensor(y)


class Spy:
    """Records every net's forward and every call of the selection functions, in order; calls the real ones."""

    def __init__(self, monkeypatch, models) -> None:
        self.log: list[tuple] = []
        for i, m in enumerate(models):
            m.forward = self._forward(i, m.forward)
        for name in ("per_sample_ce", "select", "small_loss", "corrected_label", "joint_loss"):
            monkeypatch.setattr(selection, name, self._wrap(name, getattr(selection, name)))

    def _forward(self, i, real):
        def forward(x):
            out = real(x)
            self.log.append(("forward", i, x.detach().clone(), out, torch.is_grad_enabled()))
            return out
        return forward

    def _wrap(self, name, real):
        def spy(*args, **kwargs):
            out = real(*args, **kwargs)
            self.log.append((name, args, out))
            return out
        return spy

    def calls(self, name):
        return [(pos, rec) for pos, rec in enumerate(self.log) if rec[0] == name]

    def net_of_ce(self, ce):
        """Which net's logits (the very tensor, or its detached copy) a per-sample CE tensor was computed from."""
        (logits,) = [args[0] for _, (_, args, out) in self.calls("per_sample_ce") if out is ce]
        (net,) = [rec[1] for _, rec in self.calls("forward") if torch.equal(rec[3].detach(), logits.detach())]
        return net

    def next_trained(self, pos):
        """The first forward with gradients after log position ``pos``: (net, input)."""
        for rec in self.log[pos:]:
            if rec[0] == "forward" and rec[4]:
                return rec[1], rec[2]
        raise AssertionError("no net trained after this call")


def stepper_for(strategy, monkeypatch, **kw):
    cfg = TrainConfig(strategy=strategy, **{**TINY, **kw})
    models = build_models(cfg, "cpu")
    optims = [SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum) for m in models]
    for m in models:
        m.train()
    return cfg, models, make_stepper(cfg, models, optims, torch.device("cpu")), Spy(monkeypatch, models)


def test_the_registry_has_one_stepper_per_strategy():
    from crl_napari.settings import STRATEGIES

    assert tuple(STEPPERS) == STRATEGIES
    assert len(set(STEPPERS.values())) == len(STRATEGIES)


def test_vanilla_trains_its_one_net_on_every_sample(monkeypatch):
    _, _, step, spy = stepper_for("vanilla", monkeypatch)
    x, y = batch()
    losses, frac = step(x, y, 1, 0.5, 0, 0)
    trained = [(rec[1], rec[2]) for _, rec in spy.calls("forward") if rec[4]]
    assert len(trained) == 1 and trained[0][0] == 0 and torch.equal(trained[0][1], x)
    assert frac == 1.0 and len(losses) == 1
    assert not spy.calls("select") and not spy.calls("small_loss")


@pytest.mark.parametrize("strategy", ["ss", "crl"])
def test_stage1_net_i_learns_only_from_what_its_two_peers_chose(strategy, monkeypatch):
    cfg, _, step, spy = stepper_for(strategy, monkeypatch, keep_ratio=0.5, drop_uncertain=0.25)
    x, y = batch()
    losses, frac = step(x, y, 1, 0.5, 0, 0)
    selects = spy.calls("select")
    assert len(selects) == 3 and len(losses) == 3
    for i, (pos, (_, args, chosen)) in enumerate(selects):
        ce_a, ce_b, keep, drop = args
        assert {spy.net_of_ce(ce_a), spy.net_of_ce(ce_b)} == set(peers(i)), f"net {i} chosen by itself"
        assert keep == pytest.approx(0.5) and drop == pytest.approx(0.25)  # the full drop, split half/half
        net, seen = spy.next_trained(pos)
        assert net == i and torch.equal(seen, x[chosen])
        assert len(chosen) == 4  # half of the batch of 8
    # the ranking forwards ran without gradients, once per net, before any net was trained
    ranking = [rec[1] for rec in spy.log if rec[0] == "forward" and not rec[4]]
    assert ranking == [0, 1, 2]
    assert frac == pytest.approx(0.5)


def test_coteaching_net_i_learns_from_the_other_nets_small_loss_picks(monkeypatch):
    _, _, step, spy = stepper_for("coteaching", monkeypatch)
    x, y = batch()
    losses, frac = step(x, y, 1, 0.25, 0, 0)
    picks = spy.calls("small_loss")
    assert len(picks) == 2 and len(losses) == 2
    for i, (pos, (_, (ce, keep), chosen)) in enumerate(picks):
        assert spy.net_of_ce(ce) == 1 - i and keep == pytest.approx(0.75)
        net, seen = spy.next_trained(pos)
        assert net == i and torch.equal(seen, x[chosen]) and len(chosen) == 6
    assert frac == pytest.approx(0.75)


@pytest.mark.parametrize("joint", ["all", "unselected"])
def test_crl_stage2_label_is_the_sharpened_mean_of_the_two_peers(joint, monkeypatch):
    cfg, _, step, spy = stepper_for("crl", monkeypatch, alpha=0.3, T=0.4, joint=joint)
    x, y = batch()
    losses, frac = step(x, y, 2, 0.5, 0, 0)
    outs = {rec[1]: rec[3].detach().float() for _, rec in spy.calls("forward") if rec[4]}
    assert sorted(outs) == [0, 1, 2]  # every net trains on the whole batch in stage 2
    soft = {i: torch.softmax(o, dim=1) for i, o in outs.items()}
    corrections, joints = spy.calls("corrected_label"), spy.calls("joint_loss")
    assert len(corrections) == 3 and len(joints) == 3
    for i in range(3):
        (_, (_, (peer_maps, T), corrected)), (_, (_, (logits, given, target, alpha), per_sample)) = \
            corrections[i], joints[i]
        p, q = peers(i)
        assert T == cfg.T and len(peer_maps) == 2
        torch.testing.assert_close(peer_maps[0], soft[p])
        torch.testing.assert_close(peer_maps[1], soft[q])
        mean = (soft[p] + soft[q]) / 2  # the two peers only, never net i itself
        want = mean ** (1 / cfg.T) / (mean ** (1 / cfg.T)).sum(dim=1, keepdim=True)
        torch.testing.assert_close(corrected, want)
        with_own = (soft[0] + soft[1] + soft[2]) / 3
        assert not torch.allclose(corrected, with_own ** 2.5 / (with_own ** 2.5).sum(1, keepdim=True))
        # net i's joint loss: its own logits, the given label with weight alpha, the corrected one with 1 - alpha
        assert torch.equal(logits.detach().float(), outs[i]) and torch.equal(given, y) and target is corrected
        assert alpha == cfg.alpha
        if joint == "all":
            assert losses[i] == pytest.approx(per_sample.mean().item(), rel=1e-5)
    if joint == "unselected":  # the samples the peers select keep their given label: chosen by the peers
        selects = spy.calls("select")
        assert [{spy.net_of_ce(a[0]), spy.net_of_ce(a[1])} for _, (_, a, _) in selects] == \
            [set(peers(i)) for i in range(3)]
        assert frac == pytest.approx(0.5)
    else:
        assert frac == 0.0 and not spy.calls("select")


def test_crl_stage2_with_fit_labels_learns_the_given_border_moved_as_the_peers_agree(monkeypatch):
    """TrainConfig.fit_labels: each net's corrected label is its peers' sharpened mean passed through the border
    fit with that sample's given mask, and the joint loss takes that label, not the sharpened mean."""
    from crl_napari.border_fit import corrected_prob

    cfg, _, step, spy = stepper_for("crl", monkeypatch, joint="all", fit_labels=1)
    x, y = batch()
    losses, _ = step(x, y, 2, 0.5, 0, 0)
    corrections, joints = spy.calls("corrected_label"), spy.calls("joint_loss")
    assert len(corrections) == 3 and len(joints) == 3
    for i in range(3):
        sharpened = corrections[i][1][2]
        _, (_, (_, given, target, _), per_sample) = joints[i]
        want = np.stack([corrected_prob(g, p) for g, p in zip(y.numpy(), sharpened[:, 1].numpy(), strict=True)])
        np.testing.assert_allclose(target[:, 1].numpy(), want, atol=1e-6)
        torch.testing.assert_close(target.sum(dim=1), torch.ones_like(target[:, 0]))
        assert not torch.allclose(target, sharpened, atol=1e-3)  # not the paper's label
        assert losses[i] == pytest.approx(per_sample.mean().item(), rel=1e-5)
