"""The fused CPU training ops (dt_fast.train_ops) against their pure torch references, values and gradients, on
every ISA build this CPU runs, over odd shapes (width 36, 1-4 heads, 1-30 steps, batch 1-65); the whole model on
them against the torch path; their bindings' refusal of arrays they could not write in place."""

import copy as copy_module

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast import model as model_module
from dt_fast import train_ops as ops
from dt_fast.train import action_loss

pytestmark = [
    pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built"),
    pytest.mark.usefixtures("one_torch_thread"),
]
ISAS = ["avx512", "avx2", "generic"]
TOL = 1e-4


@pytest.fixture(params=ISAS)
def isa(request) -> str:
    """Run the test on one ISA build of the training ops (2 threads), skipped where this CPU lacks it."""
    before = ops.context()
    try:
        ops.configure(isa=request.param, threads=2)
    except ValueError as err:
        pytest.skip(str(err))
    assert ops.context().isa == request.param
    yield request.param
    ops.configure(isa=before.isa, threads=before.threads)


def grads(out: torch.Tensor, inputs: list, seed: int = 0) -> list:
    """Gradients of a random projection of `out` with respect to `inputs`."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, inputs, g))


def leaves(*shapes: tuple, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_() for s in shapes]


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """max |got - want| <= TOL x max(1, max |want|): float32 sums over thousands of rows (a weight gradient) carry
    rounding errors in proportion to their size, in torch as in the fused ops."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err, scale = (got - want).abs().max().item(), max(1.0, want.abs().max().item())
    assert err <= TOL * scale, f"{name}: max abs error {err:.3g} > {TOL:g} x {scale:.3g}"


def assert_op_matches(got: torch.Tensor, want: torch.Tensor, inputs: list) -> None:
    """Values and the gradients with respect to `inputs` equal, to TOL."""
    assert_close("value", got, want)
    for i, (a, b) in enumerate(zip(grads(got, inputs), grads(want, inputs))):
        assert_close(f"gradient of input {i}", a, b)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 12345, 2**61 + 77])
def test_cpp_mask_equals_the_torch_reference(p: float, seed: int) -> None:
    mask = np.empty(10_007, np.float32)
    dt_fast._C.dropout_mask(mask, p, seed)
    assert torch.equal(torch.from_numpy(mask), ops.dropout_mask_reference((10_007,), p, seed))


@pytest.mark.parametrize("shape", [(3, 7, 5), (65, 90, 36)])
def test_shift_dropout(isa: str, shape: tuple) -> None:
    """dropout(x + shift), shift a row vector: GPT-2's position embedding before the embedding dropout."""
    x, shift = leaves(shape, shape[-1:], seed=4)
    got, want = ops.shift_dropout(x, shift, 0.1, 99), ops.shift_dropout_reference(x, shift, 0.1, 99)
    assert torch.equal(got != 0, want != 0)  # the same mask bits
    assert_op_matches(got, want, [x, shift])


# (batch, steps): tokens are 3 x steps; 65 x 30 is a window past every block size, 1 x 1 a single token
LINEAR_SHAPES = [(1, 1), (7, 13), (65, 30)]


@pytest.mark.parametrize("B,T", LINEAR_SHAPES)
# widths 20 and 50: the weight gradient's product has rows left over past its tiles (6 or 4 rows) in every build
@pytest.mark.parametrize("n_in,n_out", [(36, 108), (36, 36), (144, 36), (5, 36), (36, 3), (20, 50), (50, 20)])
@pytest.mark.parametrize("epilogue", ["none", "relu", "dropout_add"])
def test_linear(isa: str, B: int, T: int, n_in: int, n_out: int, epilogue: str) -> None:
    x, weight, bias, residual = leaves((B, 3 * T, n_in), (n_out, n_in), (n_out,), (B, 3 * T, n_out), seed=B + n_in)
    kwargs = (
        {"relu": True}
        if epilogue == "relu"
        else {"residual": residual, "p": 0.1, "seed": 11}
        if epilogue == "dropout_add"
        else {}
    )
    inputs = [x, weight, bias] + ([residual] if epilogue == "dropout_add" else [])
    assert_op_matches(ops.linear(x, weight, bias, **kwargs), ops.linear_reference(x, weight, bias, **kwargs), inputs)


