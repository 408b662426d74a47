"""The `dt-fast` command: one subcommand per stage of the data flow.

Each stage module exposes `add_arguments(parser)` and `run(args)`; this file only wires them together and owns the
one error path: a known error (`KNOWN_ERRORS`: bad input, a missing file or package) prints one line
`dt-fast <command>: error: ...` and exits 2; anything else is a bug and keeps its traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from dt_fast import bench, demo, evaluation, finetune, train
from dt_fast.collect import collector

KNOWN_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)
"""Errors that describe the user's input or machine, not a bug in dt_fast: one line, exit 2. dt_fast's own
ImportErrors name the extra to install, a ModuleNotFoundError is a missing optional package, a FloatingPointError
is the trainer's diverged loss (it says what to change)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default that is not None (a None default is explained by the option's own text)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `dt-fast` with every subcommand."""
    parser = Parser(prog="dt-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stages = {
        "collect": (collector, "roll a behaviour policy out in envpool and write a D4RL HDF5 dataset"),
        "demo": (demo, "train on the embedded dataset, then evaluate (what `make demo` runs)"),
        "train": (train, "train a Decision Transformer on a dataset file into a checkpoint directory"),
        "finetune": (finetune, "fine-tune a checkpoint online (Online Decision Transformer) over envpool envs"),
        "eval": (evaluation, "evaluate a checkpoint over batched envs: returns, scores, plot, video"),
        "bench": (bench, "run the benchmark suite: one table against the blog's workflow and the hardware bounds"),
    }
    for name, (module, help_text) in stages.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `dt-fast` and `python -m dt_fast.cli`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except KNOWN_ERRORS as err:
        print(f"dt-fast {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (a missing package names the extras that install it)."""
    if isinstance(err, ModuleNotFoundError):
        return f"{err}: a dependency is missing (`pip install 'dt-fast[eval,formats]'` installs the optional ones)"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
