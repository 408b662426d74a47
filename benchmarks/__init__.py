"""The per-component benchmark scripts (`python -m benchmarks.bench_*`); their results go to benchmarks/results."""

from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"