@pytest.mark.parametrize("B,T", LINEAR_SHAPES)
def test_linear_on_spaced_rows(isa: str, B: int, T: int) -> None:
    """The queries of the last block, x[:, 1::3] of a contiguous x: rows read in place with their stride."""
    (x, weight, bias) = leaves((B, 3 * T, 36), (36, 36), (36,), seed=5)
    rows = x[:, 1::3]
    assert_op_matches(ops.linear(rows, weight, bias), ops.linear_reference(rows, weight, bias), [x, weight, bias])


@pytest.mark.parametrize("B,T", LINEAR_SHAPES)
def test_linear_without_bias(isa: str, B: int, T: int) -> None:
    x, weight = leaves((B, 3 * T, 36), (20, 36), seed=6)
    assert_op_matches(ops.linear(x, weight, None), ops.linear_reference(x, weight, None), [x, weight])


@pytest.mark.parametrize("B,T", LINEAR_SHAPES)
@pytest.mark.parametrize("width", [36, 128, 3])
def test_layer_norm(isa: str, B: int, T: int, width: int) -> None:
    x, weight, bias = leaves((B, 3 * T, width), (width,), (width,), seed=width)
    x = (3 * x + 1).detach().requires_grad_()
    assert_op_matches(
        ops.layer_norm(x, weight, bias, 1e-5), ops.layer_norm_reference(x, weight, bias, 1e-5), [x, weight, bias]
    )


@pytest.mark.parametrize("B,T", LINEAR_SHAPES)
@pytest.mark.parametrize("S,A,C", [(11, 3, 36), (17, 6, 128), (1, 1, 5)])
def test_embed_tokens(isa: str, B: int, T: int, S: int, A: int, C: int) -> None:
    gen = torch.Generator().manual_seed(S)
    data = (
        torch.randn(B, T, S, generator=gen),
        torch.randn(B, T, A, generator=gen),
        torch.randn(B, T, 1, generator=gen),
        torch.randint(0, 50, (B, T), generator=gen),
    )
    weights = leaves((C, 1), (C,), (C, S), (C,), (C, A), (C,), (50, C), seed=C)
    got, want = ops.embed_tokens(*data, *weights), ops.embed_tokens_reference(*data, *weights)
    assert_op_matches(got, want, weights)


def test_embed_tokens_refuses_timesteps_outside_the_table() -> None:
    x = torch.zeros(1, 2, 1)
    weights = [torch.zeros(s) for s in ((4, 1), (4,), (4, 1), (4,), (4, 1), (4,), (10, 4))]
    with pytest.raises(ValueError, match=r"embed_forward: timestep 10 at 1 outside \[0, 10\)"):
        ops.embed_tokens(x, x, x, torch.tensor([[3, 10]]), *weights)


def padding_start(B: int, T: int) -> torch.Tensor:
    """The first valid token of each batch row, (B,) int32: batch row b padded by b steps (so batch row 0 is whole
    and, past a few rows, some queries have no key at all)."""
    return (3 * torch.arange(B)).clamp(max=T).int()


def padded_mask(B: int, T: int, rows: slice) -> torch.Tensor:
    """Causal + left-padding mask (B, 1, Tq, T) of the queries `rows`, batch row b padded as padding_start."""
    valid = torch.arange(T)[None, :] >= padding_start(B, T)[:, None]  # (B, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()[rows]  # (Tq, T)
    return (causal & valid[:, None, :])[:, None]


