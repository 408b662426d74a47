"""Dropout (plus a residual, or after adding a row vector) from the counter-based hash of csrc/train/dropout.h, and
the hash in torch."""

from __future__ import annotations

import torch

from dt_fast.train_ops.runtime import array, context

_MASK_BLOCK = 1 << 32  # the hash's counter is 32 bits: each block of 2^32 elements has its own key


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


class _ShiftDropout(torch.autograd.Function):
    """out = (x + shift) * mask(p, seed), shift (C,) added to every row; the backward redraws the mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (N, C)
        out = torch.empty_like(x2)  # (N, C)
        context().shift_dropout_forward(array(x2), array(shift.contiguous()), array(out), p, seed)
        ctx.p, ctx.seed = p, seed
        return out.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        dy = grad.reshape(-1, grad.shape[-1]).contiguous()  # (N, C)
        dx, dshift = torch.empty_like(dy), torch.empty(dy.shape[1])  # (N, C), (C,)
        context().shift_dropout_backward(array(dy), array(dx), array(dshift), ctx.p, ctx.seed)
        return dx.view(grad.shape), dshift, None, None


def shift_dropout(x: torch.Tensor, shift: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """dropout(x + shift) with the mask of seed over x's flat index, (..., C); shift (C,): GPT-2's position
    embedding of the (all zero) position ids, added to every token before the embedding dropout."""
    return _ShiftDropout.apply(x, shift, p, seed)


def shift_dropout_reference(x: torch.Tensor, shift: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Pure torch shift_dropout."""
    y = x + shift  # (rows, C)
    return y * dropout_mask_reference(tuple(y.shape), p, seed)
