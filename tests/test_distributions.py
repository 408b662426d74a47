"""The stochastic action head: tanh-Gaussian against torch.distributions, the counter-based noise, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import Metadata, write_metadata
from dt_fast.distributions import LOG_STD_MAX, LOG_STD_MIN, TanhNormal, bounded_log_std, normal_noise


def reference(loc: torch.Tensor, log_std: torch.Tensor) -> TransformedDistribution:
    """torch.distributions' tanh-squashed normal."""
    return TransformedDistribution(Normal(loc, log_std.exp()), [TanhTransform(cache_size=1)])


def test_log_prob_and_entropy_equal_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    loc, raw = torch.randn(5, 7, 3, generator=g, dtype=torch.float64), torch.randn(5, 7, 3, generator=g)
    log_std = bounded_log_std(raw.double())
    dist, ref = TanhNormal(loc, log_std), reference(loc, log_std)
    actions = torch.rand(5, 7, 3, generator=g, dtype=torch.float64) * 1.98 - 0.99
    torch.testing.assert_close(dist.log_prob(actions), ref.log_prob(actions).sum(-1), rtol=1e-10, atol=1e-10)
    noise = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    x = loc + log_std.exp() * noise
    ref_entropy = -(Normal(loc, log_std.exp()).log_prob(x) - TanhTransform().log_abs_det_jacobian(x, x.tanh()))
    torch.testing.assert_close(dist.entropy(noise), ref_entropy.sum(-1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dist.sample(noise), x.tanh())
    torch.testing.assert_close(dist.mean, loc.tanh())


def test_log_prob_of_saturated_actions_is_finite() -> None:
    dist = TanhNormal(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.isfinite(dist.log_prob(torch.tensor([[1.0, -1.0, 0.0], [0.999999, -0.9999999, 1e-9]]))).all()


def test_log_std_is_bounded_as_odt() -> None:
    raw = torch.tensor([-1e4, -1.0, 0.0, 1.0, 1e4])
    out = bounded_log_std(raw)
    assert out[0] == LOG_STD_MIN and out[-1] == LOG_STD_MAX and out[2] == (LOG_STD_MIN + LOG_STD_MAX) / 2
    assert bool((out.diff() > 0).all())


def test_normal_noise_is_a_function_of_its_counters_and_standard_normal() -> None:
    rows, draws = torch.arange(4000) % 64, torch.arange(4000) // 64
    z = normal_noise(7, rows, draws, 3)
    assert z.shape == (4000, 3) and z.dtype == torch.float32
    torch.testing.assert_close(normal_noise(7, rows.flip(0), draws.flip(0), 3), z.flip(0), rtol=0, atol=0)
    assert not torch.equal(normal_noise(8, rows, draws, 3), z)
    assert not torch.equal(normal_noise(7, rows, draws + 1, 3), z)
    big = normal_noise(1, torch.arange(200_000) % 97, torch.arange(200_000), 4).double().reshape(-1)  # 800,000
    assert abs(float(big.mean())) < 0.006 and abs(float(big.std()) - 1.0) < 0.006
    q = torch.quantile(big[:100_000], torch.tensor([0.025, 0.5, 0.975], dtype=torch.float64))
    np.testing.assert_allclose(q.numpy(), [-1.96, 0.0, 1.96], atol=0.03)
    assert abs(float(torch.corrcoef(torch.stack([big[0::4], big[1::4]]))[0, 1])) < 0.01  # dimensions independent
    seed = 2**40 + 5  # both halves of a 64-bit seed count
    assert not torch.equal(normal_noise(seed, rows, draws, 3), normal_noise(5, rows, draws, 3))


def test_stochastic_checkpoint_round_trip_and_transformers_reads_the_mean(tmp_path) -> None:
    from transformers import DecisionTransformerModel

    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=2, n_head=2, max_ep_len=50)
    model = DecisionTransformer(cfg, stochastic=True).eval()
    torch.nn.init.normal_(model.predict_action_log_std.weight)
    model.save_pretrained(tmp_path)
    write_metadata(
        tmp_path,
        Metadata(
            state_mean=[0.0] * 5,
            state_std=[1.0] * 5,
            scale=1.0,
            context_len=4,
            target_return=1.0,
            action_head="stochastic",
        ),
    )
    again = DecisionTransformer.from_pretrained(tmp_path)
    assert again.stochastic
    torch.testing.assert_close(again.predict_action_log_std.weight, model.predict_action_log_std.weight)
    B, T = 3, 4
    inputs = dict(
        states=torch.randn(B, T, 5),
        actions=torch.randn(B, T, 2),
        returns_to_go=torch.randn(B, T, 1),
        timesteps=torch.randint(0, 50, (B, T)),
        attention_mask=torch.ones(B, T),
    )
    with torch.no_grad():
        dist = again.action_distribution(**inputs)
        _, action_preds, _ = again(**inputs)
        hf = DecisionTransformerModel.from_pretrained(tmp_path).eval()
        _, hf_preds, _ = hf(**inputs, return_dict=False)
    torch.testing.assert_close(dist.mean, action_preds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hf_preds, action_preds, rtol=1e-5, atol=1e-5)


def test_deterministic_models_have_no_distribution() -> None:
    cfg = DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=1, max_ep_len=50)
    with pytest.raises(ValueError, match="needs a stochastic model"):
        DecisionTransformer(cfg).action_distribution(
            torch.zeros(1, 1, 5), torch.zeros(1, 1, 2), torch.zeros(1, 1, 1), torch.zeros(1, 1, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="needs action_tanh=True"):
        DecisionTransformer(DecisionTransformerConfig(state_dim=5, act_dim=2, action_tanh=False), stochastic=True)
    with pytest.raises(ValueError, match="action_head must be one of"):
        Metadata(state_mean=[0.0], state_std=[1.0], scale=1.0, context_len=1, target_return=0.0, action_head="x")