@pytest.mark.parametrize("B,steps,heads", [(1, 1, 1), (3, 7, 2), (5, 20, 3), (65, 30, 4), (2, 30, 1)])
@pytest.mark.parametrize("queries", ["all", "s_t"])
@pytest.mark.parametrize("keys", ["causal", "mask", "start"])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention(isa: str, B: int, steps: int, heads: int, queries: str, keys: str, p: float) -> None:
    """Causal (the queries' tokens `rows` among the keys), a left-padding mask, or the same padding given as each
    batch row's first valid key (start): all against the reference with the equivalent mask."""
    C, T = 36, 3 * steps
    rows = None if queries == "all" else slice(1, None, 3)
    Tq = len(range(T)[rows or slice(None)])
    if queries == "all":
        q, kv = leaves((B, T, 3 * C), seed=steps)[0], None
        inputs = [q]
    else:
        q, kv = leaves((B, Tq, C), (B, T, 2 * C), seed=steps)
        inputs = [q, kv]
    causal = torch.ones(T, T, dtype=torch.bool).tril()[rows or slice(None)].expand(B, 1, -1, -1)  # (B, 1, Tq, T)
    mask = causal if keys == "causal" else padded_mask(B, T, rows or slice(None))  # (B, 1, Tq, T)
    if keys == "causal":
        got = ops.attention(q, kv, None, heads, C**-0.5, p, 7, rows=rows)
    elif keys == "mask":
        got = ops.attention(q, kv, mask, heads, C**-0.5, p, 7)
    else:
        got = ops.attention(q, kv, None, heads, C**-0.5, p, 7, padding_start(B, T), rows)
    want = ops.attention_reference(q, kv, mask, heads, C**-0.5, p, 7)
    assert_op_matches(got, want, inputs)
    if keys != "causal" and B > 1:  # a query with no key: zero output (and zero gradient), as SDPA
        no_key = ~mask.any(dim=-1)[:, 0]  # (B, Tq)
        assert no_key.any() and not got.detach()[no_key].any()


@pytest.mark.parametrize("B,steps,heads", [(1, 1, 1), (3, 7, 2), (65, 10, 4)])
@pytest.mark.parametrize("queries", ["all", "s_t"])
@pytest.mark.parametrize("keys", ["causal", "mask", "start"])
@pytest.mark.parametrize("act,p", [("relu", 0.1), ("gelu_new", 0.0), ("silu", 0.1)])
def test_transformer_block(
    isa: str, B: int, steps: int, heads: int, queries: str, keys: str, act: str, p: float
) -> None:
    """A whole block (LayerNorms, c_attn, attention, projections, MLP, dropouts, residuals) in one C++ call each way
    against the composition of the references with the same masks: every token or the s_t queries only, causal, a
    padding mask or each row's first valid key, ReLU fused or another activation, with and without dropout."""
    C, T = 36, 3 * steps
    rows = None if queries == "all" else slice(1, None, 3)
    shapes = [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]
    x, *weights = leaves((B, T, C), *shapes, seed=steps)
    with torch.no_grad():  # Linear weights at GPT-2's scale (1 / sqrt(fan-in)), not N(0, 1): gradients in the
        for w in weights:  # hundreds would hold float32 sums to looser bounds than TOL
            w.mul_(w.shape[1] ** -0.5 if w.dim() == 2 else 1.0)
    w = ops.BlockWeights(*weights)
    spec = ops.BlockSpec(heads, 0.3, p, p, 1e-5, 1e-6, act, (7, 8, 9))
    mask = padded_mask(B, T, slice(None)) if keys == "mask" else None
    start = padding_start(B, T) if keys == "start" else None
    got = ops.transformer_block(x, w, spec, mask, start, rows)
    want = ops.transformer_block_reference(x, w, spec, mask, start, rows)
    assert_op_matches(got, want, [x, *weights])


