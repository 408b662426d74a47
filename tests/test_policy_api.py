"""Policy: batch rows, resets, dt_fast.json handling, and a clear error for every kind of bad input."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

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
    m = DecisionTransformer(
        DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=32, n_layer=2, n_head=2, max_ep_len=100)
    ).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


@pytest.fixture
def checkpoint(model, tmp_path):
    model.save_pretrained(tmp_path)
    write_metadata(
        tmp_path,
        Metadata(
            state_mean=np.full(S, 0.5),
            state_std=np.full(S, 2.0),
            scale=100.0,
            context_len=4,
            target_return=50.0,
            env_id="Hopper-v4",
            dataset={"episodes": np.int64(3), "best_return": 60.0},
        ),
    )
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
    policy = Policy.from_pretrained(
        tmp_path, target_return=1.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=1.0, context_len=3
    )
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


def good_step(policy: Policy) -> np.ndarray:
    """One act with valid observations and rewards (the reward is ignored on a row's first step)."""
    obs = np.linspace(-1.0, 1.0, policy.num_envs * S).reshape(policy.num_envs, S)  # (B, S)
    return policy.act(obs, np.full(policy.num_envs, 0.5))


def nan_at(shape: tuple[int, ...], index: tuple[int, ...], value: float = np.nan) -> np.ndarray:
    """Zeros of `shape` with `value` at `index`."""
    x = np.zeros(shape)
    x[index] = value
    return x


def stepped_then_reset(rows: list[int]):
    """A `before` action: one good step, then a reset of `rows`."""
    return lambda p: (good_step(p), p.reset(rows))


FRESH, STEPPED = (lambda p: None), good_step
GOOD = np.zeros((2, S))
# (id, num_envs, what happens before, the bad call, the error every backend raises, word for word)
BAD_INPUT = [
    (
        "obs state_dim",
        2,
        FRESH,
        lambda p: p.act(np.zeros((2, 17))),
        r"obs has 17 values per row but the checkpoint's state_dim is 11",
    ),
    (
        "obs rank 3",
        2,
        FRESH,
        lambda p: p.act(np.zeros((2, S, 1))),
        r"obs must have shape \(2, 11\) \(num_envs, state_dim\), got rank 3",
    ),
    (
        "obs rank 1",
        2,
        FRESH,
        lambda p: p.act(np.zeros(S)),
        r"obs must have shape \(2, 11\) \(num_envs, state_dim\), got rank 1",
    ),
    ("obs rows", 2, FRESH, lambda p: p.act(np.zeros((3, S))), r"obs has 3 rows but the policy has num_envs=2"),
    (
        "obs single rank 3",
        1,
        FRESH,
        lambda p: p.act(np.zeros((1, S, 1))),
        r"obs must have shape \(11,\) or \(1, 11\), got rank 3 shape \(1, 11, 1\)",
    ),
    (
        "obs single state_dim",
        1,
        FRESH,
        lambda p: p.act(np.zeros(S + 1)),
        r"obs has 12 values per row but the checkpoint's state_dim is 11",
    ),
    ("obs str", 2, FRESH, lambda p: p.act(np.full((2, S), "a")), r"obs must be a real-valued array, got dtype <U1"),
    ("obs complex", 2, FRESH, lambda p: p.act(GOOD + 1j), r"obs must be a real-valued array, got dtype complex128"),
    ("obs bool", 2, FRESH, lambda p: p.act(GOOD > 0), r"obs must be a real-valued array, got dtype bool"),
    (
        "obs nan",
        2,
        FRESH,
        lambda p: p.act(nan_at((2, S), (1, 4))),
        r"obs contains NaN or inf: first at obs\[1, 4\] = nan",
    ),
    (
        "obs -inf single",
        1,
        STEPPED,
        lambda p: p.act(nan_at((S,), (3,), -np.inf), 0.0),
        r"obs contains NaN or inf: first at obs\[0, 3\] = -inf",
    ),
    (
        "obs nan list",
        2,
        FRESH,
        lambda p: p.act(nan_at((2, S), (0, 2)).tolist()),
        r"obs contains NaN or inf: first at obs\[0, 2\] = nan",
    ),
    (
        "obs nan tensor",
        2,
        FRESH,
        lambda p: p.act(torch.from_numpy(nan_at((2, S), (1, 0), np.inf))),
        r"obs contains NaN or inf: first at obs\[1, 0\] = inf",
    ),
    (
        "obs overflows float32",
        2,
        FRESH,
        lambda p: p.act(nan_at((2, S), (0, 1), 1e300)),
        r"obs contains NaN or inf: first at obs\[0, 1\] = inf",
    ),
    (
        "reward None",
        2,
        STEPPED,
        lambda p: p.act(GOOD),
        r"reward is None but rows \[0, 1\] are past their first step: pass the reward received for the previous",
    ),
    (
        "reward None, row 1 reset",
        2,
        stepped_then_reset([1]),
        lambda p: p.act(GOOD),
        r"reward is None but rows \[0\] are past their first step",
    ),
    (
        "reward shape",
        2,
        STEPPED,
        lambda p: p.act(GOOD, np.zeros(3)),
        r"reward must have shape \(2,\) \(num_envs\), got shape \(3,\)",
    ),
    (
        "reward scalar",
        2,
        STEPPED,
        lambda p: p.act(GOOD, 1.0),
        r"reward must have shape \(2,\) \(num_envs\), got shape \(\)",
    ),
    (
        "reward rank 2",
        2,
        FRESH,
        lambda p: p.act(GOOD, np.zeros((2, 1))),
        r"reward must have shape \(2,\) \(num_envs\), got shape \(2, 1\)",
    ),
    (
        "reward single shape",
        1,
        STEPPED,
        lambda p: p.act(np.zeros(S), [1.0, 2.0]),
        r"reward must have shape \(1,\) \(num_envs\), got shape \(2,\)",
    ),
    ("reward str", 2, STEPPED, lambda p: p.act(GOOD, "a"), r"reward must be a real-valued array, got dtype <U1"),
    (
        "reward inf",
        2,
        STEPPED,
        lambda p: p.act(GOOD, np.array([0.0, np.inf])),
        r"reward contains NaN or inf: first at reward\[1\] = inf",
    ),
    (
        "reward nan single",
        1,
        STEPPED,
        lambda p: p.act(np.zeros(S), np.nan),
        r"reward contains NaN or inf: first at reward\[0\] = nan",
    ),
    (
        "reward nan past a fresh row",
        2,
        stepped_then_reset([0]),
        lambda p: p.act(GOOD, [np.nan, np.nan]),
        r"reward contains NaN or inf: first at reward\[1\] = nan",
    ),
    (
        "env_ids range",
        2,
        STEPPED,
        lambda p: p.reset([0, 5]),
        r"env_ids\[1\] = 5 is out of range \[0, 2\) \(num_envs=2\)",
    ),
    ("env_ids negative", 2, STEPPED, lambda p: p.reset(-1), r"env_ids\[0\] = -1 is out of range"),
    ("env_ids float", 2, STEPPED, lambda p: p.reset([0.5]), r"env_ids must be an int or a 1-D sequence of ints"),
    ("env_ids rank 2", 2, STEPPED, lambda p: p.reset([[0], [1]]), r"env_ids must be an int or a 1-D sequence of ints"),
    (
        "target shape",
        2,
        FRESH,
        lambda p: p.set_target_return([1.0, 2.0, 3.0]),
        r"target_return must be a number or have shape \(2,\) \(num_envs\), got shape \(3,\)",
    ),
    (
        "target nan",
        2,
        FRESH,
        lambda p: p.set_target_return([1.0, np.nan]),
        r"target_return must be finite, target_return\[1\] is nan",
    ),
    (
        "target str",
        2,
        FRESH,
        lambda p: p.set_target_return("high"),
        r"target_return must be a number or a sequence of numbers, got 'high'",
    ),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the obs overflowing float32
@pytest.mark.parametrize(
    "num_envs, before, call, message", [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT]
)
def test_every_backend_raises_the_same_error_for_bad_input(model, num_envs: int, before, call, message: str) -> None:
    """Each backend raises the same exception with the same message, and loses nothing: after the error the
    policy acts as a twin that never received the bad call."""
    errors = {}
    for backend in BACKENDS:
        policy, twin = (policy_of(model, backend, num_envs=num_envs) for _ in range(2))
        before(policy), before(twin)
        with pytest.raises(ValueError, match=message) as caught:
            call(policy)
        errors[backend] = (caught.type, str(caught.value))
        np.testing.assert_array_equal(policy.target_return, twin.target_return)
        np.testing.assert_array_equal(good_step(policy), good_step(twin), err_msg=f"backend {backend}")
    assert len(set(errors.values())) == 1, errors


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
    for n_threads in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"n_threads must be an int >= 0 \(0 = every hardware thread\)"):
            policy_of(model, "torch", n_threads=n_threads)


def os_threads() -> int:
    """Threads of this process, as the kernel counts them."""
    return int(re.search(r"Threads:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


@pytest.mark.skipif(
    not dt_fast.HAS_C_EXT or not Path("/proc/self/status").exists(), reason="needs dt_fast._C and Linux's /proc"
)
def test_more_threads_than_the_machine_has_are_clamped(model) -> None:
    cores = os.cpu_count()
    started = os_threads()
    with pytest.warns(
        UserWarning,
        match=rf"n_threads=1000 is more than the {cores} hardware threads of this "
        rf"machine: using {cores}",
    ):
        policy = policy_of(model, "cpp", n_threads=1000)
    assert policy.n_threads == cores
    assert os_threads() - started <= cores, "the engine started more threads than the machine has"
    assert policy.act(np.zeros(S)).shape == (A,)


def test_concurrent_calls_on_one_policy_are_serialised(model) -> None:
    """Four threads step one torch-backend Policy with the same input: serialised, that is 40 steps in some
    order, all the same, so the next action equals that of a Policy stepped 40 times by one thread."""
    policy, twin = policy_of(model, "torch", num_envs=2), policy_of(model, "torch", num_envs=2)
    obs, reward = np.full((2, S), 0.3), np.ones(2)
    policy.act(obs), twin.act(obs)
    threads = [threading.Thread(target=lambda: [policy.act(obs, reward) for _ in range(10)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(40):
        twin.act(obs, reward)
    np.testing.assert_array_equal(policy.act(obs, reward), twin.act(obs, reward))


def test_single_env_shapes(model) -> None:
    policy = policy_of(model, BACKENDS[-1])
    a = policy.act(np.zeros(S, dtype=np.float64))
    assert a.shape == (A,)
    assert policy.act(np.zeros((1, S)), np.zeros(1)).shape == (1, A)
    assert policy.act(np.zeros(S, dtype=np.int32), 1.0).shape == (A,)
