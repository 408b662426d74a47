"""Online Decision Transformer benchmarks.

  train      dt_fast's offline training with --policy stochastic (ODT's objective, dt_fast/odt.py) against the
             deterministic policy: optimizer steps/s of the same Trainer set-up (hidden 128, 3 layers, 1 head,
             batch 64, context 20) on the embedded Hopper dataset, the two alternating step by step in one process
             (the time to fetch a batch from the sampler excluded from both)
  reference  the official ODT online loop (benchmarks/reference_odt.py) on Hopper-v4 from a dt_fast stochastic
             checkpoint: env steps/s of the collection over N envs and the wall time of one online iteration
             (collection + U updates), at ODT's settings scaled to a 2-core machine

    python -m benchmarks.bench_odt train [--steps 40] [--rounds 3]
    python -m benchmarks.bench_odt reference --checkpoint RUN_DIR [--envs 64] [--updates 300] [--batch 64]
        [--iterations 3] [--num-workers 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR
from dt_fast.bench.harness import print_table, save_results

BATCH, CONTEXT, HIDDEN, LAYERS = 64, 20, 128, 3


def dataset_trajectories(path: str) -> list[dict]:
    """A dataset file (any format of dt_fast.load_dataset) as the trajectory dicts of ODT's pickles."""
    from dt_fast import load_dataset

    data = load_dataset(path)
    out = []
    for i in range(data.num_episodes):
        episode = data.episode(i)
        out.append({key: np.asarray(episode[key], dtype=np.float64 if key != "terminals" else np.float32)
                    for key in ("observations", "actions", "rewards", "terminals")})
    return out


def train_rates(steps: int, rounds: int) -> list[dict]:
    """Steps/s of dt_fast's Trainer with each policy over `rounds` rounds of `steps` steps each; the two trainers
    alternate step by step (so the load of a shared machine falls on both alike) and a round's rate is one over
    its median step time."""
    from dt_fast.data import DEFAULT_DATASET
    from dt_fast.train import TrainConfig, Trainer

    policies = ("deterministic", "stochastic")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for policy in policies:
            cfg = TrainConfig(dataset=DEFAULT_DATASET, out=str(Path(tmp) / policy), steps=10**6, batch_size=BATCH,
                              context_len=CONTEXT, hidden_size=HIDDEN, n_layer=LAYERS, policy=policy)
            trainer = Trainer(cfg)
            trainers[policy] = (trainer, iter(trainer.sampler))
            for _ in range(3):  # warm-up
                trainer.train_step(next(trainers[policy][1]))
        for r in range(rounds):
            times: dict[str, list[float]] = {policy: [] for policy in policies}
            for i in range(2 * steps):
                policy = policies[(i + r) % 2]
                trainer, batches = trainers[policy]
                batch = next(batches)
                start = time.perf_counter()
                trainer.train_step(batch)
                times[policy].append(time.perf_counter() - start)
            rates = {policy: 1.0 / statistics.median(t) for policy, t in times.items()}
            rows.append({"round": r, "deterministic_steps_s": rates["deterministic"],
                         "stochastic_steps_s": rates["stochastic"],
                         "stochastic_over_deterministic": rates["stochastic"] / rates["deterministic"]})
            print(rows[-1], flush=True)
        for trainer, _ in trainers.values():
            trainer.close()
    return rows


def reference_timings(checkpoint: Path, envs: int, updates: int, batch: int, iterations: int,
                      num_workers: int) -> list[dict]:
    """The official loop's collection rate and online-iteration time, `iterations` iterations after one warm-up
    iteration, starting from `checkpoint`."""
    import transformers

    from benchmarks.reference_odt import Experiment, time_online_iteration
    from dt_fast.checkpoint import read_metadata

    transformers.logging.set_verbosity_error()
    meta = read_metadata(checkpoint)
    trajectories = dataset_trajectories(meta.dataset["path"])
    exp = Experiment(trajectories, meta.env_id or "Hopper-v4", num_envs=envs, K=meta.context_len, batch_size=batch,
                     checkpoint=checkpoint, num_workers=num_workers)
    rows = []
    try:
        for i in range(iterations + 1):
            t = time_online_iteration(exp, updates)
            row = {"iteration": i, "warm_up": i == 0, **t, "env_steps_per_s": t["env_steps"] / t["collect_s"],
                   "transitions_per_s": t["transitions"] / t["collect_s"], "updates_per_s": updates / t["train_s"]}
            rows.append(row)
            print(row, flush=True)
    finally:
        exp.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    train = sub.add_parser("train")
    train.add_argument("--steps", type=int, default=40)
    train.add_argument("--rounds", type=int, default=3)
    ref = sub.add_parser("reference")
    ref.add_argument("--checkpoint", type=Path, required=True, help="a dt_fast stochastic checkpoint directory")
    ref.add_argument("--envs", type=int, default=64)
    ref.add_argument("--updates", type=int, default=300)
    ref.add_argument("--batch", type=int, default=BATCH)
    ref.add_argument("--iterations", type=int, default=3)
    ref.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    if args.bench == "train":
        rows = train_rates(args.steps, args.rounds)
        print_table(rows, list(rows[0]))
        ratio = statistics.median(r["stochastic_over_deterministic"] for r in rows)
        print(f"stochastic / deterministic steps/s: median {ratio:.3f} over {len(rows)} rounds")
        path = save_results("odt_train", rows, {"batch": BATCH, "context": CONTEXT, "hidden": HIDDEN,
                                                "n_layer": LAYERS, "steps_per_round": args.steps,
                                                "median_ratio": ratio}, directory=RESULTS_DIR)
    else:
        rows = reference_timings(args.checkpoint, args.envs, args.updates, args.batch, args.iterations,
                                 args.num_workers)
        measured = [r for r in rows if not r["warm_up"]]
        print_table(rows, ["iteration", "warm_up", "transitions", "env_steps", "collect_s", "env_steps_per_s",
                           "transitions_per_s", "train_s", "updates_per_s", "total_s"])
        path = save_results("odt_reference", rows, {
            "envs": args.envs, "updates": args.updates, "batch": args.batch, "num_workers": args.num_workers,
            "checkpoint": str(args.checkpoint), "median_total_s": statistics.median(r["total_s"] for r in measured),
            "median_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in measured)},
            directory=RESULTS_DIR)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
