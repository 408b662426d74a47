"""`dt-fast demo` (what `make demo` runs): train on the embedded Hopper-v4 dataset, then evaluate the policy."""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from dt_fast import checkpoint
from dt_fast.config import parse_setting
from dt_fast.envs import normalized_score, reference_scores
from dt_fast.train import TrainConfig, Trainer

DEMO_DIR = "runs/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast demo`."""
    parser.add_argument("--out", default=None,
                        help=f"run directory (checkpoint and logs); default: {DEMO_DIR}, or {DEMO_DIR}-2, -3, ... "
                             f"if it already holds a run")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into an --out that already holds a run (its run files are deleted first)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")


def free_run_dir(base: str) -> Path:
    """`base`, or the first of base-2, base-3, ... that holds no dt_fast run."""
    names = itertools.chain([base], (f"{base}-{i}" for i in itertools.count(2)))
    return Path(next(name for name in names if not checkpoint.run_files(name)))


def run(args: argparse.Namespace) -> int:
    """Train a few minutes on the embedded dataset, evaluate the checkpoint, print the scores."""
    from dt_fast.evaluation import evaluate

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    steps, seed = (parse_setting(TrainConfig, name, getattr(args, name), f"--{name}") for name in ("steps", "seed"))
    out = Path(args.out) if args.out is not None else free_run_dir(DEMO_DIR)
    if checkpoint.run_files(out) and not args.overwrite:
        raise FileExistsError(f"--out {out} already holds a dt_fast run: pass --overwrite to start over, or another "
                              f"--out")
    # A short run learns faster with a larger step than the paper's 1e-4, after a warm-up of an eighth of the run.
    cfg = TrainConfig(out=str(out), steps=steps, lr=3e-4, warmup_steps=max(steps // 8, 1),
                      log_every=max(steps // 20, 1), seed=seed)
    trainer = Trainer(cfg, overwrite=args.overwrite)
    data = trainer.data
    print(f"dataset: {data}")
    start = time.perf_counter()
    trainer.run()
    trainer.close()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(str(out), env=data.env_id, episodes=args.episodes, seed=seed)
    eval_s = time.perf_counter() - start
    reference = reference_scores(data.env_id)
    returns = data.episode_returns
    print(f"\n{'':<24}{'return':>10}{'normalised':>12}")
    print(f"{'dataset episodes (mean)':<24}{returns.mean():>10.1f}{normalized_score(returns.mean(), reference):>12.1f}")
    print(f"{'D4RL random policy':<24}{reference[0]:>10.1f}{0.0:>12.1f}")
    print(f"{'trained policy':<24}{result.mean:>10.1f}{result.normalized_score:>12.1f}   "
          f"(+- {result.ci95:.1f}, {args.episodes} episodes, exact mode)")
    print(f"\ntraining {train_s:.0f} s ({steps} steps), evaluation {eval_s:.0f} s; checkpoint: {out}")
    return 0
