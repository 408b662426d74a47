"""Causal multi-head attention over a per-row KV cache (Triton), for incremental Decision Transformer rollouts.

Two kernels share one online-softmax (flash-attention style) step:
- `attention_with_kvcache`: one program per (row, head) appends the row's new K/V to the cache (in place), then
  runs the new queries over the cached keys, masking by absolute token position: causal, left padding
  (`cache_starts`) and, in the ring layout, whatever has been overwritten. Prefill of a left-padded window is
  the same call with an empty cache (cache_seqlens = 0, cache_starts = padding per row).
- `attention_masked`: queries over given keys/values (a whole KV ring) under an explicit (B, n, L) mask: the
  `attend` step of dt_fast.decode.KVCacheDecoder, whose per-query windows are built from its slot positions.
Forward only: rollouts run under torch.no_grad; training uses the model's SDPA path.

Specification and CPU fallback: `attention_kvcache_ref` and `attention_masked_ref` in dt_fast.kernels.reference.
Tests: tests/test_kernels_attention.py. References: Triton tutorial 06 (online softmax), flash-attention
`flash_attn_with_kvcache` (API and in-place cache contract). Scores and softmax are fp32; dots use
input_precision="ieee", which keeps fp32 inputs out of TF32 (within 1e-5 of the reference) and does not change
fp16/bf16 dots.
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
def _attn_kvcache_fwd_kernel(O, Q, K_NEW, V_NEW, K_CACHE, V_CACHE, SEQLENS, STARTS,
                             sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                             skc_b, skc_h, skc_t, svc_b, svc_h, svc_t, so_b, so_h, so_t,
                             n_heads, T_NEW, L, HS, scale,
                             RING: tl.constexpr, HAS_STARTS: tl.constexpr, BLOCK_Q: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Append T_NEW tokens of row b, head h to the cache, then O = softmax(Q K^T * scale, masked) V."""
    pid = tl.program_id(0).to(tl.int64)
    b, h = pid // n_heads, pid % n_heads
    seqlen = tl.load(SEQLENS + b).to(tl.int64)  # tokens already in this row
    end = seqlen + T_NEW  # tokens after the append
    start = tl.load(STARTS + b).to(tl.int64) if HAS_STARTS else 0  # first unmasked position
    d = tl.arange(0, BLOCK_D)  # (BD,)
    d_ok = d < HS
    # Stage 1: append the new K/V (slot = position, or position % L in the ring layout).
    for i0 in range(0, T_NEW, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)  # (BQ,)
        ok = (i < T_NEW)[:, None] & d_ok[None, :]
        slot = (seqlen + i) % L if RING else seqlen + i  # (BQ,)
        k = tl.load(K_NEW + b * sk_b + h * sk_h + i[:, None] * sk_t + d[None, :], mask=ok)
        v = tl.load(V_NEW + b * sv_b + h * sv_h + i[:, None] * sv_t + d[None, :], mask=ok)
        tl.store(K_CACHE + b * skc_b + h * skc_h + slot[:, None] * skc_t + d[None, :], k, mask=ok)
        tl.store(V_CACHE + b * svc_b + h * svc_h + slot[:, None] * svc_t + d[None, :], v, mask=ok)
    tl.debug_barrier()  # the keys written above are read back by other threads of this program
    # Stage 2: online softmax of the new queries over the occupied slots.
    n_slots = tl.minimum(end, L)
    for i0 in range(0, T_NEW, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)  # (BQ,)
        q_ok = i < T_NEW
        q_pos = seqlen + i  # (BQ,) absolute position of each query
        q = tl.load(Q + b * sq_b + h * sq_h + i[:, None] * sq_t + d[None, :], mask=q_ok[:, None] & d_ok[None, :],
                    other=0.0)  # (BQ, BD)
        m_i = tl.full((BLOCK_Q,), float("-inf"), dtype=tl.float32)  # running max
        l_i = tl.zeros((BLOCK_Q,), dtype=tl.float32)  # running denominator
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        for j0 in range(0, n_slots, BLOCK_N):
            slot = j0 + tl.arange(0, BLOCK_N)  # (BN,)
            s_ok = slot < n_slots
            k_pos = end - 1 - (end - 1 - slot) % L if RING else slot  # (BN,) position held by each slot
            kv_ok = s_ok[:, None] & d_ok[None, :]
            k = tl.load(K_CACHE + b * skc_b + h * skc_h + slot[:, None] * skc_t + d[None, :], mask=kv_ok,
                        other=0.0)  # (BN, BD)
            v = tl.load(V_CACHE + b * svc_b + h * svc_h + slot[:, None] * svc_t + d[None, :], mask=kv_ok,
                        other=0.0)  # (BN, BD)
            allowed = (s_ok & (k_pos >= start))[None, :] & (k_pos[None, :] <= q_pos[:, None])  # (BQ, BN)
            m_i, l_i, acc = _online_softmax_step(q, k, v, allowed, m_i, l_i, acc, scale)
        out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)  # (BQ, BD)
        tl.store(O + b * so_b + h * so_h + i[:, None] * so_t + d[None, :], out.to(O.dtype.element_ty),
                 mask=q_ok[:, None] & d_ok[None, :])


