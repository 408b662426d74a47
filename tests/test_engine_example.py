"""csrc/examples/control_loop.cpp builds with CMake against dt_engine alone and runs a control loop."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import Metadata, write_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_control_loop_builds_and_runs(tmp_path) -> None:
    build = tmp_path / "build"
    subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-Dpybind11_DIR=/nonexistent"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "control_loop", "-j", "2"], check=True, capture_output=True
    )
    torch.manual_seed(0)
    model = DecisionTransformer(
        DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=2, n_head=2, max_ep_len=50)
    )
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    write_metadata(
        ckpt,
        Metadata(state_mean=np.zeros(11), state_std=np.ones(11), scale=1000.0, context_len=5, target_return=3600.0),
    )
    for mode in ("exact", "rolling"):
        out = subprocess.run([str(build / "control_loop"), str(ckpt), "120", mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert re.search(rf"120 steps, mode {mode}, K=5, isa \w+, mean step [\d.]+ us", out.stdout), out.stdout
    bad = subprocess.run([str(build / "control_loop"), str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 1 and "config.json: cannot open" in bad.stderr
