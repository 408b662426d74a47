"""Trajectories: a dataset of episodes as flat arrays plus episode offsets, validated once on the way in."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from functools import cached_property

import numpy as np

from dt_fast.checkpoint import atomic_write

CANONICAL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class Trajectories:
    """Episodes as flat arrays; episode e is the steps offsets[e]:offsets[e + 1].

    Attributes hold observations float32 (N, state_dim), actions float32 (N, act_dim), rewards float32 (N,),
    terminals / timeouts bool (N,), offsets int64 (E + 1,) (0, ..., N; every episode non-empty), env_id, metadata
    and source. The arrays are validated once, here: every format `load_dataset` reads builds one.

    Args:
        observations: (N, state_dim) real numbers.
        actions: (N, act_dim) real numbers.
        rewards: (N,) real numbers.
        terminals: (N,) booleans or 0/1, True where an episode ends in a terminal state; None = all False.
        timeouts: (N,) booleans or 0/1, True where an episode is cut by a time limit; None = all False.
        offsets: (E + 1,) integers from 0 to N, non-decreasing: the episode boundaries; None = split after every
            terminal or timeout (a final unterminated episode is kept). Zero-length episodes are skipped with a
            warning.
        env_id: the environment the data came from, kept and saved.
        metadata: other attributes of the file (e.g. how it was collected), kept and saved.
        source: the file name that error messages start with.
        keys: canonical name -> the file's key, for error messages.
        drop_nonfinite: drop the episodes holding a NaN or inf (with a warning) instead of raising.

    Raises:
        ValueError: a wrong rank, row count or dtype, flags other than 0/1, bad offsets, a non-finite value (unless
            drop_nonfinite), or no steps at all; the message names the source, the key and the first bad index.
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray | None = None,
        timeouts: np.ndarray | None = None,
        offsets: np.ndarray | None = None,
        *,
        env_id: str | None = None,
        metadata: Mapping[str, object] | None = None,
        source: str = "<arrays>",
        keys: Mapping[str, str] | None = None,
        drop_nonfinite: bool = False,
    ) -> None:
        keys = {k: (keys or {}).get(k, k) for k in CANONICAL_KEYS}
        n = _rows(observations, "observations", 2, None, source, keys)
        _rows(actions, "actions", 2, n, source, keys)
        _rows(rewards, "rewards", 1, n, source, keys)
        terminals = np.zeros(n, bool) if terminals is None else terminals
        timeouts = np.zeros(n, bool) if timeouts is None else timeouts
        _rows(terminals, "terminals", 1, n, source, keys)
        _rows(timeouts, "timeouts", 1, n, source, keys)
        observations, actions, rewards = (
            _real(a, name, source, keys)
            for a, name in ((observations, "observations"), (actions, "actions"), (rewards, "rewards"))
        )
        terminals, timeouts = _flags(terminals, "terminals", source, keys), _flags(timeouts, "timeouts", source, keys)
        if offsets is None:
            offsets = split_episodes(terminals, timeouts)
        offsets = _check_offsets(np.asarray(offsets), n, source)
        if n == 0:
            raise ValueError(f"{source}: the dataset has no steps")
        arrays = {
            "observations": np.ascontiguousarray(observations, dtype=np.float32),  # (N, state_dim)
            "actions": np.ascontiguousarray(actions, dtype=np.float32),  # (N, act_dim)
            "rewards": np.ascontiguousarray(rewards, dtype=np.float32),  # (N,)
            "terminals": terminals,  # (N,)
            "timeouts": timeouts,  # (N,)
        }
        keep = np.diff(offsets) > 0
        if not keep.all():
            warnings.warn(
                f"{source}: skipping {int((~keep).sum())} zero-length episode(s), first at episode "
                f"{int(np.flatnonzero(~keep)[0])}",
                stacklevel=2,
            )
        keep &= _finite_episodes(arrays, offsets, source, keys, drop_nonfinite)
        if not keep.all():
            arrays, offsets = _select_episodes(arrays, offsets, keep)
        if offsets[-1] == 0:
            raise ValueError(f"{source}: the dataset has no steps left (no episodes, or every episode dropped)")
        self.observations = arrays["observations"]
        self.actions = arrays["actions"]
        self.rewards = arrays["rewards"]
        self.terminals = arrays["terminals"]
        self.timeouts = arrays["timeouts"]
        self.offsets = offsets
        self.env_id = env_id
        self.metadata = dict(metadata or {})
        self.source = source

    @property
    def num_steps(self) -> int:
        """Number of transitions N."""
        return int(self.offsets[-1])

    @property
    def num_episodes(self) -> int:
        """Number of episodes E."""
        return len(self.offsets) - 1

    @property
    def state_dim(self) -> int:
        """Size of an observation."""
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        """Size of an action."""
        return self.actions.shape[1]

    @property
    def episode_lengths(self) -> np.ndarray:
        """Steps per episode, int64 [E]."""
        return np.diff(self.offsets)

    @cached_property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, float64 [E]."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.offsets[:-1])

    @cached_property
    def state_mean(self) -> np.ndarray:
        """Per-dimension mean of all observations, float64 [state_dim] (as the blog's collator computes it)."""
        return np.mean(self.observations.astype(np.float64), axis=0)

    @cached_property
    def state_std(self) -> np.ndarray:
        """Per-dimension std of all observations + 1e-6, float64 [state_dim] (as the blog's collator)."""
        return np.std(self.observations.astype(np.float64), axis=0) + 1e-6

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of episode `index` (negative counts from the end), as views keyed like the D4RL file.

        Raises:
            IndexError: `index` is outside [-num_episodes, num_episodes).
        """
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range for {self.num_episodes} episodes")
        start, end = self.offsets[index], self.offsets[index + 1]
        return {k: getattr(self, k)[start:end] for k in CANONICAL_KEYS}

    def __repr__(self) -> str:
        returns = self.episode_returns
        env = f", env_id={self.env_id!r}" if self.env_id else ""
        return (
            f"Trajectories(episodes={self.num_episodes}, transitions={self.num_steps}, "
            f"state_dim={self.state_dim}, act_dim={self.act_dim}, "
            f"return=[{returns.min():.4g}, {returns.max():.4g}]{env})"
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the D4RL HDF5 layout to `path` atomically (the old file stays whole if the write fails); every
        episode end gets a terminal or timeout so that `load_dataset(path)` gives the same episodes back.

        Raises:
            OSError: `path` cannot be written; nothing is left behind.
        """
        import h5py

        timeouts = self.timeouts.copy()
        ends = self.offsets[1:] - 1
        timeouts[ends] |= ~self.terminals[ends]
        with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("observations", data=self.observations)
            f.create_dataset("actions", data=self.actions)
            f.create_dataset("rewards", data=self.rewards)
            f.create_dataset("terminals", data=self.terminals)
            f.create_dataset("timeouts", data=timeouts)
            f.attrs.update(self.metadata)
            if self.env_id:
                f.attrs["env_id"] = self.env_id