@triton.jit
def _attn_masked_fwd_kernel(O, Q, K, V, MASK, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                            sm_b, sm_q, sm_k, so_b, so_h, so_t, n_heads, NQ, NK, HS, scale,
                            BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """O = softmax(Q K^T * scale where MASK, else -inf) V for row b, head h; MASK is (B, NQ, NK) uint8."""
    pid = tl.program_id(0).to(tl.int64)
    b, h = pid // n_heads, pid % n_heads
    d = tl.arange(0, BLOCK_D)  # (BD,)
    d_ok = d < HS
    for i0 in range(0, NQ, BLOCK_Q):
        i = i0 + tl.arange(0, BLOCK_Q)  # (BQ,)
        q_ok = i < NQ
        q = tl.load(Q + b * sq_b + h * sq_h + i[:, None] * sq_t + d[None, :], mask=q_ok[:, None] & d_ok[None, :],
                    other=0.0)  # (BQ, BD)
        m_i = tl.full((BLOCK_Q,), float("-inf"), dtype=tl.float32)  # running max
        l_i = tl.zeros((BLOCK_Q,), dtype=tl.float32)  # running denominator
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        for j0 in range(0, NK, BLOCK_N):
            j = j0 + tl.arange(0, BLOCK_N)  # (BN,)
            j_ok = j < NK
            kv_ok = j_ok[:, None] & d_ok[None, :]
            k = tl.load(K + b * sk_b + h * sk_h + j[:, None] * sk_t + d[None, :], mask=kv_ok, other=0.0)  # (BN, BD)
            v = tl.load(V + b * sv_b + h * sv_h + j[:, None] * sv_t + d[None, :], mask=kv_ok, other=0.0)  # (BN, BD)
            allowed = tl.load(MASK + b * sm_b + i[:, None] * sm_q + j[None, :] * sm_k,
                              mask=q_ok[:, None] & j_ok[None, :], other=0) != 0  # (BQ, BN)
            m_i, l_i, acc = _online_softmax_step(q, k, v, allowed, m_i, l_i, acc, scale)
        out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)  # (BQ, BD)
        tl.store(O + b * so_b + h * so_h + i[:, None] * so_t + d[None, :], out.to(O.dtype.element_ty),
                 mask=q_ok[:, None] & d_ok[None, :])


