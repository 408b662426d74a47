"""Backend choice between the Triton kernels and their references; `import dt_fast` never imports Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from tests.kernel_checks import assert_close_verbose, one_torch_thread  # noqa: F401 (fixture)

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from dt_fast.kernels import dispatch  # noqa: E402


def test_import_and_cpu_forward_do_not_import_triton() -> None:
    code = (
        "import sys, torch, dt_fast, dt_fast.kernels\n"
        "m = dt_fast.DecisionTransformer(dt_fast.DecisionTransformerConfig(state_dim=3, act_dim=2, "
        "hidden_size=32, n_layer=1))\n"
        "m(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), torch.zeros(1, 2, 1), torch.zeros(1, 2, dtype=torch.long))\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DT_FAST_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_resolve_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("DT_FAST_BACKEND", raising=False)
    assert dispatch.resolve_backend(cpu) == "torch"
    assert dispatch.resolve_backend(cuda) == "triton"
    assert dispatch.resolve_backend(cuda, "torch") == "torch"
    assert dispatch.resolve_backend(cpu, "triton") == "triton"  # TRITON_INTERPRET=1 in this process
    monkeypatch.setenv("DT_FAST_BACKEND", "triton")
    assert dispatch.resolve_backend(cpu) == "triton"
    monkeypatch.setenv("DT_FAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"DT_FAST_BACKEND must be one of \('auto', 'torch', 'triton'\)"):
        dispatch.resolve_backend(cpu)
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.resolve_backend(cpu, "gpu")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="set TRITON_INTERPRET=1"):
        dispatch.resolve_backend(cpu, "triton")


def test_cuda_without_triton_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DT_FAST_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_triton_importable", lambda: False)
    monkeypatch.setattr(dispatch, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [dispatch.resolve_backend(torch.device("cuda")) for _ in range(3)] == ["torch"] * 3
    assert len(caught) == 1 and "falling back to the pure-torch kernels" in str(caught[0].message)
    with pytest.raises(ImportError, match="triton is not installed"):
        dispatch.resolve_backend(torch.device("cuda"), "triton")


def test_dispatch_backends_agree() -> None:
    g = torch.Generator().manual_seed(0)
    B, T, S, A, C = 2, 6, 11, 3, 64
    args = [
        torch.randn(B, T, S, generator=g),
        torch.randn(B, T, A, generator=g),
        torch.randn(B, T, 1, generator=g),
        torch.randint(0, 10, (B, T), generator=g),
    ]
    weights = [
        torch.randn(*s, generator=g) for s in [(C, 1), (C,), (C, S), (C,), (C, A), (C,), (10, C), (C,), (C,), (C,)]
    ]
    assert_close_verbose(
        "embed",
        dispatch.embed_tokens(*args, *weights, backend="triton"),
        dispatch.embed_tokens(*args, *weights, backend="torch"),
        atol=1e-5,
    )
    q = torch.randn(B, 2, 3, 16, generator=g)
    k, v = (torch.randn(B, 2, 9, 16, generator=g) for _ in range(2))
    mask = torch.rand(B, 3, 9, generator=g) < 0.6  # (B, n, L)
    outs = [dispatch.attention_masked(q, k, v, mask, 0.25, backend=b) for b in ("triton", "torch")]
    assert_close_verbose("attention", outs[0], outs[1], atol=1e-5)
