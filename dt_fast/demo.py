"""`dt-fast demo` (what `make demo` runs): train on the embedded Hopper-v4 dataset, then evaluate the policy."""

from __future__ import annotations

import argparse
import time

from dt_fast.data import DEFAULT_DATASET, load_dataset
from dt_fast.envs import normalized_score, reference_scores
from dt_fast.train import TrainConfig, Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast demo`."""
    parser.add_argument("--out", default="runs/demo", help="run directory (checkpoint and logs)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")


def run(args: argparse.Namespace) -> int:
    """Train a few minutes on the embedded dataset, evaluate the checkpoint, print the scores."""
    from dt_fast.evaluation import evaluate

    data = load_dataset(DEFAULT_DATASET)
    print(f"dataset: {data}")
    # A short run needs a shorter warm-up and a larger step than the paper's 100k-step schedule.
    cfg = TrainConfig(out=args.out, steps=args.steps, lr=3e-4, warmup_steps=max(args.steps // 8, 1),
                      save_every=args.steps, log_every=max(args.steps // 20, 1), seed=args.seed)
    start = time.perf_counter()
    Trainer(cfg).run()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(args.out, env=data.env_id, episodes=args.episodes, num_envs=args.episodes, seed=args.seed)
    eval_s = time.perf_counter() - start
    reference = reference_scores(data.env_id)
    returns = data.episode_returns
    print(f"\n{'':<24}{'return':>10}{'normalised':>12}")
    print(f"{'dataset episodes (mean)':<24}{returns.mean():>10.1f}{normalized_score(returns.mean(), reference):>12.1f}")
    print(f"{'D4RL random policy':<24}{reference[0]:>10.1f}{0.0:>12.1f}")
    print(f"{'trained policy':<24}{result.mean:>10.1f}{result.normalized_score:>12.1f}   "
          f"(+- {result.ci95:.1f}, {args.episodes} episodes, exact mode)")
    print(f"\ntraining {train_s:.0f} s ({args.steps} steps), evaluation {eval_s:.0f} s; checkpoint: {args.out}")
    return 0
