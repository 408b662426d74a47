"""The `dt-fast` command: one subcommand per stage of the data flow.

Each stage module exposes `add_arguments(parser)` and `run(args)`; this file only wires them together.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dt_fast import bench, demo, evaluation, train
from dt_fast.collect import collector


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `dt-fast` with every subcommand."""
    parser = argparse.ArgumentParser(prog="dt-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stages = {
        "collect": (collector, "roll a behaviour policy out in envpool and write a D4RL HDF5 dataset"),
        "demo": (demo, "train on the embedded dataset, then evaluate (what `make demo` runs)"),
        "train": (train, "train a Decision Transformer on a dataset file into a checkpoint directory"),
        "eval": (evaluation, "evaluate a checkpoint over batched envs: returns, scores, plot, video"),
        "bench": (bench, "run the benchmark suite of a source checkout: one table against the blog and the hardware"),
    }
    for name, (module, help_text) in stages.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `dt-fast` and `python -m dt_fast.cli`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"dt-fast {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
