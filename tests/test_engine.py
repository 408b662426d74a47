"""The C++ engine and the torch KV-cache decoder, step by step, against DecisionTransformer's full forward.

At every step the reference is one full forward of dt_fast.DecisionTransformer (itself equal to transformers')
over the blog's window: the last K steps, the current action a zero placeholder. Rows of a batch are reset at
different steps so that rows in different phases (window filling, window sliding) share one call.
"""

from __future__ import annotations

import json
import re
import struct
import time

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import hf_state_dict, load_hf_state_dict
from dt_fast.decode import KVCacheDecoder
from tests import models

pytestmark = [
    pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def random_model(seed: int, **kwargs) -> DecisionTransformer:
    """tests.models.random_model with max_ep_len 200 and the given config fields."""
    return models.random_model(seed, DecisionTransformerConfig(max_ep_len=200, **kwargs))


def stochastic_model(seed: int, matrix_scale: float = 1.0, **kwargs) -> DecisionTransformer:
    """random_model's weights (matrices times matrix_scale) plus a random log-std head (ODT's stochastic action
    head)."""
    base = random_model(seed, **kwargs)
    model = DecisionTransformer(base.config, stochastic=True).eval()
    missing, _ = model.load_state_dict(base.state_dict(), strict=False)
    assert sorted(missing) == ["predict_action_log_std.bias", "predict_action_log_std.weight"]
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(matrix_scale)
        model.predict_action_log_std.weight.normal_(0.0, 0.1)
        model.predict_action_log_std.bias.normal_(-1.0, 0.5)
    return model


def tensors_of(model: DecisionTransformer) -> dict[str, np.ndarray]:
    """The model's weights in transformers' layout, as numpy arrays."""
    return {k: v.detach().numpy() for k, v in hf_state_dict(model).items()}


def make_engine(model: DecisionTransformer, batch: int, K: int, mode: str, **kwargs) -> dt_fast._C.Engine:
    """An engine with the model's weights handed over from Python."""
    return dt_fast._C.Engine(model.config.to_json_string(), tensors_of(model), batch, K, mode, **kwargs)


class WindowReference:
    """The blog's window recompute for B rows: full forward over the last K steps of each row's history."""

    def __init__(self, model: DecisionTransformer, batch: int, K: int) -> None:
        self.model, self.K = model, K
        self.hist = [dict(s=[], a=[], r=[], t=[]) for _ in range(batch)]

    def reset(self, row: int) -> None:
        self.hist[row] = dict(s=[], a=[], r=[], t=[])

    def step(self, states: np.ndarray, rtg: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
        out = []
        for b, h in enumerate(self.hist):
            h["s"].append(states[b]), h["r"].append(rtg[b]), h["t"].append(timesteps[b])
            h["a"].append(np.zeros(self.model.config.act_dim, np.float32))
            lo = max(0, len(h["s"]) - self.K)
            with torch.no_grad():
                _, a, _ = self.model(
                    torch.tensor(np.array(h["s"][lo:]))[None],
                    torch.tensor(np.array(h["a"][lo:]))[None],
                    torch.tensor(np.array(h["r"][lo:]))[None, :, None],
                    torch.tensor(np.array(h["t"][lo:]))[None],
                )
            out.append(a[0, -1].numpy())
        return np.array(out)

    def taken(self, actions: np.ndarray) -> None:
        for b, h in enumerate(self.hist):
            h["a"][-1] = actions[b]


SHAPES = [  # (state_dim, act_dim, hidden_size, n_layer, n_head, K, extra config)
    (11, 3, 64, 3, 1, 4, {}),
    (17, 6, 32, 1, 2, 1, {"activation_function": "gelu_new"}),
    (5, 2, 48, 2, 4, 6, {"scale_attn_by_inverse_layer_idx": True, "n_inner": 72, "activation_function": "silu"}),
    (3, 1, 16, 4, 2, 3, {"action_tanh": False, "scale_attn_weights": False, "activation_function": "gelu"}),
    (4, 2, 36, 2, 3, 5, {}),  # C and head size not multiples of any vector width: every kernel's tail
]


@pytest.mark.parametrize("S, A, C, L, H, K, extra", SHAPES)
@pytest.mark.parametrize("decoder", ["engine", "torch"])
def test_exact_decode_equals_full_forward(
    S: int, A: int, C: int, L: int, H: int, K: int, extra: dict, decoder: str
) -> None:
    model = random_model(S + C, state_dim=S, act_dim=A, hidden_size=C, n_layer=L, n_head=H, **extra)
    B = 3
    ref = WindowReference(model, B, K)
    if decoder == "engine":
        dec = make_engine(model, B, K, "exact")
        step, reset = dec.step, dec.reset
    else:
        dec = KVCacheDecoder(model, B, K, "exact")
        step = lambda s, r, t: dec.step(torch.tensor(s), torch.tensor(r), torch.tensor(t)).numpy()  # noqa: E731
        reset = lambda row: dec.reset(torch.tensor([row]))  # noqa: E731
    rng = np.random.default_rng(0)
    steps = np.zeros(B, dtype=np.int64)
    for i in range(4 * K + 6):
        if i == K + 1:  # row 1 starts a new episode while row 0 is past its window
            reset(1), ref.reset(1)
            steps[1] = 0
        states = rng.normal(size=(B, S)).astype(np.float32)
        rtg = rng.normal(size=B).astype(np.float32)
        got, want = step(states, rtg, steps.copy()), ref.step(states, rtg, steps.copy())
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0, err_msg=f"step {i}")
        ref.taken(got)
        steps += 1


@pytest.mark.parametrize("decoder", ["engine", "torch"])
def test_rolling_equals_exact_while_window_fills(decoder: str) -> None:
    model = random_model(1, state_dim=11, act_dim=3, hidden_size=64, n_layer=3, n_head=2)
    K, B = 5, 2
    if decoder == "engine":
        exact, rolling = make_engine(model, B, K, "exact"), make_engine(model, B, K, "rolling")
        run = lambda d, s, r, t: d.step(s, r, t)  # noqa: E731
    else:
        exact, rolling = KVCacheDecoder(model, B, K, "exact"), KVCacheDecoder(model, B, K, "rolling")
        run = lambda d, s, r, t: d.step(torch.tensor(s), torch.tensor(r), torch.tensor(t)).numpy()  # noqa: E731
    rng = np.random.default_rng(0)
    diffs = []
    for t in range(3 * K):
        s, r = rng.normal(size=(B, 11)).astype(np.float32), rng.normal(size=B).astype(np.float32)
        ts = np.full(B, t, dtype=np.int64)
        diffs.append(np.abs(run(exact, s, r, ts) - run(rolling, s, r, ts)).max())
    # The same function, not the same arithmetic: the engine's rolling layers cache ln_1 outputs and fold W_q W_k^T
    # and W_v W_o, its exact layers cache keys and values (engine.h), so they agree to float rounding, not to the bit.
    assert max(diffs[:K]) < 2e-5, diffs[:K]
    assert min(diffs[K:]) > 1e-4, "rolling should differ from exact once the window slides"


@pytest.mark.parametrize("C, H", [(32, 2), (36, 3)])
def test_rolling_engine_equals_torch_decoder(C: int, H: int) -> None:
    model = random_model(2, state_dim=7, act_dim=2, hidden_size=C, n_layer=2, n_head=H)
    K, B = 3, 2
    eng, dec = make_engine(model, B, K, "rolling"), KVCacheDecoder(model, B, K, "rolling")
    rng = np.random.default_rng(0)
    for t in range(8 * K):
        if t == 2 * K:
            eng.reset(0), dec.reset(torch.tensor([0]))
        s, r = rng.normal(size=(B, 7)).astype(np.float32), rng.normal(size=B).astype(np.float32)
        ts = np.array([t % 50, t], dtype=np.int64)
        a = eng.step(s, r, ts)
        b = dec.step(torch.tensor(s), torch.tensor(r), torch.tensor(ts)).numpy()
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0, err_msg=f"step {t}")


