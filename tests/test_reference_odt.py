"""dt_fast/bench/reference_odt.py, the official ODT loop: it runs (a tiny online iteration on Hopper-v4), its model is
dt_fast's stochastic model on the same checkpoint, and its LAMB, buffer and windows behave as the official code's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.bench.reference_odt import (
    Experiment,
    Lamb,
    ReplayBuffer,
    TransformSamplingSubTraj,
    from_pretrained,
    time_collection,
    time_online_iteration,
)
from dt_fast.checkpoint import Metadata, hf_state_dict, write_metadata

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")


def hopper_trajectories(n: int = 6, seed: int = 0) -> list[dict]:
    """Hopper-sized offline trajectories of 5 to 29 steps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(5, 30))
        out.append(
            {
                "observations": rng.normal(size=(length, 11)),
                "actions": rng.uniform(-1, 1, size=(length, 3)),
                "rewards": rng.normal(1.0, 0.5, size=length),
                "terminals": np.zeros(length),
            }
        )
    return out


def stochastic_checkpoint(path, hidden_size: int = 16) -> DecisionTransformer:
    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(
        state_dim=11, act_dim=3, hidden_size=hidden_size, n_layer=2, n_head=2, max_ep_len=1000
    )
    model = DecisionTransformer(cfg, stochastic=True).eval()
    torch.nn.init.normal_(model.predict_action_log_std.weight)
    model.save_pretrained(path)
    write_metadata(
        path,
        Metadata(
            state_mean=[0.0] * 11,
            state_std=[1.0] * 11,
            scale=1000.0,
            context_len=5,
            target_return=3600.0,
            action_head="stochastic",
        ),
    )
    return model


def test_a_tiny_online_iteration_runs_and_fills_the_buffer(one_torch_thread) -> None:
    trajs = hopper_trajectories()
    exp = Experiment(
        trajs,
        "Hopper-v4",
        num_envs=3,
        hidden_size=16,
        n_layer=1,
        K=5,
        eval_context_length=3,
        batch_size=4,
        replay_size=8,
        max_ep_len=6,
        warmup_steps=1,
    )
    try:
        before = exp.model.temperature().item()
        timing = time_collection(exp)
        # 6 offline + 3 new > 8: ODT's buffer, not yet full, keeps the last 8 (the oldest offline one goes)
        assert len(exp.replay_buffer) == 8 and exp.replay_buffer.start_idx == 0
        collected = [t["terminals"][-1] == 1 for t in exp.replay_buffer.trajectories]  # offline ones end in 0
        assert collected == [False] * 5 + [True] * 3
        assert 3 <= timing.transitions <= timing.env_steps <= 18 and timing.seconds > 0
        for traj in exp.replay_buffer.trajectories[-2:]:
            length = len(traj["rewards"])
            assert 1 <= length <= 6 and traj["observations"].shape == (length, 11)
            assert traj["actions"].shape == (length, 3) and np.abs(traj["actions"]).max() < 1
            assert traj["terminals"][-1] == 1
        out = time_online_iteration(exp, num_updates=2)
        assert exp.replay_buffer.start_idx == 3  # full: the next 3 went into the first slots
        assert out["total_s"] >= out["collect_s"] + out["train_s"] - 1e-6 and out["transitions"] >= 3
        logs = exp.online_iteration(num_updates=2)
        assert np.isfinite(logs["training/train_loss_mean"]) and logs["training/temp_value"] != before
        assert exp.scheduler.last_epoch == 4 and exp.optimizer.param_groups[0]["step"] == 4
    finally:
        exp.close()


def test_the_reference_model_is_dt_fasts_stochastic_model(tmp_path) -> None:
    model = stochastic_checkpoint(tmp_path)
    ref = from_pretrained(
        tmp_path, (-1 + 1e-6, 1 - 1e-6), max_length=5, eval_context_length=3, target_entropy=-3.0
    ).eval()
    B, T = 4, 5
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        states=torch.randn(B, T, 11, generator=g),
        actions=torch.rand(B, T, 3, generator=g) * 2 - 1,
        returns_to_go=torch.randn(B, T, 1, generator=g),
        timesteps=torch.randint(0, 1000, (B, T)),
        attention_mask=torch.ones(B, T),
    )
    inputs["attention_mask"][0, :2] = 0
    with torch.no_grad():
        ours = model.action_distribution(**inputs)
        _, theirs, _ = ref(**inputs, return_dict=False)
    torch.testing.assert_close(theirs.loc, ours.loc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.std, ours.log_std.exp(), rtol=1e-5, atol=1e-5)
    a = inputs["actions"].clamp(-1 + 1e-6, 1 - 1e-6)
    torch.testing.assert_close(theirs.log_likelihood(a), ours.log_prob(a), rtol=1e-4, atol=1e-4)


