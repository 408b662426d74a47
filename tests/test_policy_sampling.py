"""Policy.set_sampling and Policy.update_weights (the Online Decision Transformer's exploration and weight refresh)
on both backends: the engine's sampled actions equal the torch decoder's for the same seed, determinism per seed
and thread count, the mean action back when sampling is off, a deterministic model refused, update_weights equal
to a freshly built Policy from then on, and bad arguments named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import Metadata, write_metadata
from dt_fast.decode import KVCacheDecoder
from dt_fast.distributions import normal_noise
from dt_fast.policy import Policy

BACKENDS = ["torch"] + (["cpp"] if dt_fast.HAS_C_EXT else [])
S, A, B = 11, 3, 3
SEED = 2**33 + 5
RESETS = {40: [1], 90: [2, 0], 170: [1]}  # step -> rows that start a new episode there

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_of(seed: int, stochastic: bool = True, hidden_size: int = 32) -> DecisionTransformer:
    """A small model with weights large enough that actions vary with the input (and a log-std head)."""
    torch.manual_seed(seed)
    config = DecisionTransformerConfig(
        state_dim=S, act_dim=A, hidden_size=hidden_size, n_layer=2, n_head=2, max_ep_len=100
    )
    model = DecisionTransformer(config, stochastic=stochastic).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.1)
        if stochastic:
            model.predict_action_log_std.bias.normal_(0.0, 0.5)  # std around exp(-1.5)
    return model


def policy_of(model: DecisionTransformer, backend: str, mode: str = "exact", **kwargs) -> Policy:
    rng = np.random.default_rng(1)
    args = dict(
        target_return=np.array([50.0, 10.0, -5.0]),
        state_mean=rng.normal(size=S),
        state_std=rng.uniform(0.5, 2.0, size=S),
        scale=100.0,
        context_len=4,
        num_envs=B,
    )
    args.update(kwargs)
    return Policy(model, mode=mode, backend=backend, **args)


def rollout(policy: Policy, n: int, seed: int = 0) -> np.ndarray:
    """Actions (n, B, A) over a fixed stream of observations and rewards, with the RESETS."""
    rng = np.random.default_rng(seed)
    reward, out = None, []
    for i in range(n):
        if i in RESETS:
            policy.reset(RESETS[i])
        out.append(policy.act(rng.normal(size=(B, S)), reward))
        reward = rng.normal(size=B)
    return np.array(out)


@pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built")
@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_engine_sampling_equals_the_torch_path_for_the_same_seed(mode: str) -> None:
    """300 steps of 3 rows (resets at different steps, episodes past 100 timesteps clipped): the same actions to
    float tolerance (the noise is the same bits; loc and log_std are computed by different float arithmetic)."""
    model = model_of(0)
    runs = {}
    for backend in ("cpp", "torch"):
        policy = policy_of(model, backend, mode)
        policy.set_sampling(SEED)
        assert policy.sample_seed == SEED
        runs[backend] = rollout(policy, 300)
    err = np.abs(runs["cpp"] - runs["torch"]).max(axis=(1, 2))  # (300,); measured: below 6e-7
    assert err.max() < 1e-5, f"first step over 1e-5: {int(np.argmax(err >= 1e-5))}, max error {err.max():.2e}"
    mean = rollout(policy_of(model, "cpp", mode), 50)
    assert np.abs(runs["cpp"][:50] - mean).max() > 0.1  # sampled, not the mean


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_is_deterministic_per_seed(backend: str) -> None:
    model = model_of(1)
    runs = []
    for seed, n_threads in ((7, 1), (7, 2), (8, 1)):
        policy = policy_of(model, backend, n_threads=n_threads)
        policy.set_sampling(seed)
        runs.append(rollout(policy, 60))
    np.testing.assert_array_equal(runs[0], runs[1])  # the same bits, also with 2 engine threads
    assert np.abs(runs[0] - runs[2]).max() > 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_off_is_the_mean_action(backend: str) -> None:
    """set_sampling(None) gives back the mean action: after a reset, the actions of a Policy that never sampled."""
    model = model_of(2)
    policy = policy_of(model, backend)
    policy.set_sampling(3)
    rollout(policy, 10)
    policy.set_sampling(None)
    assert policy.sample_seed is None
    policy.reset()
    np.testing.assert_array_equal(rollout(policy, 30), rollout(policy_of(model, backend), 30))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_a_deterministic_model_is_an_error(backend: str) -> None:
    policy = policy_of(model_of(3, stochastic=False), backend)
    with pytest.raises(ValueError, match="set_sampling needs a stochastic model .* no log-std head"):
        policy.set_sampling(1)
    assert policy.sample_seed is None
    policy.set_sampling(None)  # the mean action is always fine


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_seeds_are_refused(backend: str) -> None:
    policy = policy_of(model_of(4), backend)
    for bad in (-1, 2**64, 1.5, True, "3", [1]):
        with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*64\)"):
            policy.set_sampling(bad)
    policy.set_sampling(np.uint64(2**64 - 1))
    assert policy.sample_seed == 2**64 - 1 and type(policy.sample_seed) is int


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_update_weights_equals_a_new_policy_from_then_on(backend: str, mode: str) -> None:
    old, new = model_of(5), model_of(6)
    policy = policy_of(old, backend, mode, n_threads=2)
    policy.set_target_return([20.0, 30.0, 40.0])
    rollout(policy, 9)  # mid-episode: the caches hold keys of the old weights
    policy.update_weights(new)  # every row starts a new episode, conditioned on its target
    fresh = policy_of(new, backend, mode, n_threads=2, target_return=[20.0, 30.0, 40.0])
    np.testing.assert_array_equal(rollout(policy, 40, seed=1), rollout(fresh, 40, seed=1))
    for p in (policy, fresh):
        p.set_sampling(SEED)
        p.reset()
    np.testing.assert_array_equal(rollout(policy, 40, seed=2), rollout(fresh, 40, seed=2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_weights_keeps_the_draw_counters(backend: str) -> None:
    """As a Policy that took as many sampled steps and reset every row (update_weights does not restart them)."""
    old, new = model_of(5), model_of(6)
    policy, fresh = policy_of(old, backend), policy_of(new, backend)
    for p in (policy, fresh):
        p.set_sampling(SEED)
        rollout(p, 12)
    policy.update_weights(new)
    fresh.reset()
    np.testing.assert_array_equal(rollout(policy, 30, seed=3), rollout(fresh, 30, seed=3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_weights_refuses_another_model(backend: str) -> None:
    policy = policy_of(model_of(7), backend)
    before = rollout(policy, 5)
    with pytest.raises(
        ValueError, match="update_weights needs the Policy's model config: hidden_size is 48, the Policy's is 32"
    ):
        policy.update_weights(model_of(7, hidden_size=48))
    with pytest.raises(ValueError, match="the model's is deterministic, the Policy's stochastic"):
        policy.update_weights(model_of(7, stochastic=False))
    with pytest.raises(ValueError, match="model must be a dt_fast.DecisionTransformer, got dict"):
        policy.update_weights({})
    if backend == "torch":
        with pytest.raises(ValueError, match="the model is on meta but this Policy runs on cpu"):
            policy.update_weights(model_of(7).to("meta"))
    policy.reset()
    np.testing.assert_array_equal(rollout(policy, 5), before)  # still the old weights


@pytest.mark.skipif(not dt_fast.HAS_C_EXT, reason="dt_fast._C is not built")
def test_a_stochastic_checkpoint_samples_in_the_engine(tmp_path) -> None:
    model = model_of(8)
    model.save_pretrained(tmp_path)
    write_metadata(
        tmp_path,
        Metadata(
            state_mean=[0.0] * S,
            state_std=[1.0] * S,
            scale=100.0,
            context_len=4,
            target_return=50.0,
            action_head="stochastic",
        ),
    )
    loaded = Policy.from_pretrained(tmp_path, backend="cpp", num_envs=B)
    in_memory = policy_of(model, "cpp", state_mean=np.zeros(S), state_std=np.ones(S), target_return=50.0)
    for p in (loaded, in_memory):
        p.set_sampling(SEED)
    np.testing.assert_array_equal(rollout(loaded, 30), rollout(in_memory, 30))


@pytest.mark.parametrize("mode", ["exact", "rolling"])
def test_static_decoder_samples_as_the_incremental_one(mode: str) -> None:
    """The static-shape step (the one dt_fast.cuda_graph captures) with a noise input."""
    model = model_of(9)
    decoders = [KVCacheDecoder(model, B, 3, mode, static=static) for static in (False, True)]
    rng = np.random.default_rng(0)
    steps = np.zeros(B, dtype=np.int64)
    for i in range(20):
        if i in (5, 11):
            for d in decoders:
                d.reset(torch.tensor([i % B]))
            steps[i % B] = 0
        states, rtg = torch.tensor(rng.normal(size=(B, S)), dtype=torch.float32), torch.randn(B)
        noise = normal_noise(1, torch.arange(B), torch.full((B,), i), A)  # (B, A)
        got, want = (d.step(states, rtg, torch.from_numpy(steps), noise) for d in decoders[::-1])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"step {i}")
        steps += 1
    with pytest.raises(ValueError, match="sampled actions need a stochastic model"):
        KVCacheDecoder(model_of(9, stochastic=False), B, 3, mode).step(
            states, rtg, torch.zeros(B, dtype=torch.long), noise
        )
