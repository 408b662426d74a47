"""Linear layers on the engine's packed matmul with the epilogue fused (csrc/train/linear.h): y = x W^T + b, then
nothing, ReLU, or dropout plus a residual, in the same pass over each block of rows; the backward computes dx, dW
and db with the epilogue's gradient (ReLU mask, the dropout mask redrawn from its seed) in the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dt_fast.train_ops.dropout import dropout_mask_reference
from dt_fast.train_ops.runtime import array, context


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as a (N, in) matrix whose rows are contiguous, a view when they are (x[:, 1::3] of a contiguous x is)."""
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    return x2 if x2.stride(-1) == 1 or x2.shape[-1] == 1 else x2.contiguous()


class _Linear(torch.autograd.Function):
    """epilogue(x @ weight^T + bias), epilogue 'none', 'relu' or 'dropout_add' (residual + dropout(.))."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        epilogue: str,
        p: float,
        seed: int,
    ) -> torch.Tensor:
        x2 = _rows(x)  # (N, in)
        y = torch.empty(x2.shape[0], weight.shape[0])  # (N, out)
        res = None if residual is None else residual.reshape(y.shape).contiguous()  # (N, out)
        context().linear_forward(array(x2), array(weight), array(bias), array(y), epilogue, array(res), p, seed)
        ctx.save_for_backward(x2, weight, y if epilogue == "relu" else None)
        ctx.epilogue, ctx.p, ctx.seed, ctx.x_shape = epilogue, p, seed, x.shape
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
        return y.view(*x.shape[:-1], -1)  # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x2, weight, y = ctx.saved_tensors
        dy = grad.reshape(-1, weight.shape[0]).contiguous()  # (N, out)
        dx = torch.empty(x2.shape) if ctx.needs_input_grad[0] else None  # (N, in)
        dw = torch.empty_like(weight)  # (out, in)
        db = torch.empty(weight.shape[0]) if ctx.has_bias else None  # (out,)
        context().linear_backward(
            array(dy),
            array(x2),
            array(weight),
            array(y),
            array(dx),
            array(dw),
            array(db),
            ctx.epilogue,
            ctx.p,
            ctx.seed,
        )
        return (
            None if dx is None else dx.view(ctx.x_shape),
            dw,
            db,
            grad if ctx.has_residual else None,
            None,
            None,
            None,
        )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    relu: bool = False,
    residual: torch.Tensor | None = None,
    p: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """F.linear(x, weight, bias), then ReLU (relu=True) or residual + dropout with the mask of seed over the output's
    flat index (residual given), (..., out).

    Args:
        x: (..., in), rows contiguous. weight: (out, in). bias: (out,) or None. residual: (..., out) or None.
        p: dropout probability with a residual (0: none). seed: of the dropout mask.
    """
    epilogue = "relu" if relu else "none" if residual is None else "dropout_add"
    return _Linear.apply(x, weight, bias, residual, epilogue, p, seed)


def linear_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    relu: bool = False,
    residual: torch.Tensor | None = None,
    p: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Pure torch linear."""
    y = F.linear(x, weight, bias)  # (..., out)
    if relu:
        return F.relu(y)
    return y if residual is None else residual + y * dropout_mask_reference(tuple(y.shape), p, seed)
