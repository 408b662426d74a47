"""Batched evaluator with the real dt_fast.Policy on Hopper-v4: equality with the user's sequential loop, CLI.

envpool and gymnasium draw different start states for the same seed (different random generators), but given
the same start state their Hopper-v4 dynamics agree (to 1e-14 over a 250-step episode, MuJoCo in both). So the
sequential reference is the loop of the inference issue on a gymnasium env started from the envpool start
state of the same (seed, slot, episode): slot i's episodes are the successive resets of envpool seeded seed + i.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from dt_fast.checkpoint import Metadata, write_metadata
from dt_fast.config import DecisionTransformerConfig
from dt_fast.envs import check_env_matches
from dt_fast.evaluation import assign_slots, evaluate
from dt_fast.model import DecisionTransformer
from dt_fast.policy import Policy

ENV_ID, SCALE = "Hopper-v4", 1000.0


@pytest.fixture(scope="module")
def hopper_checkpoint(tmp_path_factory):
    """A random Hopper-sized checkpoint with dt_fast.json; a shrunk action head keeps it up for ~100 steps."""
    path = tmp_path_factory.mktemp("hopper")
    torch.manual_seed(0)
    model = DecisionTransformer(DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000))
    with torch.no_grad():
        model.predict_action[0].weight.mul_(0.05)
    model.save_pretrained(path)
    rng = np.random.default_rng(0)
    write_metadata(
        path,
        Metadata(
            state_mean=rng.normal(0.0, 0.1, 11),
            state_std=rng.uniform(0.5, 1.5, 11),
            scale=SCALE,
            env_id=ENV_ID,
            context_len=20,
            target_return=3600.0,
            dataset={"path": "synthetic", "best_return": 3100.0},
        ),
    )
    return path


def envpool_start_states(seed: int, count: int) -> list[np.ndarray]:
    """The first observations of the first `count` episodes of one envpool Hopper-v4 env seeded `seed`."""
    from dt_fast.envs import env_spec, make_vector_env

    env, obs = make_vector_env(env_spec(ENV_ID), num_envs=1, seed=seed)
    starts = [obs[0]] + [env.reset()[0][0] for _ in range(count - 1)]
    env.close()
    return starts


def sequential(path, num_envs: int, episodes: int, seed: int, targets: list[float], mode: str):
    """Each scheduled episode run alone: gymnasium env from the envpool start state, a one-row Policy; [T, N]."""
    slot_target, queues = assign_slots(num_envs, episodes, len(targets))
    returns, lengths = np.zeros((len(targets), episodes)), np.zeros((len(targets), episodes), dtype=np.int64)
    env = gym.make(ENV_ID)
    for i, queue in enumerate(queues):
        policy = Policy.from_pretrained(path, target_return=targets[slot_target[i]], mode=mode, num_envs=1)
        for k, start in zip(queue, envpool_start_states(seed + i, len(queue))):
            env.reset(seed=0)
            env.unwrapped.set_state(np.concatenate([[0.0], start[:5]]), start[5:])  # x position is not observed
            obs = start
            policy.reset()
            reward, total, steps, done = None, 0.0, 0, False
            while not done:
                action = policy.act(obs, reward)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, steps, done = total + reward, steps + 1, terminated or truncated
            returns[slot_target[i], k], lengths[slot_target[i], k] = total, steps
    env.close()
    return returns, lengths


@pytest.mark.parametrize("mode", ["exact", "rolling"])
@pytest.mark.parametrize("num_envs,episodes,targets", [(3, 5, [3600.0]), (4, 3, [500.0, 3600.0])])
def test_batched_envpool_equals_sequential_gymnasium(hopper_checkpoint, mode, num_envs, episodes, targets):
    """Backend auto (the C++ engine when built); the torch decoder is checked against it by the policy tests."""
    results = evaluate(
        str(hopper_checkpoint),
        env=ENV_ID,
        episodes=episodes,
        num_envs=num_envs,
        target_return=targets,
        seed=5,
        mode=mode,
        progress=False,
    )
    returns, lengths = sequential(hopper_checkpoint, num_envs, episodes, 5, targets, mode)
    assert lengths.min() > 20  # the window slides, so exact recompute and rolling caches are both exercised
    for j, result in enumerate(results):
        assert result.target_return == targets[j] and result.mode == mode
        np.testing.assert_array_equal(result.lengths, lengths[j])
        np.testing.assert_allclose(result.returns, returns[j], rtol=1e-5)


def test_gymnasium_fallback_equals_sequential_gymnasium(hopper_checkpoint, monkeypatch):
    """The fallback path on Hopper-v4: slot i's env is seeded seed + i, its later episodes continue that stream."""

    def gymnasium_spec(*args, **kwargs):
        return dataclasses.replace(check_env_matches(*args, **kwargs), backend="gymnasium")

    monkeypatch.setattr(sys.modules["dt_fast.evaluation"], "check_env_matches", gymnasium_spec)
    result = evaluate(str(hopper_checkpoint), env=ENV_ID, episodes=4, num_envs=3, seed=2, progress=False)
    slot_target, queues = assign_slots(3, 4, 1)
    for i, queue in enumerate(queues):
        env = gym.make(ENV_ID)
        policy = Policy.from_pretrained(hopper_checkpoint, num_envs=1)
        for n, k in enumerate(queue):
            obs, _ = env.reset(seed=2 + i if n == 0 else None)
            policy.reset()
            reward, total, steps, done = None, 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.act(obs, reward))
                total, steps, done = total + reward, steps + 1, terminated or truncated
            assert result.lengths[k] == steps
            np.testing.assert_allclose(result.returns[k], total, rtol=1e-5)


