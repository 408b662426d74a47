"""Training-window sampling: dt_fast's C++ TrajectorySampler against the blog's collator, side by side.

The collator (dt_fast/bench/reference.py) is fed (a) Python lists, one dict of lists per trajectory (what
`dataset.to_list()` gives), and (b) a `datasets.Dataset` in the layout of the blog's hub dataset, as in the blog.
Both datasets are synthetic with a fixed seed: D4RL-sized (1,000 episodes x 1,000 steps, HalfCheetah sizes 17 / 6)
and ragged (2,000 episodes of 50..1,000 steps). A plain memcpy (the fastest numpy copy of a 64 MiB array, bytes read
+ written per second) is measured in the same run; the sampler's bandwidth is the bytes of a batch over the time per
batch, and of_memcpy its share of the copy's traffic: the windows are read from a dataset larger than the caches
into a batch that stays in cache. The collator's statistics (computed at construction, untimed) are shared by both
of its feeds. num_threads=N means N background workers, plus the calling thread, which builds batches itself
whenever the next one is not ready; cpu_us_per_batch is the process CPU time (all threads) per batch.

Replay buffer (ODT's online loop appends the episodes of each rollout): TrajectorySampler.add_episodes of 64
Hopper-sized episodes (1,000 steps each, state 11, action 3) into a full buffer of 1,000 such episodes (64 evicted),
against rebuilding a sampler over the 1,000 episodes held afterwards from scratch: from Python (concatenate the
arrays, Trajectories, TrajectorySampler), and the C++ core alone from arrays already concatenated. The bound of an
append is copying its episodes once (read the new arrays, write the buffer's) at the memcpy rate.

    python -m benchmarks.bench_sampler            # ~1 minute
    python -m benchmarks.bench_sampler --quick    # ~40 s, shorter timing windows
    python -m benchmarks.bench_sampler --buffer   # the replay-buffer rows alone, printed (~30 s)
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import random
import time
from collections.abc import Callable

import numpy as np

from benchmarks import RESULTS_DIR
from dt_fast import Trajectories, TrajectorySampler
from dt_fast.bench.harness import memcpy_bytes_per_s, print_table, rate, save_results
from dt_fast.bench.reference import DecisionTransformerGymDataCollator, ListDataset
from dt_fast.bench.sampler import (
    ACT_DIM,
    BATCH_SIZE,
    CONTEXT_LEN,
    STATE_DIM,
    as_hf_dataset,
    as_rows,
    rate_and_cpu,
    synthetic,
)

HOPPER = (11, 3)  # state and action sizes of the replay-buffer rows


def median_seconds(fn: Callable[[], object], calls: int, warmup: int = 2) -> float:
    """Median wall time of `calls` calls of fn, after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def replay_buffer_rows(calls: int) -> list[dict]:
    """add_episodes of 64 Hopper-sized episodes into a full buffer of 1,000 against rebuilding a sampler."""
    from dt_fast import _C

    offline = synthetic(np.full(1000, 1000), seed=2, state_dim=HOPPER[0], act_dim=HOPPER[1])
    new = synthetic(np.full(64, 1000), seed=3, state_dim=HOPPER[0], act_dim=HOPPER[1])
    options = dict(context_len=CONTEXT_LEN, batch_size=BATCH_SIZE)
    buffer = TrajectorySampler(offline, capacity=1000, **options)
    append = median_seconds(
        lambda: buffer.add_episodes(new.observations, new.actions, new.rewards, new.episode_lengths), calls
    )
    assert buffer.held_episodes == 1000
    kept = slice(64 * 1000, None)  # the buffer's 936 oldest episodes stay, then the 64 new ones

    def rebuild() -> TrajectorySampler:
        t = Trajectories(
            np.concatenate([offline.observations[kept], new.observations]),
            np.concatenate([offline.actions[kept], new.actions]),
            np.concatenate([offline.rewards[kept], new.rewards]),
            offsets=offline.offsets,
        )
        return TrajectorySampler(t, capacity=1000, **options)

    arrays = [
        np.concatenate([getattr(offline, k)[kept], getattr(new, k)]) for k in ("observations", "actions", "rewards")
    ]
    mean, std = offline.state_mean, offline.state_std
    core = median_seconds(
        lambda: _C.SamplerCore(*arrays, offline.offsets, mean, std, CONTEXT_LEN, BATCH_SIZE, 1000.0, 1.0, 1000, 1000),
        calls,
    )
    python = median_seconds(rebuild, max(3, calls // 4), warmup=1)
    new_bytes = new.num_steps * 4 * (HOPPER[0] + HOPPER[1] + 1)  # float32 observations, actions, rewards
    copy_s = 2 * new_bytes / memcpy_bytes_per_s()  # read them, write the buffer's copy (returns-to-go not counted)
    name = "buffer 1000x1000 Hopper, +64 episodes"
    return [
        {
            "dataset": name,
            "method": method,
            "ms_per_call": t * 1e3,
            "vs_append": t / append,
            "of_memcpy": copy_s / t if method.startswith("add") else "",
        }
        for method, t in (
            ("add_episodes (64 appended, 64 evicted)", append),
            ("rebuild: concatenate + Trajectories + TrajectorySampler", python),
            ("rebuild: C++ core from concatenated arrays", core),
        )
    ]


def main() -> None:
    """Run every case, print the table and save it to benchmarks/results/bench_sampler.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows (for the benchmark suite)")
    parser.add_argument("--buffer", action="store_true", help="only the replay-buffer rows")
    args = parser.parse_args()
    buffer_rows = replay_buffer_rows(calls=5 if args.quick else 15)
    print_table(buffer_rows, ["dataset", "method", "ms_per_call", "vs_append", "of_memcpy"])
    if args.buffer:  # printed only: results/bench_sampler.json keeps the full run's rows
        return
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
        lists_rate, lists_cpu = rate_and_cpu(functools.partial(collator, features), seconds, warmup=1)
        hf_collator = copy.copy(collator)  # the same statistics; only the data source differs
        hf_collator.dataset = as_hf_dataset(t)
        hf_rate = rate(functools.partial(hf_collator, features), min_time=seconds / 3)  # ~0.05 s per batch
        del collator, hf_collator
        gc.collect()
        copy_rate = memcpy_bytes_per_s()  # memory traffic of a copy (read + write): the batch's windows are read
        # from a dataset larger than the caches into a batch that stays in cache
        cases_of = [
            ("collator, Python lists", lists_rate, lists_cpu, 0),
            ("collator, datasets.Dataset", hf_rate, None, 0),
        ]
        for num_threads in (1, 2):
            sampler = TrajectorySampler(t, context_len=CONTEXT_LEN, batch_size=BATCH_SIZE, num_threads=num_threads)
            nbytes = sum(v.numel() * v.element_size() for v in sampler.sample().values())
            cases_of.append(
                (
                    f"TrajectorySampler, num_threads={num_threads}",
                    *rate_and_cpu(sampler.sample, seconds, warmup=200),
                    nbytes,
                )
            )
            sampler.close()
        for method, batches_per_s, cpu, nbytes in cases_of:
            rows.append(
                {
                    "dataset": name,
                    "method": method,
                    "batches_per_s": batches_per_s,
                    "cpu_us_per_batch": cpu * 1e6 if cpu is not None else "",
                    "vs_lists": batches_per_s / lists_rate,
                    "vs_dataset": batches_per_s / hf_rate,
                    "GB_per_s": batches_per_s * nbytes / 1e9 if nbytes else "",
                    "of_memcpy": batches_per_s * nbytes / copy_rate if nbytes else "",
                    "batch_bytes": nbytes or "",
                }
            )
        rows.append(
            {
                "dataset": name,
                "method": "memcpy traffic (numpy copy of 64 MiB, read + write)",
                "GB_per_s": copy_rate / 1e9,
                "of_memcpy": 1.0,
            }
        )
    print(
        f"\nbatch {BATCH_SIZE} x context {CONTEXT_LEN}, state {STATE_DIM}, action {ACT_DIM}; GB/s = batch bytes "
        f"x batches/s; memcpy = bytes read + written per second by a copy\n"
    )
    print_table(
        rows,
        ["dataset", "method", "batches_per_s", "vs_lists", "vs_dataset", "GB_per_s", "of_memcpy", "cpu_us_per_batch"],
    )
    print()
    print_table(buffer_rows, ["dataset", "method", "ms_per_call", "vs_append", "of_memcpy"])
    rows += buffer_rows
    path = save_results(
        "bench_sampler",
        rows,
        extra={"batch_size": BATCH_SIZE, "context_len": CONTEXT_LEN, "quick": args.quick},
        directory=RESULTS_DIR,
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