def split_episodes(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Episode offsets [E + 1] splitting after every terminal or timeout; a final unterminated episode is kept."""
    ends = np.flatnonzero(terminals | timeouts) + 1  # one past each episode's last step
    n = len(terminals)
    return np.concatenate([[0], ends[ends < n], [n]]).astype(np.int64)


def _rows(a: np.ndarray, name: str, ndim: int, n: int | None, source: str, keys: Mapping[str, str]) -> int:
    """Check the rank of one array and its row count against n; returns its row count."""
    shape = np.shape(a)
    if len(shape) != ndim:
        layout = "[N]" if ndim == 1 else "[N, dim]"
        raise ValueError(f"{source}: key {keys[name]!r} must have rank {ndim} {layout}, got shape {shape}")
    if n is not None and shape[0] != n:
        raise ValueError(
            f"{source}: key {keys[name]!r} has {shape[0]} rows but key {keys['observations']!r} "
            f"has {n}: every key must have one row per step"
        )
    if ndim == 2 and shape[1] < 1:
        raise ValueError(f"{source}: key {keys[name]!r} has zero columns (shape {shape})")
    return shape[0]


def _real(a: np.ndarray, name: str, source: str, keys: Mapping[str, str]) -> np.ndarray:
    """`a` as an array of real numbers (bool, integer or float); ValueError naming the key for strings, complex
    numbers or other objects."""
    a = np.asarray(a)
    if a.dtype.kind in "biuf":
        return a
    if a.dtype.kind == "O":
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError):
            pass
    what = {"U": "strings", "S": "byte strings", "c": "complex numbers", "O": "non-numeric objects"}
    raise ValueError(
        f"{source}: key {keys[name]!r} holds {what.get(a.dtype.kind, 'non-numeric values')} (dtype "
        f"{a.dtype}); expected real numbers"
    )


def _flags(a: np.ndarray, name: str, source: str, keys: Mapping[str, str]) -> np.ndarray:
    """`a` as bool [N]; ValueError naming the key and the first bad index unless every value is boolean or 0/1."""
    a = np.asarray(a)
    if a.dtype.kind == "b":
        return a
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{source}: key {keys[name]!r} must hold booleans or 0/1, got dtype {a.dtype}")
    bad = np.flatnonzero((a != 0) & (a != 1))
    if len(bad):
        raise ValueError(
            f"{source}: key {keys[name]!r} must hold booleans or 0/1, got {a[bad[0]].item()!r} at index [{int(bad[0])}]"
        )
    return a.astype(bool)


def _check_offsets(offsets: np.ndarray, n: int, source: str) -> np.ndarray:
    """Validate episode offsets: 1-D integers from 0 to n, non-decreasing."""
    if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"{source}: episode offsets must be a 1-D integer array, got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != n:
        raise ValueError(f"{source}: episode offsets must run from 0 to {n}, got {offsets[0]} to {offsets[-1]}")
    bad = np.flatnonzero(np.diff(offsets) < 0)
    if len(bad):
        raise ValueError(f"{source}: episode offsets decrease at index {int(bad[0]) + 1}")
    return offsets.astype(np.int64)


def _finite_episodes(
    arrays: dict[str, np.ndarray], offsets: np.ndarray, source: str, keys: Mapping[str, str], drop_nonfinite: bool
) -> np.ndarray:
    """Mask [E] of episodes free of NaN/inf; raises on the first bad value unless drop_nonfinite."""
    ok = np.ones(len(offsets) - 1, bool)
    for name in ("observations", "actions", "rewards"):
        a = arrays[name]
        bad_rows = ~np.isfinite(a).reshape(len(a), -1).all(axis=1)  # (N,)
        if not bad_rows.any():
            continue
        if not drop_nonfinite:
            row = int(np.flatnonzero(bad_rows)[0])
            episode = int(np.searchsorted(offsets, row, side="right")) - 1
            index = f"[{row}]" if a.ndim == 1 else f"[{row}, {int(np.flatnonzero(~np.isfinite(a[row]))[0])}]"
            raise ValueError(
                f"{source}: key {keys[name]!r} has a non-finite value at index {index} (episode "
                f"{episode}, step {row - offsets[episode]}); pass drop_nonfinite=True to drop the "
                f"affected episodes"
            )
        episode_of_row = np.repeat(np.arange(len(ok)), np.diff(offsets))  # (N,)
        ok[episode_of_row[bad_rows]] = False
    dropped = int((~ok & (np.diff(offsets) > 0)).sum())
    if dropped:
        warnings.warn(f"{source}: dropping {dropped} episode(s) with NaN or inf values", stacklevel=3)
    return ok


def _select_episodes(
    arrays: dict[str, np.ndarray], offsets: np.ndarray, keep: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keep the episodes where keep [E] is True."""
    lengths = np.diff(offsets)[keep]
    rows = np.repeat(keep, np.diff(offsets))  # (N,) True for the steps of kept episodes
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return {k: v[rows] for k, v in arrays.items()}, new_offsets
