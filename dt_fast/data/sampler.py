"""TrajectorySampler: the blog collator's training windows, built ahead by C++ threads into a ring of buffers.

Semantics (DESIGN.md "Training windows"): a window starts at a step drawn uniformly over all steps of the
dataset, is cut at its episode's end and left-padded to context_len. States are normalised by the dataset's
mean/std, returns-to-go are precomputed once (discounted by gamma, divided by scale), timesteps are clipped to
max_ep_len - 1. Padding matches the blog's collator exactly: actions -10, rewards / returns-to-go / timesteps /
mask 0, and states (0 - mean) / std, because the blog pads before normalising.

Row i of batch k of the stream (seed, rank) comes from a counter-based RNG keyed by (seed, rank, k, i): the
same seed gives the same batches whatever num_threads is, and `state_dict` (seed, rank, next batch) resumes
the stream exactly. Give each rank of a distributed run its own `rank` (same seed): the streams are unrelated.

Threads: `num_threads` background workers build batches ahead into a ring of 4 * num_threads + 4 buffers (with
the GIL released). A batch handed out is never written again: its buffer goes back to the ring only when the
last tensor viewing it is freed. While the next batch is not ready, `sample()` builds batches itself instead of
waiting, so a caller that consumes faster than the workers produce also works. The sampler copies the dataset
into its C++ core (normalised states, actions, rewards, returns-to-go): the Trajectories may change afterwards.

Replay buffer (`capacity`, the Online Decision Transformer's): the sampler then holds at most `capacity` whole
episodes. It starts from the offline episodes (all of them in dataset order if they fit, else the `capacity` with
the highest returns, lowest first, as ODT's ReplayBuffer); `add_episodes` appends episodes and evicts the oldest
beyond the capacity, first in, first out (csrc/sampler/trajectory_sampler.h compares this with ODT's slot
overwrite: the same episodes are kept). Windows are drawn as above over the episodes held; the returns-to-go of an
appended episode are computed once from its own rewards (gamma, scale: hindsight relabelling) and its states are
normalised with the offline data's mean and std, never recomputed. An append copies the new episodes only: the
episodes already held are shared, not copied (see the C++ header). `episode` indices (`draws`, `windows`) are
positions in the buffer, oldest first.

Appends and the stream: `add_episodes` drops the batches built ahead and restarts the prefetch threads at the next
batch number, so every batch sampled after the call is drawn from the buffer the call left, and batch k of the
stream is a function of (seed, rank, k, the buffer's episodes): the same seed and the same sequence of
`sample` and `add_episodes` calls give the same batches whatever num_threads. `state_dict` then also holds the
buffer's episodes (oldest first: that order is also the eviction order, so no other position is needed), as torch
tensors, which `torch.load(weights_only=True)` reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dt_fast.data.trajectories import Trajectories

BATCH_KEYS = ("states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask")
UINT64 = 2**64


class TrajectorySampler:
    """Batches of training windows for DecisionTransformer.forward; iterate it for an endless prefetched stream.

    Args:
        trajectories: the dataset; it is copied into the C++ core (it may change afterwards).
        context_len: K, steps per window (windows shorter at an episode's start are left-padded).
        batch_size: B, windows per batch.
        scale: returns-to-go are divided by it (1000 for MuJoCo); finite, non-zero.
        gamma: discount of the returns-to-go, in [0, 1].
        max_ep_len: timesteps are clipped to max_ep_len - 1 (the model's timestep embedding rows).
        seed: seed of the stream, an integer in [0, 2**64).
        num_threads: background threads building batches ahead.
        device: where the batches' tensors are put (on the CPU they are zero-copy views of the C++ buffers).
        rank: this process's stream in a data-parallel run (same seed, one rank each), in [0, 2**64).
        capacity: None for a fixed dataset, or the replay buffer's size in episodes (`add_episodes`).

    Raises:
        TypeError: `trajectories` is not a `Trajectories`.
        ValueError: an argument out of its range; the message names it.
        RuntimeError: the C++ extension dt_fast._C is not built.
    """

    def __init__(
        self,
        trajectories: Trajectories,
        context_len: int = 20,
        batch_size: int = 64,
        scale: float = 1000.0,
        gamma: float = 1.0,
        max_ep_len: int = 1000,
        seed: int = 0,
        num_threads: int = 1,
        device: str | torch.device = "cpu",
        rank: int = 0,
        capacity: int | None = None,
    ) -> None:
        if not isinstance(trajectories, Trajectories):
            raise TypeError(f"trajectories must be a dt_fast.Trajectories, got {type(trajectories).__name__}")
        if capacity is not None and (
            isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1
        ):
            raise ValueError(f"capacity must be None (a fixed dataset) or an integer >= 1 (episodes), got {capacity!r}")
        for name, value in (
            ("context_len", context_len),
            ("batch_size", batch_size),
            ("max_ep_len", max_ep_len),
            ("num_threads", num_threads),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("seed", seed), ("rank", rank)):
            if not isinstance(value, (int, np.integer)) or not 0 <= value < UINT64:
                raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
        if not np.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be finite and non-zero, got {scale!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        try:
            from dt_fast import _C
        except ImportError as err:
            raise RuntimeError(
                "TrajectorySampler needs the compiled extension dt_fast._C "
                "(build it with `python setup.py build_ext --inplace`)"
            ) from err
        self.context_len, self.batch_size, self.max_ep_len = int(context_len), int(batch_size), int(max_ep_len)
        self.scale, self.gamma = float(scale), float(gamma)
        self.num_threads, self.device = int(num_threads), torch.device(device)
        self.seed, self.rank = int(seed), int(rank)
        self.capacity = None if capacity is None else int(capacity)
        self.state_mean, self.state_std = trajectories.state_mean, trajectories.state_std  # float64 [state_dim]
        self.num_steps = trajectories.num_steps  # of the offline data (held_steps counts what the buffer holds)
        self._core = _C.SamplerCore(
            trajectories.observations,
            trajectories.actions,
            trajectories.rewards,
            trajectories.offsets,
            self.state_mean,
            self.state_std,
            self.context_len,
            self.batch_size,
            self.scale,
            self.gamma,
            self.max_ep_len,
            self.capacity or 0,
        )
        self._next_batch = 0
        self._prefetcher: Any = None  # started by the first sample()

    @property
    def held_episodes(self) -> int:
        """Episodes windows are drawn from now (the dataset's, or those the replay buffer holds)."""
        return self._core.n_episodes

    @property
    def held_steps(self) -> int:
        """Steps windows are drawn from now."""
        return self._core.n_steps

    def add_episodes(
        self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, lengths: np.ndarray
    ) -> None:
        """Append whole episodes to the replay buffer, evicting the oldest beyond `capacity` (first in, first out).

        Batches built ahead are dropped: every batch sampled after the call comes from the new buffer.

        Args:
            observations: (N, state_dim) raw observations of the episodes one after another, float32 or float64
                (rounded to float32, then normalised with the offline data's mean and std, as the offline data is).
            actions: (N, act_dim) the actions taken.
            rewards: (N,) the rewards received; each episode's returns-to-go are computed from them once.
            lengths: (E,) integers >= 1 summing to N, the episodes in order.

        Raises:
            ValueError: the sampler has no capacity, or an argument's shape, dtype or values (a length < 1, a
                non-finite value) are wrong; the message names the argument, and nothing changes.
        """
        if self.capacity is None:
            raise ValueError("add_episodes needs a replay buffer: build the TrajectorySampler with capacity=...")
        core = self._core.appended(observations, actions, rewards, lengths)
        self.close()
        self._core = core

    def sample(self) -> dict[str, torch.Tensor]:
        """The next batch of the stream, the keyword arguments of `dt_fast.DecisionTransformer.forward`.

        Returns:
            states float32 (B, K, state_dim) normalised, actions float32 (B, K, act_dim), rewards float32 (B, K, 1),
            returns_to_go float32 (B, K, 1) divided by scale, timesteps int64 (B, K), attention_mask float32 (B, K)
            (1 = real step, 0 = left padding).
        """
        if self._prefetcher is None:
            from dt_fast import _C

            self._prefetcher = _C.SamplerPrefetcher(
                self._core, self.seed, self.rank, self._next_batch, self.num_threads, 4 * self.num_threads + 4
            )
        arrays = self._prefetcher.next()  # numpy views of a buffer that returns to the ring when released
        self._next_batch += 1
        return self._to_torch(arrays)

    def __iter__(self) -> TrajectorySampler:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.sample()

    def draws(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start), each int64 (batch_size,): the draws of the rows of batch number `batch` of the stream.

        Raises:
            ValueError: `batch` is outside [0, 2**64).
        """
        if not 0 <= batch < UINT64:
            raise ValueError(f"batch must be in [0, 2**64), got {batch!r}")
        return self._core.draw(self.seed, self.rank, batch)

    def windows(self, episode: np.ndarray, start: np.ndarray) -> dict[str, torch.Tensor]:
        """The windows of explicit draws (episode[i], start[i]), each (n,), as a batch of n rows shaped as `sample`'s.

        Raises:
            ValueError: the arrays differ in length, or an episode or start index is out of range.
        """
        return self._to_torch(self._core.windows(np.asarray(episode, np.int64), np.asarray(start, np.int64)))

    def state_dict(self) -> dict[str, Any]:
        """What resumes the stream: seed, rank and the next batch number (plus shape checks); with a capacity also
        the replay buffer: its episodes, oldest first, as tensors (states normalised, as held), and what they were
        computed with. torch.load(weights_only=True) reads it."""
        state: dict[str, Any] = {
            "seed": self.seed,
            "rank": self.rank,
            "next_batch": self._next_batch,
            "batch_size": self.batch_size,
            "context_len": self.context_len,
            "num_steps": self.num_steps,
        }
        if self.capacity is not None:
            states, actions, rewards, lengths = (torch.from_numpy(a) for a in self._core.episodes())
            state["capacity"] = self.capacity
            state["buffer"] = {
                "states": states,
                "actions": actions,
                "rewards": rewards,
                "lengths": lengths,
                "state_mean": torch.from_numpy(self.state_mean.copy()),
                "state_std": torch.from_numpy(self.state_std.copy()),
                "gamma": self.gamma,
                "scale": self.scale,
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the stream of `state` (from `state_dict`) at its next batch, and the replay buffer's episodes
        with it; batches built ahead are dropped.

        Raises:
            ValueError: `state` was written by a sampler of another batch size, context length, dataset, capacity,
                gamma or scale; nothing changes.
        """
        for key in ("batch_size", "context_len", "num_steps"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}: the stream would differ"
                )
        if state.get("capacity") != self.capacity:
            raise ValueError(
                f"sampler state has capacity={state.get('capacity')} but this sampler has capacity={self.capacity}"
            )
        core = self._core
        if self.capacity is not None:
            buffer = state["buffer"]
            for key, ours in (("state_mean", self.state_mean), ("state_std", self.state_std)):
                if not np.array_equal(_numpy(buffer[key]), ours):
                    raise ValueError(
                        f"sampler state's buffer was normalised with another {key} than this "
                        f"sampler's (a different offline dataset)"
                    )
            for key in ("gamma", "scale"):
                if buffer[key] != getattr(self, key):
                    raise ValueError(
                        f"sampler state's buffer has {key}={buffer[key]} but this sampler has "
                        f"{key}={getattr(self, key)}: its returns-to-go would differ"
                    )
            core = core.restored(*(_numpy(buffer[k]) for k in ("states", "actions", "rewards", "lengths")))
        self.close()
        self._core = core
        self.seed, self.rank, self._next_batch = int(state["seed"]), int(state["rank"]), int(state["next_batch"])

    def close(self) -> None:
        """Stop and join the prefetch threads (sampling again restarts them where the stream stands)."""
        self._prefetcher = None

    def __repr__(self) -> str:
        buffer = (
            ""
            if self.capacity is None
            else (f"capacity={self.capacity}, held_episodes={self.held_episodes}, held_steps={self.held_steps}, ")
        )
        return (
            f"TrajectorySampler(steps={self.num_steps}, {buffer}context_len={self.context_len}, "
            f"batch_size={self.batch_size}, scale={self.scale}, gamma={self.gamma}, "
            f"max_ep_len={self.max_ep_len}, seed={self.seed}, rank={self.rank}, "
            f"num_threads={self.num_threads}, next_batch={self._next_batch})"
        )

    def _to_torch(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numpy batch to torch tensors (zero-copy on CPU) on the sampler's device."""
        batch = {k: torch.from_numpy(arrays[k]) for k in BATCH_KEYS}
        if self.device.type != "cpu":
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch


def _numpy(x: Any) -> np.ndarray:
    """A state-dict entry (a tensor on any device, or an array) as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
