"""`dt-fast bench`: the benchmark suite (dt_fast/bench/suite.py), against the blog's workflow and this machine.

The suite, the blog's reference workflow (reference.py), the timing helpers (harness.py) and the workloads the
suite times (sampler.py, train.py, policy.py, evaluation.py, odt.py with the official ODT loop in
reference_odt.py) ship with the package; they need the `[bench]` extra
(transformers and its Trainer). The per-component scripts with longer runs live in the source tree's benchmarks/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_fast.extras import require

GROUPS = ("sampler", "train", "policy", "eval", "peers", "odt")
"""The suite's groups of rows (suite.ROWS, which imports transformers: not imported to build the parser)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--out, --overwrite, --rows; the measurement windows are fixed so that runs compare with each other."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="directory for suite.json (every row, CPU, date, threads) and suite.md (the table)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace suite.json and suite.md in --out")
    parser.add_argument(
        "--rows", default=",".join(GROUPS), help=f"comma-separated groups of rows to run, of: {', '.join(GROUPS)}"
    )


def parse_rows(text: str) -> list[str]:
    """The groups named by a `--rows` value ("sampler,policy"), in the suite's order; ValueError naming the
    unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise ValueError(
            f"--rows {text!r}: unknown group {', '.join(unknown) or '(none given)'}; choose from {', '.join(GROUPS)}"
        )
    return [n for n in GROUPS if n in names]


def run(args: argparse.Namespace) -> int:
    """Run the suite's groups of rows and write the results into --out."""
    groups = parse_rows(args.rows)
    for module in ("transformers", "accelerate") + (("onnx", "onnxruntime") if "peers" in groups else ()):
        require(module, "dt-fast bench")
    from dt_fast.bench import suite

    command = f"dt-fast bench --rows {','.join(groups)} --out {args.out}"
    suite.run_suite(groups, args.out, command, args.overwrite)
    return 0
