"""Fused CPU float32 training ops of the model: torch.autograd.Functions over dt_fast._C, each beside its pure
torch reference (tests/test_train_ops.py checks forward and gradients against it).

Dropout masks come from the counter-based hash of csrc/train/dropout.h, seeded by one draw from torch's
generator per call, so torch.manual_seed and RNG-state resume govern them; the backward pass redraws a mask
from its seed instead of storing it. The model uses these ops only where `fused_cpu` holds and otherwise runs
the torch code (other devices and dtypes, autocast, torch.compile, no compiled extension).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

try:
    from dt_fast import _C
except ImportError:  # the package works without its C++ extension, only slower
    _C = None

_MASK_BLOCK = 1 << 32  # the hash's counter is 32 bits: each block of 2^32 elements has its own key


def fused_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the C++ training ops apply: extension built, eager mode, no CPU autocast, every tensor CPU float32."""
    return (_C is not None and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors))


def draw_seed() -> int:
    """One 62-bit seed from torch's default generator, the source of every fused dropout mask."""
    return int(torch.randint(0, 2**62, ()))


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding uint32 values (csrc/train/dropout.h hash32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def dropout_mask_reference(shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    """The mask of _C.dropout_mask (1 / (1 - p) kept, 0 dropped) computed with torch integer ops, (*shape) float32."""
    index = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int64)  # (n,)
    block = index // _MASK_BLOCK  # (n,)
    hi = ((seed >> 32) ^ _hash32((block + 0x9E3779B9) & 0xFFFFFFFF)) & 0xFFFFFFFF  # (n,)
    h = _hash32((_hash32((index & 0xFFFFFFFF) ^ (seed & 0xFFFFFFFF)) + hi) & 0xFFFFFFFF)  # (n,)
    threshold = int(float(torch.tensor(p, dtype=torch.float32).double()) * (1 << 24) + 0.5)
    scale = torch.tensor(1.0, dtype=torch.float32) / (1.0 - torch.tensor(p, dtype=torch.float32))
    return torch.where((h >> 8) >= threshold, scale, 0.0).reshape(shape)  # (*shape)


def _array(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor (no copy)."""
    return t.detach().numpy()


class _DropoutAdd(torch.autograd.Function):
    """out = residual + x * mask(p, seed); the backward redraws the mask from the seed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, residual: torch.Tensor | None, p: float, seed: int) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)  # (*x.shape)
        res = None if residual is None else _array(residual.contiguous())
        _C.dropout_apply(_array(x), res, _array(out), p, seed)
        ctx.p, ctx.seed, ctx.has_residual = p, seed, residual is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        grad = grad.contiguous()
        grad_x = torch.empty_like(grad)  # (*x.shape)
        _C.dropout_apply(_array(grad), None, _array(grad_x), ctx.p, ctx.seed)
        return grad_x, grad if ctx.has_residual else None, None, None


def dropout_add(x: torch.Tensor, residual: torch.Tensor | None, p: float, seed: int) -> torch.Tensor:
    """residual + dropout(x) (residual None: dropout(x)) with the mask of seed; x, residual: same shape."""
    return _DropoutAdd.apply(x, residual, p, seed)


def dropout_add_reference(x: torch.Tensor, residual: torch.Tensor | None, p: float, seed: int) -> torch.Tensor:
    """Pure torch dropout_add."""
    y = x * dropout_mask_reference(tuple(x.shape), p, seed)  # (*x.shape)
    return y if residual is None else residual + y