def test_attention_reference_mask_from_start_and_rows() -> None:
    """causal_mask, the keys of `attention` without a mask: key j for query i of batch row b iff start[b] <= j <=
    token of i, here written out for two batch rows and the s_t queries."""
    mask = ops.causal_mask(2, 3, 9, torch.tensor([0, 4], dtype=torch.int32), slice(1, None, 3))[:, 0]  # (2, 3, 9)
    want = torch.zeros(2, 3, 9, dtype=torch.bool)
    for b, first in enumerate([0, 4]):
        for i, token in enumerate([1, 4, 7]):
            want[b, i, first : token + 1] = True
    assert torch.equal(mask, want)


@pytest.mark.parametrize("queries", ["all", "s_t"])
def test_attention_with_masks_with_gaps(isa: str, queries: str) -> None:
    """Masks that allow scattered keys (not one run from a first key to a last), rows that allow none among them:
    the kernels skip only what lies outside a row's first and last allowed key."""
    B, steps, heads, C = 9, 13, 2, 36
    T = 3 * steps
    rows = slice(None) if queries == "all" else slice(1, None, 3)
    Tq = len(range(T)[rows])
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(B, 1, Tq, T, generator=gen) < 0.4  # (B, 1, Tq, T)
    mask[:, :, ::5] = False  # every fifth query attends no key
    if queries == "all":
        q, kv = leaves((B, T, 3 * C), seed=1)[0], None
        inputs = [q]
    else:
        q, kv = leaves((B, Tq, C), (B, T, 2 * C), seed=1)
        inputs = [q, kv]
    got = ops.attention(q, kv, mask, heads, C**-0.5, 0.1, 11)
    want = ops.attention_reference(q, kv, mask, heads, C**-0.5, 0.1, 11)
    assert_op_matches(got, want, inputs)
    assert not got.detach()[:, ::5].any()


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.25, 1e6])
def test_fused_adamw_equals_clip_and_torch_adamw(isa: str, max_grad_norm: float) -> None:
    """Several steps over parameters of odd sizes, one without a gradient (skipped, as torch skips it), then a
    state_dict round trip into torch.optim.AdamW: the same state layout."""
    shapes = [(36, 108), (108,), (7,), (1000, 36), (3, 5)]
    ours, theirs = leaves(*shapes, seed=1), leaves(*shapes, seed=1)
    opt = ops.FusedAdamW(ours, lr=1e-2, weight_decay=1e-4, max_grad_norm=max_grad_norm)
    ref = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=1e-4, foreach=False)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            grad = None if i == 2 else torch.randn(a.shape, generator=gen)
            a.grad, b.grad = grad, None if grad is None else grad.clone()
        opt.step()
        ops.adamw_reference_step(ref, max_grad_norm)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert torch.equal(ours[2], theirs[2]) and 2 not in opt.state_dict()["state"]
    loaded = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=1e-4)
    loaded.load_state_dict(opt.state_dict())
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(loaded.state[theirs[0]][key], opt.state[ours[0]][key])


def test_fused_adamw_resumes_from_a_state_dict() -> None:
    """load_state_dict replaces the moment tensors: the next steps must use the loaded ones, not the moments the
    optimizer had before (here from a step with another gradient)."""
    ours, copy = leaves((20, 3), seed=3), leaves((20, 3), seed=3)
    first = ops.FusedAdamW(ours, lr=1e-2, max_grad_norm=1.0)
    resumed = ops.FusedAdamW(copy, lr=1e-2, max_grad_norm=1.0)
    ours[0].grad, copy[0].grad = torch.full((20, 3), 1.0), torch.full((20, 3), -5.0)
    first.step()
    resumed.step()
    resumed.load_state_dict(copy_module.deepcopy(first.state_dict()))  # as torch.load gives it
    with torch.no_grad():
        copy[0].copy_(ours[0])
    for step in range(2):
        grad = torch.linspace(-1.0, 2.0, 60).reshape(20, 3) * (step + 2)
        ours[0].grad, copy[0].grad = grad, grad.clone()
        first.step()
        resumed.step()
    assert torch.equal(ours[0], copy[0])


