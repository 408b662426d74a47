"""Policy(mode="exact") acts as the blog's get_action loop on transformers.DecisionTransformerModel, every step.

The reference is dt_fast/bench/reference.py::rollout on a Hopper-v4 episode (gymnasium, fixed seed, no early
termination so that it lasts 1,000 steps). The Policy is then fed the same observations and rewards, so a float
rounding difference in one action cannot grow through the chaotic dynamics into a different episode; each of its
actions must be within 1e-4 of the reference's at the same step.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from transformers import DecisionTransformerConfig as HFConfig
from transformers import DecisionTransformerModel

import dt_fast
from dt_fast.bench.reference import rollout
from dt_fast.checkpoint import Metadata, load_hf_state_dict, write_metadata
from dt_fast.policy import Policy

BACKENDS = ["torch"] + (["cpp"] if dt_fast.HAS_C_EXT else [])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_hf_model(
    seed: int, state_dim: int = 11, act_dim: int = 3, std: float = 0.3, **kwargs
) -> DecisionTransformerModel:
    """A transformers DecisionTransformerModel with weights large enough that actions vary with the input."""
    torch.manual_seed(seed)
    config = HFConfig(state_dim=state_dim, act_dim=act_dim, max_ep_len=1000, **kwargs)
    model = DecisionTransformerModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std if p.dim() > 1 else 0.1)
    return model


def hopper_reference(model: DecisionTransformerModel, steps: int, context_len: int, seed: int = 0):
    """The blog loop on Hopper-v4: (first_obs, actions (steps, A), observations after each step, rewards, stats)."""
    import gymnasium as gym

    env = gym.make("Hopper-v4", terminate_when_unhealthy=False, max_episode_steps=steps)
    first_obs, _ = env.reset(seed=seed)
    observations, rewards = [], []

    def env_step(action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        return obs, reward, terminated or truncated

    rng = np.random.default_rng(seed)
    state_mean, state_std = rng.normal(size=11) * 0.5, rng.uniform(0.5, 2.0, size=11)
    actions, _ = rollout(
        model,
        env_step,
        first_obs,
        state_mean,
        state_std,
        target_return=3600.0,
        scale=1000.0,
        max_ep_len=1000,
        max_length=context_len,
    )
    env.close()
    return first_obs, np.array(actions), observations, rewards, (state_mean, state_std)


def replay(policy: Policy, first_obs: np.ndarray, observations: list, rewards: list, steps: int) -> np.ndarray:
    """The Policy's actions (steps, A) when fed the reference episode's observations and rewards."""
    policy.reset()
    obs, reward, out = first_obs, None, []
    for t in range(steps):
        out.append(policy.act(obs, reward))
        obs, reward = observations[t], rewards[t]
    return np.array(out)


@pytest.fixture(scope="module")
def hopper_1000():
    """One 1,000-step reference episode of a Hopper-sized model (hidden 128, 3 layers, K = 20)."""
    model = random_hf_model(0, hidden_size=128, n_layer=3, n_head=1)
    return model, hopper_reference(model, steps=1000, context_len=20)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_matches_blog_loop_1000_steps(hopper_1000, backend: str, tmp_path) -> None:
    model, (first_obs, ref, observations, rewards, (mean, std)) = hopper_1000
    assert len(ref) == 1000 and np.abs(np.diff(ref, axis=0)).max() > 1e-2  # the actions really vary
    model.save_pretrained(tmp_path)
    write_metadata(
        tmp_path,
        Metadata(
            state_mean=mean, state_std=std, scale=1000.0, context_len=20, target_return=3600.0, env_id="Hopper-v4"
        ),
    )
    policy = Policy.from_pretrained(tmp_path, mode="exact", backend=backend)
    assert policy.backend == backend
    got = replay(policy, first_obs, observations, rewards, 1000)
    err = np.abs(got - ref).max(axis=1)  # (steps,)
    assert err.max() < 1e-4, f"first step over 1e-4: {int(np.argmax(err >= 1e-4))}, max error {err.max():.2e}"


GRID = [  # (hidden_size, n_layer, n_head, context_len, extra config)
    (64, 1, 1, 1, {}),
    (32, 2, 2, 3, {"activation_function": "gelu_new"}),
    (48, 4, 4, 7, {"scale_attn_by_inverse_layer_idx": True, "n_inner": 80}),
    (128, 3, 8, 20, {"activation_function": "gelu"}),
]


@pytest.mark.parametrize("hidden, layers, heads, K, extra", GRID)
def test_exact_matches_blog_loop_grid(hidden: int, layers: int, heads: int, K: int, extra: dict) -> None:
    model = random_hf_model(hidden + layers, hidden_size=hidden, n_layer=layers, n_head=heads, **extra)
    steps = max(3 * K + 10, 150)  # well past the point where the window slides
    first_obs, ref, observations, rewards, (mean, std) = hopper_reference(model, steps, K, seed=K)
    for backend in BACKENDS:
        policy = Policy(
            hf_to_dt_fast(model),
            target_return=3600.0,
            mode="exact",
            backend=backend,
            state_mean=mean,
            state_std=std,
            scale=1000.0,
            context_len=K,
        )
        got = replay(policy, first_obs, observations, rewards, steps)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=f"backend {backend}")


def hf_to_dt_fast(model: DecisionTransformerModel) -> dt_fast.DecisionTransformer:
    """The same weights in dt_fast's module (through its transformers-layout loader)."""
    ours = dt_fast.DecisionTransformer(dt_fast.DecisionTransformerConfig.from_dict(model.config.to_dict()))
    load_hf_state_dict(ours, model.state_dict())
    return ours.eval()


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None,
    reason="the triton backend runs on the CPU only under TRITON_INTERPRET=1",
)
def test_triton_backend_matches_blog_loop() -> None:
    model = random_hf_model(7, hidden_size=32, n_layer=2, n_head=2)
    K, steps = 3, 40
    first_obs, ref, observations, rewards, (mean, std) = hopper_reference(model, steps, K, seed=1)
    policy = Policy(
        hf_to_dt_fast(model),
        target_return=3600.0,
        mode="exact",
        backend="triton",
        state_mean=mean,
        state_std=std,
        scale=1000.0,
        context_len=K,
    )
    np.testing.assert_allclose(replay(policy, first_obs, observations, rewards, steps), ref, atol=1e-4, rtol=0)
