"""The scripts of examples/ run as a user runs them (short settings), one after the other on one run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    """stdout of `python examples/<script> args...`; fails the test with its stderr on a non-zero exit."""
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "run"
    stdout = run("train_and_evaluate.py", "--steps", "10", "--episodes", "2", "--out", str(out))
    assert "Trajectories(episodes=150" in stdout and "(95% interval, 2 episodes)" in stdout
    return out


def test_train_and_evaluate_writes_a_checkpoint(run_dir: Path) -> None:
    assert {"config.json", "model.safetensors", "dt_fast.json"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_control_loop_runs_an_episode(run_dir: Path, mode: str) -> None:
    stdout = run("control_loop.py", str(run_dir), "--mode", mode)
    assert stdout.startswith("return ") and f"cpp backend, {mode} mode" in stdout


def test_target_sweep_writes_its_plot(run_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    stdout = run("target_sweep.py", str(run_dir), "--targets", "500", "3000", "--episodes", "2", "--plot", str(plot))
    assert "500.0" in stdout and "3000.0" in stdout and plot.read_bytes().startswith(b"\x89PNG")
