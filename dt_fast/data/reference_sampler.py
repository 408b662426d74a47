"""The numpy reference of TrajectorySampler: the same windows, computed directly, row by row (slow, for tests)."""

from __future__ import annotations

import numpy as np

from dt_fast.data.trajectories import Trajectories


def reference_draws(
    trajectories: Trajectories, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(episode, start) of batch_size windows: a step uniform over all steps, mapped to its episode."""
    step = rng.integers(0, trajectories.num_steps, size=batch_size)  # (B,)
    episode = np.searchsorted(trajectories.offsets, step, side="right") - 1  # (B,)
    return episode, step - trajectories.offsets[episode]


def reference_windows(
    trajectories: Trajectories,
    episode: np.ndarray,
    start: np.ndarray,
    context_len: int = 20,
    scale: float = 1000.0,
    gamma: float = 1.0,
    max_ep_len: int = 1000,
) -> dict[str, np.ndarray]:
    """The blog collator's window of each (episode, start) row, with returns-to-go summed directly per window."""
    T, S, A = context_len, trajectories.state_dim, trajectories.act_dim
    mean, std = trajectories.state_mean, trajectories.state_std  # float64 [S]
    out = {
        "states": np.empty((len(episode), T, S), np.float32),
        "actions": np.full((len(episode), T, A), -10.0, np.float32),
        "rewards": np.zeros((len(episode), T, 1), np.float32),
        "returns_to_go": np.zeros((len(episode), T, 1), np.float32),
        "timesteps": np.zeros((len(episode), T), np.int64),
        "attention_mask": np.zeros((len(episode), T), np.float32),
    }
    for i, (e, s) in enumerate(zip(episode, start)):
        ep = trajectories.episode(int(e))
        rewards = ep["rewards"].astype(np.float64)[s:]  # (len - s,) from the window start to the episode's end
        tlen = min(T, len(rewards))
        pad = T - tlen
        rtg = np.zeros(len(rewards))  # discounted sum of the future rewards of each step, to the episode's end
        acc = 0.0
        for t in range(len(rewards) - 1, -1, -1):
            acc = rewards[t] + gamma * acc
            rtg[t] = acc
        states = np.zeros((T, S))
        states[pad:] = ep["observations"][s : s + tlen]
        out["states"][i] = (states - mean) / std  # padded before normalising, as the blog does
        out["actions"][i, pad:] = ep["actions"][s : s + tlen]
        out["rewards"][i, pad:, 0] = ep["rewards"][s : s + tlen]
        out["returns_to_go"][i, pad:, 0] = rtg[:tlen] / scale
        out["timesteps"][i, pad:] = np.minimum(np.arange(s, s + tlen), max_ep_len - 1)
        out["attention_mask"][i, pad:] = 1.0
    return out