@pytest.mark.parametrize("mode", ["exact", "rolling"])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_kernel_build_equals_the_torch_decoder(isa: str, mode: str) -> None:
    """Each ISA build, on a shape whose widths (36, heads of 12) leave a tail in every vector loop."""
    model = random_model(3, state_dim=11, act_dim=3, hidden_size=36, n_layer=2, n_head=3)
    try:
        eng = make_engine(model, 2, 4, mode, isa=isa)
    except ValueError as err:
        pytest.skip(str(err))
    assert eng.isa == isa
    dec = KVCacheDecoder(model, 2, 4, mode)
    rng = np.random.default_rng(0)
    for t in range(12):
        s, r = rng.normal(size=(2, 11)).astype(np.float32), rng.normal(size=2).astype(np.float32)
        ts = np.full(2, t, dtype=np.int64)
        want = dec.step(torch.tensor(s), torch.tensor(r), torch.tensor(ts)).numpy()
        np.testing.assert_allclose(eng.step(s, r, ts), want, atol=2e-5, rtol=0, err_msg=f"step {t}")


@pytest.mark.parametrize("sample_seed", [None, 2**63 + 11])
@pytest.mark.parametrize("mode, B, K", [("exact", 9, 20), ("rolling", 170, 4)])
def test_threads_and_batch_rows_are_independent(mode: str, B: int, K: int, sample_seed: int | None) -> None:
    """A batch split in several chunks, claimed by 2 threads in whatever order, gives each row the same bits as a
    batch-1 engine. Sampled actions (their noise is keyed by the row's index): each row the same bits as one
    thread running the batch in another split, and row 0 as a batch-1 engine's."""
    kwargs = dict(state_dim=11, act_dim=3, hidden_size=64, n_layer=3, n_head=1)
    model = random_model(4, **kwargs) if sample_seed is None else stochastic_model(4, **kwargs)
    batched = make_engine(model, B, K, mode, n_threads=2)
    assert batched.threads == 2
    if sample_seed is None:
        singles = [make_engine(model, 1, K, mode, n_threads=1) for _ in range(B)]
    else:
        one_thread = make_engine(model, B, K, mode, n_threads=1)
        singles = [make_engine(model, 1, K, mode, n_threads=1)]
        for e in (batched, one_thread, singles[0]):
            e.set_sampling(sample_seed)
    rng = np.random.default_rng(0)
    steps = np.zeros(B, dtype=np.int64)
    for i in range(3 * K):
        if i == 5:
            for row in (2, 7, B - 1):
                batched.reset(row)
                if sample_seed is None:
                    singles[row].reset(0)
                else:
                    one_thread.reset(row)
                steps[row] = 0
        s, r = rng.normal(size=(B, 11)).astype(np.float32), rng.normal(size=B).astype(np.float32)
        got = batched.step(s, r, steps.copy())
        for b, single in enumerate(singles):
            np.testing.assert_array_equal(got[b], single.step(s[b : b + 1], r[b : b + 1], steps[b : b + 1])[0])
        if sample_seed is not None:
            np.testing.assert_array_equal(got, one_thread.step(s, r, steps.copy()))
        steps += 1


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_matmul_columns_split_over_threads_give_the_same_bits(mode: str) -> None:
    """Batch 1 on 2 threads (each matmul's columns split, hidden 96 = a full panel and a narrower one) equals
    1 thread exactly, also after a pause long enough for the helper thread to fall asleep."""
    model = random_model(5, state_dim=11, act_dim=3, hidden_size=96, n_layer=3, n_head=2)
    one, two = make_engine(model, 1, 5, mode, n_threads=1), make_engine(model, 1, 5, mode, n_threads=2)
    assert (one.threads, two.threads) == (1, 2)
    rng = np.random.default_rng(0)
    for t in range(16):
        if t == 8:
            time.sleep(0.01)  # > the 1 ms a helper spins before it sleeps
        s, r = rng.normal(size=(1, 11)).astype(np.float32), rng.normal(size=1).astype(np.float32)
        ts = np.array([t], dtype=np.int64)
        np.testing.assert_array_equal(two.step(s, r, ts), one.step(s, r, ts), err_msg=f"step {t}")