def test_ops_give_the_same_bits_on_one_thread_and_two() -> None:
    """Every reduction (bias, LayerNorm and weight gradients) sums fixed blocks in a fixed order."""
    x, weight, bias, ln_w, ln_b = leaves((65, 90, 36), (108, 36), (108,), (36,), (36,), seed=9)
    before = ops.context()
    results = []
    for threads in (1, 2):
        ops.configure(threads=threads)
        torch.manual_seed(0)
        h = ops.layer_norm(x, ln_w, ln_b, 1e-5)
        y = ops.attention(ops.linear(h, weight, bias), None, padded_mask(65, 90, slice(None)), 3, 0.2, 0.1, 3)
        y = ops.linear(y, weight[:36], bias[:36], residual=x, p=0.1, seed=4)
        results.append([y, *grads(y, [x, weight, bias, ln_w, ln_b])])
    ops.configure(isa=before.isa, threads=before.threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def model_batch(B: int, T: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T)[None, :] >= (torch.arange(B) % T)[:, None]).float()  # (B, T), row b padded by b % T
    return {
        "states": torch.randn(B, T, 11, generator=gen),
        "actions": torch.randn(B, T, 3, generator=gen),
        "returns_to_go": torch.randn(B, T, 1, generator=gen),
        "timesteps": torch.randint(0, 100, (B, T), generator=gen),
        "attention_mask": mask,
    }