def launch_blocks(n_new: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): tiles of >= 16 (tl.dot's minimum); q, k, v tiles within 48 KB of shared memory."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    return max(16, min(64 if block_d <= 64 else 16, triton.next_power_of_2(n_new))), block_d


def _check(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           cache_seqlens: torch.Tensor, cache_starts: torch.Tensor | None, ring: bool) -> None:
    """Raise ValueError naming the first argument with a wrong shape, dtype, device or range."""
    if q.dim() != 4:
        raise ValueError(f"attention_with_kvcache: q must be (batch, heads, new_tokens, head_dim), got "
                         f"{tuple(q.shape)}")
    B, nh, Tn, hs = q.shape
    L = k_cache.shape[2] if k_cache.dim() == 4 else -1
    want = {"k": (B, nh, Tn, hs), "v": (B, nh, Tn, hs), "k_cache": (B, nh, L, hs), "v_cache": (B, nh, L, hs)}
    for name, x in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if tuple(x.shape) != want[name]:
            raise ValueError(f"attention_with_kvcache: {name} must have shape {want[name]} "
                             f"(batch, heads, tokens, head_dim), got {tuple(x.shape)}")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"attention_with_kvcache: {name} is {x.dtype} on {x.device}, q is {q.dtype} on "
                             f"{q.device}")
    if not q.dtype.is_floating_point or hs > MAX_HEAD_DIM:
        raise ValueError(f"attention_with_kvcache: need floating point q with head_dim <= {MAX_HEAD_DIM}, got "
                         f"{q.dtype} head_dim {hs}")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("attention_with_kvcache: k_cache and v_cache must have stride 1 in head_dim (they are "
                         "written in place, so they cannot be copied)")
    for name, x in (("cache_seqlens", cache_seqlens), ("cache_starts", cache_starts)):
        if x is not None and (tuple(x.shape) != (B,) or x.dtype not in (torch.int32, torch.int64)
                              or x.device != q.device):
            raise ValueError(f"attention_with_kvcache: {name} must be a ({B},) int32/int64 tensor on {q.device}, "
                             f"got shape {tuple(x.shape)} dtype {x.dtype} on {x.device}")
    if ring and Tn > L:
        raise ValueError(f"attention_with_kvcache: {Tn} new tokens do not fit a ring cache of {L} slots")
    # Range checks sync with the device; a CUDA graph capture cannot sync and relies on its warm-up call.
    if B and not (q.is_cuda and torch.cuda.is_current_stream_capturing()):
        bad = (cache_seqlens < 0) if ring else (cache_seqlens < 0) | (cache_seqlens + Tn > L)  # (B,)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise ValueError(f"attention_with_kvcache: cache_seqlens[{row}] = {int(cache_seqlens[row])} with {Tn} "
                             f"new tokens does not fit the append cache of {L} slots (must be >= 0, <= {L - Tn})")


def attention_kvcache_fwd(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, cache_seqlens: torch.Tensor, cache_starts: torch.Tensor | None = None,
                          ring: bool = False, scale: float | None = None) -> torch.Tensor:
    """Launch the kernel; same arguments, result and in-place cache update as reference.attention_kvcache_ref."""
    _check(q, k_cache, v_cache, k, v, cache_seqlens, cache_starts, ring)
    B, nh, Tn, hs = q.shape
    L = k_cache.shape[2]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (B, nh, Tn, hs)
    if B * nh * Tn == 0:
        return out
    block_q, block_d = launch_blocks(Tn, hs)
    _attn_kvcache_fwd_kernel[(B * nh,)](
        out, q, k, v, k_cache, v_cache, cache_seqlens, cache_seqlens if cache_starts is None else cache_starts,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3],
        *out.stride()[:3], nh, Tn, L, hs, float(hs**-0.5 if scale is None else scale),
        RING=ring, HAS_STARTS=cache_starts is not None, BLOCK_Q=block_q, BLOCK_N=BLOCK_N, BLOCK_D=block_d,
        num_warps=4, num_stages=NUM_STAGES)
    return out