def test_checkpoint_loader_equals_weights_from_python(tmp_path) -> None:
    model = random_model(5, state_dim=11, act_dim=3, hidden_size=64, n_layer=2, n_head=2)
    model.save_pretrained(tmp_path)
    a = dt_fast._C.Engine.from_checkpoint(str(tmp_path), 1, 4, "exact")
    b = make_engine(model, 1, 4, "exact")
    rng = np.random.default_rng(0)
    for t in range(10):
        s, r = rng.normal(size=(1, 11)).astype(np.float32), rng.normal(size=1).astype(np.float32)
        ts = np.array([t], dtype=np.int64)
        np.testing.assert_array_equal(a.step(s, r, ts), b.step(s, r, ts))


def test_transformers_checkpoint_loads_in_the_engine(tmp_path) -> None:
    from transformers import DecisionTransformerConfig as HFConfig
    from transformers import DecisionTransformerModel

    torch.manual_seed(0)
    hf = DecisionTransformerModel(
        HFConfig(state_dim=11, act_dim=3, hidden_size=64, n_layer=2, n_head=2, max_ep_len=100)
    ).eval()
    hf.save_pretrained(tmp_path)
    eng = dt_fast._C.Engine.from_checkpoint(str(tmp_path), 1, 3, "exact")
    s, r = np.ones((1, 11), np.float32), np.ones(1, np.float32)
    with torch.no_grad():
        want = hf(
            states=torch.tensor(s)[None],
            actions=torch.zeros(1, 1, 3),
            returns_to_go=torch.ones(1, 1, 1),
            timesteps=torch.zeros(1, 1, dtype=torch.long),
            return_dict=False,
        )[1][0, -1].numpy()
    np.testing.assert_allclose(eng.step(s, r, np.zeros(1, np.int64))[0], want, atol=1e-5)


