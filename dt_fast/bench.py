"""`dt-fast bench`: the benchmark suite (benchmarks/suite.py) of a dt_fast source checkout.

The benchmarks compare against the blog's workflow on transformers and are not part of the installed package:
this stage finds the `benchmarks/` package in the current directory or beside an editable install of dt_fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import dt_fast


def find_checkout(candidates: list[Path]) -> Path:
    """The first directory holding benchmarks/suite.py; FileNotFoundError naming where it looked otherwise."""
    for root in candidates:
        if (root / "benchmarks" / "suite.py").is_file():
            return root
    looked = ", ".join(str(c / "benchmarks" / "suite.py") for c in candidates)
    raise FileNotFoundError(f"the benchmarks are not importable (looked for {looked}): they ship with the source "
                            f"checkout of dt_fast, not with the installed package; run `dt-fast bench` or "
                            f"`make bench` from the root of a checkout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the suite's measurement windows are fixed so that its runs compare with each other."""


def run(args: argparse.Namespace) -> int:
    """Run the suite from the checkout found in the current directory or beside dt_fast's sources."""
    root = find_checkout([Path.cwd(), Path(dt_fast.__file__).resolve().parents[1]])
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.import_module("benchmarks.suite").run_suite()
    return 0
