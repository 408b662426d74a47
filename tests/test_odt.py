"""ODT's objective (dt_fast/odt.py) against a transcription of the official code, and the temperature's update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as pyd

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.distributions import TanhNormal, bounded_log_std
from dt_fast.odt import ActionDistribution, Temperature, odt_loss


# facebookresearch/online-dt, decision_transformer/models/decision_transformer.py and main.py, transcribed.
class OdtTanhTransform(pyd.transforms.Transform):
    domain = pyd.constraints.real
    codomain = pyd.constraints.interval(-1.0, 1.0)
    bijective = True
    sign = +1

    def __init__(self, cache_size=1):
        super().__init__(cache_size=cache_size)

    @staticmethod
    def atanh(x):
        return 0.5 * (x.log1p() - (-x).log1p())

    def __eq__(self, other):
        return isinstance(other, OdtTanhTransform)

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return self.atanh(y)

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


class SquashedNormal(pyd.transformed_distribution.TransformedDistribution):
    def __init__(self, loc, std):
        self.loc = loc
        self.std = std
        self.base_dist = pyd.Normal(loc, std)
        super().__init__(self.base_dist, [OdtTanhTransform()])

    def entropy(self, N=1):
        x = self.rsample((N,))
        log_p = self.log_prob(x)
        return -log_p.mean(axis=0).sum(axis=2)

    def log_likelihood(self, x):
        return self.log_prob(x).sum(axis=2)


def odt_loss_fn(a_hat_dist, a, attention_mask, entropy_reg):
    log_likelihood = a_hat_dist.log_likelihood(a)[attention_mask > 0].mean()
    entropy = a_hat_dist.entropy().mean()
    loss = -(log_likelihood + entropy_reg * entropy)
    return loss, -log_likelihood, entropy


# (end of the transcription)


def batch(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loc, log_std, target actions, mask) of a (4, 6, 3) batch with left padding, as the sampler gives."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(4, 6, 3, generator=g, dtype=dtype)
    log_std = bounded_log_std(torch.randn(4, 6, 3, generator=g, dtype=dtype))
    actions = (torch.rand(4, 6, 3, generator=g, dtype=dtype) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)  # ODT's clamp
    mask = torch.ones(4, 6)
    mask[1, :2] = 0
    mask[3, :5] = 0
    return loc, log_std, actions, mask


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_odt_loss_equals_the_official_loss_and_gradients(dtype: torch.dtype, tol: float) -> None:
    loc, log_std, actions, mask = batch(dtype)
    temperature = torch.tensor(np.log(0.1)).exp()  # ODT's float64 temperature
    outputs, grads = [], []
    for official in (False, True):
        lo, ls = loc.clone().requires_grad_(), log_std.clone().requires_grad_()
        torch.manual_seed(7)  # the entropy's noise comes from torch's generator on both sides
        if official:
            out = odt_loss_fn(SquashedNormal(lo, ls.exp()), actions, mask, temperature)
        else:
            out = odt_loss(TanhNormal(lo, ls), actions, mask, temperature)
        out[0].backward()
        outputs.append(out)
        grads.append((lo.grad, ls.grad))
    for ours, theirs in zip(*outputs):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_the_entropy_is_not_masked_and_the_likelihood_is() -> None:
    loc, log_std, actions, mask = batch(torch.float64)
    torch.manual_seed(3)
    _, nll, entropy = odt_loss(TanhNormal(loc, log_std), actions, mask, 0.1)
    torch.manual_seed(3)
    noise = torch.randn(loc.shape, dtype=loc.dtype)
    dist = TanhNormal(loc, log_std)
    torch.testing.assert_close(entropy, dist.entropy(noise).mean())  # padding included, as ODT
    assert not torch.isclose(entropy, dist.entropy(noise)[mask > 0].mean())  # masking would change it
    torch.testing.assert_close(nll, -dist.log_prob(actions)[mask > 0].mean())
    assert not torch.isclose(nll, -dist.log_prob(actions).mean())  # the padded steps would change it


def test_the_noise_follows_torch_manual_seed() -> None:
    loc, log_std, actions, mask = batch(torch.float32)
    dist = TanhNormal(loc, log_std)
    torch.manual_seed(1)
    first = odt_loss(dist, actions, mask, 0.1)[2]
    torch.manual_seed(1)
    assert torch.equal(odt_loss(dist, actions, mask, 0.1)[2], first)
    assert not torch.equal(odt_loss(dist, actions, mask, 0.1)[2], first)


def test_the_loss_takes_no_gradient_into_the_temperature() -> None:
    loc, log_std, actions, mask = batch(torch.float32)
    temperature = Temperature(act_dim=3)
    loss, _, _ = odt_loss(TanhNormal(loc.requires_grad_(), log_std), actions, mask, temperature.value())
    loss.backward()
    assert temperature.log_temperature.grad is None and loc.grad is not None


@pytest.mark.parametrize("entropy, direction", [(-1.0, -1), (0.5, -1), (-5.0, 1), (-3.5, 1)])
def test_the_temperature_falls_above_the_target_entropy_and_rises_below(entropy: float, direction: int) -> None:
    temperature = Temperature(act_dim=3)  # target entropy -3
    assert temperature.target_entropy == -3.0
    before = temperature.value().item()
    for _ in range(5):
        temperature.update(torch.tensor(entropy))
    after = temperature.value().item()
    assert after != before and math.copysign(1, after - before) == direction, (before, after)


def test_temperature_equals_odts_log_temperature_and_adam() -> None:
    """ODT: log_temperature = torch.tensor(np.log(0.1)), Adam([it], lr=1e-4, betas=[0.9, 0.999]), and the loss
    temperature() * (entropy - target_entropy).detach()."""
    log_temperature = torch.tensor(np.log(0.1))
    log_temperature.requires_grad = True
    optimizer = torch.optim.Adam([log_temperature], lr=1e-4, betas=[0.9, 0.999])
    ours = Temperature(act_dim=6)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        entropy = torch.randn((), generator=g) * 4
        optimizer.zero_grad()
        (log_temperature.exp() * (entropy - (-6)).detach()).backward()
        optimizer.step()
        ours.update(entropy)
        assert torch.equal(ours.log_temperature.detach(), log_temperature.detach())
    assert ours.log_temperature.dtype == torch.float64
    assert torch.equal(ours.value(), log_temperature.detach().exp())


def test_temperature_state_dict_resumes_exactly() -> None:
    a = Temperature(act_dim=2)
    for e in (0.0, -1.0, 1.0):
        a.update(torch.tensor(e))
    b = Temperature(act_dim=2)
    b.load_state_dict(torch.load(_round_trip(a.state_dict()), weights_only=True))
    for e in (0.3, -4.0, 2.0):
        a.update(torch.tensor(e))
        b.update(torch.tensor(e))
        assert torch.equal(a.log_temperature.detach(), b.log_temperature.detach())


def _round_trip(state: dict) -> object:
    """`state` through torch.save into a buffer (as train_state.pt stores it)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(act_dim=0), "act_dim must be a positive int"),
        (dict(act_dim=True), "act_dim must be a positive int"),
        (dict(act_dim=3, init=0.0), "init .* must be a finite number > 0"),
        (dict(act_dim=3, init=math.inf), "init .* must be a finite number > 0"),
        (dict(act_dim=3, lr=-1e-4), "lr must be a finite number > 0"),
    ],
)
def test_temperature_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Temperature(**kwargs)


def test_action_distribution_module_returns_the_models_distribution() -> None:
    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=2, max_ep_len=50)
    model = DecisionTransformer(cfg, stochastic=True).eval()
    inputs = dict(
        states=torch.randn(3, 4, 5),
        actions=torch.randn(3, 4, 2),
        returns_to_go=torch.randn(3, 4, 1),
        timesteps=torch.randint(0, 50, (3, 4)),
        attention_mask=torch.ones(3, 4),
    )
    loc, log_std = ActionDistribution(model)(**inputs)
    dist = model.action_distribution(**inputs)
    assert torch.equal(loc, dist.loc) and torch.equal(log_std, dist.log_std)
    assert [n for n, _ in ActionDistribution(model).named_parameters()] == [
        "model." + n for n, _ in model.named_parameters()
    ]
