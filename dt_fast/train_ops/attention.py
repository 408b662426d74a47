"""Causal self-attention of short windows in C++ (csrc/train/attention.h): per batch row and head, the scores,
the masked softmax, dropout and the product with the values, forward and backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dt_fast.train_ops.dropout import dropout_mask_reference
from dt_fast.train_ops.runtime import array, context


def mask_bytes_of(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, 1, Tq, Tk) bool as (B, Tq, Tk) uint8 contiguous, or None."""
    return None if mask is None else mask[:, 0].contiguous().view(torch.uint8)


class _Attention(torch.autograd.Function):
    """y = dropout(softmax(scale q k^T masked)) v per head; arguments as `attention` takes them."""

    @staticmethod
    def forward(
        ctx,
        q: torch.Tensor,
        kv: torch.Tensor | None,
        mask: torch.Tensor | None,
        n_head: int,
        scale: float,
        p: float,
        seed: int,
        start: torch.Tensor | None,
        rows: slice | None,
    ) -> torch.Tensor:
        q = q.contiguous()  # (B, Tq, Wq)
        keys = q if kv is None else kv.contiguous()  # (B, T, Wk)
        B, Tq, T = q.shape[0], q.shape[1], keys.shape[1]
        C = (q.shape[2] // 3) if kv is None else q.shape[2]
        y = torch.empty(B, Tq, C)  # (B, Tq, C)
        probs = torch.empty(B, n_head, Tq, T)  # (B, nh, Tq, T)
        spans = torch.empty(B, Tq, 2, dtype=torch.int32)  # (B, Tq, 2): each query's keys [lo, hi)
        first, step = (0, 1) if rows is None else (rows.start or 0, rows.step or 1)
        context().attention_forward(
            array(q),
            array(keys),
            array(mask_bytes_of(mask)),
            array(start),
            n_head,
            scale,
            p,
            seed,
            array(probs),
            array(y),
            array(spans),
            first,
            step,
        )
        ctx.save_for_backward(q, keys, probs, spans)
        ctx.n_head, ctx.scale, ctx.p, ctx.seed, ctx.shared = n_head, scale, p, seed, kv is None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        q, keys, probs, spans = ctx.saved_tensors
        dq = torch.empty_like(q)  # (B, Tq, Wq)
        dkv = dq if ctx.shared else torch.empty_like(keys)  # (B, T, Wk)
        context().attention_backward(
            array(grad.contiguous()),
            array(q),
            array(keys),
            ctx.n_head,
            ctx.scale,
            ctx.p,
            ctx.seed,
            array(probs),
            array(spans),
            array(dq),
            array(dkv),
        )
        return dq, None if ctx.shared else dkv, None, None, None, None, None, None, None


def attention(
    q: torch.Tensor,
    kv: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_head: int,
    scale: float,
    p: float,
    seed: int,
    start: torch.Tensor | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """Multi-head attention with dropout on the probabilities, (B, Tq, C), heads side by side.

    Args:
        q: the c_attn output (B, T, 3C) = queries, keys, values (kv None); or the queries alone (B, Tq, C).
        kv: None, or the keys and values (B, T, 2C) of the queries q.
        mask: (B, 1, Tq, T) bool, True = may attend; or None: causal, see start and rows. A query with no key gets
            zeros.
        n_head: heads (C % n_head == 0). scale: multiplies q k^T. p: dropout probability. seed: of its mask, over
            the flat (B, n_head, Tq, T) index.
        start: without a mask, (B,) int32, the first key each batch row may attend (left padding), or None: 0.
        rows: without a mask, the tokens of the queries among the keys (query i is token rows.start + i *
            rows.step), or None: token i.
    """
    return _Attention.apply(q, kv, mask, n_head, scale, p, seed, start, rows)


def causal_mask(
    B: int, Tq: int, T: int, start: torch.Tensor | None, rows: slice | None, device: torch.device | None = None
) -> torch.Tensor:
    """The (B, 1, Tq, T) bool mask of `attention` without one: query i attends keys start[b] to its token."""
    token = torch.arange(T, device=device)[rows if rows is not None else slice(None)][:Tq]  # (Tq,)
    keys = torch.arange(T, device=device)  # (T,)
    first = torch.zeros(B, dtype=torch.long, device=device) if start is None else start.long()  # (B,)
    return ((keys <= token[:, None]) & (keys >= first[:, None, None]))[:, None]  # (B, 1, Tq, T)


def attention_reference(
    q: torch.Tensor,
    kv: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_head: int,
    scale: float,
    p: float,
    seed: int,
    start: torch.Tensor | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """Pure torch attention."""
    if kv is None:
        C = q.shape[-1] // 3
        q, kv = q[..., :C], q[..., C:]  # (B, T, C), (B, T, 2C)
    B, Tq, C = q.shape
    T = kv.shape[1]
    k, v = kv.split(C, dim=-1)  # (B, T, C) each
    q = q.reshape(B, Tq, n_head, C // n_head).transpose(1, 2)  # (B, nh, Tq, hs)
    k = k.reshape(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    v = v.reshape(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    if mask is None:
        mask = causal_mask(B, Tq, T, start, rows)  # (B, 1, Tq, T)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, Tq, T)
    probs = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (B, nh, Tq, T)
    probs = torch.where(mask.any(dim=-1, keepdim=True), probs, 0.0)  # a query with no key: zeros, not NaN
    probs = probs * dropout_mask_reference(tuple(probs.shape), p, seed)  # (B, nh, Tq, T)
    return (probs @ v).transpose(1, 2).reshape(B, Tq, C)  # (B, Tq, C)
