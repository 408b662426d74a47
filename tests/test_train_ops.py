"""Fused CPU training ops (dt_fast.train_ops) against their pure torch references, and the model's action-only
forward used by the Trainer against the full forward."""

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast import train_ops as ops


def grads(out: torch.Tensor, inputs: tuple, seed: int = 0) -> list:
    """Gradients of a random projection of `out` with respect to `inputs`."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, inputs, g))


def leaves(*shapes: tuple, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_() for s in shapes]


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 12345, 2**61 + 77])
def test_cpp_mask_equals_the_torch_reference(p: float, seed: int) -> None:
    mask = np.empty(10_007, np.float32)
    dt_fast._C.dropout_mask(mask, p, seed)
    assert torch.equal(torch.from_numpy(mask), ops.dropout_mask_reference((10_007,), p, seed))


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(3, 7, 5), (64, 60, 128)])
def test_dropout_add_forward_and_gradients(with_residual: bool, shape: tuple) -> None:
    x, residual = leaves(shape, shape)
    res = residual if with_residual else None
    got, want = ops.dropout_add(x, res, 0.1, 99), ops.dropout_add_reference(x, res, 0.1, 99)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    inputs = (x, residual) if with_residual else (x,)
    for a, b in zip(grads(got, inputs), grads(want, inputs)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def padded_mask(B: int, Tq: int, Tk: int, rows: slice) -> torch.Tensor:
    """Causal + left-padding mask (B, 1, Tq, Tk) of the queries `rows`; batch 0 has a fully masked query."""
    valid = torch.ones(B, Tk, dtype=torch.bool)
    valid[0, :4] = False
    causal = torch.ones(Tk, Tk, dtype=torch.bool).tril()[rows]  # (Tq, Tk)
    return (causal & valid[:, None, :])[:, None]


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("B,H,Tq,Tk,rows,masked", [
    (2, 1, 9, 9, slice(None), False),
    (3, 2, 9, 9, slice(None), True),
    (4, 1, 20, 60, slice(1, None, 3), True),
    (1, 3, 1, 1, slice(None), False),
])
def test_softmax_dropout_forward_and_gradients(p: float, B: int, H: int, Tq: int, Tk: int, rows: slice,
                                               masked: bool) -> None:
    (scores,) = leaves((B, H, Tq, Tk), seed=1)
    scores = (scores * 4).detach().requires_grad_()
    mask = padded_mask(B, Tq, Tk, rows) if masked else None
    got = ops.softmax_dropout(scores, mask, 0.125, p, 5)
    want = ops.softmax_dropout_reference(scores, mask, 0.125, p, 5)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads(got, (scores,))[0], grads(want, (scores,))[0], atol=1e-6, rtol=1e-5)
    if masked:  # a query with no key: zero probabilities (and so zero gradient), as SDPA
        no_key = ~mask.any(dim=-1)[:, 0]  # (B, Tq)
        assert no_key.any() and not got.detach().permute(0, 2, 1, 3)[no_key].any()


def test_softmax_dropout_bad_shapes_raise() -> None:
    scores = np.zeros((2, 1, 3, 5), np.float32)
    probs, out = np.empty_like(scores), np.empty_like(scores)
    with pytest.raises(ValueError, match="causal mask"):
        dt_fast._C.softmax_dropout_forward(scores, None, probs, out, 1.0, 0.1, 0)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3, 5\)"):
        dt_fast._C.softmax_dropout_forward(scores, np.ones((2, 5, 5), np.uint8), probs, out, 1.0, 0.1, 0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        dt_fast._C.softmax_dropout_forward(scores, np.ones((2, 3, 5), np.uint8), probs, out, 1.0, 1.0, 0)


@pytest.mark.parametrize("lead", [(7,), (4, 15)])
def test_linear_relu_forward_and_gradients(lead: tuple) -> None:
    x, weight, bias = leaves((*lead, 16), (40, 16), (40,), seed=2)
    got, want = ops.linear_relu(x, weight, bias), ops.linear_relu_reference(x, weight, bias)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads(got, (x, weight, bias)), grads(want, (x, weight, bias))):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("p", [0.0, 0.1])
@pytest.mark.parametrize("lead", [(7,), (4, 15)])
def test_linear_dropout_add_forward_and_gradients(p: float, lead: tuple) -> None:
    x, weight, bias, residual = leaves((*lead, 24), (13, 24), (13,), (*lead, 13), seed=3)
    got = ops.linear_dropout_add(x, weight, bias, residual, p, 11)
    want = ops.linear_dropout_add_reference(x, weight, bias, residual, p, 11)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    inputs = (x, weight, bias, residual)
    for a, b in zip(grads(got, inputs), grads(want, inputs)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_epilogue_bad_shapes_raise() -> None:
    y = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"bias must have shape \(3\)"):
        dt_fast._C.bias_relu_forward(y, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"residual must have shape \(4, 3\)"):
        dt_fast._C.bias_dropout_add_forward(y, np.zeros(3, np.float32), np.zeros((3, 4), np.float32), y, 0.1, 0)


def batch(B: int = 5, T: int = 8, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    mask[0, :3] = 0  # left padding
    return {"states": torch.randn(B, T, 17, generator=gen), "actions": torch.randn(B, T, 6, generator=gen),
            "returns_to_go": torch.randn(B, T, 1, generator=gen),
            "timesteps": torch.randint(0, 100, (B, T), generator=gen), "attention_mask": mask}


@pytest.mark.parametrize("n_head", [1, 2])
@pytest.mark.parametrize("with_mask", [True, False])
def test_action_only_forward_equals_the_full_forward(n_head: int, with_mask: bool) -> None:
    cfg = DecisionTransformerConfig(state_dim=17, act_dim=6, hidden_size=32, n_layer=2, n_head=n_head,
                                    max_ep_len=100, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = DecisionTransformer(cfg)
    b = batch()
    if not with_mask:
        b.pop("attention_mask")
    for training in (False, True):
        model.train(training)
        full = model(**b)[1]
        state, part, ret = model(**b, action_only=True)
        assert state is None and ret is None
        torch.testing.assert_close(part, full, atol=1e-6, rtol=1e-5)
        params = [p for n, p in model.named_parameters() if not n.startswith(("predict_state", "predict_return"))]
        for a, c in zip(grads(full, params), grads(part, params)):
            torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)


def test_fused_training_is_reproducible_and_falls_back_off_fp32() -> None:
    cfg = DecisionTransformerConfig(state_dim=17, act_dim=6, hidden_size=32, n_layer=2, max_ep_len=100)
    model = DecisionTransformer(cfg).train()
    b = batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(model(**b, action_only=True)[1])
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(4)
    assert not torch.equal(model(**b, action_only=True)[1], outs[0])  # dropout is live
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the torch path: autocast must keep working
        assert not ops.fused_cpu(b["states"])
        assert model(**b, action_only=True)[1].shape == (5, 8, 6)
    model64 = DecisionTransformer(cfg).double().train()
    b64 = {k: v.double() if v.is_floating_point() else v for k, v in b.items()}
    assert model64(**b64, action_only=True)[1].dtype == torch.float64
