"""Online fine-tuning (dt_fast/finetune.py): the collection, an end-to-end run, determinism, resume after SIGKILL,
the starting checkpoints (stochastic, deterministic, plain transformers) and bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dt_fast import checkpoint
from dt_fast.finetune import FinetuneConfig, Finetuner, collect_episodes
from dt_fast.train import TrainConfig, Trainer

# A few hundred transitions of a tiny model: iterations of 4 Hopper episodes (tens of steps each, the policy is
# untrained), 0.05 updates per transition of batch 8.
SMALL = dict(
    envs_per_iteration=4,
    updates_per_step=0.05,
    batch_size=8,
    warmup_steps=5,
    eval_every=2,
    eval_episodes=2,
    save_every=1,
    capacity=45,
)
SMALL_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]


def pretrain(dataset: Path, out: Path, policy: str) -> Path:
    """A tiny checkpoint trained for 4 steps."""
    trainer = Trainer(
        TrainConfig(
            dataset=str(dataset),
            out=str(out),
            steps=4,
            hidden_size=16,
            n_layer=1,
            batch_size=8,
            context_len=10,
            warmup_steps=2,
            policy=policy,
            max_ep_len=1000,
        )
    )
    trainer.run()
    trainer.close()
    return out


@pytest.fixture(scope="module")
def checkpoints(hopper_file: Path, tmp_path_factory) -> dict[str, Path]:
    """Deterministic and stochastic dt_fast checkpoints, and the deterministic one as plain transformers wrote it."""
    from transformers import DecisionTransformerModel

    root = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {policy: pretrain(hopper_file, root / policy, policy) for policy in ("deterministic", "stochastic")}
    finally:
        torch.set_num_threads(threads)
    DecisionTransformerModel.from_pretrained(out["deterministic"]).save_pretrained(root / "plain")
    out["plain"] = root / "plain"
    return out


def finetune(start: Path, out: Path, online_steps: int = 300, **overrides) -> Path:
    """Fine-tune in this process on one torch thread (as the subprocesses below run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        finetuner = Finetuner(
            FinetuneConfig(checkpoint=str(start), out=str(out), online_steps=online_steps, **(SMALL | overrides))
        )
        finetuner.run()
        finetuner.close()
    finally:
        torch.set_num_threads(threads)
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dt_fast.cli", "finetune", *SMALL_FLAGS, *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / checkpoint.SAFE_WEIGHTS_NAME)


def log_keys(run: Path) -> set[str]:
    return {line.split(",")[1] for line in (run / checkpoint.LOG_NAME).read_text().splitlines()[1:]}


@pytest.mark.parametrize("mode", ["rolling", "exact"])
def test_collect_episodes_returns_whole_episodes_in_step_order(checkpoints: dict[str, Path], mode: str) -> None:
    """Each episode's rows replay its env: the same actions from the same start give the same observations."""
    from dt_fast.envs import env_spec, make_vector_env
    from dt_fast.policy import Policy

    policy = Policy.from_pretrained(checkpoints["stochastic"], num_envs=3, mode=mode)
    policy.set_sampling(7)
    vec, obs = make_vector_env(env_spec("Hopper-v4"), 3, seed=11)
    episodes = collect_episodes(policy, vec, obs, 5)
    vec.close()
    assert episodes.lengths.shape == (5,) and episodes.transitions == len(episodes.observations)
    assert episodes.env_steps >= episodes.transitions and episodes.env_steps % 3 == 0
    ends = np.cumsum(episodes.lengths)
    np.testing.assert_allclose([r.sum() for r in np.split(episodes.rewards, ends[:-1])], episodes.returns, rtol=1e-5)
    # episode 0 ran in env 0 from the first reset: replay its actions in a fresh env of the same seed
    single, first = make_vector_env(env_spec("Hopper-v4"), 1, seed=11)
    np.testing.assert_array_equal(first[0].astype(np.float32), episodes.observations[0])  # kept as float32
    for t in range(1, episodes.lengths[0]):
        nxt, *_ = single.step(episodes.actions[t - 1][None])
        np.testing.assert_allclose(nxt[0], episodes.observations[t], rtol=1e-6, atol=1e-6)
    single.close()


def test_finetune_end_to_end_writes_a_checkpoint_both_libraries_load(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import DecisionTransformerModel

    from dt_fast import DecisionTransformer

    run = finetune(checkpoints["stochastic"], tmp_path / "run")
    meta = checkpoint.read_metadata(run)
    assert meta.action_head == "stochastic" and meta.env_id == "Hopper-v4" and meta.context_len == 10
    assert meta.dataset["online_transitions"] >= 300
    model = DecisionTransformer.from_pretrained(run)
    assert model.stochastic
    start = DecisionTransformer.from_pretrained(checkpoints["stochastic"])
    assert not torch.equal(model.predict_action[0].weight, start.predict_action[0].weight)  # it trained
    hf = DecisionTransformerModel.from_pretrained(run)
    torch.testing.assert_close(hf.predict_action[0].weight, model.predict_action[0].weight)
    state = checkpoint.read_train_state(run / checkpoint.TRAIN_STATE_NAME)
    assert state["stage"] == "finetune" and state["transitions"] >= 300 and state["updates"] >= 15
    online = 4 * state["iteration"]  # episodes collected, beside the 40 offline ones
    assert online >= 8 and len(state["sampler"]["buffer"]["lengths"]) == min(45, 40 + online)  # oldest evicted
    keys = log_keys(run)
    assert {
        "env_steps",
        "rollout_return_mean",
        "eval_return_mean",
        "eval_return_ci95",
        "eval_normalized_score",
        "entropy",
        "temperature",
        "nll",
    } <= keys
    assert (run / checkpoint.TENSORBOARD_NAME).is_dir()


def test_deterministic_start_gains_a_seeded_log_std_head(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from dt_fast import DecisionTransformer

    start = DecisionTransformer.from_pretrained(checkpoints["deterministic"])
    heads = []
    for seed in (0, 0, 1):
        finetuner = Finetuner(
            FinetuneConfig(checkpoint=str(checkpoints["deterministic"]), out=str(tmp_path / "r"), seed=seed, **SMALL)
        )
        model = finetuner.model
        finetuner.close()
        assert model.stochastic
        for key, value in start.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        heads.append(model.predict_action_log_std.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert heads[0].abs().max() > 0


def test_plain_transformers_checkpoint_needs_the_dataset(
    checkpoints: dict[str, Path], hopper_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="plain transformers checkpoint.*--dataset"):
        Finetuner(FinetuneConfig(checkpoint=str(checkpoints["plain"]), out=str(tmp_path / "r"), **SMALL))
    run = finetune(checkpoints["plain"], tmp_path / "run", online_steps=50, dataset=str(hopper_file), context_len=10)
    meta = checkpoint.read_metadata(run)
    assert meta.action_head == "stochastic" and meta.dataset["path"] == str(hopper_file)


def test_same_seed_same_weights_and_resume_after_sigkill_equals_an_uninterrupted_run(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    start = checkpoints["deterministic"]
    whole = finetune(start, tmp_path / "whole", online_steps=600)
    again = subprocess.run(
        cli("--from", str(start), "--out", str(tmp_path / "again"), "--online-steps", "600"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    reference = weights(whole)
    assert all(torch.equal(weights(tmp_path / "again")[k], v) for k, v in reference.items())

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli("--from", str(start), "--out", str(killed), "--online-steps", "600"),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = killed / checkpoint.TRAIN_STATE_NAME
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = checkpoint.read_train_state(state)["transitions"]
    assert saved < 600, "the run ended before it was killed: nothing to resume"
    resumed = subprocess.run(cli("--resume", str(killed)), env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = weights(killed)
    assert all(torch.equal(got[k], v) for k, v in reference.items())
    rows = [line.split(",") for line in (killed / checkpoint.LOG_NAME).read_text().splitlines()[1:]]
    steps = sorted({int(r[0]) for r in rows if r[1] == "rollout_return_mean"})
    assert len(steps) == len(set(steps)) and steps == sorted(
        {
            int(line.split(",")[0])
            for line in (whole / checkpoint.LOG_NAME).read_text().splitlines()[1:]
            if line.split(",")[1] == "rollout_return_mean"
        }
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"online_steps": 0}, "online_steps must be >= 1"),
        ({"capacity": 0}, "capacity must be >= 1"),
        ({"mode": "fast"}, "mode must be one of"),
    ],
)
def test_bad_settings_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(checkpoint="x", **overrides)


def test_bad_starts_are_one_line_errors_that_write_nothing(
    checkpoints: dict[str, Path], hopper_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (FinetuneConfig(checkpoint=str(tmp_path / "empty"), out=str(tmp_path / "r")), "not a checkpoint directory"),
        (
            FinetuneConfig(checkpoint=str(checkpoints["stochastic"]), out=str(tmp_path / "r"), env="HalfCheetah-v4"),
            "state_dim=11, act_dim=3 but HalfCheetah-v4 has state_dim=17, act_dim=6",
        ),
        (
            FinetuneConfig(checkpoint=str(checkpoints["stochastic"]), out=str(checkpoints["deterministic"])),
            "already holds a dt_fast run",
        ),
    ]
    for config, message in cases:
        with pytest.raises((ValueError, FileExistsError), match=message):
            Finetuner(config)
    assert not (tmp_path / "r").exists()
    source = checkpoints["deterministic"]
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="is the checkpoint to start from"):
        Finetuner(FinetuneConfig(checkpoint=str(source), out=str(source)), overwrite=True)
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before


def test_demo_online_prints_both_scores_and_writes_the_learning_curve(
    checkpoints: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from dt_fast.cli import main

    out = tmp_path / "online"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            main(
                [
                    "demo",
                    "--online",
                    "--from",
                    str(checkpoints["deterministic"]),
                    "--online-steps",
                    "30",
                    "--online-episodes",
                    "2",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "pretrained" in text and "fine-tuned (" in text and "fine-tuned - pretrained:" in text
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checkpoint.read_metadata(out).action_head == "stochastic"