def write_safetensors(path, tensors: dict, header_extra: dict | None = None, dtype: str = "F32") -> None:
    """A hand-written safetensors file (so malformed variants can be produced)."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture
def small_checkpoint(tmp_path):
    model = random_model(6, state_dim=3, act_dim=2, hidden_size=16, n_layer=1, n_head=1)
    (tmp_path / "config.json").write_text(model.config.to_json_string())
    return tmp_path, tensors_of(model)


def test_bad_checkpoints_raise_naming_the_problem(small_checkpoint) -> None:
    path, tensors = small_checkpoint
    load = lambda: dt_fast._C.Engine.from_checkpoint(str(path), 1, 2, "exact")  # noqa: E731
    weights = path / "model.safetensors"
    with pytest.raises(ValueError, match="model.safetensors: cannot open"):
        load()
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="shorter than the 8-byte header length"):
        load()
    weights.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(ValueError, match="header length 1000000000 exceeds the file size"):
        load()
    weights.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ValueError, match="invalid JSON at byte 1"):
        load()
    write_safetensors(weights, tensors, dtype="I64")
    with pytest.raises(ValueError, match=r"dtype I64 is not supported \(the engine reads F32, F16, BF16, F64\)"):
        load()
    write_safetensors(weights, tensors, dtype="F16")  # float32 bytes labelled F16: twice the bytes F16 needs
    with pytest.raises(ValueError, match="tensor '.*': 64 bytes do not hold 16 F16 values"):
        load()
    write_safetensors(weights, {k: v for k, v in tensors.items() if k != "embed_ln.bias"})
    with pytest.raises(ValueError, match="missing weight 'embed_ln.bias'"):
        load()
    write_safetensors(weights, {**tensors, "embed_state.weight": np.zeros((16, 4))})
    with pytest.raises(ValueError, match=r"'embed_state.weight' has shape \(16, 4\), the config implies \(16, 3\)"):
        load()
    write_safetensors(weights, {**tensors, "extra.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="unexpected weight 'extra.weight'"):
        load()
    write_safetensors(weights, tensors, header_extra={"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99999]}})
    with pytest.raises(ValueError, match=r"tensor 'x': data_offsets \[0, 99999\] outside the data section"):
        load()
    write_safetensors(weights, tensors)
    (path / "config.json").write_text('{"state_dim": 3, "n_head": 5, "hidden_size": 16}')
    with pytest.raises(ValueError, match=r"config.json: hidden_size \(16\) must be divisible by n_head \(5\)"):
        load()
    (path / "config.json").write_text('{"state_dim": -3}')
    with pytest.raises(ValueError, match="config.json: 'state_dim' must be a positive int"):
        load()


def test_bad_engine_arguments_raise(small_checkpoint) -> None:
    path, tensors = small_checkpoint
    config = (path / "config.json").read_text()
    with pytest.raises(ValueError, match="mode must be 'exact' or 'rolling'"):
        dt_fast._C.Engine(config, tensors, 1, 2, "fast")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        dt_fast._C.Engine(config, tensors, 0, 2, "exact")
    with pytest.raises(ValueError, match="context_len must be in"):
        dt_fast._C.Engine(config, tensors, 1, 0, "exact")
    with pytest.raises(ValueError, match="isa must be"):
        dt_fast._C.Engine(config, tensors, 1, 2, "exact", isa="neon")
    eng = dt_fast._C.Engine(config, tensors, 2, 2, "exact")
    s, r, t = np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=r"states must have shape \(2, 3\), got \(2, 4\)"):
        eng.step(np.zeros((2, 4), np.float32), r, t)
    with pytest.raises(ValueError, match=r"returns_to_go must have shape \(2,\)"):
        eng.step(s, np.zeros(3, np.float32), t)
    with pytest.raises(ValueError, match=r"timesteps\[1\] = 200 is outside \[0, max_ep_len=200\)"):
        eng.step(s, r, np.array([0, 200]))
    assert eng.steps_taken(0) == 0  # the failed step changed nothing
    with pytest.raises(ValueError, match=r"row 2 out of range \[0, 2\)"):
        eng.reset(2)
    with pytest.raises(ValueError, match=r"row -1 out of range \[0, 2\)"):
        eng.steps_taken(-1)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_packed_matmul_equals_numpy(isa: str) -> None:
    """The engine's matmul kernel (which benchmarks also time for this machine's matmul rate) on shapes with a
    tail of rows, of vector lanes and of panel columns, its columns split over 1 to 3 threads."""
    rng = np.random.default_rng(0)
    for M, K, N in [(1, 1, 1), (7, 13, 70), (1, 128, 512), (130, 36, 100), (13, 129, 131)]:
        a, w = rng.normal(size=(M, K)).astype(np.float32), rng.normal(size=(K, N)).astype(np.float32)
        try:
            matmul = dt_fast._C.PackedMatmul(w, isa)
        except ValueError as err:
            pytest.skip(str(err))
        assert matmul.isa == isa
        want = a.astype(np.float64) @ w.astype(np.float64)
        for threads in (1, 2, 3):
            np.testing.assert_allclose(
                matmul(a, threads),
                want,
                atol=1e-4 * np.sqrt(K),
                rtol=1e-5,
                err_msg=f"M, K, N = {M, K, N}, {threads} threads",
            )


def test_packed_matmul_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"w must be a non-empty 2-D float array, got shape \(3,\)"):
        dt_fast._C.PackedMatmul(np.zeros(3, np.float32))
    matmul = dt_fast._C.PackedMatmul(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"a must have shape \(M, 4\), got \(2, 3\)"):
        matmul(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        matmul(np.zeros((2, 4), np.float32), 0)


@pytest.mark.parametrize("mode", ["exact", "rolling"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=["bf16", "f16", "f64"])
def test_checkpoint_in_other_float_dtypes_loads(tmp_path, dtype: torch.dtype, mode: str) -> None:
    """A float32 checkpoint rewritten in bf16 / f16 / f64 loads in the engine (converted to float32 as torch's
    .float() does) and gives the torch decoder's actions on the same converted weights."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    DecisionTransformer(
        DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=64, n_layer=2, n_head=2, max_ep_len=100)
    ).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    original = load_file(str(weights))
    converted = {k: v.to(dtype) for k, v in original.items()}
    if dtype == torch.float64:  # values float32 cannot hold, so that the engine's rounding is tested too
        converted = {k: v + torch.randn_like(v) * 1e-6 for k, v in converted.items()}
    save_file(converted, str(weights), metadata={"format": "pt"})
    reference = DecisionTransformer(DecisionTransformerConfig.from_json_file(tmp_path / "config.json")).eval()
    load_hf_state_dict(reference, {k: v.float() for k, v in converted.items()})
    B, K = 2, 4
    eng = dt_fast._C.Engine.from_checkpoint(str(tmp_path), B, K, mode)
    ctl = dt_fast._C.Controller.from_checkpoint(str(tmp_path), B, K, mode, 1, np.zeros(11), np.ones(11), 1.0)
    dec = KVCacheDecoder(reference, B, K, mode)
    rng = np.random.default_rng(0)
    for t in range(3 * K):
        s, r = rng.normal(size=(B, 11)).astype(np.float32), np.zeros(B, np.float32)
        ts = np.full(B, t, dtype=np.int64)
        want = dec.step(torch.tensor(s), torch.tensor(r), torch.tensor(ts)).numpy()
        np.testing.assert_allclose(eng.step(s, r, ts), want, atol=1e-5, rtol=0, err_msg=f"step {t}")
        np.testing.assert_allclose(ctl.act(s, None if t == 0 else np.zeros(B)), want, atol=1e-5, rtol=0)


