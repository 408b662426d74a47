"""KV-cache attention kernel (Triton interpreter on CPU) against reference.attention_kvcache_ref, and the
reference against torch SDPA over the whole sequence.

Covers prefill of left-padded windows (lengths 1..60 steps = 3..180 tokens), decode of 1..3 new tokens against
per-row caches of different lengths, the append layout and the ring layout across its wrap-around, batch 1..9,
heads 1/2/4, hidden 64/128 (and odd head sizes). Output within 1e-5; the in-place cache writes exactly.
DT_FAST_FULL_GRID=1 runs a larger product grid.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tests.kernel_checks import FULL_GRID, assert_close_verbose, one_torch_thread  # noqa: F401 (fixture)

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from dt_fast.kernels.attention import attention_masked, attention_with_kvcache  # noqa: E402
from dt_fast.kernels.reference import attention_kvcache_ref, attention_masked_ref  # noqa: E402

ATOL = 1e-5


def qkv(B: int, nh: int, T: int, hs: int, g: torch.Generator) -> list[torch.Tensor]:
    """Random q, k, v of shape (B, nh, T, hs)."""
    return [torch.randn(B, nh, T, hs, generator=g) for _ in range(3)]


def sdpa_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor,
                visible_from: torch.Tensor) -> torch.Tensor:
    """SDPA where query p sees keys j with max(starts[b], visible_from[p]) <= j <= p; (B, nh, T, hs)."""
    T = q.shape[2]
    j = torch.arange(T)
    allowed = (j[None, :] <= j[:, None]) & (j[None, :] >= visible_from[:, None])  # (T, T)
    allowed = allowed[None] & (j[None, None, :] >= starts[:, None, None])  # (B, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])


def feed(attend, q, k, v, starts: torch.Tensor, chunks: list[int], L: int, ring: bool) -> torch.Tensor:
    """Run `attend` chunk by chunk over one sequence with an initially empty cache; concatenated outputs."""
    B, nh, T, hs = q.shape
    k_cache, v_cache = torch.zeros(B, nh, L, hs), torch.zeros(B, nh, L, hs)
    seqlens, outs, i = torch.zeros(B, dtype=torch.int32), [], 0
    for n in chunks:
        outs.append(attend(q[:, :, i:i + n], k_cache, v_cache, k[:, :, i:i + n], v[:, :, i:i + n], seqlens,
                           starts, ring))
        seqlens, i = seqlens + n, i + n
    return torch.cat(outs, dim=2)


def dt_chunks(steps: int) -> list[int]:
    """Tokens per rollout step of a decoder: (R_1, s_1), then (a_t-1, R_t, s_t) for each later step."""
    return [2] + [3] * (steps - 1)


@pytest.mark.parametrize("B,nh,steps,hs", [(1, 1, 1, 64), (3, 2, 20, 32), (9, 4, 60, 16), (2, 1, 7, 128)])
def test_reference_prefill_is_sdpa_with_left_padding(B: int, nh: int, steps: int, hs: int) -> None:
    g = torch.Generator().manual_seed(B + steps)
    T = 3 * steps
    q, k, v = qkv(B, nh, T, hs, g)
    starts = 3 * torch.randint(0, steps, (B,), generator=g)  # left padding in whole steps, at least one valid
    starts[0] = 3 * (steps - 1) + 1  # only the last step's s and a tokens valid: R is a fully masked query
    got = feed(attention_kvcache_ref, q, k, v, starts, [T], T, ring=False)
    assert_close_verbose("prefill", got, sdpa_window(q, k, v, starts, torch.zeros(T, dtype=torch.long)), atol=ATOL)
    assert got[0, :, :starts[0]].abs().max() == 0, "padded queries must give zero outputs"


@pytest.mark.parametrize("ring", [False, True])
def test_reference_decode_is_sdpa_over_the_sequence(ring: bool) -> None:
    g = torch.Generator().manual_seed(7)
    B, nh, steps, hs, K = 4, 2, 25, 16, 5
    chunks = dt_chunks(steps)
    q, k, v = qkv(B, nh, sum(chunks), hs, g)
    starts = torch.tensor([0, 1, 3, 0])
    L = 3 * K if ring else sum(chunks)
    got = feed(attention_kvcache_ref, q, k, v, starts, chunks, L, ring)
    # Ring layout: a query sees the last L tokens held after its chunk was appended.
    ends = torch.tensor(list(itertools.chain.from_iterable([sum(chunks[:i + 1])] * n for i, n in enumerate(chunks))))
    visible_from = ends - L if ring else torch.zeros_like(ends)  # (T,)
    assert_close_verbose("decode", got, sdpa_window(q, k, v, starts, visible_from), atol=ATOL)


# (batch, heads, head_dim, cache slots, new tokens, ring): decode (1..3 new tokens) and prefill (up to 180).
CASES = [(1, 1, 64, 60, 1, False), (2, 2, 32, 60, 3, False), (9, 4, 16, 60, 3, True), (3, 1, 128, 180, 180, False),
         (5, 2, 64, 60, 2, True), (4, 4, 32, 180, 60, True), (7, 1, 64, 12, 3, True), (6, 2, 24, 21, 1, True),
         (8, 4, 16, 99, 33, False)]
if FULL_GRID:
    CASES = [(B, nh, 128 // nh if i % 3 else 64 // nh, L, Tn, ring)
             for i, (B, nh, (L, Tn), ring) in enumerate(itertools.product(
                 [1, 2, 5, 9], [1, 2, 4], [(12, 1), (12, 3), (60, 2), (60, 3), (60, 60), (180, 3), (180, 180)],
                 [False, True]))]


@pytest.mark.parametrize("B,nh,hs,L,Tn,ring", CASES, ids=lambda v: str(v))
def test_kernel_equals_reference(B: int, nh: int, hs: int, L: int, Tn: int, ring: bool) -> None:
    g = torch.Generator().manual_seed(B * 100 + Tn)
    q, k, v = qkv(B, nh, Tn, hs, g)
    k_cache, v_cache = torch.randn(B, nh, L, hs, generator=g), torch.randn(B, nh, L, hs, generator=g)
    top = 4 * L if ring else L - Tn + 1  # ring rows may have wrapped several times
    seqlens = torch.randint(0, top, (B,), generator=g, dtype=torch.int32)
    seqlens[0] = 0 if ring else L - Tn  # an empty row (prefill), or a row filling the cache exactly
    starts = (torch.rand(B, generator=g) * (seqlens + Tn + 1)).long()  # left padding, up to whole rows masked
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    got = attention_with_kvcache(q, k_cache, v_cache, k, v, seqlens, starts, ring)
    want = attention_kvcache_ref(q, ref_k, ref_v, k, v, seqlens, starts, ring)
    assert_close_verbose("attention", got, want, atol=ATOL)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v), "in-place cache update differs"


@pytest.mark.parametrize("ring,K", [(False, 20), (True, 4), (True, 20)])
def test_kernel_rollout_across_the_ring_wrap(ring: bool, K: int) -> None:
    """Rows at different episode ages step together; the ring wraps several times at different steps per row."""
    g = torch.Generator().manual_seed(K)
    B, nh, hs = 5, 2, 32
    L = 3 * K
    steps = K + 2 if ring else K
    caches = [torch.zeros(B, nh, L, hs) for _ in range(4)]  # kernel k, v; reference k, v
    seqlens = (torch.tensor([0, 0.2, 0.5, 0.8, 1.0]) * (L - 1)).int() if ring else torch.zeros(B, dtype=torch.int32)
    starts = torch.zeros(B, dtype=torch.int32)
    for step, n in enumerate(dt_chunks(steps)):
        q, k, v = qkv(B, nh, n, hs, g)
        got = attention_with_kvcache(q, caches[0], caches[1], k, v, seqlens, starts, ring)
        want = attention_kvcache_ref(q, caches[2], caches[3], k, v, seqlens, starts, ring)
        assert_close_verbose(f"step {step}", got, want, atol=ATOL)
        seqlens = seqlens + n
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    assert int(seqlens.min()) > L or not ring, "the test must cross the wrap-around in every row"


def test_kernel_matches_sdpa_through_strided_views() -> None:
    """q, k, v as the model makes them: (B, T, nh, hs) memory seen through transpose(1, 2)."""
    g = torch.Generator().manual_seed(3)
    B, T, nh, hs = 3, 30, 4, 16
    q, k, v = (torch.randn(B, T, nh, hs, generator=g).transpose(1, 2) for _ in range(3))
    k_cache, v_cache = torch.zeros(B, T, nh, hs).transpose(1, 2), torch.zeros(B, T, nh, hs).transpose(1, 2)
    starts = torch.tensor([0, 5, 29])
    got = attention_with_kvcache(q, k_cache, v_cache, k, v, torch.zeros(B, dtype=torch.int32), starts)
    assert_close_verbose("strided", got, sdpa_window(q, k, v, starts, torch.zeros(T, dtype=torch.long)), atol=ATOL)
    assert torch.equal(k_cache, k) and torch.equal(v_cache, v)


# (batch, heads, head_dim, queries, keys): the decoder's shapes (3 new tokens or a 3K - 1 window over a ring of
# 3K + 3 slots, K = 20 or 4) and odd ones.
MASKED_CASES = [(1, 1, 128, 3, 63), (4, 2, 64, 3, 63), (9, 4, 16, 59, 63), (3, 1, 64, 11, 15), (5, 2, 24, 1, 40),
                (2, 4, 32, 70, 200)]


@pytest.mark.parametrize("B,nh,hs,n,L", MASKED_CASES, ids=lambda v: str(v))
def test_masked_kernel_equals_reference(B: int, nh: int, hs: int, n: int, L: int) -> None:
    """Keys and values as the decoder passes them: head views of a (B, L, nh * hs) cache."""
    g = torch.Generator().manual_seed(B * 7 + n)
    q = torch.randn(B, nh, n, hs, generator=g)
    k, v = (torch.randn(B, L, nh * hs, generator=g).view(B, L, nh, hs).transpose(1, 2) for _ in range(2))
    mask = torch.rand(B, n, L, generator=g) < 0.6  # (B, n, L)
    mask[0, 0] = False  # a padding query: no key at all
    got = attention_masked(q, k, v, mask, hs**-0.5)
    want = attention_masked_ref(q, k, v, mask, hs**-0.5)
    assert_close_verbose("masked attention", got, want, atol=ATOL)
    assert got[0, :, 0].abs().max() == 0


def test_kernel_rejects_bad_input() -> None:
    q, k, v = (torch.randn(2, 2, 3, 16) for _ in range(3))
    cache = torch.zeros(2, 2, 8, 16)
    with pytest.raises(ValueError, match=r"cache_seqlens\[1\] = 6 with 3 new tokens does not fit"):
        attention_with_kvcache(q, cache, cache.clone(), k, v, torch.tensor([5, 6]))
    with pytest.raises(ValueError, match=r"k_cache must have shape \(2, 2, 8, 16\)"):
        attention_with_kvcache(q, torch.zeros(2, 2, 8, 8), cache, k, v, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"cache_seqlens must be a \(2,\) int32/int64"):
        attention_with_kvcache(q, cache, cache.clone(), k, v, torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match=r"mask must be a \(2, 3, 8\) bool tensor"):
        attention_masked(q, cache, cache, torch.ones(2, 3, 8), 0.25)
    with pytest.raises(ValueError, match="3 new tokens do not fit a ring cache of 2 slots"):
        attention_with_kvcache(q, torch.zeros(2, 2, 2, 16), torch.zeros(2, 2, 2, 16), k, v, torch.tensor([0, 0]),
                               ring=True)


def test_kernel_backward_raises_clearly() -> None:
    q = torch.randn(1, 1, 2, 16, requires_grad=True)
    k, v = torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)
    out = attention_with_kvcache(q, torch.zeros(1, 1, 4, 16), torch.zeros(1, 1, 4, 16), k, v, torch.tensor([0]))
    with pytest.raises(RuntimeError, match="no backward pass"):
        out.sum().backward()