class _SoftmaxDropout(torch.autograd.Function):
    """Masked softmax of scaled attention scores, then dropout; saves the probabilities and the output."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor | None, scale: float, p: float,
                seed: int) -> torch.Tensor:
        scores = scores.contiguous()  # (B, nh, Tq, Tk)
        probs, out = torch.empty_like(scores), torch.empty_like(scores)  # (B, nh, Tq, Tk) each
        mask_bytes = None if mask is None else _array(mask[:, 0].contiguous().view(torch.uint8))  # (B, Tq, Tk)
        _C.softmax_dropout_forward(_array(scores), mask_bytes, _array(probs), _array(out), scale, p, seed)
        ctx.save_for_backward(probs, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        probs, out = ctx.saved_tensors
        grad = grad.contiguous()  # (B, nh, Tq, Tk)
        grad_scores = torch.empty_like(grad)  # (B, nh, Tq, Tk)
        _C.softmax_dropout_backward(_array(grad), _array(probs), _array(out), _array(grad_scores), ctx.scale)
        return grad_scores, None, None, None, None


def softmax_dropout(scores: torch.Tensor, mask: torch.Tensor | None, scale: float, p: float,
                    seed: int) -> torch.Tensor:
    """Attention probabilities with dropout, (B, nh, Tq, Tk).

    Args:
        scores: (B, nh, Tq, Tk) float32, q @ k^T before scaling.
        mask: (B, 1, Tq, Tk) bool, True = may attend, or None for causal (Tq == Tk). A query with no key gets
            all zeros.
        scale: multiplies the scores before the softmax. p: dropout probability. seed: of the dropout mask.
    """
    return _SoftmaxDropout.apply(scores, mask, scale, p, seed)


def softmax_dropout_reference(scores: torch.Tensor, mask: torch.Tensor | None, scale: float, p: float,
                              seed: int) -> torch.Tensor:
    """Pure torch softmax_dropout."""
    T = scores.shape[-1]
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
    probs = F.softmax((scores * scale).masked_fill(~mask, float("-inf")), dim=-1)  # (B, nh, Tq, Tk)
    probs = torch.where(mask.any(dim=-1, keepdim=True), probs, 0.0)  # a query with no key: zeros, not NaN
    return probs * dropout_mask_reference(tuple(scores.shape), p, seed)  # (B, nh, Tq, Tk)


class _LinearReLU(torch.autograd.Function):
    """relu(x @ weight^T + bias): torch's matmul, then bias and ReLU in one C++ pass; the backward masks the
    gradient and sums the bias gradient in one pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = x2 @ weight.t()  # (N, out), fresh and contiguous
        _C.bias_relu_forward(_array(y), _array(bias.contiguous()))
        ctx.save_for_backward(x2, weight, y)
        return y.view(*x.shape[:-1], -1)  # (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x2, weight, y = ctx.saved_tensors
        grad2 = grad.reshape(y.shape).contiguous()  # (N, out)
        grad_y, grad_bias = torch.empty_like(grad2), torch.empty(y.shape[1])  # (N, out), (out,)
        _C.bias_relu_backward(_array(grad2), _array(y), _array(grad_y), _array(grad_bias))
        grad_x = (grad_y @ weight).view(*grad.shape[:-1], -1) if ctx.needs_input_grad[0] else None  # (..., in)
        return grad_x, grad_y.t() @ x2, grad_bias


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(F.linear(x, weight, bias)), (..., out); x (..., in), weight (out, in), bias (out,)."""
    return _LinearReLU.apply(x, weight, bias)


def linear_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Pure torch linear_relu."""
    return F.relu(F.linear(x, weight, bias))


class _LinearDropoutAdd(torch.autograd.Function):
    """residual + dropout(x @ weight^T + bias): torch's matmul, then bias, dropout and the residual add in one C++
    pass; the backward redraws the mask from the seed and sums the bias gradient in the same pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                p: float, seed: int) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = x2 @ weight.t()  # (N, out), fresh and contiguous
        residual2 = residual.reshape(y.shape).contiguous()  # (N, out)
        _C.bias_dropout_add_forward(_array(y), _array(bias.contiguous()), _array(residual2), _array(y), p, seed)
        ctx.save_for_backward(x2, weight)
        ctx.p, ctx.seed = p, seed
        return y.view(residual.shape)  # (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x2, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1]).contiguous()  # (N, out)
        grad_y, grad_bias = torch.empty_like(grad2), torch.empty(grad2.shape[1])  # (N, out), (out,)
        _C.bias_dropout_add_backward(_array(grad2), _array(grad_y), _array(grad_bias), ctx.p, ctx.seed)
        grad_x = (grad_y @ weight).view(*grad.shape[:-1], -1) if ctx.needs_input_grad[0] else None  # (..., in)
        return grad_x, grad_y.t() @ x2, grad_bias, grad, None, None


def linear_dropout_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, p: float,
                       seed: int) -> torch.Tensor:
    """residual + dropout(F.linear(x, weight, bias)) with the mask of seed over the output's flat index.

    Args:
        x: (..., in). weight: (out, in). bias: (out,). residual: (..., out). p: dropout probability (0: none).
    """
    return _LinearDropoutAdd.apply(x, weight, bias, residual, p, seed)


def linear_dropout_add_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                                 p: float, seed: int) -> torch.Tensor:
    """Pure torch linear_dropout_add."""
    return residual + F.linear(x, weight, bias) * dropout_mask_reference(tuple(residual.shape), p, seed)
