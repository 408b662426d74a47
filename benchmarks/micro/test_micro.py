"""Micro-benchmarks (pytest-benchmark): dt_fast's kernels reference path, sampler, engine step and dropout mask,
each beside the baseline it replaces where there is one (same benchmark group, extra_info "reference").

Outside `tests/` on purpose (pytest's testpaths), so `make test` never collects them. Run them with (the JSON
stays out of git):

    .venv/bin/python -m pytest benchmarks/micro --benchmark-json benchmarks/results/micro.json
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig, Trajectories, TrajectorySampler
from dt_fast.bench.reference import DecisionTransformerGymDataCollator, ListDataset, get_action
from dt_fast.checkpoint import hf_state_dict
from dt_fast.kernels.reference import attention_masked_ref, embed_ref

B, K, S, A, C, MAX_EP_LEN = 64, 20, 17, 6, 128, 1000
P_DROP = 0.1


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: the cases are small and the machine's 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trajectories() -> Trajectories:
    """200 random HalfCheetah-sized episodes of 50..1,000 steps."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 1001, size=200)
    n = int(lengths.sum())
    return Trajectories(
        rng.standard_normal((n, S), dtype=np.float32),
        rng.uniform(-1, 1, (n, A)).astype(np.float32),
        rng.standard_normal(n, dtype=np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )


@pytest.mark.benchmark(group="sampler: batch 64 x context 20")
def test_sampler_sample(benchmark, trajectories: Trajectories) -> None:
    """TrajectorySampler.sample (one background worker)."""
    sampler = TrajectorySampler(trajectories, context_len=K, batch_size=B, num_threads=1)
    batch = benchmark(sampler.sample)
    sampler.close()
    assert batch["states"].shape == (B, K, S)


@pytest.mark.benchmark(group="sampler: batch 64 x context 20")
def test_sampler_blog_collator(benchmark, trajectories: Trajectories) -> None:
    """The blog's collator fed Python lists (dt_fast/bench/reference.py)."""
    rows = [
        {
            "observations": ep["observations"].tolist(),
            "actions": ep["actions"].tolist(),
            "rewards": ep["rewards"].tolist(),
            "dones": ep["terminals"].tolist(),
        }
        for ep in (trajectories.episode(i) for i in range(trajectories.num_episodes))
    ]
    collator = DecisionTransformerGymDataCollator(ListDataset(rows), max_len=K)
    benchmark.extra_info["reference"] = True
    batch = benchmark(collator, [None] * B)
    assert batch["states"].shape == (B, K, S)


@pytest.mark.benchmark(group="kernels reference path: embed, batch 64 x 20 steps")
def test_embed_ref(benchmark) -> None:
    """embed_ref: the interleaved token embedding the model and decoder run on CPU."""
    g = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(B, K, S, generator=g),
        torch.randn(B, K, A, generator=g),
        torch.randn(B, K, 1, generator=g),
        torch.randint(0, MAX_EP_LEN, (B, K), generator=g),
    ]
    weights = [
        torch.randn(*shape, generator=g)
        for shape in [(C, 1), (C,), (C, S), (C,), (C, A), (C,), (MAX_EP_LEN, C), (C,), (C,)]
    ]
    with torch.no_grad():
        out = benchmark(embed_ref, *inputs, *weights)
    assert out.shape == (B, 3 * K, C)


@pytest.mark.benchmark(group="kernels reference path: masked attention over a KV ring, batch 64")
@pytest.mark.parametrize("queries", [3, 3 * K - 1], ids=["new tokens", "exact window"])
def test_attention_masked_ref(benchmark, queries: int) -> None:
    """attention_masked_ref as the decoder runs it: 3 new tokens or the 3K - 1 window over a ring of 3K + 4 slots."""
    g = torch.Generator().manual_seed(0)
    L = 3 * K + 4
    q = torch.randn(B, 1, queries, C, generator=g)  # (B, nh, n, hs)
    k, v = torch.randn(B, 1, L, C, generator=g), torch.randn(B, 1, L, C, generator=g)  # (B, nh, L, hs)
    mask = torch.rand(B, queries, L, generator=g) < 0.5  # (B, n, L)
    with torch.no_grad():
        out = benchmark(attention_masked_ref, q, k, v, mask, C**-0.5)
    assert out.shape == (B, 1, queries, C)


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    """A random HalfCheetah-sized model (hidden 128, 3 layers, 1 head), eval mode."""
    torch.manual_seed(0)
    return DecisionTransformer(DecisionTransformerConfig(state_dim=S, act_dim=A, max_ep_len=MAX_EP_LEN)).eval()


@pytest.mark.benchmark(group="engine step: batch 1, window sliding")
@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_engine_step(benchmark, model: DecisionTransformer, mode: str) -> None:
    """The C++ engine's step alone (dt_fast._C.Engine.step, every hardware thread), after the window has filled."""
    from dt_fast import _C

    tensors = {k: v.detach().numpy() for k, v in hf_state_dict(model).items()}
    engine = _C.Engine(model.config.to_json_string(), tensors, 1, K, mode)
    states = np.random.default_rng(0).normal(size=(1, S)).astype(np.float32)  # (1, S)
    rtg, timesteps = np.full(1, 3.6, np.float32), np.full(1, 50, np.int64)
    for _ in range(K + 5):
        engine.step(states, rtg, timesteps)
    actions = benchmark(engine.step, states, rtg, timesteps)
    assert actions.shape == (1, A)


@pytest.mark.benchmark(group="engine step: batch 1, window sliding")
def test_engine_step_blog_get_action(benchmark, model: DecisionTransformer) -> None:
    """The blog's get_action on transformers' DecisionTransformerModel, a full window of K steps."""
    from transformers import DecisionTransformerConfig as HFConfig
    from transformers import DecisionTransformerModel

    hf = DecisionTransformerModel(HFConfig(**model.config.to_dict())).eval()
    g = torch.Generator().manual_seed(0)
    states, actions, rewards = torch.randn(K, S, generator=g), torch.randn(K, A, generator=g), torch.zeros(K)
    rtg, timesteps = torch.full((1, K), 3.6), torch.arange(30, 30 + K)[None]  # (1, K)
    benchmark.extra_info["reference"] = True
    with torch.no_grad():
        action = benchmark(get_action, hf, states, actions, rewards, rtg, timesteps, max_length=K)
    assert action.shape == (A,)


@pytest.mark.benchmark(group="dropout mask: 64 x 60 x 128 float32")
def test_dropout_mask(benchmark) -> None:
    """dt_fast._C.dropout_mask: counter-based hash, what the model's Dropout uses on CPU."""
    from dt_fast import _C

    mask = torch.empty(B, 3 * K, C)  # (B, 3K, C)
    flat = mask.numpy().reshape(-1)
    benchmark(_C.dropout_mask, flat, P_DROP, 12345)
    assert 0.85 < float((mask != 0).float().mean()) < 0.95


@pytest.mark.benchmark(group="dropout mask: 64 x 60 x 128 float32")
def test_dropout_mask_torch_bernoulli(benchmark) -> None:
    """torch's CPU bernoulli_ then scaling: the mask nn.Dropout draws."""
    mask = torch.empty(B, 3 * K, C)  # (B, 3K, C)
    benchmark.extra_info["reference"] = True
    benchmark(lambda: mask.bernoulli_(1 - P_DROP).div_(1 - P_DROP))
    assert 0.85 < float((mask != 0).float().mean()) < 0.95
