"""`dt-fast demo` (what `make demo` runs): train on the embedded Hopper-v4 dataset, then evaluate the policy;
`dt-fast demo --online` then fine-tunes that checkpoint online (dt_fast/finetune.py) and compares the two."""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

from dt_fast import checkpoint
from dt_fast.config import parse_setting
from dt_fast.envs import normalized_score, reference_scores
from dt_fast.train import TrainConfig, Trainer

DEMO_DIR = "runs/demo"
ONLINE_DIR = "runs/demo-online"
ONLINE_STEPS = 15_000
ONLINE_EVAL_EVERY = 2  # iterations between evaluations of the learning curve
"""The default budget of `demo --online` in collected transitions (see README "Online fine-tuning" for its time)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast demo`."""
    parser.add_argument(
        "--out",
        default=None,
        help=f"run directory (checkpoint and logs); default: {DEMO_DIR}, or {DEMO_DIR}-2, -3, ... "
        f"if it already holds a run",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an --out that already holds a run (its run files are deleted first)",
    )
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    parser.add_argument(
        "--online",
        action="store_true",
        help="then fine-tune the checkpoint online (Online Decision Transformer) and print the "
        "normalised score before and after over --online-episodes episodes each",
    )
    parser.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="RUN_DIR",
        help=f"with --online: the checkpoint to fine-tune (default: {DEMO_DIR} if it holds one, "
        f"else one trained first as `dt-fast demo` trains it)",
    )
    parser.add_argument("--online-steps", type=int, default=ONLINE_STEPS, help="with --online: transitions to collect")
    parser.add_argument(
        "--online-episodes",
        type=int,
        default=100,
        help="with --online: evaluation episodes before, during and after fine-tuning",
    )


def free_run_dir(base: str) -> Path:
    """`base`, or the first of base-2, base-3, ... that holds no dt_fast run."""
    names = itertools.chain([base], (f"{base}-{i}" for i in itertools.count(2)))
    return Path(next(name for name in names if not checkpoint.run_files(name)))


def run(args: argparse.Namespace) -> int:
    """Train a few minutes on the embedded dataset, evaluate the checkpoint, print the scores; with --online,
    fine-tune it online and print the scores before and after."""
    if args.online:
        return run_online(args)
    if args.start is not None:
        raise ValueError("--from goes with --online (the checkpoint to fine-tune)")
    return run_offline(args)


def run_offline(args: argparse.Namespace, out: Path | None = None) -> int:
    """`dt-fast demo`: train into `out` (default: --out, else a free runs/demo), evaluate, print."""
    from dt_fast.evaluation import evaluate

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    steps, seed = (parse_setting(TrainConfig, name, getattr(args, name), f"--{name}") for name in ("steps", "seed"))
    out = out or (Path(args.out) if args.out is not None else free_run_dir(DEMO_DIR))
    if checkpoint.run_files(out) and not args.overwrite:
        raise FileExistsError(
            f"--out {out} already holds a dt_fast run: pass --overwrite to start over, or another --out"
        )
    # A short run learns faster with a larger step than the paper's 1e-4, after a warm-up of an eighth of the run.
    cfg = TrainConfig(
        out=str(out), steps=steps, lr=3e-4, warmup_steps=max(steps // 8, 1), log_every=max(steps // 20, 1), seed=seed
    )
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
    print(
        f"{'trained policy':<24}{result.mean:>10.1f}{result.normalized_score:>12.1f}   "
        f"(+- {result.ci95:.1f}, {args.episodes} episodes, exact mode)"
    )
    print(f"\ntraining {train_s:.0f} s ({steps} steps), evaluation {eval_s:.0f} s; checkpoint: {out}")
    return 0


def run_online(args: argparse.Namespace) -> int:
    """`dt-fast demo --online`: the offline demo (unless --from), then fine-tuning with evaluations of
    --online-episodes episodes before, every few iterations and after; prints the two scores, their difference
    with its 95% interval, and writes the learning curve next to the run."""
    from dt_fast.finetune import FinetuneConfig, Finetuner, plot_learning_curve

    for name in ("online_steps", "online_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out) if args.out is not None else free_run_dir(ONLINE_DIR)
    # Everything the fine-tuning needs is checked before the offline demo trains.
    if checkpoint.run_files(out) and not args.overwrite:
        raise FileExistsError(
            f"--out {out} already holds a dt_fast run: pass --overwrite to start over, or another --out"
        )
    # --from, else the offline demo's checkpoint if `dt-fast demo` made one, else a new one trained first
    reuse = args.start is None and (Path(DEMO_DIR) / checkpoint.METADATA_NAME).is_file()
    start = Path(args.start) if args.start is not None else Path(DEMO_DIR) if reuse else free_run_dir(DEMO_DIR)
    cfg = FinetuneConfig(
        checkpoint=str(start),
        out=str(out),
        online_steps=args.online_steps,
        seed=parse_setting(TrainConfig, "seed", args.seed, "--seed"),
        eval_episodes=args.online_episodes,
        eval_every=ONLINE_EVAL_EVERY,
    )
    if reuse:
        print(f"fine-tuning {start}, the checkpoint of an earlier `dt-fast demo` (--from picks another)")
    elif args.start is None:
        run_offline(argparse.Namespace(**{**vars(args), "overwrite": False}), out=start)
    clock, cpu = time.perf_counter(), time.process_time()
    finetuner = Finetuner(cfg, overwrite=args.overwrite)
    try:
        finetuner.run()
    finally:
        finetuner.close()
    before, after = finetuner.evaluations[0][1], finetuner.evaluations[-1][1]
    curve = out / "learning_curve.png"
    plot_learning_curve(out, curve)
    wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
    print(f"\n{'Hopper-v4, mean action, exact mode':<36}{'return':>10}{'normalised':>12}{'95% interval':>14}")
    for name, result in (("pretrained", before), (f"fine-tuned ({finetuner.transitions:,} transitions)", after)):
        ci = 100.0 * result.ci95 / (result.reference[1] - result.reference[0])
        print(
            f"{name:<36}{result.mean:>10.1f}{result.normalized_score:>12.1f}{'+- ' + format(ci, '.1f'):>14}   "
            f"({len(result.returns)} episodes)"
        )
    diff = after.normalized_score - before.normalized_score
    half = math.hypot(after.ci95, before.ci95) * 100.0 / (after.reference[1] - after.reference[0])
    verdict = (
        "above the pretrained policy with 95% confidence"
        if diff - half > 0
        else ("NOT above the pretrained policy with 95% confidence")
    )
    print(f"fine-tuned - pretrained: {diff:+.1f} +- {half:.1f} normalised (Welch, normal approximation): {verdict}")
    print(
        f"\nfine-tuning and its evaluations: wall {wall:.0f} s, CPU {cpu:.0f} s (this process, every thread); "
        f"learning curve: {curve}; checkpoint: {out}"
    )
    return 0
