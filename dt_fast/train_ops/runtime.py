"""When the fused ops apply, the C++ context they run on (ISA build and threads), and the seeds of their masks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

try:
    from dt_fast import _C
except ImportError:  # the package works without its C++ extension, only slower
    _C = None

_context = None


def fused_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the C++ training ops apply: extension built, DT_FAST_BACKEND not 'torch', eager mode, no CPU autocast,
    every tensor CPU float32."""
    return (
        _C is not None
        and os.environ.get("DT_FAST_BACKEND") != "torch"
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    )


def context() -> _C.TrainOps:
    """The _C.TrainOps every fused op runs on, made on first use: ISA build DT_FAST_ISA (default 'auto': the
    widest this CPU has), threads torch.get_num_threads()."""
    global _context
    if _context is None:
        _context = _C.TrainOps(os.environ.get("DT_FAST_ISA", "auto"), torch.get_num_threads())
    return _context


def configure(isa: str | None = None, threads: int | None = None) -> None:
    """Run the fused ops on the ISA build `isa` ('auto', 'avx512', 'avx2', 'generic'; ValueError if this CPU lacks
    it) with `threads` threads; None keeps the current setting (or the default of `context`)."""
    global _context
    current = context()
    _context = _C.TrainOps(current.isa if isa is None else isa, current.threads if threads is None else threads)


@contextlib.contextmanager
def team_threads() -> Iterator[None]:
    """Inside: the fused ops' team takes torch's intra-op thread count and torch's own ops run on one thread, so
    that the two never oversubscribe the cores (an idle OpenMP worker keeps spinning on its core for a while)."""
    threads = torch.get_num_threads()
    if context().threads != threads:
        configure(threads=threads)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def draw_seed() -> int:
    """One 62-bit seed from torch's default generator, the source of every fused dropout mask."""
    return int(torch.randint(0, 2**62, ()))


def array(t: torch.Tensor | None) -> np.ndarray | None:
    """A numpy view of a CPU tensor (no copy), or None; detached first only when it requires grad (a detach costs
    as much as the view, and most arrays an op passes are its own buffers and gradients)."""
    if t is None:
        return None
    return t.detach().numpy() if t.requires_grad else t.numpy()
