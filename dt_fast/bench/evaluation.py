"""Evaluation workloads: a random Hopper-sized checkpoint, envpool alone, dt_fast.evaluate, the blog's rollout loop.

Used by the suite (dt_fast/bench/suite.py) and by benchmarks/bench_eval.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

ENV_ID, TARGET, SCALE, CONTEXT = "Hopper-v4", 3600.0, 1000.0, 20


def make_checkpoint(path: Path, seed: int = 0) -> None:
    """A random Hopper-sized checkpoint with dt_fast.json (random state statistics, target TARGET) in `path`."""
    from dt_fast.checkpoint import Metadata, write_metadata
    from dt_fast.config import DecisionTransformerConfig
    from dt_fast.model import DecisionTransformer

    torch.manual_seed(seed)
    model = DecisionTransformer(DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000))
    with torch.no_grad():  # small actions: the hopper stands for ~100-250 steps, so most steps slide the window
        model.predict_action[0].weight.mul_(0.02)
        model.predict_action[0].bias.zero_()
    model.save_pretrained(path)
    rng = np.random.default_rng(seed)
    write_metadata(
        path,
        Metadata(
            state_mean=rng.normal(0.0, 0.1, 11),
            state_std=rng.uniform(0.5, 1.5, 11),
            scale=SCALE,
            env_id=ENV_ID,
            context_len=CONTEXT,
            target_return=TARGET,
        ),
    )


def envpool_random(num_envs: int, steps: int, seed: int) -> float:
    """Env-steps/s of envpool's Hopper-v4 over `num_envs` envs with uniform random actions."""
    from dt_fast.envs import env_spec, make_vector_env

    env, _ = make_vector_env(env_spec(ENV_ID), num_envs=num_envs, seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, (steps, num_envs, 3)).astype(np.float32)  # [S, B, act_dim]
    env.step(actions[0])
    start = time.perf_counter()
    for a in actions[1:]:
        env.step(a)
    rate = num_envs * (steps - 1) / (time.perf_counter() - start)
    env.close()
    return rate


def evaluator(ckpt: Path, mode: str, num_envs: int, episodes: int, seed: int) -> dict:
    """Env-steps/s and episode lengths of dt_fast.evaluate in `mode`, after a warm-up run."""
    from dt_fast.evaluation import evaluate
    from dt_fast.policy import Policy

    policy = Policy.from_pretrained(ckpt, mode=mode, backend="auto", num_envs=num_envs)
    evaluate(policy, env=ENV_ID, episodes=num_envs, seed=seed + 1, progress=False)
    result = evaluate(policy, env=ENV_ID, episodes=episodes, seed=seed, progress=False)
    return dict(rate=result.env_steps_per_s, lengths=result.lengths, backend=policy.backend)


def blog_loop(ckpt: Path, max_steps: int, seed: int) -> dict:
    """Env-steps/s of the blog's get_action loop on transformers' model over about `max_steps` env steps."""
    import gymnasium as gym
    from transformers import DecisionTransformerModel

    from dt_fast.bench.reference import rollout
    from dt_fast.checkpoint import read_metadata

    meta = read_metadata(ckpt)
    model = DecisionTransformerModel.from_pretrained(ckpt).eval()
    env = gym.make(ENV_ID)

    def env_step(action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, truncated, _ = env.step(action)
        return obs, reward, terminated or truncated

    lengths, episode = [], 0
    start = time.perf_counter()
    while sum(lengths) < max_steps:
        obs, _ = env.reset(seed=seed + episode)
        taken, _ = rollout(
            model,
            env_step,
            obs,
            np.array(meta.state_mean),
            np.array(meta.state_std),
            meta.target_return,
            meta.scale,
            max_ep_len=1000,
            max_length=meta.context_len,
        )
        lengths.append(len(taken))
        episode += 1
    return dict(rate=sum(lengths) / (time.perf_counter() - start), lengths=np.array(lengths))
