"""Training-window sampling workloads: synthetic D4RL-like datasets in dt_fast's and the blog's layouts, timing.

Used by the suite (dt_fast/bench/suite.py) and by benchmarks/bench_sampler.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from dt_fast import Trajectories

if TYPE_CHECKING:
    import datasets


STATE_DIM, ACT_DIM, BATCH_SIZE, CONTEXT_LEN = 17, 6, 64, 20


def synthetic(lengths: np.ndarray, seed: int, state_dim: int = STATE_DIM, act_dim: int = ACT_DIM) -> Trajectories:
    """Random float32 episodes of the given lengths (normal states, uniform actions in [-1, 1])."""
    rng = np.random.default_rng(seed)
    n = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Trajectories(
        rng.standard_normal((n, state_dim), dtype=np.float32),
        rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rng.standard_normal(n, dtype=np.float32),
        offsets=offsets,
    )


def as_rows(t: Trajectories) -> list[dict]:
    """One dict of Python lists per trajectory: the HF row layout (observations, actions, rewards, dones)."""
    return [
        {
            "observations": ep["observations"].tolist(),
            "actions": ep["actions"].tolist(),
            "rewards": ep["rewards"].tolist(),
            "dones": ep["terminals"].tolist(),
        }
        for ep in (t.episode(i) for i in range(t.num_episodes))
    ]


def as_hf_dataset(t: Trajectories) -> datasets.Dataset:
    """A datasets.Dataset with list<list<float32>> columns, one row per trajectory, built through pyarrow."""
    import datasets
    import pyarrow as pa

    outer = t.offsets.astype(np.int32)

    def nested(values: np.ndarray) -> pa.Array:
        dim = values.shape[1]
        steps = pa.ListArray.from_arrays(np.arange(0, values.size + 1, dim, dtype=np.int32), values.reshape(-1))
        return pa.ListArray.from_arrays(outer, steps)

    table = pa.table(
        {
            "observations": nested(t.observations),
            "actions": nested(t.actions),
            "rewards": pa.ListArray.from_arrays(outer, t.rewards),
            "dones": pa.ListArray.from_arrays(outer, t.terminals),
        }
    )
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def rate_and_cpu(fn: Callable[[], object], seconds: float, warmup: int) -> tuple[float, float]:
    """Calls per second of fn (wall clock) and process CPU seconds per call (all threads), after warm-up."""
    for _ in range(warmup):
        fn()
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n
