"""One C++ engine object used from two Python threads at once: calls are serialised, nothing crashes.

The bindings release the GIL around a step, so two threads can be inside one Engine (or Controller) together;
each object serialises its calls with its own lock (csrc/engine/engine.h, "Thread safety"). Each case runs in a
subprocess, because without the lock the heap is corrupted (the interpreter dies) or the engine's threads
deadlock: the test checks the exit code under a timeout. With identical inputs at every call, the actions a
serialised object returns depend only on how many calls came before, so the actions of a serial run of as many
calls must be an interleaving of the two threads' actions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dt_fast

pytestmark = pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np, torch
    import dt_fast
    from dt_fast import DecisionTransformerConfig
    from tests import models

    kind, mode, B, n_threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    S, A, K = 11, 3, 10
    # Large random weights: actions keep changing under constant inputs (no fixed point the check could not see past).
    model = models.random_model(0, DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=64, n_layer=3,
                                                             n_head=1, max_ep_len=1000))
    obs = np.linspace(-1.0, 1.0, B * S, dtype=np.float32).reshape(B, S)

    def make():
        if kind == "policy":
            p = dt_fast.Policy(model, target_return=3600.0, mode=mode, backend="cpp", num_envs=B,
                               state_mean=np.zeros(S), state_std=np.ones(S), scale=1000.0, context_len=K,
                               n_threads=n_threads)
            return p, lambda: p.act(obs, np.ones(B)), p.reset, lambda: p.set_target_return(3000.0)
        tensors = {k: v.detach().numpy() for k, v in dt_fast.checkpoint.hf_state_dict(model).items()}
        e = dt_fast._C.Engine(model.config.to_json_string(), tensors, B, K, mode, n_threads=n_threads)
        rtg, ts = np.full(B, 3.6, np.float32), np.full(B, 7, np.int64)
        return e, lambda: e.step(obs, rtg, ts), lambda: e.reset(0), lambda: e.steps_taken(B - 1)

    def in_threads(*fns):
        threads = [threading.Thread(target=f) for f in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # Phase 1: two threads stepping, one of them also resetting, a third one reading or setting state.
    _, step, reset, other = make()
    def stepper(every):
        for i in range(steps):
            step()
            if every and i % every == 0:
                reset()
    def poker():
        for _ in range(steps):
            other()
    in_threads(lambda: stepper(0), lambda: stepper(100), poker)

    # Phase 2: two threads stepping with the same inputs; their actions against a serial run of 2 * steps calls.
    n = steps // 2
    _, step, _, _ = make()
    got = [[], []]
    def collect(i):
        for _ in range(n):
            got[i].append(np.array(step()).tobytes())
    in_threads(lambda: collect(0), lambda: collect(1))
    _, step, _, _ = make()
    serial = [np.array(step()).tobytes() for _ in range(2 * n)]
    # Rolling at batch 1 settles into a few repeating actions now and then (1,243 distinct of 3,000 here).
    assert len(set(serial)) > n // 2, "the serial run repeats itself too much for the check to mean anything"
    reach = {0}  # after k serial calls: the numbers i of thread 0's actions that can have come first (k - i of 1's)
    for k, a in enumerate(serial):
        reach = ({i + 1 for i in reach if i < n and got[0][i] == a} |
                 {i for i in reach if k - i < n and got[1][k - i] == a})
        assert reach, f"no interleaving of the threads' actions gives the serial run's first {k + 1} actions"
    print("serial order ok")
""")


@pytest.mark.parametrize(
    "kind, mode, B, n_threads",
    [
        ("policy", "exact", 1, 2),  # batch 1 on two threads: the matmul columns split over a SpinTeam
        ("policy", "rolling", 1, 1),  # one engine thread
        ("engine", "exact", 4, 2),  # chunks of rows over the ThreadPool
        ("engine", "rolling", 1, 2),
    ],
)
def test_one_object_stepped_from_two_threads(kind: str, mode: str, B: int, n_threads: int) -> None:
    steps = 2000 if B == 1 else 600
    package = Path(dt_fast.__file__).parent.parent  # the dt_fast under test (make sanitize's is a copy elsewhere)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(ROOT)])}
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, kind, mode, str(B), str(n_threads), str(steps)],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=package,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("two threads stepping one object did not finish in 240 s (deadlock)")
    assert out.returncode == 0, f"exit code {out.returncode}: {out.stderr[-2000:]}"
    assert "serial order ok" in out.stdout