def test_default_target_and_given_policy(hopper_checkpoint):
    policy = Policy.from_pretrained(hopper_checkpoint, mode="rolling", num_envs=2)
    result = evaluate(policy, env=ENV_ID, episodes=3, seed=1, progress=False)
    assert result.target_return == 3600.0 and result.mode == "rolling" and len(result.returns) == 3
    again = evaluate(str(hopper_checkpoint), env=ENV_ID, episodes=3, num_envs=2, seed=1, mode="rolling", progress=False)
    np.testing.assert_allclose(again.returns, result.returns, rtol=1e-5)


def test_cli_table_plot_and_video(hopper_checkpoint, tmp_path):
    import imageio_ffmpeg

    plot, video = tmp_path / "returns.png", tmp_path / "episode.mp4"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dt_fast.cli",
            "eval",
            str(hopper_checkpoint),
            "--episodes",
            "2",
            "--num-envs",
            "2",
            "--target-return",
            "500",
            "3600",
            "--plot",
            str(plot),
            "--video",
            str(video),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "env-steps/s" in out.stdout and "3600.0" in out.stdout and "500.0" in out.stdout, out.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frames = int(out.stdout.split("video: ")[1].split("(")[1].split(" frames")[0])
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == frames > 1


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """`dt-fast eval` in this process: (exit status, stderr)."""
    from dt_fast.cli import main

    status = main(["eval", *argv, "--no-progress"])
    return status, capsys.readouterr().err


