"""Behaviour policy (ARS), rollouts over envpool and `dt-fast collect`: learning, D4RL layout, episode ends, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("envpool")
h5py = pytest.importorskip("h5py")

from dt_fast import cli  # noqa: E402
from dt_fast.collect import LinearPolicy, collect, record_episodes, train_ars, write_d4rl  # noqa: E402
from dt_fast.collect.behaviour import RunningStat  # noqa: E402
from dt_fast.envs import env_spec, make_vector_env  # noqa: E402

ENV = "Hopper-v4"
EMBEDDED = Path(__file__).resolve().parents[1] / "dt_fast" / "datasets" / "hopper_medium_v4.hdf5"
D4RL_KEYS = {"observations", "actions", "rewards", "terminals", "timeouts", "next_observations"}


@pytest.fixture(scope="module")
def ars_policy() -> LinearPolicy:
    """A linear policy after 10 ARS iterations (a few seconds), never stopped early by the target."""
    result = train_ars(ENV, target_return=float("inf"), max_iterations=10, eval_every=5, seed=0)
    assert result.iterations == 10 and len(result.history) == 2
    return result.policy


def read_d4rl(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a D4RL file plus its root attributes under 'attrs'."""
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
        data["attrs"] = dict(f.attrs)
    return data


def check_d4rl(data: dict, episodes: int, obs_dim: int = 11, act_dim: int = 3) -> np.ndarray:
    """Assert the D4RL layout and the episode split; return the episode lengths."""
    assert D4RL_KEYS <= set(data)
    n = len(data["rewards"])
    assert data["observations"].shape == (n, obs_dim) and data["next_observations"].shape == (n, obs_dim)
    assert data["actions"].shape == (n, act_dim) and data["terminals"].shape == data["timeouts"].shape == (n,)
    for key in ("observations", "actions", "rewards", "next_observations"):
        assert data[key].dtype == np.float32, key
    assert data["terminals"].dtype == bool and data["timeouts"].dtype == bool
    assert np.abs(data["actions"]).max() <= 1.0
    ends = data["terminals"] | data["timeouts"]
    assert not (data["terminals"] & data["timeouts"]).any()
    assert ends.sum() == episodes and ends[-1], "every started episode must be finished and kept"
    inside = np.flatnonzero(~ends[:-1])  # transitions followed by one of the same episode
    np.testing.assert_array_equal(data["next_observations"][inside], data["observations"][inside + 1])
    return np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))


def test_ars_improves_over_random(ars_policy: LinearPolicy) -> None:
    """Ten ARS iterations beat uniform random actions on fresh episodes, by far more than the noise."""
    trained = collect(ENV, ars_policy, episodes=16, seed=1, progress=False).returns
    random = collect(ENV, None, episodes=16, seed=1, progress=False).returns
    stderr = np.sqrt(trained.var() / len(trained) + random.var() / len(random))
    assert trained.mean() - random.mean() > 4 * stderr, (trained.mean(), random.mean(), stderr)


def test_ars_is_deterministic() -> None:
    """The same seed gives the same policy."""
    a = train_ars(ENV, target_return=float("inf"), max_iterations=2, eval_every=2, eval_episodes=2, seed=3)
    b = train_ars(ENV, target_return=float("inf"), max_iterations=2, eval_every=2, eval_episodes=2, seed=3)
    np.testing.assert_array_equal(a.policy.weights, b.policy.weights)
    assert np.abs(a.policy.weights).sum() > 0


def test_running_stat_matches_numpy() -> None:
    """Batched mean/std updates equal numpy over all the data."""
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 5))
    stat = RunningStat()
    for chunk in np.array_split(x, 7):
        stat.update(chunk)
    np.testing.assert_allclose(stat.mean, x.mean(0))
    np.testing.assert_allclose(stat.std, x.std(0))