def attention_masked_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """Launch the masked kernel; same arguments and result as reference.attention_masked_ref."""
    if q.dim() != 4 or k.dim() != 4 or k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(f"attention_masked: q must be (batch, heads, n, head_dim) and k (batch, heads, L, head_dim)"
                         f", got q {tuple(q.shape)} k {tuple(k.shape)}")
    B, nh, n, hs = q.shape
    L = k.shape[2]
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"attention_masked: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if tuple(mask.shape) != (B, n, L) or mask.dtype != torch.bool:
        raise ValueError(f"attention_masked: mask must be a ({B}, {n}, {L}) bool tensor (batch, queries, keys), got "
                         f"shape {tuple(mask.shape)} dtype {mask.dtype}")
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"attention_masked: {name} is {x.dtype} on {x.device}, q is {q.dtype} on {q.device}")
    if not q.dtype.is_floating_point or hs > MAX_HEAD_DIM:
        raise ValueError(f"attention_masked: need floating point q with head_dim <= {MAX_HEAD_DIM}, got {q.dtype} "
                         f"head_dim {hs}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    mask = mask.view(torch.uint8)  # (B, n, L), same bytes: Triton loads bool tensors as uint8
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (B, nh, n, hs)
    if B * nh * n == 0:
        return out
    block_q, block_d = launch_blocks(n, hs)
    _attn_masked_fwd_kernel[(B * nh,)](
        out, q, k, v, mask, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *mask.stride(), *out.stride()[:3],
        nh, n, L, hs, float(scale), BLOCK_Q=block_q, BLOCK_N=BLOCK_N, BLOCK_D=block_d, num_warps=4,
        num_stages=NUM_STAGES)
    return out


class AttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the attention launchers: forward(launcher, *args); forward only."""

    @staticmethod
    def forward(ctx, launcher, *args) -> torch.Tensor:
        """(B, nh, n, hs) attention output of `launcher(*args)` (the KV-cache one updates its cache in place)."""
        return launcher(*args)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> None:
        """Not supported: raise."""
        raise RuntimeError("the Triton attention kernels have no backward pass: they are for no-grad rollouts; "
                           "train through DecisionTransformer.forward, whose attention is torch SDPA")


def attention_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Attention of queries over given keys/values (e.g. a whole KV ring) under an explicit boolean mask.

    This is the `attend` step of dt_fast.decode.KVCacheDecoder, whose mask encodes each query's window.
    Args:
        q: (B, nh, n, hs). k, v: (B, nh, L, hs), any strides with stride 1 in hs (views into a cache are fine).
        mask: (B, n, L) bool, True where query i may attend to key j. scale: multiplies q.k.
    Returns:
        (B, nh, n, hs); a query whose mask row is empty gets zeros. No backward pass.
    """
    return AttentionFunction.apply(attention_masked_fwd, q, k, v, mask, scale)


def attention_with_kvcache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor,
                           v: torch.Tensor, cache_seqlens: torch.Tensor, cache_starts: torch.Tensor | None = None,
                           ring: bool = False, scale: float | None = None) -> torch.Tensor:
    """Causal attention of new tokens over a per-row KV cache; k_cache and v_cache are updated IN PLACE.

    The Tn new tokens of row b take absolute positions p = cache_seqlens[b] + i, i < Tn. Their keys and values
    are first written into the cache, at slot p (append layout, exact mode) or p % L (ring layout, rolling mode:
    the row keeps its last L tokens and older ones are overwritten). Each new query then attends to every key
    held in the cache whose position lies in [cache_starts[b], p]. With cache_seqlens = cache_starts = 0 this is
    ordinary causal attention; a prefill of a left-padded window passes the padding length as cache_starts.
    A query with no key in range (a padded one) gets a zero output, as torch SDPA gives for a fully masked row.

    Example, append layout, L = 6, cache_seqlens = [2], Tn = 2 (x = attended, . = masked):
        slot       0 1 2 3 4 5
        query p=2  x x x . . .
        query p=3  x x x x . .

    Args:
        q, k, v: (B, nh, Tn, hs) queries, keys and values of the new tokens (any strides with stride 1 in hs).
        k_cache, v_cache: (B, nh, L, hs), preallocated; written in place at the new tokens' slots.
        cache_seqlens: (B,) int32/int64, tokens appended to each row before this call (the caller advances it).
            Append layout: cache_seqlens + Tn <= L. Ring layout: any value >= 0, Tn <= L.
        cache_starts: (B,) int32/int64 or None (= 0): keys at positions below it are masked (left padding).
        ring: use the ring-buffer layout.
        scale: softmax scale; hs ** -0.5 if None.
    Returns:
        (B, nh, Tn, hs) attention output, dtype of q. No backward pass (backward raises RuntimeError).
    See tests/test_kernels_attention.py for use against reference.attention_kvcache_ref.
    """
    return AttentionFunction.apply(attention_kvcache_fwd, q, k_cache, v_cache, k, v, cache_seqlens, cache_starts,
                                   ring, scale)
