"""Fused embedding kernel (Triton interpreter on CPU) against reference.embed_ref and DecisionTransformer.

Forward within 1e-5 and every gradient within 1e-4 + 1e-5 relative (fp32) over a grid of batch 1..9, hidden 64/128
(and an odd one), the MuJoCo state/action sizes and odd ones, lengths 1..60 with left padding; DT_FAST_FULL_GRID=1
runs a larger product grid.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.kernel_checks import FULL_GRID, assert_close_verbose, one_torch_thread  # noqa: F401 (fixture)

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

import dt_fast.kernels.embed as embed_module  # noqa: E402
from dt_fast import DecisionTransformer, DecisionTransformerConfig  # noqa: E402
from dt_fast.kernels.dispatch import embedding_weights  # noqa: E402
from dt_fast.kernels.embed import embed_fwd, fused_embed  # noqa: E402
from dt_fast.kernels.reference import embed_ref  # noqa: E402

SIZES = [(11, 3), (17, 6), (17, 6), (1, 1), (23, 9)]  # Hopper, HalfCheetah, Walker2d, odd ones
FWD_ATOL, GRAD_ATOL = 1e-5, 1e-4
# Weight gradients are sums over up to 3 x 540 tokens and reach ~100, where fp32 summation order alone moves them
# by ~1e-4 (torch's own result varies that much with its thread count): a relative term covers that magnitude.
GRAD_RTOL = 1e-5
# (batch, steps, state_dim, act_dim, hidden, with wpe0): every axis value appears at least once.
CASES = [
    (1, 1, 11, 3, 64, True),
    (9, 20, 17, 6, 128, False),
    (4, 60, 17, 6, 128, True),
    (3, 7, 1, 1, 64, False),
    (2, 33, 23, 9, 96, True),
    (5, 2, 11, 3, 128, True),
    (7, 17, 17, 6, 64, False),
    (8, 5, 23, 9, 128, True),
    (6, 59, 11, 3, 64, False),
    (9, 3, 1, 1, 128, True),
]
if FULL_GRID:
    CASES = [
        (B, T, *SIZES[i % len(SIZES)], C, i % 2 == 0)
        for i, (B, T, C) in enumerate(itertools.product(range(1, 10), [1, 2, 7, 16, 20, 33, 59, 60], [64, 128, 96]))
    ]


def make_inputs(
    B: int, T: int, S: int, A: int, C: int, with_wpe: bool, seed: int, max_ep_len: int = 1000
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """([states, actions, rtg, timesteps], [weights..., wpe0 or None]) with collator-style left padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    pad = torch.arange(T)[None, :] < (T - lengths)[:, None]  # (B, T), True on the left padding
    states = torch.randn(B, T, S, generator=g).masked_fill(pad[..., None], 0.0)
    actions = torch.randn(B, T, A, generator=g).masked_fill(pad[..., None], -10.0)
    rtg = torch.randn(B, T, 1, generator=g).masked_fill(pad[..., None], 0.0)
    timesteps = torch.randint(0, max_ep_len, (B, T), generator=g).masked_fill(pad, 0)
    shapes = [(C, 1), (C,), (C, S), (C,), (C, A), (C,), (max_ep_len, C), (C,), (C,), (C,)]
    weights = [torch.randn(*s, generator=g) * (0.5 if len(s) == 2 else 1.0) for s in shapes]
    if not with_wpe:
        weights[-1] = None
    return [states, actions, rtg, timesteps], weights


@pytest.mark.parametrize("B,T,S,A,C,with_wpe", CASES, ids=lambda v: str(v))
def test_embed_forward_and_gradients_equal_reference(B: int, T: int, S: int, A: int, C: int, with_wpe: bool) -> None:
    inputs, weights = make_inputs(B, T, S, A, C, with_wpe, seed=B * 1000 + T)
    leaves = [x.requires_grad_() for x in inputs[:3] + weights if x is not None]
    got = fused_embed(*inputs, *weights)
    want = embed_ref(*inputs, *weights)
    assert_close_verbose("embedding", got, want, atol=FWD_ATOL)
    grad_out = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, leaves, grad_out)
    want_grads = torch.autograd.grad(want, leaves, grad_out)
    names = [
        "states",
        "actions",
        "returns_to_go",
        "w_return",
        "b_return",
        "w_state",
        "b_state",
        "w_action",
        "b_action",
        "time_table",
        "ln_weight",
        "ln_bias",
        "wpe0",
    ]
    for name, g, w in zip(names, got_grads, want_grads):
        assert_close_verbose(f"d {name}", g, w, atol=GRAD_ATOL, rtol=GRAD_RTOL)