def test_policy_save_load(tmp_path: Path, ars_policy: LinearPolicy) -> None:
    """A saved policy loads back equal; a file that is not one is rejected by name."""
    ars_policy.save(tmp_path / "p.npz")
    loaded = LinearPolicy.load(tmp_path / "p.npz")
    obs = np.random.default_rng(0).standard_normal((4, 11))
    np.testing.assert_array_equal(loaded(obs), ars_policy(obs))
    assert loaded.env_id == ENV
    np.savez(tmp_path / "bad.npz", weights=np.zeros((3, 11)))
    with pytest.raises(ValueError, match=r"bad.npz.*missing key"):
        LinearPolicy.load(tmp_path / "bad.npz")


def test_episodes_split_on_terminals_and_timeouts(tmp_path: Path) -> None:
    """Terminated episodes end with terminals=1, time-limited ones with timeouts=1 and terminals=0."""
    max_steps, episodes = 40, 30
    env, obs = make_vector_env(env_spec(ENV), num_envs=8, seed=0, max_episode_steps=max_steps)
    rng = np.random.default_rng(0)
    eps = record_episodes(env, obs, episodes, lambda obs, _: rng.uniform(-1, 1, (len(obs), 3)))
    write_d4rl(tmp_path / "d.hdf5", eps, ENV)
    data = read_d4rl(tmp_path / "d.hdf5")
    assert data["attrs"]["env_id"] == ENV
    lengths = check_d4rl(data, episodes)
    np.testing.assert_array_equal(lengths, eps.lengths)
    ends = np.cumsum(lengths) - 1
    timed_out, terminated = data["timeouts"][ends], data["terminals"][ends]
    assert timed_out.any() and terminated.any(), "the test needs both kinds of episode end"
    assert (lengths[timed_out] == max_steps).all() and (lengths[terminated] < max_steps).all()
    # the first observation of every episode is a fresh reset, close to Hopper's initial pose
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert np.abs(data["observations"][starts, 0] - 1.25).max() < 0.01


def test_collect_keeps_every_episode_and_is_deterministic(ars_policy: LinearPolicy) -> None:
    """More episodes than envs: all are complete; the same seed gives the same transitions."""
    a = collect(ENV, ars_policy, episodes=20, noise=(0.0, 0.2), seed=5, progress=False)
    b = collect(ENV, ars_policy, episodes=20, noise=(0.0, 0.2), seed=5, progress=False)
    assert len(a.lengths) == 20 and (a.lengths > 0).all() and a.lengths.sum() == len(a.rewards)
    assert (a.terminals | a.timeouts).sum() == 20
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_cli_collect_smoke(tmp_path: Path, ars_policy: LinearPolicy) -> None:
    """`dt-fast collect` runs as a subprocess with a saved policy and with ARS, writing valid files."""
    ars_policy.save(tmp_path / "p.npz")
    out = tmp_path / "sub" / "d.hdf5"
    out.parent.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "dt_fast.cli",
        "collect",
        "--env",
        ENV,
        "--policy",
        str(tmp_path / "p.npz"),
        "--episodes",
        "5",
        "--out",
        str(out),
        "--noise",
        "0.1",
        "--seed",
        "2",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    data = read_d4rl(out)
    check_d4rl(data, 5)
    assert data["attrs"]["env_id"] == ENV and list(data["attrs"]["noise"]) == [0.1]
    out2 = tmp_path / "ars.hdf5"
    cmd = [
        sys.executable,
        "-m",
        "dt_fast.cli",
        "collect",
        "--env",
        ENV,
        "--policy",
        "ars",
        "--episodes",
        "3",
        "--out",
        str(out2),
        "--max-iterations",
        "2",
        "--target-return",
        "1e9",
        "--save-policy",
        str(tmp_path / "ars.npz"),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    check_d4rl(read_d4rl(out2), 3)
    assert LinearPolicy.load(tmp_path / "ars.npz").weights.shape == (3, 11)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "Hoper-v4"], "unknown env id 'Hoper-v4'.*Hopper-v4"),
        (["--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--noise", "-0.1"], "--noise levels must be >= 0"),
        (["--out", "{file}/d.hdf5"], "--out .*cannot write there"),
        (["--out", "{dir}"], "--out .* is a directory"),
        (["--out", "{dir}/missing/d.hdf5"], "--out .*: the directory .*missing does not exist"),
        (
            ["--env", "CartPole-v1"],
            r"CartPole-v1 has observation space .* and action space Discrete\(2\); dt_fast "
            "supports Box observations of rank 1 and Box actions of rank 1",
        ),
        (["--env", "Parking-v0"], "Parking-v0 has observation space Dict"),
        (["--policy", "nope.npz"], "--policy 'nope.npz': expected 'ars', 'random' or an existing .npz"),
        (["--save-policy", "{dir}/p.npz"], "--save-policy applies only to --policy ars"),
        (["--policy", "{file}"], "file: cannot read as an .npz linear policy"),
    ],
)
def test_cli_collect_bad_input(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    """Bad input exits with status 2 and a message naming the argument, before any rollout."""
    (tmp_path / "file").write_text("")
    base = {"--env": ENV, "--policy": "random", "--episodes": "2", "--out": str(tmp_path / "d.hdf5")}
    argv = ["collect"]
    for key, value in base.items():
        if key not in args:
            argv += [key, value]
    argv += [a.format(file=tmp_path / "file", dir=tmp_path) for a in args]
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "d.hdf5").exists()


