"""SGD with momentum and weight decay: the paper's optimiser, without ``torch.optim``.

``torch.optim`` imports ``torch._dynamo`` on first use (about 800 modules, 2-3 s on a small CPU). In napari
that import froze the viewer for up to a second even when done in a background thread, and every command-line
run paid it before its first step. :class:`SGD` is exactly ``torch.optim.SGD``'s update (its single-tensor
path, the one torch takes on the CPU) and reads and writes the same ``state_dict`` layout, so checkpoints
written by either load in the other; ``torch.amp.GradScaler`` drives it like a torch optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["SGD"]


class SGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` (no dampening, no Nesterov)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.param_groups = [{
            "params": self.params, "lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": weight_decay,
            "nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": None,
        }]
        self.state: dict[torch.Tensor, dict] = {}  # param -> {"momentum_buffer": tensor}, as torch keys it

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        dampening = group["dampening"]
        for p in self.params:
            if p.grad is None:
                continue
            d_p = p.grad
            if weight_decay != 0:
                d_p = d_p.add(p, alpha=weight_decay)
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = torch.clone(d_p).detach()
                    state["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                d_p = buf
            p.add_(d_p, alpha=-lr)

    def state_dict(self) -> dict:
        """torch.optim's layout: state by parameter index, one parameter group."""
        index = {id(p): i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        return {"state": {index[id(p)]: dict(s) for p, s in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of this class or of ``torch.optim.SGD`` over the same parameters."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != 1 or len(groups[0].get("params", [])) != len(self.params):
            raise ValueError("optimizer state is for other parameters (a different model)")
        saved = groups[0]
        if saved.get("nesterov") or saved.get("maximize") or saved.get("dampening", 0):
            raise ValueError("optimizer state uses SGD options this optimiser does not have")
        for key in ("lr", "momentum", "weight_decay"):
            self.param_groups[0][key] = saved[key]
        self.state = {}
        for saved_id, p in zip(saved["params"], self.params, strict=True):
            entry = state_dict["state"].get(saved_id)
            if entry is not None:
                self.state[p] = {k: v.to(dtype=p.dtype, device=p.device) if torch.is_tensor(v) else v
                                 for k, v in entry.items()}
