"""dt_fast/cuda_graph.py and the static-shape decoder it captures, against the reference decoder.

On the CPU: the static decoder's step (KVCacheDecoder(static=True), on the torch kernels and on the Triton ones
under TRITON_INTERPRET=1) equals the incremental decoder's at every step of a stream where rows reset at different
steps, so rows before and after the window slides share a step; and torch.compile(fullgraph=True) traces it
without a graph break, the proxy here for "no host synchronisation, no data-dependent shapes", which a CUDA graph
needs. The capture and replay themselves need a GPU.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig, Policy
from dt_fast.cuda_graph import GraphedStep
from dt_fast.decode import KVCacheDecoder
from tests import models

B, K, ATOL = 3, 3, 1e-5
RESETS = {5: [1], 9: [2, 0]}  # step -> rows that start a new episode there


def random_model(seed: int) -> DecisionTransformer:
    """A small random DecisionTransformer (2 layers, 2 heads; tests.models.random_model)."""
    return models.random_model(
        seed, DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=32, n_head=2, n_layer=2, max_ep_len=100)
    )


def run(decoder, steps: int, device: str = "cpu") -> list[torch.Tensor]:
    """Actions of `steps` steps over a fixed random input stream with the RESETS, each (B, A) on the CPU."""
    rng = np.random.default_rng(0)
    decoder.reset()
    n = np.zeros(B, dtype=np.int64)
    out = []
    for i in range(steps):
        if i in RESETS:
            decoder.reset(torch.tensor(RESETS[i], device=device))
            n[RESETS[i]] = 0
        states = torch.tensor(rng.normal(size=(B, 5)), dtype=torch.float32, device=device)
        rtg = torch.tensor(rng.normal(size=B), dtype=torch.float32, device=device)
        out.append(decoder.step(states, rtg, torch.tensor(n, device=device)).cpu())
        n += 1
    return out


def assert_same_actions(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Every step's actions within ATOL."""
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"step {i}")


@pytest.mark.parametrize("mode", ["exact", "rolling"])
@pytest.mark.parametrize("context_len", [1, 3, 5])
def test_static_step_equals_the_reference_decoder(mode: str, context_len: int) -> None:
    model = random_model(0)
    want = run(KVCacheDecoder(model, B, context_len, mode), 16)
    got = run(KVCacheDecoder(model, B, context_len, mode, static=True), 16)
    assert_same_actions(got, want)


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_static_step_on_the_triton_decoder_equals_the_reference(mode: str) -> None:
    pytest.importorskip("triton", reason="triton is not installed")
    model = random_model(1)
    want = run(KVCacheDecoder(model, B, K, mode, backend="torch"), 12)
    got = run(KVCacheDecoder(model, B, K, mode, static=True, backend="triton"), 12)
    assert_same_actions(got, want)


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_static_step_traces_as_one_graph(mode: str) -> None:
    """fullgraph=True raises on any graph break (a .item(), a branch on a tensor, boolean-mask indexing)."""
    model = random_model(2)
    eager, traced = (KVCacheDecoder(model, B, K, mode, static=True) for _ in range(2))
    traced.step = torch.compile(traced.step, backend="eager", fullgraph=True)
    assert_same_actions(run(traced, 8), run(eager, 8))


def test_graphed_step_needs_a_static_decoder_on_cuda() -> None:
    with pytest.raises(ValueError, match="GraphedStep needs a KVCacheDecoder with static=True on a CUDA device"):
        GraphedStep(KVCacheDecoder(random_model(3), B, K, "exact"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graphs are GPU-only")
@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_graph_replay_equals_the_decoder_on_gpu(mode: str) -> None:
    model = random_model(4).cuda()
    want = run(KVCacheDecoder(model, B, K, mode), 16, "cuda")
    got = run(GraphedStep(KVCacheDecoder(model, B, K, mode, static=True)), 16, "cuda")
    assert_same_actions(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graphs are GPU-only")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_graphed_policy_with_resets_equals_the_cpu_policy(backend: str) -> None:
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed")
    model = random_model(5)
    kw = dict(
        target_return=[1.0, 2.0, 3.0],
        num_envs=B,
        state_mean=np.zeros(5),
        state_std=np.ones(5),
        scale=1.0,
        context_len=K,
    )
    cpu, gpu = Policy(model, backend="torch", **kw), Policy(copy.deepcopy(model).cuda(), backend=backend, **kw)
    rng = np.random.default_rng(0)
    for i in range(16):
        if i in RESETS:
            cpu.reset(RESETS[i])
            gpu.reset(RESETS[i])
        obs, rew = rng.normal(size=(B, 5)), rng.normal(size=B)
        want = cpu.act(obs, None if i == 0 else rew)
        got = gpu.act(obs, None if i == 0 else rew)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=f"step {i}")
