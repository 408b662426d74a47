"""Behaviour policy for data collection: a linear policy trained by Augmented Random Search (ARS V2-t).

Mania, Guy and Recht (2018), "Simple random search provides a competitive approach to reinforcement
learning", Algorithm 2, V2-t: a linear policy a = clip(M (s - mu) / sigma) on running-normalised
observations; each iteration samples N directions delta, rolls out M +/- nu*delta, keeps the b directions
with the best max(r+, r-), and steps M += alpha / (b * sigma_R) * sum (r+ - r-) delta, sigma_R being the
std of the 2b kept returns. As the authors' code does for the MuJoCo locomotion tasks (its `shift`), the
training returns have the survival bonus subtracted per step, which keeps the search from settling on
standing still; evaluation returns are the environment's own.
Defaults are the paper's Hopper hyperparameters (alpha 0.01, N 8, b 4, nu 0.025).
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dt_fast.checkpoint import atomic_write
from dt_fast.collect.rollout import record_episodes
from dt_fast.envs import env_spec, make_vector_env


@dataclass
class LinearPolicy:
    """a = clip((obs - obs_mean) / obs_std @ weights.T, -1, 1); saved and loaded as .npz."""

    weights: np.ndarray  # [act_dim, obs_dim]
    obs_mean: np.ndarray  # [obs_dim]
    obs_std: np.ndarray  # [obs_dim]
    env_id: str = ""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions [B, act_dim] for observations [B, obs_dim]."""
        return np.clip((obs - self.obs_mean) / self.obs_std @ self.weights.T, -1.0, 1.0)

    def save(self, path: str | Path) -> None:
        """Write the policy to an .npz file, atomically."""
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, weights=self.weights, obs_mean=self.obs_mean, obs_std=self.obs_std, env_id=self.env_id)

    @classmethod
    def load(cls, path: str | Path) -> LinearPolicy:
        """Read a policy written by `save`; ValueError naming the file and the missing or misshapen key."""
        try:
            f = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: cannot read as an .npz linear policy ({err})") from err
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: a single .npy array, expected an .npz linear policy")
        with f:
            missing = [k for k in ("weights", "obs_mean", "obs_std", "env_id") if k not in f]
            if missing:
                raise ValueError(f"{path}: not a dt_fast linear policy, missing key(s) {missing}")
            weights, mean, std, env_id = f["weights"], f["obs_mean"], f["obs_std"], str(f["env_id"])
        if weights.ndim != 2 or mean.shape != (weights.shape[1],) or std.shape != mean.shape:
            raise ValueError(
                f"{path}: weights {weights.shape}, obs_mean {mean.shape} and obs_std {std.shape} "
                "do not fit a linear policy [act_dim, obs_dim], [obs_dim], [obs_dim]"
            )
        return cls(weights.astype(np.float64), mean.astype(np.float64), std.astype(np.float64), env_id)


@dataclass
class RunningStat:
    """Mean and variance of every observation seen so far (Chan et al. parallel update)."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def update(self, x: np.ndarray) -> None:
        """Fold a batch of observations [N, obs_dim] into the statistics."""
        if self.count == 0:
            self.count, self.mean, self.m2 = len(x), x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
            return
        n, mean = len(x), x.mean(0)
        delta = mean - self.mean
        total = self.count + n
        self.m2 = self.m2 + ((x - mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Standard deviation, 1 where an observation has not varied (so it is left unscaled)."""
        std = np.sqrt(self.m2 / max(self.count, 1))
        return np.where(std < 1e-6, 1.0, std)


@dataclass
class ARSResult:
    """The trained policy and how it got there."""

    policy: LinearPolicy
    eval_return: float  # mean return of the policy over the last evaluation episodes (no survival shift)
    iterations: int
    env_steps: int  # environment steps inside episodes, evaluation included
    seconds: float
    history: list[tuple[int, int, float]]  # (iteration, env_steps, eval mean return)


def train_ars(
    env_id: str,
    target_return: float,
    max_iterations: int = 300,
    num_directions: int = 8,
    top_directions: int = 4,
    step_size: float = 0.01,
    noise: float = 0.025,
    shift: float = 1.0,
    eval_every: int = 5,
    eval_episodes: int = 8,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ARSResult:
    """Train a linear policy with ARS V2-t until its evaluation mean return reaches `target_return`.

    Stops at the first evaluation (every `eval_every` iterations, `eval_episodes` episodes of the current
    policy) whose mean return is >= `target_return`, or after `max_iterations`, returning the evaluated
    policy with the best mean return. Deterministic for a given seed.
    """
    if not 1 <= top_directions <= num_directions:
        raise ValueError(f"top_directions must be in [1, num_directions={num_directions}], got {top_directions}")
    if max_iterations < 1 or eval_every < 1 or eval_episodes < 1:
        raise ValueError("max_iterations, eval_every and eval_episodes must be >= 1")
    start = time.perf_counter()
    spec = env_spec(env_id)
    env, obs = make_vector_env(spec, num_envs=2 * num_directions, seed=seed)
    obs_dim, act_dim = spec.state_dim, spec.act_dim
    rng = np.random.default_rng(seed)
    weights = np.zeros((act_dim, obs_dim))  # [act_dim, obs_dim]
    stat = RunningStat()
    mean, std = np.zeros(obs_dim), np.ones(obs_dim)
    best: tuple[float, LinearPolicy] | None = None
    history: list[tuple[int, int, float]] = []
    env_steps = 0
    for it in range(1, max_iterations + 1):
        deltas = rng.standard_normal((num_directions, act_dim, obs_dim))  # [N, act_dim, obs_dim]
        params = np.concatenate([weights + noise * deltas, weights - noise * deltas])  # [2N, act_dim, obs_dim]

        def act(obs: np.ndarray, episode: np.ndarray) -> np.ndarray:
            z = (obs - mean) / std  # [B, obs_dim]
            return np.clip(np.einsum("bij,bj->bi", params[episode], z), -1.0, 1.0)  # [B, act_dim]

        eps = record_episodes(env, obs, 2 * num_directions, act)
        obs, _ = env.reset()  # every batch of episodes starts from fresh resets
        env_steps += int(eps.lengths.sum())
        shaped = eps.returns - shift * eps.lengths  # [2N]
        r_pos, r_neg = shaped[:num_directions], shaped[num_directions:]
        top = np.argsort(-np.maximum(r_pos, r_neg))[:top_directions]
        sigma_r = np.concatenate([r_pos[top], r_neg[top]]).std()
        if sigma_r > 0:
            weights = weights + step_size / (top_directions * sigma_r) * np.einsum(
                "k,kij->ij", r_pos[top] - r_neg[top], deltas[top]
            )
        stat.update(eps.observations)
        mean, std = stat.mean.copy(), stat.std
        if it % eval_every == 0 or it == max_iterations:
            policy = LinearPolicy(weights.copy(), mean.copy(), std.copy(), env_id)
            ev = record_episodes(env, obs, eval_episodes, lambda obs, _: policy(obs))
            obs, _ = env.reset()
            env_steps += int(ev.lengths.sum())
            score = float(ev.returns.mean())
            history.append((it, env_steps, score))
            if log is not None:
                log(
                    f"ARS iter {it:4d}  env steps {env_steps:9,d}  eval return {score:8.1f}  "
                    f"({time.perf_counter() - start:.0f} s)"
                )
            if best is None or score > best[0]:
                best = (score, policy)
            if score >= target_return:
                break
    assert best is not None
    return ARSResult(best[1], best[0], it, env_steps, time.perf_counter() - start, history)
