"""Training-window sampling: dt_fast's C++ TrajectorySampler against the blog's collator, side by side.

The collator (benchmarks/reference.py) is fed (a) Python lists, one dict of lists per trajectory (what
`dataset.to_list()` gives), and (b) a `datasets.Dataset` in the layout of the blog's hub dataset, as in the
blog. Both datasets are synthetic with a fixed seed: D4RL-sized (1,000 episodes x 1,000 steps, HalfCheetah
sizes 17 / 6) and ragged (2,000 episodes of 50..1,000 steps). A plain memcpy (numpy copy of a 256 MiB array,
bytes copied per second) is measured in the same run; the sampler's bandwidth is the bytes of a batch over the
time per batch. The collator's statistics (computed at construction, untimed) are shared by both of its feeds.
num_threads=N means N background workers, plus the calling thread, which builds batches itself whenever the next
one is not ready; cpu_us_per_batch is the process CPU time (all threads) per batch.

    python -m benchmarks.bench_sampler            # ~1 minute
    python -m benchmarks.bench_sampler --quick    # ~40 s, shorter timing windows
"""

from __future__ import annotations

import argparse
import copy
import gc
import random
import time
from collections.abc import Callable

import numpy as np

from benchmarks.harness import memcpy_bytes_per_s, print_table, rate, save_results
from benchmarks.reference import DecisionTransformerGymDataCollator, ListDataset
from dt_fast import Trajectories, TrajectorySampler

STATE_DIM, ACT_DIM, BATCH_SIZE, CONTEXT_LEN = 17, 6, 64, 20


def synthetic(lengths: np.ndarray, seed: int) -> Trajectories:
    """Random float32 episodes of the given lengths (normal states, uniform actions in [-1, 1])."""
    rng = np.random.default_rng(seed)
    n = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Trajectories(rng.standard_normal((n, STATE_DIM), dtype=np.float32),
                        rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
                        rng.standard_normal(n, dtype=np.float32), offsets=offsets)


def as_rows(t: Trajectories) -> list[dict]:
    """One dict of Python lists per trajectory: the HF row layout (observations, actions, rewards, dones)."""
    return [{"observations": ep["observations"].tolist(), "actions": ep["actions"].tolist(),
             "rewards": ep["rewards"].tolist(), "dones": ep["terminals"].tolist()}
            for ep in (t.episode(i) for i in range(t.num_episodes))]


def as_hf_dataset(t: Trajectories) -> datasets.Dataset:
    """A datasets.Dataset with list<list<float32>> columns, one row per trajectory, built through pyarrow."""
    import datasets
    import pyarrow as pa

    outer = t.offsets.astype(np.int32)

    def nested(values: np.ndarray) -> pa.Array:
        dim = values.shape[1]
        steps = pa.ListArray.from_arrays(np.arange(0, values.size + 1, dim, dtype=np.int32), values.reshape(-1))
        return pa.ListArray.from_arrays(outer, steps)

    table = pa.table({"observations": nested(t.observations), "actions": nested(t.actions),
                      "rewards": pa.ListArray.from_arrays(outer, t.rewards),
                      "dones": pa.ListArray.from_arrays(outer, t.terminals)})
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


def main() -> None:
    """Run every case, print the table and save it to benchmarks/results/bench_sampler.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows (for the benchmark suite)")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 3.0
    features = [None] * BATCH_SIZE  # the collator samples by itself; only len(features) matters
    np.random.seed(0)
    random.seed(0)
    rng = np.random.default_rng(0)
    cases = {"d4rl 1000x1000": np.full(1000, 1000), "ragged 2000x50..1000": rng.integers(50, 1001, size=2000)}
    rows = []
    for name, lengths in cases.items():
        t = synthetic(lengths, seed=1)
        print(f"{name}: {t}", flush=True)
        collator = DecisionTransformerGymDataCollator(ListDataset(as_rows(t)), max_len=CONTEXT_LEN)
        lists_rate, lists_cpu = rate_and_cpu(lambda: collator(features), seconds, warmup=1)
        hf_collator = copy.copy(collator)  # the same statistics; only the data source differs
        hf_collator.dataset = as_hf_dataset(t)
        hf_rate = rate(lambda: hf_collator(features), min_time=seconds / 3)  # ~0.05 s per batch
        del collator, hf_collator
        gc.collect()
        copy_rate = memcpy_bytes_per_s() / 2  # bytes copied per second (the harness counts read + write)
        cases_of = [("collator, Python lists", lists_rate, lists_cpu, 0),
                    ("collator, datasets.Dataset", hf_rate, None, 0)]
        for num_threads in (1, 2):
            sampler = TrajectorySampler(t, context_len=CONTEXT_LEN, batch_size=BATCH_SIZE, num_threads=num_threads)
            nbytes = sum(v.numel() * v.element_size() for v in sampler.sample().values())
            cases_of.append((f"TrajectorySampler, num_threads={num_threads}",
                             *rate_and_cpu(sampler.sample, seconds, warmup=200), nbytes))
            sampler.close()
        for method, batches_per_s, cpu, nbytes in cases_of:
            rows.append({"dataset": name, "method": method, "batches_per_s": batches_per_s,
                         "cpu_us_per_batch": cpu * 1e6 if cpu is not None else "",
                         "vs_lists": batches_per_s / lists_rate, "vs_dataset": batches_per_s / hf_rate,
                         "GB_per_s": batches_per_s * nbytes / 1e9 if nbytes else "",
                         "of_memcpy": batches_per_s * nbytes / copy_rate if nbytes else "",
                         "batch_bytes": nbytes or ""})
        rows.append({"dataset": name, "method": "memcpy (numpy copy of 256 MiB)", "GB_per_s": copy_rate / 1e9,
                     "of_memcpy": 1.0})
    print(f"\nbatch {BATCH_SIZE} x context {CONTEXT_LEN}, state {STATE_DIM}, action {ACT_DIM}; GB/s = batch bytes "
          f"x batches/s; memcpy = bytes copied per second\n")
    print_table(rows, ["dataset", "method", "batches_per_s", "vs_lists", "vs_dataset", "GB_per_s", "of_memcpy",
                       "cpu_us_per_batch"])
    path = save_results("bench_sampler", rows, extra={"batch_size": BATCH_SIZE, "context_len": CONTEXT_LEN,
                                                      "quick": args.quick})
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