def test_embed_only_needed_gradients_are_computed() -> None:
    inputs, weights = make_inputs(2, 5, 11, 3, 64, True, seed=1)
    weights[6].requires_grad_()
    got = torch.autograd.grad(fused_embed(*inputs, *weights).square().sum(), weights[6])[0]
    want = torch.autograd.grad(embed_ref(*inputs, *weights).square().sum(), weights[6])[0]
    assert_close_verbose("d time_table", got, want, atol=GRAD_ATOL, rtol=GRAD_RTOL)


def test_embed_reference_is_the_model_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DT_FAST_BACKEND", "torch")
    model = DecisionTransformer(DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=64, max_ep_len=50))
    inputs, _ = make_inputs(3, 8, 11, 3, 64, False, seed=2, max_ep_len=50)
    want = model.embed(*inputs) + model.encoder.wpe[0]
    assert torch.equal(embed_ref(*inputs, **embedding_weights(model, with_wpe=True)), want)


@pytest.mark.parametrize("n_head,hidden,S,A", [(1, 64, 11, 3), (2, 128, 17, 6), (4, 128, 17, 6)])
def test_model_forward_and_gradients_with_triton_embedding(
    monkeypatch: pytest.MonkeyPatch, n_head: int, hidden: int, S: int, A: int
) -> None:
    cfg = DecisionTransformerConfig(
        state_dim=S,
        act_dim=A,
        hidden_size=hidden,
        n_head=n_head,
        n_layer=2,
        max_ep_len=100,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(n_head)
    model = DecisionTransformer(cfg)
    inputs, _ = make_inputs(4, 20, S, A, hidden, False, seed=n_head, max_ep_len=100)
    mask = (inputs[0].abs().sum(-1) > 0).long()  # (B, T): the left padding has all-zero states
    calls = []
    monkeypatch.setattr(embed_module, "embed_fwd", lambda *a: calls.append(1) or embed_fwd(*a))
    outputs = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("DT_FAST_BACKEND", backend)
        model.zero_grad()
        preds = model(*inputs, attention_mask=mask)
        sum(p.square().mean() for p in preds).backward()
        outputs[backend] = (preds, {n: p.grad.clone() for n, p in model.named_parameters()})
    assert calls == [1], "the triton backend did not run the fused kernel"
    for name, got, want in zip(
        ("state_preds", "action_preds", "return_preds"), outputs["triton"][0], outputs["torch"][0]
    ):
        assert_close_verbose(name, got, want, atol=FWD_ATOL)
    for name, want in outputs["torch"][1].items():
        assert_close_verbose(f"d {name}", outputs["triton"][1][name], want, atol=GRAD_ATOL, rtol=GRAD_RTOL)


@pytest.mark.parametrize(
    "index,bad,message",
    [
        (0, torch.zeros(2, 4, 10), r"states must have shape \(2, 4, 11\)"),
        (1, torch.zeros(2, 4, 3, dtype=torch.float64), "actions has dtype torch.float64"),
        (3, torch.zeros(2, 4), "timesteps must be a .* int32/int64"),
        (3, torch.full((2, 4), 1000), "timesteps must lie in \\[0, 1000\\), got 1000 at flat index 0"),
    ],
)
def test_embed_rejects_bad_input(index: int, bad: torch.Tensor, message: str) -> None:
    inputs, weights = make_inputs(2, 4, 11, 3, 64, True, seed=3)
    inputs[index] = bad
    with pytest.raises(ValueError, match=message):
        embed_fwd(*inputs, *weights)
