"""Online Decision Transformer benchmarks.

train      dt_fast's offline training with --policy stochastic (ODT's objective, dt_fast/odt.py) against the
           deterministic policy: optimizer steps/s of the same Trainer set-up (hidden 128, 3 layers, 1 head,
           batch 64, context 20) on the embedded Hopper dataset, the two alternating step by step in one process
           (the time to fetch a batch from the sampler excluded from both)
reference  the official ODT online loop (dt_fast/bench/reference_odt.py) on Hopper-v4 from a dt_fast stochastic
           checkpoint: env steps/s of the collection over N envs and the wall time of one online iteration
           (collection + U updates), at ODT's settings scaled to a 2-core machine
online     dt_fast's online fine-tuning (dt_fast/finetune.py: Finetuner.collect over envpool with the engine's
           sampled actions, in both engine modes, then Finetuner.update) against the official loop, side by side
           in one process from the same checkpoint at the same settings: 64 envs, one whole episode each,
           exploration return 7200 (ODT's online_rtg for Hopper), context 20, U updates of batch B. ODT runs 300
           updates of batch 256 per iteration; that is ~15 minutes per reference iteration on 2 shared cores, so
           the defaults scale it to 30 updates of batch 64, the same for both sides. Each round runs one
           iteration of every side, the order alternating between rounds; it reports the collection's env
           steps/s and the iteration's wall time per side and their median ratios over the rounds, beside
           envpool's own rate with random actions (the bound of any collector on envpool). torch
           runs on 1 thread on both sides by default (--threads): on a loaded 2-core machine torch's second
           thread waits for a core at every op, which makes the reference's small forwards ~25x slower.

  python -m benchmarks.bench_odt train [--steps 40] [--rounds 3]
  python -m benchmarks.bench_odt reference --checkpoint RUN_DIR [--envs 64] [--updates 300] [--batch 64]
      [--iterations 3] [--num-workers 0]
  python -m benchmarks.bench_odt online [--checkpoint RUN_DIR] [--envs 64] [--updates 30] [--batch 64]
      [--rounds 3]   (without --checkpoint: `dt-fast train --policy stochastic` for 500 steps first)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from dt_fast.bench.evaluation import envpool_random
from dt_fast.bench.harness import cpu_model, print_table, save_results
from dt_fast.bench.odt import (
    BATCH,
    CONTEXT,
    ENVS,
    HIDDEN,
    LAYERS,
    MODES,
    PRETRAIN_STEPS,
    REFERENCE,
    TARGET_EXPLORE,
    UPDATES,
    ReferenceSide,
    make_checkpoint,
    online_rounds,
    online_summary,
)


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
            cfg = TrainConfig(
                dataset=DEFAULT_DATASET,
                out=str(Path(tmp) / policy),
                steps=10**6,
                batch_size=BATCH,
                context_len=CONTEXT,
                hidden_size=HIDDEN,
                n_layer=LAYERS,
                policy=policy,
            )
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
            rows.append(
                {
                    "round": r,
                    "deterministic_steps_s": rates["deterministic"],
                    "stochastic_steps_s": rates["stochastic"],
                    "stochastic_over_deterministic": rates["stochastic"] / rates["deterministic"],
                }
            )
            print(rows[-1], flush=True)
        for trainer, _ in trainers.values():
            trainer.close()
    return rows


def reference_timings(
    checkpoint: Path, envs: int, updates: int, batch: int, iterations: int, num_workers: int
) -> list[dict]:
    """The official loop's collection rate and online-iteration time, `iterations` iterations after one warm-up
    iteration, starting from `checkpoint` (ODT's eval_context_length 5)."""
    side = ReferenceSide(checkpoint, envs, batch, eval_context_length=5, num_workers=num_workers)
    rows = []
    try:
        for i in range(iterations + 1):
            t = side.iteration(updates)
            row = {
                "iteration": i,
                "warm_up": i == 0,
                **t,
                "env_steps_per_s": t["env_steps"] / t["collect_s"],
                "transitions_per_s": t["transitions"] / t["collect_s"],
                "updates_per_s": updates / t["train_s"],
            }
            rows.append(row)
            print(row, flush=True)
    finally:
        side.close()
    return rows


def online_main(checkpoint: Path | None, envs: int, updates: int, batch: int, rounds: int, threads: int) -> Path:
    """The `online` bench on `threads` torch threads: rounds, table, medians, results/odt_online.json (with the
    settings in the name when they are not the defaults)."""
    import os

    import torch

    from dt_fast.checkpoint import read_metadata

    torch.set_num_threads(threads)
    source = str(checkpoint) if checkpoint else f"{PRETRAIN_STEPS} steps of `dt-fast train --policy stochastic`"
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            checkpoint = make_checkpoint(Path(tmp) / "pretrained")
        context = read_metadata(checkpoint).context_len
        load = os.getloadavg()
        bound = [envpool_random(envs, 300, seed=0)]
        rows = online_rounds(checkpoint, envs, updates, batch, rounds)
        bound.append(envpool_random(envs, 300, seed=0))
    print_table(
        rows,
        [
            "round",
            "side",
            "transitions",
            "env_steps",
            "collect_s",
            "env_steps_per_s",
            "train_s",
            "updates_per_s",
            "total_s",
        ],
    )
    summary = online_summary(rows)
    print(
        f"Hopper-v4, {envs} envs (one episode each, exploration return {TARGET_EXPLORE:g}), {updates} updates of "
        f"batch {batch} per iteration, context {context} (ODT: 300 updates of batch 256, scaled to this machine "
        f"alike for both sides); {threads} torch thread(s), the engine's default (every hardware thread); "
        f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {cpu_model()}; medians over "
        f"{rounds} rounds:"
    )
    for mode in MODES:
        s = summary[f"dt_fast {mode}"]
        print(
            f"  dt_fast {mode:7s}: collection {s['env_steps_per_s']:,.0f} env steps/s = "
            f"{s['collection_x_reference']:.1f}x the reference's; iteration {s['total_s']:.2f} s "
            f"(collect {s['collect_s']:.2f} + updates {s['train_s']:.2f}) = {s['iteration_x_reference']:.1f}x "
            f"faster; update phase {s['updates_x_reference']:.1f}x faster"
        )
    ref = summary[REFERENCE]
    print(
        f"  reference      : collection {ref['env_steps_per_s']:,.0f} env steps/s; iteration {ref['total_s']:.2f} s "
        f"(collect {ref['collect_s']:.2f} + updates {ref['train_s']:.2f})"
    )
    print(
        f"  bound          : envpool stepping {envs} envs with random actions, {max(bound):,.0f} env steps/s (the "
        f"faster of before and after the rounds) = {max(bound) / ref['env_steps_per_s']:.1f}x the reference's "
        f"collection"
    )
    default = (envs, updates, batch) == (ENVS, UPDATES, BATCH)
    name = "odt_online" if default else f"odt_online_{envs}envs_{updates}x{batch}"
    return save_results(
        name,
        rows,
        {
            "env": "Hopper-v4",
            "envs": envs,
            "updates": updates,
            "batch": batch,
            "context": context,
            "target_explore": TARGET_EXPLORE,
            "rounds": rounds,
            "load_average_start": load,
            "load_average_end": os.getloadavg(),
            "checkpoint": source,
            "envpool_random_env_steps_per_s": bound,
            "summary": summary,
        },
        directory=RESULTS_DIR,
    )


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
    online = sub.add_parser("online")
    online.add_argument(
        "--checkpoint",
        type=Path,
        help="a dt_fast stochastic checkpoint directory (default: "
        f"`dt-fast train --policy stochastic --steps {PRETRAIN_STEPS}` into a temporary one)",
    )
    online.add_argument("--envs", type=int, default=ENVS)
    online.add_argument("--updates", type=int, default=UPDATES)
    online.add_argument("--batch", type=int, default=BATCH)
    online.add_argument("--rounds", type=int, default=3)
    online.add_argument("--threads", type=int, default=1, help="torch threads of both sides (default: 1)")
    args = parser.parse_args()
    if args.bench == "online":
        path = online_main(args.checkpoint, args.envs, args.updates, args.batch, args.rounds, args.threads)
        print(f"wrote {path}")
        return
    if args.bench == "train":
        rows = train_rates(args.steps, args.rounds)
        print_table(rows, list(rows[0]))
        ratio = statistics.median(r["stochastic_over_deterministic"] for r in rows)
        print(f"stochastic / deterministic steps/s: median {ratio:.3f} over {len(rows)} rounds")
        path = save_results(
            "odt_train",
            rows,
            {
                "batch": BATCH,
                "context": CONTEXT,
                "hidden": HIDDEN,
                "n_layer": LAYERS,
                "steps_per_round": args.steps,
                "median_ratio": ratio,
            },
            directory=RESULTS_DIR,
        )
    else:
        rows = reference_timings(
            args.checkpoint, args.envs, args.updates, args.batch, args.iterations, args.num_workers
        )
        measured = [r for r in rows if not r["warm_up"]]
        print_table(
            rows,
            [
                "iteration",
                "warm_up",
                "transitions",
                "env_steps",
                "collect_s",
                "env_steps_per_s",
                "transitions_per_s",
                "train_s",
                "updates_per_s",
                "total_s",
            ],
        )
        path = save_results(
            "odt_reference",
            rows,
            {
                "envs": args.envs,
                "updates": args.updates,
                "batch": args.batch,
                "num_workers": args.num_workers,
                "checkpoint": str(args.checkpoint),
                "median_total_s": statistics.median(r["total_s"] for r in measured),
                "median_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in measured),
            },
            directory=RESULTS_DIR,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
