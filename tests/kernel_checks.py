"""Shared helpers of the kernel tests: the Triton interpreter switch and a verbose closeness assertion."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# The interpreter is chosen when a @triton.jit function is defined, so this must run before any kernel module is
# imported; test modules import this file first.
os.environ.setdefault("TRITON_INTERPRET", "1")
FULL_GRID = os.environ.get("DT_FAST_FULL_GRID") == "1"  # the larger grid, minutes under the interpreter


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each kernel test with one torch thread: the small ops of the interpreter and of the step-by-step
    decoders are up to 50x slower when two threads contend for the two shared cores; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def assert_close_verbose(
    name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0, shown: int = 5
) -> None:
    """Assert |got - want| <= atol + rtol |want| elementwise; else report count, worst and first mismatches."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != expected {tuple(want.shape)}"
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    nan_got, nan_want = torch.isnan(got), torch.isnan(want)
    assert torch.equal(nan_got, nan_want), (
        f"{name}: NaN mismatch at {(nan_got ^ nan_want).nonzero()[:shown].tolist()}"
        f" ({int((nan_got ^ nan_want).sum())} elements)"
    )
    inf_got, inf_want = torch.isinf(got), torch.isinf(want)
    assert torch.equal(got[inf_got | inf_want], want[inf_got | inf_want]), f"{name}: inf mismatch"
    finite = ~(nan_got | inf_got | inf_want)
    err = torch.where(finite, (got - want).abs(), torch.zeros_like(got))
    bad = err > atol + rtol * want.abs()
    if bool(bad.any()):
        idx = bad.nonzero()[:shown].tolist()
        worst = int(err.flatten().argmax())
        lines = [f"  at {i}: got {got[tuple(i)].item():.8g}, expected {want[tuple(i)].item():.8g}" for i in idx]
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements differ by more than atol={atol:g} + rtol={rtol:g}"
            f"; max abs error {err.max().item():.3g} at flat index {worst}; first mismatches:\n" + "\n".join(lines)
        )
