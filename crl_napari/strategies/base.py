"""What every strategy's step shares: mixed precision, the optimiser update, the finite-loss check and the
selection schedule. A strategy is a small subclass of :class:`Stepper` that says what one mini-batch teaches
each of its nets (see vanilla.py, coteaching.py, ss.py, crl.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import distributed, selection
from ..device import amp_dtype
from ..distributed import unwrap
from ..keep_estimate import batch_suspicion
from ..runs import CHECKPOINT
from ..settings import TrainConfig, TrainingError
from .ranked import Ranked


def drop_fraction(config: TrainConfig, epoch: int) -> float:
    """How much of the batch selection may drop at this epoch: ramps linearly to 1 - keep_ratio.

    Randomly initialised nets cannot tell clean from noisy samples, so, as co-teaching's forget-rate
    schedule does, selection starts by keeping everything and reaches its full strength after
    ``ramp * epochs`` epochs.
    """
    return (1 - config.keep_ratio) * min(1.0, (epoch + 1) / config.ramp_epochs)


def peers(i: int, n: int = 3) -> tuple[int, ...]:
    """The nets other than net ``i``: those that select and correct for it."""
    return tuple(j for j in range(n) if j != i)


class Stepper:
    """One mini-batch for every net of a strategy: ``stepper(x, y, stage, drop, epoch, step, trusted=t)`` returns
    (loss per net, fraction of the batch trained on its given labels). Subclasses write ``train_step``.

    ``trusted`` (B,) bool marks masks a reviewer decided (review rounds): always selected in stage 1, plain CE on
    the given mask in stage 2; the rule lives in selection.with_trusted and selection.given_label_only."""

    def __init__(self, config: TrainConfig, models, optims, device: torch.device,
                 run_dir: Path | None = None) -> None:
        self.config, self.models, self.optims, self.run_dir = config, models, optims, run_dir
        self.device_type = torch.device(device).type
        self.amp_dtype = amp_dtype(torch.device(device), config.amp)
        # float16 needs loss scaling; bfloat16 and float32 do not
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.where = (0, 0)  # (epoch, step), for messages
        self.failure: TrainingError | None = None  # under torchrun: this step's first non-finite loss
        self.global_selection = distributed.global_selection(config)
        self.suspicion: torch.Tensor | None = None  # TrainConfig.keep_auto: the last ranked batch's (B,)

    @property
    def amp(self) -> bool:
        """Whether mixed precision is in use."""
        return self.amp_dtype is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float, epoch: int,
                 step: int, trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        self.where, self.failure = (epoch, step), None
        result = self.train_step(x, y, stage, drop, trusted)
        distributed.agree(self.failure)  # under torchrun a loss that was not finite on one rank stops every rank
        return result

    def train_step(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float,
                   trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        raise NotImplementedError

    # --- shared pieces -----------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def losses_without_grad(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Every net's per-sample CE on the given labels, for ranking only (no graph is kept; under DDP on the
        net itself, so no gradient synchronisation or buffer broadcast is started)."""
        with torch.no_grad(), self.autocast():
            return [selection.per_sample_ce(unwrap(m)(x), y) for m in self.models]

    def signals_without_grad(self, x: torch.Tensor,
                             y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """:meth:`losses_without_grad`, and with ``balance_area`` each net's predicted area (else None) from the
        same forward pass; with ``keep_auto`` the batch's suspicions go to ``self.suspicion``."""
        if not self.config.balance_area and not self.config.keep_auto:
            return self.losses_without_grad(x, y), None
        with torch.no_grad(), self.autocast():
            logits = [unwrap(m)(x) for m in self.models]
            probs = [torch.softmax(lg.float(), dim=1) for lg in logits]
            if self.config.keep_auto:  # the keep ratio's estimate (keep_estimate.py) reads this after the step
                self.suspicion = batch_suspicion(probs, y, self.config.T)
            return ([selection.per_sample_ce(lg, y) for lg in logits],
                    [selection.predicted_area(p) for p in probs] if self.config.balance_area else None)

    def larger(self, i: int, y: torch.Tensor, areas: list[torch.Tensor] | None) -> torch.Tensor | None:
        """For net ``i``'s selection under ``balance_area``: which given masks are larger than its peers predict."""
        if areas is None:
            return None
        return selection.larger_than_predicted(y, [areas[j] for j in peers(i, len(areas))])

    def ranked(self, ce: list[torch.Tensor], y: torch.Tensor, areas: list[torch.Tensor] | None,
               trusted: torch.Tensor | None) -> Ranked:
        """What selection ranks: this batch's signals, or with global selection under torchrun those of the whole
        global batch (strategies/ranked.py)."""
        larger = None if areas is None else [self.larger(i, y, areas) for i in range(len(ce))]
        if not self.global_selection:
            return Ranked(ce, trusted, larger)
        return Ranked.gathered(ce, trusted, larger, distributed.GlobalBatch(len(y), y.device))

    def train_on(self, i: int, x: torch.Tensor, y: torch.Tensor, chosen: torch.Tensor,
                 ranked: Ranked | None = None) -> float:
        """One update of net ``i`` on the ``chosen`` samples' given labels (indices into ``ranked``'s batch when
        given); its loss, as this process's share of the loss over all of ``chosen``."""
        mine = chosen if ranked is None else ranked.mine(chosen)
        if len(mine) == 0:
            return self.idle_step(i, x, y)
        with self.autocast():
            loss = selection.per_sample_ce(self.models[i](x[mine]), y[mine]).mean()
        if ranked is not None:
            loss = ranked.weighted(loss, len(mine), len(chosen))
        self.check_finite(loss)
        self.update([i], loss)
        return loss.item()

    def idle_step(self, i: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """Net ``i``'s step on a rank that holds none of its picks (global selection): DDP's all-reduce needs every
        rank's backward, so this one adds a zero gradient, from one sample forwarded with BatchNorm in eval mode
        (it changes no running statistics); the other ranks' gradients make the step."""
        net, was_training = self.models[i], unwrap(self.models[i]).training
        net.eval()
        try:
            with self.autocast():
                loss = selection.per_sample_ce(net(x[:1]), y[:1]).mean() * 0.0
        finally:
            net.train(was_training)
        self.update([i], loss)
        return 0.0

    def update(self, nets: list[int], loss: torch.Tensor) -> None:
        for i in nets:
            self.optims[i].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for i in nets:
            self.scaler.step(self.optims[i])
        self.scaler.update()

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            epoch, step = self.where
            where = f" The last good checkpoint is kept in {self.run_dir / CHECKPOINT}." if self.run_dir else ""
            error = TrainingError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training stopped.{where} "
                "Try a lower learning rate (--lr) or check the input images."
            )
            if distributed.world_size() == 1:
                raise error
            # under torchrun this rank still joins the step's all-reduces; then every rank stops (__call__)
            self.failure = self.failure or error