NON_FINITE_CASES = [  # (tensor, value): a weight of every kind: embedding, layer matrix, bias, head, unused head
    ("embed_timestep.weight", np.nan),
    ("encoder.h.0.attn.c_attn.weight", np.nan),
    ("encoder.h.0.mlp.c_proj.bias", np.inf),
    ("encoder.ln_f.weight", -np.inf),
    ("predict_action.0.weight", np.nan),
    ("predict_state.weight", np.nan),  # not read for actions, but the checkpoint is broken all the same
]


@pytest.mark.parametrize("entry", ["from_checkpoint", "tensors", "controller"])
@pytest.mark.parametrize("name, value", NON_FINITE_CASES)
def test_non_finite_weight_is_refused_naming_it(small_checkpoint, name: str, value: float, entry: str) -> None:
    path, tensors = small_checkpoint
    bad = {k: v.copy() for k, v in tensors.items()}
    index = tuple(d - 1 for d in bad[name].shape)  # the last value
    bad[name][index] = value
    want = rf"weight '{re.escape(name)}' is not finite \(as float32\): {value} at \[{', '.join(map(str, index))}\]"
    with pytest.raises(ValueError, match=want):
        if entry == "tensors":
            dt_fast._C.Engine((path / "config.json").read_text(), bad, 1, 2, "exact")
        else:
            write_safetensors(path / "model.safetensors", bad)
            if entry == "from_checkpoint":
                dt_fast._C.Engine.from_checkpoint(str(path), 1, 2, "exact")
            else:
                dt_fast._C.Controller.from_checkpoint(str(path), 1, 2, "exact", 1, np.zeros(3), np.ones(3), 1.0)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy's, from the tensors
