"""Choose the Triton kernels or their pure-torch references, and call either through one interface.

The one switch of the package: DecisionTransformer.embed (the model's forward) and the incremental decoder
(dt_fast.decode) call `embed_tokens` and `attention_masked` here, never a kernel or a reference directly.

backend "auto" (default): Triton when the tensors are on a CUDA device and Triton imports, the reference
otherwise (a CUDA run without Triton warns once). backend "triton" (or DT_FAST_BACKEND=triton) forces the
kernels: on CPU tensors that needs TRITON_INTERPRET=1 set before Triton is first imported (the interpreter,
used by the tests). backend "torch" forces the reference. Triton is imported only when a kernel is called, so
`import dt_fast` never needs it.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from dt_fast.kernels.reference import EMBED_LN_EPS, attention_masked_ref, embed_ref

BACKENDS = ("auto", "torch", "triton")
_warned = False


def _triton_importable() -> bool:
    """True if the triton package can be imported (looked up, not imported)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """'triton' or 'torch' for tensors on `device`; backend None reads DT_FAST_BACKEND (default 'auto')."""
    global _warned
    chosen = backend if backend is not None else os.environ.get("DT_FAST_BACKEND", "auto")
    if chosen not in BACKENDS:
        source = "backend" if backend is not None else "DT_FAST_BACKEND"
        raise ValueError(f"{source} must be one of {BACKENDS}, got {chosen!r}")
    if chosen == "torch":
        return "torch"
    if chosen == "triton":
        if not _triton_importable():
            raise ImportError("backend 'triton' was requested but triton is not installed: pip install 'dt-fast[gpu]'")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend 'triton' on {device.type} tensors needs the Triton interpreter: set "
                "TRITON_INTERPRET=1 before triton is imported, or move the model to CUDA"
            )
        return "triton"
    if device.type != "cuda":
        return "torch"
    if _triton_importable():
        return "triton"
    if not _warned:
        warnings.warn(
            "dt_fast: triton is not installed, falling back to the pure-torch kernels on CUDA "
            "(slower); pip install 'dt-fast[gpu]'",
            stacklevel=3,
        )
        _warned = True
    return "torch"


def embed_tokens(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    wpe0: torch.Tensor | None = None,
    eps: float = EMBED_LN_EPS,
    backend: str | None = None,
) -> torch.Tensor:
    """Interleaved token embeddings (B, 3T, C) by the chosen backend (differentiable on both); arguments as
    reference.embed_ref."""
    args = (
        states,
        actions,
        returns_to_go,
        timesteps,
        w_return,
        b_return,
        w_state,
        b_state,
        w_action,
        b_action,
        time_table,
        ln_weight,
        ln_bias,
        wpe0,
        eps,
    )
    if resolve_backend(timesteps.device, backend) == "torch":
        return embed_ref(*args)
    from dt_fast.kernels.embed import fused_embed

    return fused_embed(*args)


def attention_masked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float, backend: str | None = None
) -> torch.Tensor:
    """Masked attention (B, nh, n, hs) by the chosen backend; see kernels.attention.attention_masked."""
    if resolve_backend(q.device, backend) == "torch":
        return attention_masked_ref(q, k, v, mask, scale)
    from dt_fast.kernels.attention import attention_masked as triton_attention

    return triton_attention(q, k, v, mask, scale)


def embedding_weights(model: torch.nn.Module, with_wpe: bool = False) -> dict[str, torch.Tensor | float | None]:
    """Keyword arguments of `embed_tokens` holding a DecisionTransformer's embedding weights (wpe[0] if with_wpe)."""
    return {
        "w_return": model.embed_return.weight,
        "b_return": model.embed_return.bias,
        "w_state": model.embed_state.weight,
        "b_state": model.embed_state.bias,
        "w_action": model.embed_action.weight,
        "b_action": model.embed_action.bias,
        "time_table": model.embed_timestep.weight,
        "ln_weight": model.embed_ln.weight,
        "ln_bias": model.embed_ln.bias,
        "wpe0": model.encoder.wpe[0] if with_wpe else None,
        "eps": model.embed_ln.eps,
    }
