"""Rollouts that record every transition: exactly N complete episodes over the batched env, in D4RL order.

The stepping is dt_fast.envs.run_episodes, the evaluator's continuous-batching loop: episode k is the k-th one
started, handed to whichever env frees up first. Used by the ARS trainer and by `dt-fast collect`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dt_fast.envs import run_episodes


@dataclass
class Episodes:
    """Transitions of complete episodes, flat and ordered by episode then time (D4RL order)."""

    observations: np.ndarray  # [N, obs_dim] float64
    actions: np.ndarray  # [N, act_dim] float64
    rewards: np.ndarray  # [N] float64
    next_observations: np.ndarray  # [N, obs_dim] float64
    terminals: np.ndarray  # [N] bool, the episode ended in a terminal state
    timeouts: np.ndarray  # [N] bool, the episode was cut by the time limit
    lengths: np.ndarray  # [E] int64, steps of each episode, in episode order

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode, [E] float64."""
        return np.add.reduceat(self.rewards, np.concatenate([[0], np.cumsum(self.lengths)[:-1]]))


Act = Callable[[np.ndarray, np.ndarray], np.ndarray]


def record_episodes(
    env: Any, obs: np.ndarray, num_episodes: int, act: Act, progress: Callable[[int], None] | None = None
) -> Episodes:
    """Run exactly `num_episodes` complete episodes over the envs of `env`, recording every transition.

    Args:
        env: a vector env from `dt_fast.envs.make_vector_env`; `obs` [B, obs_dim] its first observations.
        num_episodes: episodes to start and finish; episode k is the k-th one started.
        act: `act(obs [A, obs_dim], episode [A] int64) -> actions [A, act_dim]`, called only for the A envs that
            are inside an episode; `episode` lets a caller give each episode its own parameters.
        progress: called with the number of episodes just finished, for a progress bar.
    Returns:
        The transitions of all `num_episodes` episodes, ordered by episode index then time.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    started = itertools.count()

    def next_episode(_env: int) -> int:
        k = next(started)
        return k if k < num_episodes else -1

    def act_inside(obs: np.ndarray, _reward: Any, episode: np.ndarray, _fresh: Any) -> np.ndarray:
        inside = episode >= 0  # [B]
        chosen = act(obs[inside], episode[inside])  # [A, act_dim]
        actions = np.zeros((len(obs), chosen.shape[1]))  # [B, act_dim]
        actions[inside] = chosen
        return actions

    steps: list[tuple[np.ndarray, ...]] = []
    _, lengths = run_episodes(
        env, obs, num_episodes, next_episode, act_inside, record=lambda *step: steps.append(step), progress=progress
    )
    obs_b, act_b, rew_b, next_b, term_b, trunc_b, ep_b = (np.stack(x) for x in zip(*steps))  # [T, B, ...]
    ep_flat = ep_b.reshape(-1)  # [T*B], time-major so a stable sort keeps time order inside an episode
    keep = np.flatnonzero(ep_flat >= 0)
    order = keep[np.argsort(ep_flat[keep], kind="stable")]
    obs_dim, act_dim = obs_b.shape[-1], act_b.shape[-1]
    return Episodes(
        observations=obs_b.reshape(-1, obs_dim)[order],
        actions=act_b.reshape(-1, act_dim)[order],
        rewards=rew_b.reshape(-1)[order].astype(np.float64),
        next_observations=next_b.reshape(-1, obs_dim)[order],
        terminals=term_b.reshape(-1)[order].astype(bool),
        timeouts=trunc_b.reshape(-1)[order].astype(bool),
        lengths=lengths,
    )
