"""Shared test set-up: Triton's CPU interpreter on machines without a GPU, and fixtures."""

import os

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
