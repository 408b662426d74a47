"""Trainer: loss, checkpoints, exact resume after SIGKILL, data parallel, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dt_fast.train import TrainConfig, Trainer, action_loss

SMALL = ["--hidden-size", "32", "--n-layer", "1", "--batch-size", "16", "--context-len", "10",
         "--warmup-steps", "10", "--log-every", "5"]


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory) -> Path:
    """A small Hopper-v4-sized dataset in the D4RL layout whose actions are a function of the state."""
    path = tmp_path_factory.mktemp("data") / "hopper_small.hdf5"
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=40)
    n = int(lengths.sum())
    terminals = np.zeros(n, dtype=bool)
    terminals[np.cumsum(lengths) - 1] = True
    with h5py.File(path, "w") as f:
        f.attrs["env_id"] = "Hopper-v4"
        obs = rng.normal(size=(n, 11)).astype(np.float32)
        f["observations"] = obs
        f["actions"] = np.tanh(obs @ rng.normal(size=(11, 3))).astype(np.float32)
        f["rewards"] = rng.normal(1.0, 0.5, size=n).astype(np.float32)
        f["terminals"] = terminals
        f["timeouts"] = np.zeros(n, dtype=bool)
    return path


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dt_fast.train", *SMALL, *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_action_loss_equals_the_blogs_masked_mean() -> None:
    g = torch.Generator().manual_seed(0)
    preds, targets = torch.randn(5, 7, 3, generator=g), torch.randn(5, 7, 3, generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    keep = mask.reshape(-1) > 0
    blog = torch.mean((preds.reshape(-1, 3)[keep] - targets.reshape(-1, 3)[keep]) ** 2)
    torch.testing.assert_close(action_loss(preds, targets, mask), blog)


def test_training_reduces_loss_and_writes_a_checkpoint_both_libraries_load(hopper_file: Path, tmp_path) -> None:
    from transformers import DecisionTransformerModel

    from dt_fast import DecisionTransformer
    from dt_fast.checkpoint import read_metadata

    cfg = TrainConfig(dataset=str(hopper_file), out=str(tmp_path / "run"), steps=60, hidden_size=32, n_layer=1,
                      batch_size=16, context_len=10, warmup_steps=10, lr=1e-3, log_every=10, save_every=30)
    trainer = Trainer(cfg)
    first = trainer.train_step(trainer.sampler.sample())
    trainer.run()
    losses = [float(r[2]) for r in _log_rows(tmp_path / "run") if r[1] == "loss"]
    assert losses[-1] < 0.8 * first, (first, losses)
    ours = DecisionTransformer.from_pretrained(tmp_path / "run")
    hf = DecisionTransformerModel.from_pretrained(tmp_path / "run").eval()
    batch = trainer.sampler.sample()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch)[1], hf(**batch, return_dict=False)[1], atol=1e-5, rtol=0)
    meta = read_metadata(tmp_path / "run")
    assert meta.env_id == "Hopper-v4" and meta.context_len == 10 and meta.scale == 1000.0
    np.testing.assert_allclose(meta.state_mean, trainer.data.state_mean)
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["steps"] == 60 and saved["lr"] == 1e-3


def _log_rows(run: Path) -> list[list[str]]:
    return [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]


def test_sigkill_then_resume_ends_with_the_same_weights(hopper_file: Path, tmp_path) -> None:
    common = ["--dataset", str(hopper_file), "--steps", "120", "--save-every", "10"]
    subprocess.run(train_cmd(*common, "--out", str(tmp_path / "straight")), check=True, env=env(),
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(*common, "--out", str(killed)), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "train_state.pt").exists():
            state = torch.load(killed / "train_state.pt", weights_only=True)
            if 20 <= state["step"] < 100:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(killed / "train_state.pt", weights_only=True)["step"]
    assert killed_at < 120
    subprocess.run(train_cmd("--resume", str(killed)), check=True, env=env(), capture_output=True)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming from step {killed_at}"


def test_two_process_data_parallel_keeps_replicas_identical(hopper_file: Path, tmp_path) -> None:
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "dt_fast.cli", "train", "--nproc", "2", *SMALL, "--dataset",
                             str(hopper_file), "--steps", "40", "--lr", "1e-3", "--out", str(out)], env=env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _log_rows(out)
    assert [float(r[2]) for r in rows if r[1] == "ddp_replica_max_diff"] == [0.0]
    losses = [float(r[2]) for r in rows if r[1] == "loss"]
    assert losses[-1] < losses[0], losses
    assert "world_size           2" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--env", "Hoper-v4"], "unknown env id 'Hoper-v4'; closest known ids: Hopper-v4"),
    (["--env", "HalfCheetah-v4"], "state_dim=11, act_dim=3 but HalfCheetah-v4 has state_dim=17, act_dim=6"),
    (["--out", "{tmp}/bad.yaml/run"], "cannot write into .*bad.yaml"),
    (["--resume", "{tmp}"], "not a dt_fast run directory"),
    (["--config", "{tmp}/bad.yaml"], r"unknown keys \['learning_rate'\]"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--precision", "fp8"], "precision must be fp32 or bf16"),
])
def test_bad_input_fails_before_training(hopper_file: Path, tmp_path, capsys, args: list[str],
                                         message: str) -> None:
    from dt_fast.cli import main

    (tmp_path / "bad.yaml").write_text("learning_rate: 0.1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", "--dataset", str(hopper_file), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err[-2000:]
    assert not (tmp_path / "run" / "train_state.pt").exists()
    assert not (tmp_path / "run" / "log.csv").exists()


def test_config_file_then_flags_override(hopper_file: Path, tmp_path) -> None:
    import argparse

    from dt_fast.train import add_arguments, resolve_config

    (tmp_path / "c.yaml").write_text("lr: 0.003\nbatch_size: 8\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = resolve_config(parser.parse_args(["--config", str(tmp_path / "c.yaml"), "--batch-size", "4"]))
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay) == (0.003, 4, 1e-4)
