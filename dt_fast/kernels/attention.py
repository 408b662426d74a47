"""Masked multi-head attention over a KV ring (Triton): the attention of the incremental decoder, dt_fast.decode.

`attention_masked`: one program per (row, head) runs its queries over given keys and values (a whole KV ring,
seen through head views of the cache) under an explicit (B, n, L) boolean mask, with an online softmax (flash-
attention style). The decoder builds the mask from the position each ring slot holds, so one kernel serves its
every case: the 3 new tokens of a step (rolling mode, or exact while the window fills), the 3K - 1 tokens of an
exact window recompute, rows of different ages in one batch, and padding queries (an empty mask row gives zeros).
Forward only: rollouts run under torch.no_grad; training uses the model's SDPA path.

Specification and CPU fallback: `attention_masked_ref` in dt_fast.kernels.reference. Tests:
tests/test_kernels_attention.py (against the reference), tests/test_kernels_compile.py (lowered for sm_80).
References: Triton tutorial 06 (online softmax), flash-attention `flash_attn_with_kvcache` (a KV cache read in
place). Scores and softmax are fp32; dots use input_precision="ieee", which keeps fp32 inputs out of TF32 (within
1e-5 of the reference) and does not change fp16/bf16 dots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_HEAD_DIM = 256
BLOCK_N = 32  # keys per inner step
NUM_STAGES = 2  # fp32, head_dim 128: 42 KB of shared memory on sm_80 (3 stages: 74 KB, over the 48 KB default)


@triton.jit
def _online_softmax_step(q, k, v, allowed, m_i, l_i, acc, scale):
    """Fold one (BLOCK_N) block of keys into the running (max, denominator, output) of a (BLOCK_Q) query tile."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # (BQ, BN)
    s = tl.where(allowed, s, float("-inf"))  # (BQ, BN)
    m_new = tl.maximum(m_i, tl.max(s, axis=1))  # (BQ,)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a query with no key yet keeps zeros
    p = tl.exp(s - m_safe[:, None])  # (BQ, BN), 0 where masked
    alpha = tl.exp(m_i - m_safe)  # (BQ,)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")  # (BQ, BD)
    return m_new, l_i, acc


@triton.jit
def _attn_masked_fwd_kernel(
    O,
    Q,
    K,
    V,
    MASK,
    sq_b,
    sq_h,
    sq_t,
    sk_b,
    sk_h,
    sk_t,
    sv_b,
    sv_h,
    sv_t,
    sm_b,
    sm_q,
    sm_k,
    so_b,
    so_h,
    so_t,
    n_heads,
    NQ,
    NK,
    HS,
    scale,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """O = softmax(Q K^T * scale where MASK, else -inf) V for row b, head h; MASK is (B, NQ, NK) uint8."""
    pid = tl.program_id(0).to(tl.int64)
    b, h = pid // n_heads, pid % n_heads
    d = tl.arange(0, BLOCK_D)  # (BD,)
    d_ok = d < HS
    for i0 in range(0, NQ, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)  # (BQ,)
        q_ok = i < NQ
        q = tl.load(
            Q + b * sq_b + h * sq_h + i[:, None] * sq_t + d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0
        )  # (BQ, BD)
        m_i = tl.full((BLOCK_Q,), float("-inf"), dtype=tl.float32)  # running max
        l_i = tl.zeros((BLOCK_Q,), dtype=tl.float32)  # running denominator
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        for j0 in range(0, NK, BLOCK_N):
            j = j0 + tl.arange(0, BLOCK_N)  # (BN,)
            j_ok = j < NK
            kv_ok = j_ok[:, None] & d_ok[None, :]
            k = tl.load(K + b * sk_b + h * sk_h + j[:, None] * sk_t + d[None, :], mask=kv_ok, other=0.0)  # (BN, BD)
            v = tl.load(V + b * sv_b + h * sv_h + j[:, None] * sv_t + d[None, :], mask=kv_ok, other=0.0)  # (BN, BD)
            allowed = (
                tl.load(
                    MASK + b * sm_b + i[:, None] * sm_q + j[None, :] * sm_k, mask=q_ok[:, None] & j_ok[None, :], other=0
                )
                != 0
            )  # (BQ, BN)
            m_i, l_i, acc = _online_softmax_step(q, k, v, allowed, m_i, l_i, acc, scale)
        out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)  # (BQ, BD)
        tl.store(
            O + b * so_b + h * so_h + i[:, None] * so_t + d[None, :],
            out.to(O.dtype.element_ty),
            mask=q_ok[:, None] & d_ok[None, :],
        )


