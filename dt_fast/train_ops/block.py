"""A GPT-2 block (pre-norm attention and MLP, each with dropout and its residual) as one autograd node, one C++ call
each way (csrc/train/block.h: the layer_norm, linear and attention ops in turn). Per op from Python, the work between
the ops (autograd nodes, tensor wrappers, arguments, on caches the ops had just filled) took a sixth of a training
step on two cores, all of it on one."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from dt_fast.train_ops.attention import attention_reference, mask_bytes_of
from dt_fast.train_ops.layer_norm import layer_norm_reference
from dt_fast.train_ops.linear import linear_reference
from dt_fast.train_ops.runtime import array, context


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the transformers activation called `name` (see config.ACTIVATIONS)."""
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name in ("silu", "swish"):
        return F.silu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unsupported activation_function {name!r}")


class BlockWeights(NamedTuple):
    """A block's parameters, as in GPT-2's state_dict: ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj."""

    ln_1_weight: torch.Tensor
    ln_1_bias: torch.Tensor
    c_attn_weight: torch.Tensor
    c_attn_bias: torch.Tensor
    attn_proj_weight: torch.Tensor
    attn_proj_bias: torch.Tensor
    ln_2_weight: torch.Tensor
    ln_2_bias: torch.Tensor
    c_fc_weight: torch.Tensor
    c_fc_bias: torch.Tensor
    mlp_proj_weight: torch.Tensor
    mlp_proj_bias: torch.Tensor


class BlockSpec(NamedTuple):
    """A block's hyper-parameters and the seeds of its three dropout masks (attention probabilities, attention
    output, MLP output)."""

    n_head: int
    scale: float
    attn_p: float
    resid_p: float
    eps_1: float
    eps_2: float
    activation: str  # transformers' activation_function name (config.ACTIVATIONS); relu is fused into c_fc
    seeds: tuple[int, int, int]


class _Block(torch.autograd.Function):
    """x + attn(ln_1(x)) = x1, then x1 + mlp(ln_2(x1)), at every token or at the tokens x[:, rows] only."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        start: torch.Tensor | None,
        rows: slice | None,
        spec: BlockSpec,
        *weights: torch.Tensor,
    ) -> torch.Tensor:
        x = x.contiguous()  # (B, T, C)
        B, T, C = x.shape
        r = range(T)[rows or slice(None)]
        Tq, first, step = len(r), r.start, r.step
        N, M, inner = B * T, B * Tq, weights[8].shape[0]
        every = Tq == T and first == 0 and step == 1  # queries at every token
        pre = torch.empty(M, inner)
        saved = [
            torch.empty(N, C),  # h1
            torch.empty(N),  # mean1
            torch.empty(N),  # rstd1
            torch.empty(3 * N * C if every else M * C + 2 * N * C),  # qkv
            None if every else torch.empty(M, C),  # hq
            None if every else torch.empty(M, C),  # residual
            torch.empty(B, spec.n_head, Tq, T),  # probs
            torch.empty(B, Tq, 2, dtype=torch.int32),  # spans
            *(torch.empty(M, C) for _ in range(3)),  # y, x1, h2
            torch.empty(M),  # mean2
            torch.empty(M),  # rstd2
            pre,
            pre if spec.activation == "relu" else torch.empty(M, inner),  # f
        ]
        out = torch.empty(B, Tq, C)
        mask_bytes = mask_bytes_of(mask if mask is None or rows is None else mask[:, :, rows])  # (B, Tq, T)
        context().block_forward(
            array(x),
            array(mask_bytes),
            None if mask is not None else array(start),
            [array(w) for w in weights],
            [array(t) for t in saved],
            array(out),
            spec.n_head,
            spec.scale,
            spec.attn_p,
            spec.resid_p,
            spec.eps_1,
            spec.eps_2,
            list(spec.seeds),
            spec.activation,
            first,
            step,
        )
        ctx.save_for_backward(x, *weights, *saved)
        ctx.spec, ctx.rows = spec, (first, step)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x, *rest = ctx.saved_tensors
        weights, saved = rest[:12], rest[12:]
        spec = ctx.spec
        grads = [torch.empty_like(w) for w in weights]
        dx = torch.empty_like(x)
        context().block_backward(
            array(grad.contiguous()),
            array(x),
            [array(w) for w in weights],
            [array(t) for t in saved],
            [array(g) for g in grads],
            array(dx),
            spec.n_head,
            spec.scale,
            spec.attn_p,
            spec.resid_p,
            list(spec.seeds),
            spec.activation,
            *ctx.rows,
        )
        return dx, None, None, None, None, *grads


def transformer_block(
    x: torch.Tensor,
    weights: BlockWeights,
    spec: BlockSpec,
    mask: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """A pre-norm GPT-2 block, (B, T, C), or (B, Tq, C) at the tokens x[:, rows] only (keys and values of every token).

    Args:
        x: (B, T, C). weights: its BlockWeights (biases required). spec: its BlockSpec.
        mask: (B, 1, T, T) bool, True = may attend; or None: causal, from token start[b] of each batch row if start
            (B,) int32 is given. rows: None, or a slice of T (step >= 1).
    """
    return _Block.apply(x, mask, start, rows, spec, *weights)


def transformer_block_reference(
    x: torch.Tensor,
    weights: BlockWeights,
    spec: BlockSpec,
    mask: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """Pure torch transformer_block (the C++ ops' references, with the same dropout masks)."""
    w = weights
    C = x.shape[-1]
    h = layer_norm_reference(x, w.ln_1_weight, w.ln_1_bias, spec.eps_1)  # (B, T, C)
    if rows is None:
        q, kv, residual = linear_reference(h, w.c_attn_weight, w.c_attn_bias), None, x  # (B, T, 3C)
    else:
        q = linear_reference(h[:, rows], w.c_attn_weight[:C], w.c_attn_bias[:C])  # (B, Tq, C)
        kv, residual = linear_reference(h, w.c_attn_weight[C:], w.c_attn_bias[C:]), x[:, rows]  # (B, T, 2C)
    if mask is not None and rows is not None:
        mask = mask[:, :, rows]  # (B, 1, Tq, T)
    y = attention_reference(q, kv, mask, spec.n_head, spec.scale, spec.attn_p, spec.seeds[0], start, rows)
    p = spec.resid_p
    x1 = linear_reference(y, w.attn_proj_weight, w.attn_proj_bias, residual=residual, p=p, seed=spec.seeds[1])
    h = layer_norm_reference(x1, w.ln_2_weight, w.ln_2_bias, spec.eps_2)  # (B, Tq, C)
    h = activation(spec.activation, linear_reference(h, w.c_fc_weight, w.c_fc_bias))  # (B, Tq, 4C)
    return linear_reference(h, w.mlp_proj_weight, w.mlp_proj_bias, residual=x1, p=p, seed=spec.seeds[2])
