"""Shared benchmark helpers: timing, this machine's matmul rate and memory bandwidth, result rows.

Absolute times on shared 2-core machines drift by tens of percent; benchmarks therefore run the reference and
dt_fast side by side in one process and report ratios, and measure the hardware bounds in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import dt_fast
from dt_fast.checkpoint import atomic_write


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15-minute load averages (None where the OS has none): a run on a machine whose load
    exceeds its cores measures the other tenants too."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def git_revision() -> str:
    """Short git revision of the checkout this file is tracked in, with -dirty when it has uncommitted changes;
    "unknown" for an installed package (its version is recorded beside)."""
    here = Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", Path(__file__).name)  # a site-packages inside some other repository
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rate(fn: Callable[[], object], min_time: float = 1.0, min_iters: int = 3, warmup: int = 1) -> float:
    """Calls per second of `fn` over at least `min_time` seconds and `min_iters` calls, after warm-up."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < min_time:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def fastest_rate(fn: Callable[[], object], min_time: float = 1.0, min_calls: int = 3, warmup: int = 1) -> float:
    """Calls per second of the fastest single call of `fn` over at least `min_time` seconds and `min_calls` calls,
    after warm-up: on a shared machine the fastest call is the least disturbed one."""
    for _ in range(warmup):
        fn()
    best, n, start = float("inf"), 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return 1.0 / best


def latencies(fn: Callable[[], object], n: int, warmup: int = 50) -> np.ndarray:
    """Per-call wall times in seconds of `n` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def matmul_rates(
    threads: int | None = None, min_time: float = 1.0, sizes: tuple[int, ...] = (512, 2048)
) -> dict[str, float]:
    """FLOP/s of the fastest n x n x n float32 matmul over `min_time` seconds per size on `threads` threads (None =
    torch's setting), the best over `sizes`, by torch and by the engine's own kernel (dt_fast._C.PackedMatmul,
    weights packed once). Either can be the faster: torch's MKL takes a slower path on some CPUs (AMD), so the
    machine's rate is the larger of the two. A 512^3 call (about 1 ms) fits in a scheduler time slice, so its
    fastest call holds on a loaded machine, where every 2048^3 call (tens of ms) is disturbed and would make the
    rate, and every bound built on it, too low."""
    from dt_fast import _C

    threads = threads or torch.get_num_threads()
    best = {"torch": 0.0, "engine": 0.0}
    for n in sizes:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a, b = torch.randn(n, n), torch.randn(n, n)
            out = torch.empty(n, n)
            torch_calls = fastest_rate(lambda: torch.matmul(a, b, out=out), min_time=min_time)
        finally:
            torch.set_num_threads(previous)
        packed, a_np = _C.PackedMatmul(b.numpy()), a.numpy()
        engine_calls = fastest_rate(lambda: packed(a_np, threads), min_time=min_time)
        best = {
            "torch": max(best["torch"], 2.0 * n**3 * torch_calls),
            "engine": max(best["engine"], 2.0 * n**3 * engine_calls),
        }
    return best


def matmul_flops_per_s(threads: int | None = None, min_time: float = 1.0) -> float:
    """This machine's float32 matmul rate on `threads` threads: the faster of torch and the engine's kernel
    (matmul_rates)."""
    return max(matmul_rates(threads, min_time).values())


def memcpy_bytes_per_s(nbytes: int = 64 << 20, min_time: float = 1.0) -> float:
    """Bytes per second moved to and from memory by the fastest plain copy of a buffer larger than the caches (read +
    write counted once each). The fastest of many short calls holds on a loaded machine, where an average does not."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2.0 * nbytes * fastest_rate(lambda: np.copyto(dst, src), min_time=min_time)


def save_results(name: str, rows: list[dict], extra: dict | None = None, *, directory: Path) -> Path:
    """Write rows plus machine facts (date, CPU model, threads, versions) to directory/<name>.json, atomically;
    returns the path."""
    doc = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "git": git_revision(),
        "dt_fast": dt_fast.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        **(extra or {}),
        "rows": rows,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table of the given columns."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
