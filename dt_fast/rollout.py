"""Rollouts over envpool: make a batched env with clear errors, and run exactly N complete episodes.

envpool 1.2.5 (gymnasium API) auto-resets: the step on which an env reports `terminated` or `truncated`
returns the true last observation, and that env's *next* step ignores its action and returns the first
observation of a new episode (reward 0, `elapsed_step` 0). `run_episodes` hands out episodes to envs as
they free up (continuous batching) and drops the reset steps, so every episode it starts is finished and
kept, and no env waits for the slowest episode. Used by the ARS trainer and by `dt-fast collect`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dt_fast.extras import require


def make_env(env_id: str, num_envs: int, seed: int, max_episode_steps: int | None = None):
    """An envpool gymnasium env of `num_envs` copies of `env_id`; ValueError naming close ids if unknown."""
    envpool = require("envpool", env_id)
    known = envpool.list_all_envs()
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env id {env_id!r} (not an envpool env){hint}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    return envpool.make_gymnasium(env_id, num_envs=num_envs, seed=seed, **kwargs)


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


def run_episodes(env, num_episodes: int, act: Act, progress: Callable[[int], None] | None = None) -> Episodes:
    """Run exactly `num_episodes` complete episodes over the envs of `env`, recording every transition.

    Args:
        env: an envpool gymnasium env (from `make_env`), synchronous (batch_size == num_envs).
        num_episodes: episodes to start and finish; episode k is the k-th one started.
        act: `act(obs [B, obs_dim], episode [B] int64) -> actions [B, act_dim]`, called only for the envs
            that are inside an episode; `episode` lets a caller give each episode its own parameters.
        progress: called with the number of episodes just finished, for a progress bar.
    Returns:
        The transitions of all `num_episodes` episodes, ordered by episode index then time.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    num_envs = env.config["num_envs"]
    act_dim = env.action_space.shape[0]
    obs, _ = env.reset()  # [B, obs_dim]
    episode = np.full(num_envs, -1, dtype=np.int64)  # episode each env is running, -1 if none
    first = min(num_envs, num_episodes)
    episode[:first] = np.arange(first)
    started, finished = first, 0
    resetting = np.zeros(num_envs, dtype=bool)  # the env's next step is envpool's auto-reset step
    steps: list[tuple[np.ndarray, ...]] = []
    while finished < num_episodes:
        active = episode >= 0
        actions = np.zeros((num_envs, act_dim))  # [B, act_dim]
        actions[active] = act(obs[active], episode[active])
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        steps.append((obs, actions, reward, next_obs, terminated, truncated, episode.copy()))
        # envs that were resetting now hold the first observation of a new episode: hand out the next one
        for i in np.flatnonzero(resetting):
            if started < num_episodes:
                episode[i], started = started, started + 1
        ended = (terminated | truncated) & active
        finished += int(ended.sum())
        if progress is not None and ended.any():
            progress(int(ended.sum()))
        episode[ended] = -1
        resetting = terminated | truncated
        obs = next_obs
    obs_b, act_b, rew_b, next_b, term_b, trunc_b, ep_b = (np.stack(x) for x in zip(*steps))  # [T, B, ...]
    ep_flat = ep_b.reshape(-1)  # [T*B], time-major so a stable sort keeps time order inside an episode
    keep = np.flatnonzero(ep_flat >= 0)
    order = keep[np.argsort(ep_flat[keep], kind="stable")]
    obs_dim = obs_b.shape[-1]
    return Episodes(
        observations=obs_b.reshape(-1, obs_dim)[order],
        actions=act_b.reshape(-1, act_dim)[order],
        rewards=rew_b.reshape(-1)[order].astype(np.float64),
        next_observations=next_b.reshape(-1, obs_dim)[order],
        terminals=term_b.reshape(-1)[order].astype(bool),
        timeouts=trunc_b.reshape(-1)[order].astype(bool),
        lengths=np.bincount(ep_flat[keep], minlength=num_episodes).astype(np.int64),
    )
