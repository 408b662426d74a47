"""Which engine mode collects ODT's exploration episodes: rolling against exact, alternating rounds in one process.

    python -m benchmarks.bench_collect_modes --from runs/demo [--envs 16] [--rounds 3]

Each round collects one episode per env (`dt_fast.finetune.collect_episodes`, sampled actions, the exploration
target of dt-fast finetune) in each mode on the same env seeds and noise seed, and prints env steps per second and
the mean return. The checkpoint may be deterministic: it gains a log-std head as `dt-fast finetune` gives it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dt_fast import checkpoint
from dt_fast.envs import env_spec, make_vector_env
from dt_fast.finetune import collect_episodes, stochastic_model
from dt_fast.policy import Policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", required=True, help="checkpoint directory (with dt_fast.json)")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    meta = checkpoint.read_metadata(args.start)
    model = stochastic_model(Path(args.start), meta, seed=0)
    spec = env_spec(meta.env_id)
    rates: dict[str, list[float]] = {"rolling": [], "exact": []}
    for r in range(args.rounds):
        for mode in ("rolling", "exact") if r % 2 == 0 else ("exact", "rolling"):
            policy = Policy(
                model,
                target_return=2 * meta.target_return,
                state_mean=meta.state_mean,
                state_std=meta.state_std,
                scale=meta.scale,
                context_len=meta.context_len,
                mode=mode,
                backend="cpp",
                num_envs=args.envs,
            )
            policy.set_sampling(r)
            env, obs = make_vector_env(spec, args.envs, seed=1000 * r)
            start = time.perf_counter()
            episodes = collect_episodes(policy, env, obs, args.envs)
            seconds = time.perf_counter() - start
            env.close()
            rates[mode].append(episodes.env_steps / seconds)
            print(
                f"round {r} {mode:<8} {episodes.env_steps:>7} env steps {seconds:6.2f} s "
                f"{rates[mode][-1]:>8.0f} env steps/s, mean return {episodes.returns.mean():7.1f}",
                flush=True,
            )
    ratios = [a / b for a, b in zip(rates["rolling"], rates["exact"])]
    print(
        f"rolling / exact env steps per second: median {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
    )


if __name__ == "__main__":
    main()
