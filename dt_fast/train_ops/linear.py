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


class _QueryKeyValue(torch.autograd.Function):
    """(x[:, rows] weight[:C]^T + bias[:C], x weight[C:]^T + bias[C:]) as one node, whose backward writes the
    gradients of weight, bias and x whole (autograd would zero-fill one per slice and add them up)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        x2, xq = _rows(x), _rows(x[:, rows])  # (N, C), (Nq, C) spaced rows of x
        q, kv = torch.empty(xq.shape[0], C), torch.empty(x2.shape[0], weight.shape[0] - C)  # (Nq, C), (N, 2C)
        for inputs, part, out in ((xq, slice(None, C), q), (x2, slice(C, None), kv)):
            b = None if bias is None else bias[part]
            context().linear_forward(array(inputs), array(weight[part]), array(b), array(out), "none", None, 0.0, 0)
        ctx.save_for_backward(x2, weight)
        ctx.shape, ctx.rows, ctx.has_bias = (B, T, C), rows, bias is not None
        return q.view(B, -1, C), kv.view(B, T, -1)  # (B, Tq, C), (B, T, 2C)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_q: torch.Tensor, grad_kv: torch.Tensor) -> tuple:
        x2, weight = ctx.saved_tensors
        B, T, C = ctx.shape
        xq = _rows(x2.view(B, T, C)[:, ctx.rows])  # (Nq, C)
        dx, dxq = torch.empty(x2.shape), torch.empty(xq.shape)  # (N, C), (Nq, C)
        dw = torch.empty_like(weight)  # (3C, C)
        db = torch.empty(weight.shape[0]) if ctx.has_bias else None  # (3C,)
        for g, inputs, part, d in ((grad_kv, x2, slice(C, None), dx), (grad_q, xq, slice(None, C), dxq)):
            context().linear_backward(
                array(g.reshape(-1, g.shape[-1]).contiguous()),
                array(inputs),
                array(weight[part]),
                None,
                array(d),
                array(dw[part]),
                None if db is None else array(db[part]),
                "none",
                0.0,
                0,
            )
        dx = dx.view(B, T, C)
        dx[:, ctx.rows] += dxq.view(B, -1, C)
        return dx, dw, db, None


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


def query_key_value(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """The c_attn of attention at the rows x[:, rows] only: their queries (B, Tq, C) and the keys and values of
    every row (B, T, 2C).

    Args:
        x: (B, T, C) contiguous. weight: (3C, C), the queries' rows first. bias: (3C,) or None. rows: a slice of T.
    """
    return _QueryKeyValue.apply(x, weight, bias, rows)


def query_key_value_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure torch query_key_value."""
    C = x.shape[-1]
    q = F.linear(x[:, rows], weight[:C], None if bias is None else bias[:C])  # (B, Tq, C)
    return q, F.linear(x, weight[C:], None if bias is None else bias[C:])  # (B, Tq, C), (B, T, 2C)
