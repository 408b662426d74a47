"""LayerNorm in one C++ pass forward and one backward (csrc/train/layer_norm.h)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dt_fast.train_ops.runtime import array, context


class _LayerNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dimension; saves x, mean and 1/std."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (N, C)
        y = torch.empty_like(x2)  # (N, C)
        mean, rstd = torch.empty(x2.shape[0]), torch.empty(x2.shape[0])  # (N,) each
        context().layer_norm_forward(array(x2), array(weight), array(bias), array(y), array(mean), array(rstd), eps)
        ctx.save_for_backward(x2, weight, mean, rstd)
        return y.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x2, weight, mean, rstd = ctx.saved_tensors
        dy = grad.reshape(x2.shape).contiguous()  # (N, C)
        dx, dw, db = torch.empty_like(x2), torch.empty_like(weight), torch.empty_like(weight)  # (N, C), (C,), (C,)
        context().layer_norm_backward(
            array(dy), array(x2), array(weight), array(mean), array(rstd), array(dx), array(dw), array(db)
        )
        return dx.view(grad.shape), dw, db, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """F.layer_norm over the last dimension, (..., C); weight, bias (C,)."""
    return _LayerNorm.apply(x, weight, bias, eps)


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Pure torch layer_norm."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
