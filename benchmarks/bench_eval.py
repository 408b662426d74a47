"""Evaluation throughput: dt_fast's batched evaluator against envpool alone and against the blog's loop.

Side by side in one process, Hopper-v4, one random Hopper-sized checkpoint (hidden 128, 3 layers, context 20):
  envpool/random   envpool stepping B envs with uniform random actions: the ceiling of any evaluator
  dt_fast/exact    dt_fast.evaluate over B envs, Policy mode "exact" (backend auto)
  dt_fast/rolling  the same in mode "rolling" (approximate once the window slides)
  blog/get_action  dt_fast/bench/reference.py::rollout: one gymnasium env, transformers' model, get_action per step
  act only/MODE    Policy.act alone at batch B with the window full, no environment: the policy's own ceiling
Reports env-steps/s (steps inside counted episodes over wall time) and the ratios the evaluation issue sets:
rolling >= 40% of envpool random, exact >= 8x and rolling >= 30x the blog loop. The random checkpoint (action
head shrunk, so actions are small) falls after ~100-250 steps, not 1000: the mean episode length and the share
of steps with a full window (t >= K, where exact must recompute) are printed beside.

    python -m benchmarks.bench_eval [--num-envs 64] [--episodes 128] [--blog-steps 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from dt_fast.bench.evaluation import CONTEXT, ENV_ID, blog_loop, envpool_random, evaluator, make_checkpoint
from dt_fast.bench.harness import print_table, save_results


def policy_only(ckpt: Path, mode: str, num_envs: int, steps: int, seed: int) -> float:
    """Actions/s of Policy.act alone at batch `num_envs`, window full (after CONTEXT steps), no environment."""
    from dt_fast.policy import Policy

    policy = Policy.from_pretrained(ckpt, mode=mode, backend="auto", num_envs=num_envs)
    rng = np.random.default_rng(seed)
    obs = rng.normal(0.0, 1.0, (num_envs, 11))  # [B, state_dim]
    reward = np.ones(num_envs)  # [B]
    policy.act(obs)
    for _ in range(CONTEXT):
        policy.act(obs, reward)
    start = time.perf_counter()
    for _ in range(steps):
        policy.act(obs, reward)
    return num_envs * steps / (time.perf_counter() - start)


def full_window_share(lengths: np.ndarray, context: int = CONTEXT) -> float:
    """Share of env steps taken with a full context window (t >= K), where exact must recompute."""
    return float(np.maximum(lengths - context, 0).sum() / lengths.sum())


def main() -> None:
    """Run every case side by side and print env-steps/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=128, help="episodes per evaluator run")
    parser.add_argument("--blog-steps", type=int, default=400, help="env steps of the blog loop (whole episodes)")
    parser.add_argument("--envpool-steps", type=int, default=2000, help="batched steps of the random-action run")
    parser.add_argument("--policy-steps", type=int, default=100, help="batched steps of the act-only runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # batch-1 forwards of this small model run fastest on one thread: kind to the blog
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        make_checkpoint(ckpt, args.seed)
        random_rate = envpool_random(args.num_envs, args.envpool_steps, args.seed)
        exact = evaluator(ckpt, "exact", args.num_envs, args.episodes, args.seed)
        rolling = evaluator(ckpt, "rolling", args.num_envs, args.episodes, args.seed)
        blog = blog_loop(ckpt, args.blog_steps, args.seed)
        act_only = {m: policy_only(ckpt, m, args.num_envs, args.policy_steps, args.seed) for m in ("exact", "rolling")}
    rows = [
        dict(
            case="envpool/random",
            envs=args.num_envs,
            env_steps_per_s=random_rate,
            vs_envpool=1.0,
            vs_blog=random_rate / blog["rate"],
            mean_len="",
            full_window="",
        ),
    ]
    for name, r in (("dt_fast/exact", exact), ("dt_fast/rolling", rolling), ("blog/get_action", blog)):
        rows.append(
            dict(
                case=name,
                envs=1 if name.startswith("blog") else args.num_envs,
                env_steps_per_s=r["rate"],
                vs_envpool=r["rate"] / random_rate,
                vs_blog=r["rate"] / blog["rate"],
                mean_len=float(r["lengths"].mean()),
                full_window=full_window_share(r["lengths"]),
            )
        )
    for m, r in act_only.items():
        rows.append(
            dict(
                case=f"act only/{m}",
                envs=args.num_envs,
                env_steps_per_s=r,
                vs_envpool=r / random_rate,
                vs_blog=r / blog["rate"],
                mean_len="",
                full_window=1.0,
            )
        )
    print(f"{ENV_ID}, random checkpoint, torch threads {torch.get_num_threads()}, policy backend {exact['backend']}")
    print_table(rows, ["case", "envs", "env_steps_per_s", "vs_envpool", "vs_blog", "mean_len", "full_window"])
    print(
        f"targets: rolling >= 0.40 x envpool ({rolling['rate'] / random_rate:.2f}), exact >= 8x blog "
        f"({exact['rate'] / blog['rate']:.1f}x), rolling >= 30x blog ({rolling['rate'] / blog['rate']:.1f}x)"
    )
    path = save_results(
        "bench_eval",
        rows,
        extra=dict(env=ENV_ID, num_envs=args.num_envs, episodes=args.episodes, blog_steps=args.blog_steps),
        directory=RESULTS_DIR,
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