def test_cli_results_file_json_and_csv(hopper_checkpoint, tmp_path, capsys):
    """--results has every episode (target, index, return, length) and the summary, equal to dt_fast.evaluate."""
    import csv
    import json

    argv = [
        str(hopper_checkpoint),
        "--episodes",
        "3",
        "--num-envs",
        "2",
        "--target-return",
        "500",
        "3600",
        "--seed",
        "4",
        "--mode",
        "rolling",
    ]
    assert run_cli(argv + ["--results", str(tmp_path / "r.json")], capsys)[0] == 0
    assert run_cli(argv + ["--results", str(tmp_path / "r.csv")], capsys)[0] == 0
    want = evaluate(
        str(hopper_checkpoint),
        env=ENV_ID,
        episodes=3,
        num_envs=2,
        target_return=[500.0, 3600.0],
        seed=4,
        mode="rolling",
        progress=False,
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["env_id"], data["mode"], data["seed"], data["num_envs"]) == (ENV_ID, "rolling", 4, 2)
    assert [s["target_return"] for s in data["summary"]] == [500.0, 3600.0]
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(data["episodes"]) == len(rows) == 6
    for j, result in enumerate(want):
        episodes = [e for e in data["episodes"] if e["target_return"] == result.target_return]
        assert [e["episode"] for e in episodes] == [0, 1, 2]
        assert [e["length"] for e in episodes] == result.lengths.tolist()
        np.testing.assert_allclose([e["return"] for e in episodes], result.returns, rtol=1e-5)
        summary = data["summary"][j]
        assert summary["episodes"] == 3 and summary["normalized_score"] == pytest.approx(
            result.normalized_score, rel=1e-4
        )
        assert summary["mean"] == pytest.approx(np.mean([e["return"] for e in episodes]), rel=1e-12)
        assert summary["ci95"] == pytest.approx(result.ci95, rel=1e-4)
        for row, e in zip([r for r in rows if float(r["target_return"]) == result.target_return], episodes):
            assert (int(row["episode"]), int(row["length"]), row["env_id"]) == (e["episode"], e["length"], ENV_ID)
            assert float(row["return"]) == e["return"] and float(row["mean"]) == summary["mean"]


def test_cli_replaces_an_output_only_with_overwrite(hopper_checkpoint, tmp_path, capsys):
    plot, results = tmp_path / "returns.png", tmp_path / "r.json"
    plot.write_text("an earlier plot")
    results.write_text("earlier results")
    argv = [
        str(hopper_checkpoint),
        "--episodes",
        "1",
        "--num-envs",
        "1",
        "--plot",
        str(plot),
        "--results",
        str(results),
    ]
    status, err = run_cli(argv, capsys)
    assert status == 2 and f"--results {results} already exists; pass --overwrite" in err
    assert plot.read_text() == "an earlier plot" and results.read_text() == "earlier results"
    assert run_cli(argv + ["--overwrite"], capsys)[0] == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and results.read_text().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "returns.png"]


def test_cli_evaluates_a_plain_transformers_checkpoint(tmp_path, capsys):
    """config.json + model.safetensors from transformers' save_pretrained, the rest given as flags; the error
    without them names every missing flag."""
    import json

    from dt_fast.data import load_dataset

    path = tmp_path / "hf"
    # In a subprocess: transformers imports Triton, whose LLVM crashes a process that has rendered with Mesa's EGL
    # (the video tests) before.
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import torch
from transformers import DecisionTransformerConfig, DecisionTransformerModel
torch.manual_seed(0)
hf = DecisionTransformerModel(DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000))
with torch.no_grad():
    hf.predict_action[0].weight.mul_(0.05)
hf.save_pretrained({str(path)!r})
""",
        ],
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    status, err = run_cli([str(path)], capsys)
    assert (
        status == 2
        and (
            f"--env is required, as are --target-return, --context-len, --scale, --dataset: {path} "
            "has no dt_fast.json (a plain transformers checkpoint) to take them from"
        )
        in err
    )
    status, err = run_cli([str(path), "--env", ENV_ID, "--target-return", "3600", "--scale", "1000"], capsys)
    assert status == 2 and "--context-len is required, as is --dataset: " in err
    flags = [
        "--env",
        ENV_ID,
        "--target-return",
        "3600",
        "--context-len",
        "20",
        "--scale",
        "1000",
        "--dataset",
        "hopper-medium-v4",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--seed",
        "3",
    ]
    assert run_cli([str(path), *flags, "--results", str(tmp_path / "r.json")], capsys)[0] == 0
    data = load_dataset("hopper-medium-v4")
    policy = Policy.from_pretrained(
        path,
        target_return=3600.0,
        state_mean=data.state_mean,
        state_std=data.state_std,
        scale=1000.0,
        context_len=20,
        num_envs=2,
    )
    want = evaluate(policy, env=ENV_ID, episodes=2, seed=3, progress=False)
    got = json.loads((tmp_path / "r.json").read_text())["episodes"]
    assert [e["length"] for e in got] == want.lengths.tolist()
    np.testing.assert_allclose([e["return"] for e in got], want.returns, rtol=1e-5)