def loss_and_grads(model: DecisionTransformer, b: dict, action_only: bool) -> tuple[torch.Tensor, list]:
    torch.manual_seed(5)
    _, action_preds, _ = model(**b, action_only=action_only)
    loss = action_loss(action_preds, b["actions"], b.get("attention_mask", torch.ones(action_preds.shape[:2])))
    params = [p for n, p in model.named_parameters() if not n.startswith(("predict_state", "predict_return"))]
    return loss, list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize(
    "n_head,B,T,act", [(1, 1, 1, "relu"), (2, 7, 13, "relu"), (4, 65, 30, "relu"), (3, 5, 20, "gelu_new")]
)
@pytest.mark.parametrize("action_only", [False, True])
def test_model_loss_and_gradients_equal_the_torch_path(
    isa: str, monkeypatch, n_head: int, B: int, T: int, act: str, action_only: bool
) -> None:
    """No dropout: the fused path against the torch path (DT_FAST_BACKEND=torch) of the same model."""
    cfg = DecisionTransformerConfig(
        state_dim=11,
        act_dim=3,
        hidden_size=36,
        n_layer=3,
        n_head=n_head,
        max_ep_len=100,
        activation_function=act,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = DecisionTransformer(cfg).train()
    b = model_batch(B, T)
    assert ops.fused_cpu(b["states"])
    fused = loss_and_grads(model, b, action_only)
    monkeypatch.setenv("DT_FAST_BACKEND", "torch")
    assert not ops.fused_cpu(b["states"])
    reference = loss_and_grads(model, b, action_only)
    assert_close("loss", fused[0], reference[0])
    for i, (a, c) in enumerate(zip(fused[1], reference[1])):
        assert_close(f"gradient {i}", a, c)


@pytest.mark.parametrize("padding", ["gaps", "none"])
@pytest.mark.parametrize("action_only", [False, True])
def test_model_with_other_attention_masks_equals_the_torch_path(
    isa: str, monkeypatch, padding: str, action_only: bool
) -> None:
    """An attention_mask with gaps (the fused ops then take the byte mask, not each row's first valid token), or
    none at all: the fused path against the torch path, as above."""
    cfg = DecisionTransformerConfig(
        state_dim=11,
        act_dim=3,
        hidden_size=36,
        n_layer=3,
        n_head=2,
        max_ep_len=100,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = DecisionTransformer(cfg).train()
    b = model_batch(7, 13)
    if padding == "gaps":
        b["attention_mask"][1, 4:6] = 0.0  # a gap after the first valid step
        b["attention_mask"][2, 10:] = 0.0  # padded on the right
    else:
        b.pop("attention_mask")
    fused = loss_and_grads(model, b, action_only)
    monkeypatch.setenv("DT_FAST_BACKEND", "torch")
    reference = loss_and_grads(model, b, action_only)
    assert_close("loss", fused[0], reference[0])
    for i, (a, c) in enumerate(zip(fused[1], reference[1])):
        assert_close(f"gradient {i}", a, c)


@pytest.mark.parametrize("action_only", [False, True])
def test_model_with_dropout_equals_the_model_on_the_references(monkeypatch, action_only: bool) -> None:
    """Dropout on: the same model with every fused op swapped for its torch reference draws the same seeds in the
    same order, so the masks, the loss and the gradients are the same."""
    cfg = DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=36, n_layer=3, n_head=3, max_ep_len=100)
    torch.manual_seed(0)
    model = DecisionTransformer(cfg).train()
    b = model_batch(9, 20)
    fused = loss_and_grads(model, b, action_only)
    for name in ("linear", "layer_norm", "transformer_block", "embed_tokens"):
        monkeypatch.setattr(model_module, name, getattr(ops, f"{name}_reference"))
    reference = loss_and_grads(model, b, action_only)
    assert_close("loss", fused[0], reference[0])
    for i, (a, c) in enumerate(zip(fused[1], reference[1])):
        assert_close(f"gradient {i}", a, c)
    torch.manual_seed(6)
    assert not torch.equal(model(**b, action_only=True)[1], model(**b, action_only=True)[1])  # dropout is live


def batch(B: int = 5, T: int = 8, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    mask[0, :3] = 0  # left padding
    return {
        "states": torch.randn(B, T, 17, generator=gen),
        "actions": torch.randn(B, T, 6, generator=gen),
        "returns_to_go": torch.randn(B, T, 1, generator=gen),
        "timesteps": torch.randint(0, 100, (B, T), generator=gen),
        "attention_mask": mask,
    }


@pytest.mark.parametrize("n_head", [1, 2])
@pytest.mark.parametrize("with_mask", [True, False])
def test_action_only_forward_equals_the_full_forward(n_head: int, with_mask: bool) -> None:
    cfg = DecisionTransformerConfig(
        state_dim=17,
        act_dim=6,
        hidden_size=32,
        n_layer=2,
        n_head=n_head,
        max_ep_len=100,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
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


def test_unsupported_isa_and_threads_raise() -> None:
    with pytest.raises(ValueError, match="isa must be"):
        dt_fast._C.TrainOps("neon", 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        dt_fast._C.TrainOps("generic", 0)


def test_in_place_arrays_that_cannot_be_written_directly_are_refused() -> None:
    """A float64, non-contiguous or read-only output would be converted to a temporary whose result is lost: each
    is refused with a ValueError naming the argument, and nothing is written."""
    ctx = dt_fast._C.TrainOps("generic", 1)
    x, w, b = np.ones((4, 3), np.float32), np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    y = np.full((4, 2), 7.0, np.float32)
    strided = np.zeros((2, 4), np.float32).T
    for bad, what in [(np.zeros((4, 2)), "float64"), (strided, r"float32 \(4, 2\) not C-contiguous")]:
        with pytest.raises(
            ValueError,
            match=f"linear_forward: y must be a writeable C-contiguous float32 array of "
            rf"shape \(4, 2\), got {what}",
        ):
            ctx.linear_forward(x, w, b, bad, "none", None, 0.0, 0)
        assert not bad.any()
    read_only = np.zeros((4, 2), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="y must be a writeable .* read-only"):
        ctx.linear_forward(x, w, b, read_only, "none", None, 0.0, 0)
    with pytest.raises(ValueError, match=r"linear_backward: dw must be .* got float64 \(2, 3\)"):
        ctx.linear_backward(y, x, w, None, None, np.zeros((2, 3)), None, "none", 0.0, 0)
    with pytest.raises(ValueError, match=r"linear_forward: w must be a C-contiguous float32 array of shape \(\*, 3\)"):
        ctx.linear_forward(x, w.astype(np.float64), b, y, "none", None, 0.0, 0)
    with pytest.raises(ValueError, match="layer_norm_backward: dx must be .* not C-contiguous"):
        ctx.layer_norm_backward(
            x,
            x,
            b[:1].repeat(3),
            np.zeros(4, np.float32),
            np.ones(4, np.float32),
            np.zeros((3, 4), np.float32).T,
            np.zeros(3, np.float32),
            np.zeros(3, np.float32),
        )
    q = np.zeros((2, 3, 12), np.float32)
    with pytest.raises(ValueError, match="attention_forward: probs must be .* got float64"):
        ctx.attention_forward(
            q,
            q,
            None,
            None,
            2,
            1.0,
            0.0,
            0,
            np.zeros((2, 2, 3, 3)),
            np.zeros((2, 3, 4), np.float32),
            np.zeros((2, 3, 2), np.int32),
        )
    with pytest.raises(ValueError, match="shift_dropout_forward: out must be .* got float64"):
        ctx.shift_dropout_forward(x, np.zeros(3, np.float32), np.zeros((4, 3)), 0.1, 0)
    with pytest.raises(ValueError, match="dropout_mask: out must be .* got float64"):
        dt_fast._C.dropout_mask(np.zeros(4), 0.1, 0)
    assert (y == 7.0).all()


def test_bad_shapes_and_arguments_raise() -> None:
    ctx = dt_fast._C.TrainOps("generic", 1)
    x, w = np.ones((4, 3), np.float32), np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"b must be .* shape \(2,\)"):
        ctx.linear_forward(x, w, np.zeros(3, np.float32), np.zeros((4, 2), np.float32), "none", None, 0.0, 0)
    with pytest.raises(ValueError, match="residual is required by epilogue 'dropout_add'"):
        ctx.linear_forward(x, w, None, np.zeros((4, 2), np.float32), "dropout_add", None, 0.1, 0)
    with pytest.raises(ValueError, match="epilogue must be"):
        ctx.linear_forward(x, w, None, np.zeros((4, 2), np.float32), "gelu", None, 0.1, 0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        ctx.linear_forward(
            x, w, None, np.zeros((4, 2), np.float32), "dropout_add", np.zeros((4, 2), np.float32), 1.0, 0
        )
    q = np.zeros((2, 3, 12), np.float32)
    saved = [np.zeros((2, 2, 3, 3), np.float32), np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 2), np.int32)]
    with pytest.raises(ValueError, match=r"causal mask \(None\) needs every query's token, 1 \+ 2 i"):
        ctx.attention_forward(
            q[:, :2].copy(),
            q,
            None,
            None,
            2,
            1.0,
            0.1,
            0,
            np.zeros((2, 2, 2, 3), np.float32),
            np.zeros((2, 2, 4), np.float32),
            np.zeros((2, 2, 2), np.int32),
            1,
            2,
        )
    with pytest.raises(ValueError, match=r"mask must be .* shape \(2, 3, 3\)"):
        ctx.attention_forward(q, q, np.ones((2, 3, 2), np.uint8), None, 2, 1.0, 0.1, 0, *saved)
    with pytest.raises(ValueError, match="a mask or start, not both"):
        ctx.attention_forward(q, q, np.ones((2, 3, 3), np.uint8), np.zeros(2, np.int32), 2, 1.0, 0.1, 0, *saved)
    with pytest.raises(ValueError, match=r"start\[1\] = 4 outside \[0, tk = 3\]"):
        ctx.attention_forward(q, q, None, np.array([0, 4], np.int32), 2, 1.0, 0.1, 0, *saved)
    with pytest.raises(ValueError, match=r"start must be .* int32 .* shape \(2,\)"):
        ctx.attention_forward(q, q, None, np.zeros(2, np.int64), 2, 1.0, 0.1, 0, *saved)
    with pytest.raises(ValueError, match="heads=3 must divide the width 4"):
        ctx.attention_forward(
            q,
            q,
            None,
            None,
            3,
            1.0,
            0.1,
            0,
            np.zeros((2, 3, 3, 3), np.float32),
            np.zeros((2, 3, 4), np.float32),
            np.zeros((2, 3, 2), np.int32),
        )
    bad_spans = np.array([[[0, 1], [0, 2], [0, 4]]] * 2, np.int32)  # a key past tk = 3
    with pytest.raises(ValueError, match=r"spans must be the forward's, \[lo, hi\) within \[0, tk = 3\]"):
        ctx.attention_backward(
            np.zeros((2, 3, 4), np.float32),
            q,
            q,
            2,
            1.0,
            0.1,
            0,
            saved[0],
            bad_spans,
            np.zeros_like(q),
            np.zeros_like(q),
        )


def test_block_refuses_bad_arguments() -> None:
    """The block's bindings name what is wrong: a weight's shape, the activation, ReLU's pre and f not one array,
    queries outside the tokens, spans that are not the forward's; a valid call runs."""
    ctx = dt_fast._C.TrainOps("generic", 1)
    B, T, C = 2, 6, 4
    N = B * T
    x, out = np.ones((B, T, C), np.float32), np.zeros((B, T, C), np.float32)
    shapes = [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]
    weights = [np.full(s, 0.1, np.float32) for s in shapes]
    pre = np.zeros((N, 4 * C), np.float32)
    rows = [np.zeros(s, np.float32) for s in ((N, C), (N,), (N,), (3 * N * C,))]
    saved = [*rows, None, None, np.zeros((B, 1, T, T), np.float32), np.zeros((B, T, 2), np.int32)]
    saved += [np.zeros((N, C), np.float32) for _ in range(3)] + [np.zeros(N, np.float32) for _ in range(2)] + [pre, pre]
    spec = (1, 0.5, 0.0, 0.0, 1e-5, 1e-5, [1, 2, 3])
    ctx.block_forward(x, None, None, weights, saved, out, *spec, "relu")
    assert np.isfinite(out).all() and out.any()
    bad = list(weights)
    bad[8] = np.ones((4 * C, C + 1), np.float32)
    with pytest.raises(ValueError, match=r"block_forward: c_fc.weight must be .* shape \(16, 4\)"):
        ctx.block_forward(x, None, None, bad, saved, out, *spec, "relu")
    with pytest.raises(ValueError, match="block_forward: unsupported activation_function 'gelu2'"):
        ctx.block_forward(x, None, None, weights, saved, out, *spec, "gelu2")
    with pytest.raises(ValueError, match="pre and f must be one array for relu"):
        ctx.block_forward(x, None, None, weights, [*saved[:14], pre.copy()], out, *spec, "relu")
    with pytest.raises(ValueError, match="the queries' tokens 5 \\+ 2 i \\(i < 2\\) must lie below T = 6"):
        ctx.block_forward(x, None, None, weights, saved, out[:, :2].copy(), *spec, "relu", 5, 2)
    saved[7][0, 0] = (0, 7)  # a key past T = 6
    grads = [np.zeros_like(w) for w in weights]
    with pytest.raises(ValueError, match=r"spans must be the forward's, \[lo, hi\) within \[0, T = 6\]"):
        ctx.block_backward(out, x, weights, saved, grads, np.zeros_like(x), 1, 0.5, 0.0, 0.0, [1, 2, 3], "relu")