def launch_blocks(n_queries: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): tiles of >= 16 (tl.dot's minimum); q, k, v tiles within 48 KB of shared memory."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    return max(16, min(64 if block_d <= 64 else 16, triton.next_power_of_2(n_queries))), block_d


def attention_masked_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Launch the masked kernel; same arguments and result as reference.attention_masked_ref."""
    if q.dim() != 4 or k.dim() != 4 or k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"attention_masked: q must be (batch, heads, n, head_dim) and k (batch, heads, L, head_dim)"
            f", got q {tuple(q.shape)} k {tuple(k.shape)}"
        )
    B, nh, n, hs = q.shape
    L = k.shape[2]
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"attention_masked: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if tuple(mask.shape) != (B, n, L) or mask.dtype != torch.bool:
        raise ValueError(
            f"attention_masked: mask must be a ({B}, {n}, {L}) bool tensor (batch, queries, keys), got "
            f"shape {tuple(mask.shape)} dtype {mask.dtype}"
        )
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"attention_masked: {name} is {x.dtype} on {x.device}, q is {q.dtype} on {q.device}")
    if not q.dtype.is_floating_point or hs > MAX_HEAD_DIM:
        raise ValueError(
            f"attention_masked: need floating point q with head_dim <= {MAX_HEAD_DIM}, got {q.dtype} head_dim {hs}"
        )
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    mask = mask.view(torch.uint8)  # (B, n, L), same bytes: Triton loads bool tensors as uint8
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (B, nh, n, hs)
    if B * nh * n == 0:
        return out
    block_q, block_d = launch_blocks(n, hs)
    _attn_masked_fwd_kernel[(B * nh,)](
        out,
        q,
        k,
        v,
        mask,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *mask.stride(),
        *out.stride()[:3],
        nh,
        n,
        L,
        hs,
        float(scale),
        BLOCK_Q=block_q,
        BLOCK_N=BLOCK_N,
        BLOCK_D=block_d,
        num_warps=4,
        num_stages=NUM_STAGES,
    )
    return out


class AttentionFunction(torch.autograd.Function):
    """Autograd wrapper of `attention_masked_fwd`; forward only."""

    @staticmethod
    def forward(
        ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """(B, nh, n, hs) attention output."""
        return attention_masked_fwd(q, k, v, mask, scale)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> None:
        """Not supported: raise."""
        raise RuntimeError(
            "the Triton attention kernel has no backward pass: it is for no-grad rollouts; "
            "train through DecisionTransformer.forward, whose attention is torch SDPA"
        )


def attention_masked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of queries over given keys/values (e.g. a whole KV ring) under an explicit boolean mask.

    The attention of dt_fast.decode.KVCacheDecoder, whose mask encodes each query's window.
    Args:
        q: (B, nh, n, hs). k, v: (B, nh, L, hs), any strides with stride 1 in hs (views into a cache are fine).
        mask: (B, n, L) bool, True where query i may attend to key j. scale: multiplies q.k.
    Returns:
        (B, nh, n, hs); a query whose mask row is empty gets zeros. No backward pass (backward raises
        RuntimeError).
    """
    return AttentionFunction.apply(q, k, v, mask, scale)
