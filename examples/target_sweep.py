"""Evaluate a checkpoint at several target returns in one batched run and plot achieved against target.

    python examples/target_sweep.py runs/example --targets 1000 2000 3000 4000 --plot sweep.png

All targets share one batch of envpool environments (slot i conditions on target i % len(targets)); every episode
that starts is finished and counted, so short episodes are not favoured.
"""

import argparse

import dt_fast
from dt_fast.evaluation import format_table, plot_returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint directory written by dt-fast train")
    parser.add_argument("--env", default="Hopper-v4", help="environment id")
    parser.add_argument("--targets", type=float, nargs="+", default=[1000, 2000, 3000, 4000], help="target returns")
    parser.add_argument("--episodes", type=int, default=32, help="episodes per target")
    parser.add_argument("--plot", default="sweep.png", help="PNG to write (replaced if it exists)")
    args = parser.parse_args()

    results = dt_fast.evaluate(
        args.checkpoint, env=args.env, episodes=args.episodes, target_return=args.targets, mode="rolling"
    )
    print(format_table(results))
    plot_returns(results, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
