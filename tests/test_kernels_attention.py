"""Masked attention kernel (Triton interpreter on CPU) against reference.attention_masked_ref, and the reference
against torch SDPA.

Covers the decoder's shapes (3 new tokens, or a 3K - 1 token window, over a ring of 3K + 4 slots seen through head
views of the cache) and odd ones, batch 1..9, heads 1/2/4, head sizes 16..128, padding queries with no key, and a
causal window with left padding over a whole sequence (the reference against SDPA). Output within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernel_checks import assert_close_verbose, one_torch_thread  # noqa: F401 (fixture)

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from dt_fast.kernels.attention import attention_masked  # noqa: E402
from dt_fast.kernels.reference import attention_masked_ref  # noqa: E402

ATOL = 1e-5


def qkv(B: int, nh: int, T: int, hs: int, g: torch.Generator) -> list[torch.Tensor]:
    """Random q, k, v of shape (B, nh, T, hs)."""
    return [torch.randn(B, nh, T, hs, generator=g) for _ in range(3)]


def sdpa_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """SDPA where query p sees keys j with starts[b] <= j <= p; (B, nh, T, hs)."""
    T = q.shape[2]
    j = torch.arange(T)
    allowed = (j[None, :] <= j[:, None])[None] & (j[None, None, :] >= starts[:, None, None])  # (B, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])


@pytest.mark.parametrize("B,nh,steps,hs", [(1, 1, 1, 64), (3, 2, 20, 32), (9, 4, 60, 16), (2, 1, 7, 128)])
def test_reference_is_sdpa_with_left_padding(B: int, nh: int, steps: int, hs: int) -> None:
    """A causal window with left padding, as the decoder's mask draws it: the reference equals SDPA."""
    g = torch.Generator().manual_seed(B + steps)
    T = 3 * steps
    q, k, v = qkv(B, nh, T, hs, g)
    starts = 3 * torch.randint(0, steps, (B,), generator=g)  # left padding in whole steps, at least one valid
    starts[0] = 3 * (steps - 1) + 1  # only the last step's s and a tokens valid: R is a fully masked query
    j = torch.arange(T)
    mask = (j[None, None, :] <= j[None, :, None]) & (j[None, None, :] >= starts[:, None, None])  # (B, T, T)
    got = attention_masked_ref(q, k, v, mask, hs**-0.5)
    assert_close_verbose("prefill", got, sdpa_window(q, k, v, starts), atol=ATOL)
    assert got[0, :, : starts[0]].abs().max() == 0, "padded queries must give zero outputs"


# (batch, heads, head_dim, queries, keys): the decoder's shapes (3 new tokens or a 3K - 1 window over a ring of
# 3K + 3 slots and the spare, K = 20 or 4) and odd ones.
MASKED_CASES = [
    (1, 1, 128, 3, 63),
    (4, 2, 64, 3, 63),
    (9, 4, 16, 59, 63),
    (3, 1, 64, 11, 15),
    (5, 2, 24, 1, 40),
    (2, 4, 32, 70, 200),
    (1, 1, 128, 59, 64),
    (2, 1, 128, 3, 64),
]


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
    q = torch.randn(2, 2, 3, 16)
    cache = torch.zeros(2, 2, 8, 16)
    with pytest.raises(ValueError, match=r"mask must be a \(2, 3, 8\) bool tensor"):
        attention_masked(q, cache, cache, torch.ones(2, 3, 8), 0.25)


def test_kernel_backward_raises_clearly() -> None:
    q = torch.randn(1, 1, 2, 16, requires_grad=True)
    k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16)
    out = attention_masked(q, k, v, torch.ones(1, 2, 4, dtype=torch.bool), 0.25)
    with pytest.raises(RuntimeError, match="no backward pass"):
        out.sum().backward()
