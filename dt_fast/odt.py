"""The training objective of the Online Decision Transformer (Zheng, Zhang and Grover, ICML 2022).

Reference: facebookresearch/online-dt, main.py `loss_fn` and trainer.py `SequenceTrainer.train_step_stochastic`.
The policy is the tanh-Gaussian of dt_fast/distributions.py. On a batch of windows

    loss = -(mean over real steps of log p(a_t) + temperature * entropy)

where the entropy is ODT's one-sample estimate averaged over every step of the batch, padded steps included (ODT
does not mask it), and the temperature enters the loss as a constant. The temperature has its own Adam, which
lowers it while the entropy is above a target of -act_dim and raises it while below. Used by
`dt-fast train --policy stochastic` (dt_fast/train.py) and by online fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from dt_fast.distributions import TanhNormal
from dt_fast.model import DecisionTransformer

INIT_TEMPERATURE = 0.1  # ODT's --init_temperature
TEMPERATURE_LR = 1e-4  # ODT's log_temperature_optimizer: Adam(lr=1e-4, betas=(0.9, 0.999))
TEMPERATURE_BETAS = (0.9, 0.999)


def odt_loss(
    dist: TanhNormal, actions: torch.Tensor, attention_mask: torch.Tensor, temperature: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ODT's objective on a batch of windows: (loss, nll, entropy), three scalars.

    Args:
        dist: the policy at every step, (B, T, act_dim) (DecisionTransformer.action_distribution).
        actions: (B, T, act_dim) target actions; log_prob clamps them into (-1, 1) as ODT clamps its targets.
        attention_mask: (B, T), 1 = real step, 0 = padding.
        temperature: the entropy weight, taken as a constant (Temperature.value()).
    Returns:
        loss = -(log_likelihood + temperature * entropy), nll = -log_likelihood (mean over real steps), and
        entropy; loss and entropy carry gradients. The entropy's noise is drawn from torch's default generator
        (torch.randn, the draws of ODT's rsample), so torch.manual_seed and a restored RNG state govern it.
    """
    log_likelihood = dist.log_prob(actions)[attention_mask > 0].mean()  # () over the real steps
    noise = torch.randn(dist.loc.shape, dtype=dist.loc.dtype, device=dist.loc.device)  # (B, T, A)
    # Not masked: ODT averages the entropy over every step of the batch, padding included (main.py loss_fn:
    # `a_hat_dist.entropy().mean()`).
    entropy = dist.entropy(noise).mean()  # ()
    loss = -(log_likelihood + temperature * entropy)  # ()
    return loss, -log_likelihood, entropy


class Temperature:
    """ODT's entropy temperature exp(log_temperature), tuned by its own Adam towards target_entropy = -act_dim.

    The log-temperature is a float64 scalar, as ODT's `torch.tensor(np.log(init_temperature))` is (so the loss
    that uses it is computed in float64 too, as in ODT). `state_dict` holds everything a resume needs.
    """

    def __init__(
        self,
        act_dim: int,
        init: float = INIT_TEMPERATURE,
        lr: float = TEMPERATURE_LR,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(act_dim, bool) or not isinstance(act_dim, int) or act_dim < 1:
            raise ValueError(f"act_dim must be a positive int, got {act_dim!r}")
        if not (init > 0 and math.isfinite(init)):
            raise ValueError(f"init (the initial temperature) must be a finite number > 0, got {init!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        self.target_entropy = -float(act_dim)
        self.log_temperature = torch.tensor(math.log(init), dtype=torch.float64, device=device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.log_temperature], lr=lr, betas=TEMPERATURE_BETAS)

    def value(self) -> torch.Tensor:
        """The temperature, () float64, detached: the policy's loss takes no gradient through it."""
        return self.log_temperature.detach().exp()

    def update(self, entropy: torch.Tensor) -> None:
        """One Adam step on temperature * (entropy - target_entropy), the entropy a constant (ODT's temperature
        loss): the temperature falls while the entropy is above the target, rises while it is below."""
        loss = self.log_temperature.exp() * (entropy.detach() - self.target_entropy)  # ()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The log-temperature and its optimizer's state (tensors and numbers only)."""
        return {"log_temperature": self.log_temperature.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        self.optimizer.load_state_dict(state["optimizer"])


class ActionDistribution(nn.Module):
    """`model.action_distribution` as a Module whose forward returns tensors, what DistributedDataParallel and
    torch.compile wrap (they must see the tensors the loss depends on, not a TanhNormal)."""

    def __init__(self, model: DecisionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        check_timesteps: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, log_std), each (B, T, act_dim), of the policy at every step (arguments as model.forward)."""
        dist = self.model.action_distribution(
            states, actions, returns_to_go, timesteps, attention_mask, check_timesteps=check_timesteps
        )
        return dist.loc, dist.log_std