def test_an_experiment_starts_from_a_dt_fast_checkpoint(tmp_path, one_torch_thread) -> None:
    model = stochastic_checkpoint(tmp_path)
    exp = Experiment(
        hopper_trajectories(),
        "Hopper-v4",
        num_envs=2,
        K=5,
        eval_context_length=3,
        batch_size=4,
        checkpoint=tmp_path,
        max_ep_len=4,
    )
    try:
        theirs = exp.model.state_dict()
        for key, value in hf_state_dict(model).items():  # transformers' layout
            key = key.replace("predict_action.0.", "predict_action.mu.")
            key = key.replace("predict_action_log_std.", "predict_action.log_std.")
            assert torch.equal(theirs.pop(key), value), key
        assert list(theirs) == []
        exp.online_iteration(num_updates=1)
    finally:
        exp.close()


def test_lamb_without_weight_decay_is_adam_under_its_clip() -> None:
    """With weight_decay 0 (no trust ratio) and gradients under max_grad_norm, LAMB's update is Adam's."""
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    lamb = Lamb(a.parameters(), lr=1e-2, weight_decay=0.0, eps=1e-8, max_grad_norm=1e9)
    adam = torch.optim.Adam(b.parameters(), lr=1e-2, eps=1e-8)
    for _ in range(5):
        x = torch.randn(8, 4)
        for model, opt in ((a, lamb), (b, adam)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_lamb_scales_each_update_by_the_trust_ratio_and_clips_the_global_norm() -> None:
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||p|| = 5
    p.grad = torch.tensor([6.0, 8.0])  # ||g|| = 10 > max_grad_norm 1: divided by 10
    opt = Lamb([p], lr=0.1, weight_decay=0.5, eps=0.0)
    opt.step()
    adam = torch.tensor([0.6, 0.8]) / torch.tensor([0.6, 0.8])  # first step: m_hat / sqrt(v_hat) = sign(g)
    update = adam + 0.5 * torch.tensor([3.0, 4.0])  # (2.5, 3.0)
    expected = torch.tensor([3.0, 4.0]) - 0.1 * update * (5.0 / update.norm())
    torch.testing.assert_close(p.detach(), expected)


def test_replay_buffer_keeps_the_best_offline_trajectories_then_replaces_the_oldest_slots() -> None:
    trajs = [{"rewards": np.full(3, float(r))} for r in (5, 1, 9, 3)]
    buffer = ReplayBuffer(3, trajs)
    assert [t["rewards"][0] for t in buffer.trajectories] == [3.0, 5.0, 9.0]
    buffer.add_new_trajs([{"rewards": np.full(2, -1.0)}, {"rewards": np.full(2, -2.0)}])
    assert [t["rewards"][0] for t in buffer.trajectories] == [-1.0, -2.0, 9.0] and buffer.start_idx == 2
    buffer.add_new_trajs([{"rewards": np.full(2, -3.0)}])
    assert [t["rewards"][0] for t in buffer.trajectories] == [-1.0, -2.0, -3.0] and buffer.start_idx == 0


def test_windows_are_left_padded_with_returns_to_go_one_step_longer() -> None:
    traj = {
        "observations": np.arange(12.0).reshape(4, 3),
        "actions": np.full((4, 2), 1.0),
        "rewards": np.array([1.0, 2.0, 3.0, 4.0]),
        "terminals": np.array([0, 0, 0, 1]),
    }
    transform = TransformSamplingSubTraj(
        max_len=6,
        state_dim=3,
        act_dim=2,
        state_mean=np.zeros(3),
        state_std=np.ones(3),
        reward_scale=0.001,
        action_range=(-0.5, 0.5),
    )
    import random

    random.seed(0)
    for _ in range(10):
        ss, aa, rr, dd, rtg, timesteps, ordering, mask = transform(traj)
        n = int(mask.sum())
        si = int(timesteps[-n])
        assert ss.shape == (6, 3) and rtg.shape == (7, 1) and mask.tolist() == [0] * (6 - n) + [1] * n
        assert n == 4 - si and aa.abs().max() <= 0.5 and aa[-1, 0] == 0.5  # clamped into the action range
        torch.testing.assert_close(
            rtg[-n - 1 :, 0],
            torch.tensor([*np.cumsum([4.0, 3, 2, 1])[::-1][si:] / 1000, 0.0], dtype=torch.float32)[-n - 1 :],
        )
