"""The stochastic action head of the Online Decision Transformer (Zheng, Zhang and Grover, 2022): a tanh-Gaussian.

A stochastic DecisionTransformer has, beside its action head, a log-std head. At the s_t token the action head's
Linear gives `loc` (the mean before the tanh) and the log-std head `raw`, squashed into [LOG_STD_MIN, LOG_STD_MAX]
as ODT does (facebookresearch/online-dt, DiagGaussianActor). An action is tanh(loc + std * z) with z ~ N(0, 1);
the mean action is tanh(loc): what the deterministic path of the same checkpoint computes, and what
transformers' DecisionTransformerModel computes from it. Training minimises the negative log-likelihood of the
target actions minus a temperature times the entropy (ODT's one-sample estimate), the temperature tuned towards a
target entropy of -act_dim.

Exploration noise during rollouts comes from `normal_noise`, a counter-based generator: draw d of row r under seed
s is a function of (s, r, d, action dimension) alone, so the C++ engine (csrc/engine) draws the same numbers
whatever its thread count and batch layout, and this function is its reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # ODT's log_std_bounds
ACTION_EPS = 1e-6  # targets are kept inside (-1, 1) by this much before atanh (ODT clamps to its action range)
_MASK32 = 0xFFFFFFFF


def bounded_log_std(raw: torch.Tensor) -> torch.Tensor:
    """The log-std head's output squashed into [LOG_STD_MIN, LOG_STD_MAX], elementwise."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)


class TanhNormal:
    """Independent tanh-squashed normals over the last dimension (actions); shapes (..., act_dim)."""

    def __init__(self, loc: torch.Tensor, log_std: torch.Tensor) -> None:
        self.loc, self.log_std = loc, log_std

    @property
    def mean(self) -> torch.Tensor:
        """The mean action tanh(loc), (..., act_dim) (the deterministic head's output)."""
        return torch.tanh(self.loc)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """tanh(loc + std * noise), (..., act_dim); differentiable in loc and log_std (the reparameterisation)."""
        return torch.tanh(self.loc + self.log_std.exp() * noise)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of actions in (-1, 1), summed over the action dimension: (...). Actions are clamped to
        [-1 + ACTION_EPS, 1 - ACTION_EPS] first, as ODT clamps its targets."""
        a = actions.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
        x = torch.atanh(a)  # (..., A) the pre-tanh value
        return self._log_prob_pre_tanh(x).sum(-1)

    def entropy(self, noise: torch.Tensor) -> torch.Tensor:
        """ODT's one-sample estimate of the entropy, -log p(x) at x = tanh(loc + std * noise), summed over the
        action dimension: (...); differentiable (the sample is reparameterised)."""
        return -self._log_prob_pre_tanh(self.loc + self.log_std.exp() * noise).sum(-1)

    def _log_prob_pre_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension log-density of tanh(x) for a pre-tanh value x, (..., A), with the tanh Jacobian written as
        2 (log 2 - x - softplus(-2x)) (torch.distributions' TanhTransform, stable for large |x|)."""
        z = (x - self.loc) * torch.exp(-self.log_std)
        normal = -0.5 * z * z - self.log_std - 0.5 * math.log(2.0 * math.pi)
        return normal - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding uint32 values (the hash of csrc/common/hash.h)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def normal_noise(seed: int, rows: torch.Tensor, draws: torch.Tensor, act_dim: int) -> torch.Tensor:
    """Standard normal noise (n, act_dim) float32 for draw `draws[i]` of row `rows[i]` under `seed` (Box-Muller).

    Element (i, j): k = hash32(seed_lo ^ hash32(seed_hi + 0x9E3779B9)), c = hash32(hash32(k ^ hash32(row +
    0x85EBCA6B)) ^ hash32(draw + 0xC2B2AE35)) with row and draw taken modulo 2^32; u1 = (hash32(c ^ 2j) >> 8) + 1
    and u2 = hash32(c ^ (2j + 1)) >> 8, each over 2^24; z = sqrt(-2 ln u1) cos(2 pi u2) in double, then float.
    """
    rows = rows.to(torch.int64).reshape(-1, 1) & _MASK32  # (n, 1)
    draws = draws.to(torch.int64).reshape(-1, 1) & _MASK32  # (n, 1)
    seed_lo, seed_hi = torch.tensor(seed & _MASK32), torch.tensor((seed >> 32) & _MASK32)
    key = hash32(seed_lo ^ hash32((seed_hi + 0x9E3779B9) & _MASK32))  # ()
    row_key = hash32(key ^ hash32((rows + 0x85EBCA6B) & _MASK32))  # (n, 1)
    counter = hash32(row_key ^ hash32((draws + 0xC2B2AE35) & _MASK32))  # (n, 1)
    lanes = 2 * torch.arange(act_dim, dtype=torch.int64)  # (A,)
    u1 = ((hash32(counter ^ lanes) >> 8) + 1).double() / (1 << 24)  # (n, A) in (0, 1]
    u2 = (hash32(counter ^ (lanes + 1)) >> 8).double() / (1 << 24)  # (n, A) in [0, 1)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()  # (n, A)
