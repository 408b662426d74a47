"""Shared test set-up: Triton's CPU interpreter on machines without a GPU, and fixtures."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

# Triton picks the interpreter when a kernel is defined, so this must precede every import of dt_fast.kernels:
# any test module may import them first (collection order), not only the kernel tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread: these models are tiny and the 2 shared cores are oversubscribed otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
