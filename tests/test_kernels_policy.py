"""Policy with backend "triton" (Triton interpreter on CPU) acts as backend "torch", step for step.

Two rows start their episodes at different steps, so the cache lengths of the rows differ and each row crosses
the point where the window slides (context_len 4: exact mode recomputes the window from step 4 on). The
observations and rewards are a fixed random stream fed to both policies, so the comparison is per step and not
through chaotic dynamics. Under the interpreter each step takes ~0.1-0.3 s, hence the small model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernel_checks import assert_close_verbose, one_torch_thread  # noqa: F401 (fixture)

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

import dt_fast.kernels.attention as attention_module  # noqa: E402
import dt_fast.kernels.embed as embed_module  # noqa: E402
from dt_fast import DecisionTransformer, DecisionTransformerConfig  # noqa: E402
from dt_fast.decode import KVCacheDecoder  # noqa: E402
from dt_fast.kernels import dispatch  # noqa: E402
from dt_fast.policy import Policy  # noqa: E402
from tests import models  # noqa: E402

ATOL = 2e-5  # float32 rounding over 200 steps with sharp attention (LayerNorm gains near 1); the engine's too


def random_model(seed: int, n_head: int) -> DecisionTransformer:
    """A small random DecisionTransformer (2 layers; tests.models.random_model)."""
    return models.random_model(
        seed,
        DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_head=n_head, n_layer=2, max_ep_len=1000),
    )


def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each launch of the embedding and attention kernels (by name) into the returned list."""
    calls = []
    for module, name in ((embed_module, "embed_fwd"), (attention_module, "attention_masked_fwd")):
        launcher = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=launcher, _n=name: calls.append(_n) or _f(*a))
    return calls


@pytest.mark.parametrize("mode,steps", [("exact", 200), ("rolling", 30)])
def test_policy_rollout_triton_equals_torch(monkeypatch: pytest.MonkeyPatch, mode: str, steps: int) -> None:
    model = random_model(0, n_head=1)  # transformers' default for DT; the step test below has 2 heads
    kwargs = dict(
        target_return=3600.0,
        mode=mode,
        num_envs=2,
        state_mean=np.zeros(11),
        state_std=np.ones(11),
        scale=1000.0,
        context_len=4,
    )
    policies = {b: Policy(model, backend=b, **kwargs) for b in ("torch", "triton")}
    calls = kernel_calls(monkeypatch)
    rng = np.random.default_rng(0)
    reward = None
    for step in range(steps):
        if step in (7, 120):  # row 1 starts a new episode: rows at different ages from here on
            for policy in policies.values():
                policy.reset([1])
        obs = rng.normal(size=(2, 11)).astype(np.float32)
        actions = {}
        for backend, policy in policies.items():
            calls.clear()
            actions[backend] = policy.act(obs, reward)
            launched = set(calls)
            assert launched == ({"embed_fwd", "attention_masked_fwd"} if backend == "triton" else set()), (
                f"backend {backend} launched {launched}"
            )
        assert_close_verbose(
            f"{mode} step {step} actions",
            torch.from_numpy(actions["triton"]),
            torch.from_numpy(actions["torch"]),
            atol=ATOL,
        )
        reward = rng.normal(size=2)


def test_decoder_steps_equal_torch_steps() -> None:
    """The decoder's embedding and attention on either backend alone, on the shapes the decoder gives them."""
    model = random_model(1, n_head=2)
    torch_dec, triton_dec = KVCacheDecoder(model, 3, 4, backend="torch"), KVCacheDecoder(model, 3, 4, backend="triton")
    g = torch.Generator().manual_seed(1)
    args = (
        torch.randn(3, 3, generator=g),
        torch.randn(3, 1, generator=g),
        torch.randn(3, 11, generator=g),
        torch.tensor([0, 5, 998]),
        torch.tensor([1, 6, 999]),
    )
    with torch.no_grad():
        assert_close_verbose("embed", triton_dec.embed(*args), torch_dec.embed(*args), atol=ATOL)
    q = torch.randn(3, 2, 11, 16, generator=g)
    k, v = (torch.randn(3, 15, 32, generator=g).view(3, 15, 2, 16).transpose(1, 2) for _ in range(2))
    mask = torch.rand(3, 11, 15, generator=g) < 0.5
    mask[2] = False  # a row of padding queries
    assert_close_verbose(
        "attend",
        dispatch.attention_masked(q, k, v, mask, 0.25, backend=triton_dec.backend),
        dispatch.attention_masked(q, k, v, mask, 0.25, backend=torch_dec.backend),
        atol=ATOL,
    )