def test_cli_collect_keeps_an_existing_out_unless_overwrite(tmp_path: Path, capsys) -> None:
    """An existing --out (or --save-policy) is refused, untouched, before any rollout; --overwrite replaces it."""
    out, saved = tmp_path / "d.hdf5", tmp_path / "p.npz"
    out.write_text("an earlier dataset")
    argv = ["collect", "--env", ENV, "--policy", "random", "--episodes", "2", "--out", str(out)]
    assert cli.main(argv) == 2
    assert f"--out {out} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "an earlier dataset"
    saved.write_text("an earlier policy")
    ars = [
        "collect",
        "--env",
        ENV,
        "--policy",
        "ars",
        "--episodes",
        "2",
        "--out",
        str(tmp_path / "new.hdf5"),
        "--save-policy",
        str(saved),
    ]
    assert cli.main(ars) == 2
    assert f"--save-policy {saved} already exists" in capsys.readouterr().err
    assert saved.read_text() == "an earlier policy" and not (tmp_path / "new.hdf5").exists()
    assert cli.main(argv + ["--overwrite"]) == 0
    check_d4rl(read_d4rl(out), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5", "p.npz"]  # no temporary file left


def test_ars_and_collect_refuse_unsupported_envs() -> None:
    """Discrete actions or non-vector observations: one ValueError naming the env before any env is stepped."""
    with pytest.raises(ValueError, match="CartPole-v1 has .* action space Discrete.*dt_fast supports Box"):
        train_ars("CartPole-v1", target_return=100.0, max_iterations=1)
    with pytest.raises(ValueError, match=r"CarRacing-v3 has observation space Box of shape \(96, 96, 3\), uint8"):
        collect("CarRacing-v3", None, episodes=1, progress=False)


@pytest.mark.skipif(not EMBEDDED.exists(), reason="embedded dataset not generated")
def test_embedded_dataset_layout() -> None:
    """The shipped Hopper dataset is valid D4RL with complete episodes and medium returns."""
    data = read_d4rl(EMBEDDED)
    assert data["attrs"]["env_id"] == ENV
    lengths = check_d4rl(data, int(data["attrs"]["episodes"]))
    returns = np.add.reduceat(data["rewards"].astype(np.float64), np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    timed_out = data["timeouts"][np.cumsum(lengths) - 1]
    assert (lengths[timed_out] == 1000).all()
    assert 1000 <= returns.mean() <= 2000, returns.mean()