@pytest.mark.parametrize("entry", ["from_checkpoint", "tensors"])
def test_float64_weight_beyond_float32_range_is_refused(small_checkpoint, entry: str) -> None:
    from safetensors.numpy import save_file

    path, tensors = small_checkpoint
    bad = {k: v.astype(np.float64) for k, v in tensors.items()}
    bad["embed_ln.bias"][2] = -1e300
    with pytest.raises(ValueError, match=r"weight 'embed_ln.bias' is not finite \(as float32\): -inf at \[2\]"):
        if entry == "tensors":
            dt_fast._C.Engine((path / "config.json").read_text(), bad, 1, 2, "exact")
        else:
            save_file(bad, str(path / "model.safetensors"))
            dt_fast._C.Engine.from_checkpoint(str(path), 1, 2, "exact")


def test_engine_arguments_are_read_without_losing_values(small_checkpoint) -> None:
    """Arguments the bindings only read are converted (dtype, layout), except where a value would lose its meaning:
    fractional timesteps or rows, complex observations, weights that are not numbers."""
    path, tensors = small_checkpoint
    config = (path / "config.json").read_text()
    eng = dt_fast._C.Engine(config, tensors, 2, 2, "exact")
    strided = np.random.default_rng(0).normal(size=(2, 6))[:, ::2]  # float64, not contiguous
    r, t = np.zeros(2, np.float64), np.zeros(2, np.int32)
    copy = dt_fast._C.Engine(config, tensors, 2, 2, "exact")
    np.testing.assert_array_equal(
        eng.step(strided, r, t),
        copy.step(np.ascontiguousarray(strided, np.float32), r.astype(np.float32), t.astype(np.int64)),
    )
    with pytest.raises(ValueError, match="timesteps must be an integer array, got dtype float64"):
        eng.step(strided, r, np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="states must be a real-valued array, got dtype complex128"):
        eng.step(strided.astype(complex), r, t)
    with pytest.raises(ValueError, match="weight 'embed_ln.bias' must be a real-valued array, got dtype <U1"):
        dt_fast._C.Engine(config, {**tensors, "embed_ln.bias": np.array(["a"] * 16)}, 1, 2, "exact")
    ctl = dt_fast._C.Controller(config, tensors, 2, 2, "exact", 1, np.zeros(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="rows must be an integer array, got dtype float64"):
        ctl.reset(np.array([0.5]))
    with pytest.raises(ValueError, match="obs must be a real-valued array, got dtype complex128"):
        ctl.act(np.zeros((2, 3), complex))
    with pytest.raises(ValueError, match="state_mean must be a real-valued array, got dtype object"):
        dt_fast._C.Controller(config, tensors, 2, 2, "exact", 1, np.array([None] * 3), np.ones(3), 1.0)


SEED = 2**40 + 17  # both halves of the 64-bit seed in use


def sampling_stream(step, reset, B: int, S: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """Actions of n steps of `step(states, rtg, timesteps)` over a fixed input stream; rows reset now and then
    (row 1 at steps 40, 170; row 2 at 90), so rows are in different phases."""
    rng = np.random.default_rng(seed)
    steps = np.zeros(B, dtype=np.int64)
    out = []
    for i in range(n):
        for row in {40: [1], 90: [2], 170: [1]}.get(i, []):
            reset(row)
            steps[row] = 0
        s, r = rng.normal(size=(B, S)).astype(np.float32), rng.normal(size=B).astype(np.float32)
        out.append(step(s, r, np.minimum(steps, 199)))  # the models' max_ep_len is 200
        steps += 1
    return out


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_sampled_actions_equal_the_torch_decoder_with_normal_noise(mode: str) -> None:
    """tanh(loc + exp(log_std) * z) with z = distributions.normal_noise(seed, row, the row's draw counter), the
    counter advancing every step and not restarted by reset; the sampled action is fed back as a_{t-1}."""
    from dt_fast.distributions import normal_noise

    # Matrices of std 0.2: random_model's 0.3 amplifies float rounding until the mean actions of the two paths
    # differ by 1.5e-5 (2.7e-5 sampled, in make sanitize's -O1 build), which would hide what this test checks.
    model = stochastic_model(7, matrix_scale=2 / 3, state_dim=11, act_dim=3, hidden_size=32, n_layer=2, n_head=2)
    B, K, n = 3, 4, 300
    eng = make_engine(model, B, K, mode)
    eng.set_sampling(SEED)
    assert eng.sample_seed == SEED
    dec = KVCacheDecoder(model, B, K, mode)
    draws = torch.zeros(B, dtype=torch.long)

    def torch_step(s: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        noise = normal_noise(SEED, torch.arange(B), draws, 3)  # (B, A)
        draws.add_(1)
        return dec.step(torch.tensor(s), torch.tensor(r), torch.tensor(t), noise).numpy()

    got = sampling_stream(eng.step, eng.reset, B, 11, n)
    want = sampling_stream(torch_step, lambda row: dec.reset(torch.tensor([row])), B, 11, n)
    # The noise is the same bits (test below); loc and the log-std come from different float arithmetic.
    err = np.abs(np.array(got) - np.array(want)).max(axis=(1, 2))  # (n,)
    assert err.max() < 1e-5, f"first step over 1e-5: {int(np.argmax(err >= 1e-5))}, max error {err.max():.2e}"
    mean = make_engine(model, B, K, mode)
    assert np.abs(np.array(got[:30]) - np.array(sampling_stream(mean.step, mean.reset, B, 11, 30))).max() > 0.1


def test_noise_of_the_engine_is_normal_noise_bit_for_bit() -> None:
    from dt_fast.distributions import normal_noise

    rows, draws = np.arange(20000) % 97, np.arange(20000) // 3
    for seed in (0, 7, SEED, 2**64 - 1):
        want = normal_noise(seed, torch.from_numpy(rows), torch.from_numpy(draws), 5).numpy()
        np.testing.assert_array_equal(dt_fast._C.normal_noise(seed, rows, draws, 5), want)


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_mean_action_of_a_stochastic_model_is_the_deterministic_engines_bit_for_bit(mode: str) -> None:
    model = stochastic_model(8, state_dim=5, act_dim=2, hidden_size=32, n_layer=2, n_head=2)
    tensors = tensors_of(model)
    plain = {k: v for k, v in tensors.items() if not k.startswith("predict_action_log_std")}
    config = model.config.to_json_string()
    with_head = dt_fast._C.Engine(config, tensors, 3, 4, mode)
    without = dt_fast._C.Engine(config, plain, 3, 4, mode)
    assert with_head.has_log_std and not without.has_log_std and with_head.sample_seed is None
    with_head.set_sampling(3)
    with_head.set_sampling(None)  # back to the mean before any step
    assert with_head.sample_seed is None
    np.testing.assert_array_equal(
        np.array(sampling_stream(with_head.step, with_head.reset, 3, 5, 60)),
        np.array(sampling_stream(without.step, without.reset, 3, 5, 60)),
    )


def test_sampling_is_deterministic_per_seed_and_restarts_with_the_seed() -> None:
    model = stochastic_model(9, state_dim=5, act_dim=2, hidden_size=32, n_layer=2, n_head=2)
    engines = [make_engine(model, 3, 4, "exact") for _ in range(4)]
    for e, seed in zip(engines, (5, 5, 6, 5)):
        e.set_sampling(seed)
    runs = [np.array(sampling_stream(e.step, e.reset, 3, 5, 30)) for e in engines[:3]]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - runs[2]).max() > 1e-2
    e = engines[3]  # set_sampling restarts every row's counter; reset alone does not
    sampling_stream(e.step, e.reset, 3, 5, 30)
    for row in range(3):
        e.reset(row)
    continued = np.array(sampling_stream(e.step, e.reset, 3, 5, 30))
    assert np.abs(continued - runs[0]).max() > 1e-2
    e.set_sampling(5)
    for row in range(3):
        e.reset(row)
    np.testing.assert_array_equal(np.array(sampling_stream(e.step, e.reset, 3, 5, 30)), runs[0])


def test_sampling_needs_the_log_std_head_and_a_valid_seed(small_checkpoint) -> None:
    path, tensors = small_checkpoint
    config = (path / "config.json").read_text()
    eng = dt_fast._C.Engine(config, tensors, 2, 2, "exact")
    ctl = dt_fast._C.Controller(config, tensors, 2, 2, "exact", 1, np.zeros(3), np.ones(3), 1.0)
    for obj in (eng, ctl):
        with pytest.raises(ValueError, match="sampled actions need a stochastic model, with the log-std head"):
            obj.set_sampling(1)
        assert obj.sample_seed is None
    stochastic = tensors_of(stochastic_model(6, state_dim=3, act_dim=2, hidden_size=16, n_layer=1, n_head=1))
    eng = dt_fast._C.Engine(config, stochastic, 2, 2, "exact")
    for bad in (-1, 2**64, 1.5, True, "3", [1]):
        with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*64\)"):
            eng.set_sampling(bad)
    eng.set_sampling(np.uint64(2**64 - 1))
    assert eng.sample_seed == 2**64 - 1


def test_log_std_head_is_loaded_with_the_checks_of_every_weight(small_checkpoint) -> None:
    path, _ = small_checkpoint
    model = stochastic_model(6, state_dim=3, act_dim=2, hidden_size=16, n_layer=1, n_head=1)
    tensors, config = tensors_of(model), model.config.to_json_string()
    write_safetensors(path / "model.safetensors", tensors)
    assert dt_fast._C.Engine.from_checkpoint(str(path), 1, 2, "exact").has_log_std
    cases = [
        (
            {k: v for k, v in tensors.items() if k != "predict_action_log_std.bias"},
            "missing weight 'predict_action_log_std.bias'",
        ),
        (
            {**tensors, "predict_action_log_std.weight": np.zeros((3, 16), np.float32)},
            r"weight 'predict_action_log_std.weight' has shape \(3, 16\), the config implies \(2, 16\)",
        ),
        (
            {**tensors, "predict_action_log_std.bias": np.array([0.0, np.nan], np.float32)},
            r"weight 'predict_action_log_std.bias' is not finite \(as float32\): nan at \[1\]",
        ),
        (
            {**tensors, "predict_action_log_std.scale": np.zeros(2, np.float32)},
            "unexpected weight 'predict_action_log_std.scale'",
        ),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            dt_fast._C.Engine(config, bad, 1, 2, "exact")
        write_safetensors(path / "model.safetensors", bad)
        with pytest.raises(ValueError, match=message):
            dt_fast._C.Engine.from_checkpoint(str(path), 1, 2, "exact")
    no_tanh = json.loads(config)
    no_tanh["action_tanh"] = False
    with pytest.raises(ValueError, match="a log-std head .* needs action_tanh = true"):
        dt_fast._C.Engine(json.dumps(no_tanh), tensors, 1, 2, "exact")


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_load_weights_equals_a_new_engine_from_then_on(mode: str) -> None:
    kwargs = dict(state_dim=5, act_dim=2, hidden_size=32, n_layer=2, n_head=2)
    old, new = stochastic_model(10, **kwargs), stochastic_model(11, **kwargs)
    config = old.config.to_json_string()
    eng = make_engine(old, 3, 4, mode, n_threads=2)
    eng.set_sampling(SEED)
    sampling_stream(eng.step, eng.reset, 3, 5, 9)  # mid-episode, caches full of the old weights' keys
    eng.load_weights(config, tensors_of(new))
    assert [eng.steps_taken(b) for b in range(3)] == [0, 0, 0] and eng.sample_seed == SEED
    # The draw counters are kept (9 steps taken): as a new engine that took 9 sampled steps and reset every row.
    fresh = make_engine(new, 3, 4, mode, n_threads=2)
    fresh.set_sampling(SEED)
    sampling_stream(fresh.step, fresh.reset, 3, 5, 9, seed=1)
    for row in range(3):
        fresh.reset(row)
    np.testing.assert_array_equal(
        np.array(sampling_stream(eng.step, eng.reset, 3, 5, 40)),
        np.array(sampling_stream(fresh.step, fresh.reset, 3, 5, 40)),
    )
    eng.set_sampling(None)
    for row in range(3):
        eng.reset(row)
    mean = make_engine(new, 3, 4, mode)
    np.testing.assert_array_equal(
        np.array(sampling_stream(eng.step, eng.reset, 3, 5, 40)),
        np.array(sampling_stream(mean.step, mean.reset, 3, 5, 40)),
    )


def test_load_weights_refuses_other_models_and_changes_nothing() -> None:
    kwargs = dict(state_dim=5, act_dim=2, n_layer=2, n_head=2)
    model = stochastic_model(12, hidden_size=32, **kwargs)
    config, tensors = model.config.to_json_string(), tensors_of(model)
    eng, twin = make_engine(model, 2, 3, "exact"), make_engine(model, 2, 3, "exact")
    sampling_stream(eng.step, eng.reset, 2, 5, 4)
    sampling_stream(twin.step, twin.reset, 2, 5, 4)
    other = stochastic_model(12, hidden_size=48, **kwargs)
    with pytest.raises(ValueError, match="load_weights: the new weights' config differs from the engine's"):
        eng.load_weights(other.config.to_json_string(), tensors_of(other))
    plain = {k: v for k, v in tensors.items() if not k.startswith("predict_action_log_std")}
    with pytest.raises(ValueError, match="engine's model has a log-std head .* and the new weights have none"):
        eng.load_weights(config, plain)
    with pytest.raises(ValueError, match=r"weight 'embed_ln.bias' is not finite"):
        eng.load_weights(config, {**tensors, "embed_ln.bias": np.full(32, np.inf, np.float32)})
    with pytest.raises(ValueError, match="has no log-std head .* and the new weights have one"):
        make_engine(random_model(12, hidden_size=32, **kwargs), 2, 3, "exact").load_weights(config, tensors)
    assert eng.steps_taken(0) == 4
    np.testing.assert_array_equal(
        np.array(sampling_stream(eng.step, eng.reset, 2, 5, 10, seed=3)),
        np.array(sampling_stream(twin.step, twin.reset, 2, 5, 10, seed=3)),
    )
