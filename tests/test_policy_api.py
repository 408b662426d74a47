"""Policy: batch rows, resets, dt_fast.json handling, and a clear error for every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import METADATA_NAME, Metadata, read_metadata, write_metadata
from dt_fast.policy import Policy

BACKENDS = ["torch"] + (["cpp"] if dt_fast.HAS_C_EXT else [])
S, A = 11, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    torch.manual_seed(0)
    m = DecisionTransformer(DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=32, n_layer=2, n_head=2,
                                                      max_ep_len=100)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


@pytest.fixture
def checkpoint(model, tmp_path):
    model.save_pretrained(tmp_path)
    write_metadata(tmp_path, Metadata(state_mean=np.full(S, 0.5), state_std=np.full(S, 2.0), scale=100.0, context_len=4,
                   target_return=50.0, env_id="Hopper-v4", dataset={"episodes": np.int64(3), "best_return": 60.0}))
    return tmp_path


def policy_of(model, backend: str, num_envs: int = 1, mode: str = "exact", **kwargs) -> Policy:
    args = dict(target_return=50.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=100.0, context_len=4)
    args.update(kwargs)
    return Policy(model, mode=mode, backend=backend, num_envs=num_envs, **args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_batched_rows_equal_single_row_policies(model, backend: str, mode: str) -> None:
    """Rows of one Policy act as separate Policies, including a row reset in the middle and per-row targets."""
    B = 3
    targets = np.array([50.0, 10.0, -5.0])
    batched = policy_of(model, backend, num_envs=B, mode=mode, target_return=targets)
    singles = [policy_of(model, backend, mode=mode, target_return=t) for t in targets]
    rng = np.random.default_rng(0)
    reward = None
    for t in range(14):
        if t == 6:
            batched.reset([1])
            singles[1].reset()
        obs = rng.normal(size=(B, S))
        got = batched.act(obs, reward)
        assert got.shape == (B, A) and got.dtype == np.float32
        for b in range(B):
            r = None if reward is None or (t == 6 and b == 1) else reward[b]
            np.testing.assert_allclose(got[b], singles[b].act(obs[b], r), atol=1e-6, rtol=0)
        reward = rng.normal(size=B)


@pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built")
def test_cpp_and_torch_backends_agree_in_rolling_mode(model) -> None:
    ref = policy_of(model, "torch", num_envs=2, mode="rolling")
    pol = policy_of(model, "cpp", num_envs=2, mode="rolling")
    rng = np.random.default_rng(1)
    reward = None
    for _ in range(20):
        obs = rng.normal(size=(2, S)).astype(np.float32)
        np.testing.assert_allclose(pol.act(obs, reward), ref.act(obs, reward), atol=2e-5, rtol=0)
        reward = rng.normal(size=2)


def test_from_pretrained_reads_dt_fast_json(checkpoint) -> None:
    policy = Policy.from_pretrained(checkpoint, num_envs=2)
    assert policy.scale == 100.0 and policy.context_len == 4
    np.testing.assert_array_equal(policy.state_mean, np.full(S, 0.5))
    np.testing.assert_array_equal(policy.target_return, [50.0, 50.0])
    override = Policy.from_pretrained(checkpoint, target_return=7.0, context_len=2, scale=10.0)
    assert override.context_len == 2 and override.scale == 10.0 and override.target_return[0] == 7.0
    meta = read_metadata(checkpoint)
    assert meta.env_id == "Hopper-v4" and meta.dataset == {"episodes": 3, "best_return": 60.0}
    assert not list(checkpoint.glob("*.tmp*"))


def test_plain_transformers_checkpoint_names_missing_values(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing target_return, state_mean, state_std, scale, context_len: pass"):
        Policy.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing state_std, context_len"):
        Policy.from_pretrained(tmp_path, target_return=1.0, state_mean=np.zeros(S), scale=1.0)
    policy = Policy.from_pretrained(tmp_path, target_return=1.0, state_mean=np.zeros(S), state_std=np.ones(S),
                                    scale=1.0, context_len=3)
    assert policy.act(np.zeros(S)).shape == (A,)


def test_bad_metadata_is_named(checkpoint) -> None:
    meta = json.loads((checkpoint / METADATA_NAME).read_text())
    (checkpoint / METADATA_NAME).write_text(json.dumps({**meta, "state_std": [1.0] * (S - 1) + [0.0]}))
    with pytest.raises(ValueError, match=r"dt_fast.json: state_std must be positive, state_std\[10\] = 0.0"):
        Policy.from_pretrained(checkpoint)
    (checkpoint / METADATA_NAME).write_text(json.dumps({**meta, "state_mean": [0.0] * 5, "state_std": [1.0] * 5}))
    with pytest.raises(ValueError, match=r"state_mean must have shape \(11,\) \(the checkpoint's state_dim\)"):
        Policy.from_pretrained(checkpoint)
    (checkpoint / METADATA_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="dt_fast.json: not valid JSON"):
        Policy.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="context_len must be a positive int"):
        Metadata(state_mean=[0.0], state_std=[1.0], scale=1.0, context_len=0, target_return=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_a_clear_error(model, backend: str) -> None:
    policy = policy_of(model, backend, num_envs=2)
    good = np.zeros((2, S))
    with pytest.raises(ValueError, match=r"obs has 17 values per row but the checkpoint's state_dim is 11"):
        policy.act(np.zeros((2, 17)))
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 11\) \(num_envs, state_dim\), got rank 3"):
        policy.act(np.zeros((2, S, 1)))
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 11\) \(num_envs, state_dim\), got rank 1"):
        policy.act(np.zeros(S))
    with pytest.raises(ValueError, match=r"obs has 3 rows but the policy has num_envs=2"):
        policy.act(np.zeros((3, S)))
    with pytest.raises(ValueError, match=r"obs must be a real-valued array, got dtype <U1"):
        policy.act(np.full((2, S), "a"))
    with pytest.raises(ValueError, match=r"obs must be a real-valued array, got dtype complex128"):
        policy.act(good + 1j)
    bad = good.copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"obs contains NaN or inf: first at obs\[1, 4\] = nan"):
        policy.act(bad)
    policy.act(good)  # first step: reward None is fine
    with pytest.raises(ValueError, match=r"reward is None but rows \[0, 1\] are past their first step"):
        policy.act(good)
    with pytest.raises(ValueError, match=r"reward must have shape \(2,\) \(num_envs\), got shape \(3,\)"):
        policy.act(good, np.zeros(3))
    with pytest.raises(ValueError, match=r"reward contains NaN or inf: first at reward\[1\] = inf"):
        policy.act(good, np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match=r"env_ids\[1\] = 5 is out of range \[0, 2\)"):
        policy.reset([0, 5])
    with pytest.raises(ValueError, match=r"env_ids\[0\] = -1 is out of range"):
        policy.reset(-1)
    with pytest.raises(ValueError, match="env_ids must be an int or a 1-D sequence of ints"):
        policy.reset([0.5])
    with pytest.raises(ValueError, match=r"target_return must be a number or have shape \(2,\)"):
        policy.set_target_return([1.0, 2.0, 3.0])
    assert policy.act(good, np.zeros(2)).shape == (2, A)  # still usable after every error


def test_bad_constructor_arguments(model) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        policy_of(model, "torch", mode="fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        policy_of(model, "jax")
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        policy_of(model, "torch", num_envs=0)
    with pytest.raises(ValueError, match=r"state_std must be positive, state_std\[0\] = -1.0"):
        policy_of(model, "torch", state_std=-np.ones(S))
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        policy_of(model, "torch", scale=0.0)


def test_single_env_shapes(model) -> None:
    policy = policy_of(model, BACKENDS[-1])
    a = policy.act(np.zeros(S, dtype=np.float64))
    assert a.shape == (A,)
    assert policy.act(np.zeros((1, S)), np.zeros(1)).shape == (1, A)
    assert policy.act(np.zeros(S, dtype=np.int32), 1.0).shape == (A,)
