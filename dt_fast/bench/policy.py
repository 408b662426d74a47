"""Policy workloads: the cost of one step, batch-1 latencies of the blog's get_action and of dt_fast.Policy,
batched throughput, and a transformers model paired with dt_fast's copy of its weights.

Used by the suite (dt_fast/bench/suite.py) and by benchmarks/bench_policy.py.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from transformers import DecisionTransformerConfig as HFConfig
from transformers import DecisionTransformerModel

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.bench.harness import fastest_rate
from dt_fast.bench.reference import get_action
from dt_fast.checkpoint import load_hf_state_dict
from dt_fast.policy import Policy

ENVS = {"Hopper": (11, 3), "HalfCheetah": (17, 6)}
K = 20
SCALE = 1000.0


def step_cost(cfg: DecisionTransformerConfig, mode: str, t: int, absorbed: bool = False) -> tuple[float, float]:
    """(FLOPs, bytes) one step at episode step t must do in `mode`: the pruned plan of the inference issue, or with
    `absorbed` the engine's, whose layers that cache ln_1 outputs never form keys and values and fold W_q W_k^T and
    W_v W_o into one product each (every layer in rolling mode, the last in exact; csrc/engine/engine.h)."""
    C, I, L, S, A = cfg.hidden_size, cfg.inner_dim, cfg.n_layer, cfg.state_dim, cfg.act_dim
    end, new_lo = 3 * t + 1, max(0, 3 * t - 1)
    recompute = mode == "exact" and t >= K
    lo = 3 * (t - K + 1) if recompute else new_lo
    n_new, n_h = end - new_lo + 1, end - lo + 1

    def span(p: int) -> int:  # keys a query at position p attends to
        floor = max(0, 3 * (t - K + 1)) if mode == "exact" else max(0, 3 * (p // 3 - K + 1))
        return p - floor + 1

    macs = n_new * C * (S + A) / 3  # token embeddings (one state, one action and one return per step)
    weights = (S + A) * C + 2 * C
    for l in range(L):
        last = l == L - 1
        n_kv = n_new if l == 0 else n_h
        queries = [end] if last else list(range(lo, end + 1))
        if absorbed and (mode == "rolling" or (last and l > 0)):  # W_qk, scores and sums over C, W_vo; per head
            H = cfg.n_head
            macs += len(queries) * 2 * H * C * C + sum(2 * span(p) * C * H for p in queries)
        else:
            macs += n_kv * (2 if last and l > 0 else 3) * C * C + (C * C if last and l > 0 else 0)  # c_attn
            macs += sum(2 * span(p) * C for p in queries)  # q.k and attention-weighted v
            macs += len(queries) * C * C  # c_proj
        macs += len(queries) * 2 * C * I  # the MLP
        weights += 4 * C * C + 2 * C * I
    macs += C * A  # action head
    weights += C * A
    cache = L * 2 * 3 * K * C  # keys and values of the window, every layer
    return 2.0 * macs, 4.0 * (weights + cache)


def blog_latencies(model: DecisionTransformerModel, n: int, phase: str, rng: np.random.Generator) -> np.ndarray:
    """Seconds per get_action call of the blog loop, window filling (t < K) or sliding (t >= K)."""
    S, A = model.config.state_dim, model.config.act_dim
    out = []
    while len(out) < n:
        states, actions = torch.zeros(0, S), torch.zeros(0, A)
        rtg, timesteps, rewards = torch.zeros(1, 0), torch.zeros(1, 0, dtype=torch.long), torch.zeros(0)
        for t in range(K if phase == "t<K" else K + 30 + n):
            states = torch.cat([states, torch.from_numpy(rng.normal(size=(1, S)).astype(np.float32))])
            actions = torch.cat([actions, torch.zeros(1, A)])
            rewards = torch.cat([rewards, torch.zeros(1)])
            rtg = torch.cat([rtg, torch.full((1, 1), 3.6)], dim=1)
            timesteps = torch.cat([timesteps, torch.full((1, 1), min(t, 999), dtype=torch.long)], dim=1)
            with torch.no_grad():
                start = time.perf_counter()
                action = get_action(model, states, actions, rewards, rtg, timesteps, max_length=K)
                elapsed = time.perf_counter() - start
            actions[-1] = action
            if phase == "t<K" or t >= K + 30:
                out.append(elapsed)
            if len(out) >= n:
                break
    return np.array(out)


def policy_latencies(policy: Policy, n: int, phase: str, rng: np.random.Generator, engine=None) -> np.ndarray:
    """Seconds per Policy.act (or per step of `engine`, a batch-1 dt_fast._C.Engine, alone) at batch 1, window
    filling (t < K) or sliding (t >= K)."""
    S = policy.state_dim
    obs = rng.normal(size=(n + K + 30, S))
    out = []
    reset = policy.reset if engine is None else lambda: engine.reset(0)
    reset()
    reward = None
    for i in range(len(obs)):
        if phase == "t<K" and i % K == 0:
            reset()
            reward = None
        if engine is not None:
            states = obs[i : i + 1].astype(np.float32)
            rtg, ts = np.full(1, 3.6, np.float32), np.array([min(i, 999)], np.int64)
            start = time.perf_counter()
            engine.step(states, rtg, ts)
            elapsed = time.perf_counter() - start
        else:
            start = time.perf_counter()
            policy.act(obs[i], reward)
            elapsed = time.perf_counter() - start
        reward = 1.0
        if phase == "t<K" or i >= K + 30:
            out.append(elapsed)
    return np.array(out[:n])


def throughput(policy: Policy, steps: int, rng: np.random.Generator, min_time: float = 1.5) -> float:
    """Actions per second of Policy.act over num_envs rows, window sliding (after K + 5 warm-up steps): the fastest
    run of `steps` steps over at least `min_time` seconds and three runs (the machine is shared; the fastest run is
    the least disturbed, as the matmul rate it is compared with is the fastest product)."""
    B, S = policy.num_envs, policy.state_dim
    obs = rng.normal(size=(B, S))
    reward = np.ones(B)
    policy.reset()
    policy.act(obs)
    for _ in range(K + 5):
        policy.act(obs, reward)

    def run() -> None:
        for _ in range(steps):
            policy.act(obs, reward)

    return B * steps * fastest_rate(run, min_time=min_time, warmup=0)


def paired_models(S: int, A: int) -> tuple[DecisionTransformerModel, DecisionTransformer]:
    """A seeded transformers DecisionTransformerModel (hidden 128, 3 layers) and dt_fast's copy of its weights."""
    torch.manual_seed(0)
    hf = DecisionTransformerModel(
        HFConfig(state_dim=S, act_dim=A, hidden_size=128, n_layer=3, n_head=1, max_ep_len=1000)
    ).eval()
    ours = DecisionTransformer(DecisionTransformerConfig.from_dict(hf.config.to_dict()))
    load_hf_state_dict(ours, hf.state_dict())
    return hf, ours.eval()
