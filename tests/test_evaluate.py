"""Batched evaluator: scheduling, no short-episode bias, equality with sequential rollouts, scores, errors, plot.

These tests use a numpy test double of `dt_fast.Policy` (same methods, a per-row return-to-go state) over a tiny
gymnasium env with random episode lengths, run through the evaluator's gymnasium fallback path.
"""

from __future__ import annotations

import math
import sys

import gymnasium as gym
import numpy as np
import pytest

from dt_fast.envs import D4RL_REFERENCE
from dt_fast.evaluation import (
    EvalResult,
    assign_slots,
    check_reference,
    evaluate,
    format_table,
    plot_returns,
    record_video,
    returns_figure,
)

ENV_ID = "DtFastRandomLength-v0"
SHORT, LONG, P_LONG = 1, 60, 0.1  # episode lengths; LONG is drawn with probability P_LONG at reset


class RandomLengthEnv(gym.Env):
    """Episodes of SHORT or LONG steps (drawn at reset); reward 1 + 0.01 * action[0], so returns track length."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.length = LONG if self.np_random.random() < P_LONG else SHORT
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = 1.0 + 0.01 * float(action[0])
        return self._obs(), reward, self.t >= self.length, False, {}

    def _obs(self):
        return np.array([self.t / LONG, self.length / LONG, self.np_random.standard_normal()])


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=RandomLengthEnv)


class DoublePolicy:
    """A numpy stand-in for dt_fast.Policy: a per-row return-to-go and timestep drive the action."""

    mode = "exact"

    def __init__(
        self,
        num_envs: int,
        target_return: float | np.ndarray = 10.0,
        scale: float = 10.0,
        state_dim: int = 3,
        act_dim: int = 2,
    ) -> None:
        self.num_envs, self.scale, self.state_dim, self.act_dim = num_envs, scale, state_dim, act_dim
        self.target_return = np.broadcast_to(np.asarray(target_return, dtype=np.float64), (num_envs,)).copy()
        self.rtg = np.zeros(num_envs)  # [B]
        self.t = np.zeros(num_envs, dtype=np.int64)  # [B]
        self.w = np.random.default_rng(0).normal(0.0, 0.5, (state_dim, act_dim))  # [state_dim, act_dim]

    def set_target_return(self, values: np.ndarray) -> None:
        self.target_return = np.asarray(values, dtype=np.float64).copy()

    def reset(self, env_ids=None) -> None:
        rows = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids)
        self.rtg[rows] = self.target_return[rows] / self.scale
        self.t[rows] = 0

    def act(self, obs: np.ndarray, reward: np.ndarray | None = None) -> np.ndarray:
        obs = np.asarray(obs).reshape(self.num_envs, self.state_dim)
        if reward is not None:
            later = self.t > 0
            self.rtg[later] -= np.asarray(reward, dtype=np.float64).reshape(-1)[later] / self.scale
        self.t += 1
        return np.tanh(obs @ self.w + self.rtg[:, None] + 0.01 * self.t[:, None]).astype(np.float32)


def sequential_returns(env_id: str, num_envs: int, episodes: int, seed: int, targets: list[float]) -> np.ndarray:
    """The user's loop, one env at a time: slot i's episodes in order on one env seeded seed + i; [T, N]."""
    slot_target, queues = assign_slots(num_envs, episodes, len(targets))
    out = np.zeros((len(targets), episodes))
    for i, queue in enumerate(queues):
        env = gym.make(env_id)
        policy = DoublePolicy(1, targets[slot_target[i]])
        for n, k in enumerate(queue):
            obs, _ = env.reset(seed=seed + i if n == 0 else None)
            policy.reset()
            reward, total, done = None, 0.0, False
            while not done:
                action = policy.act(obs[None], reward)[0]
                obs, r, terminated, truncated, _ = env.step(action)
                reward, total, done = np.array([r]), total + r, terminated or truncated
            out[slot_target[i], k] = total
    return out


def test_assign_slots_up_front_covers_every_episode_once():
    slot_target, queues = assign_slots(num_envs=7, episodes=10, num_targets=3)
    assert slot_target.tolist() == [0, 1, 2, 0, 1, 2, 0]
    for j in range(3):
        got = sorted(k for i, q in enumerate(queues) if slot_target[i] == j for k in q)
        assert got == list(range(10))
    loads = [len(q) for i, q in enumerate(queues) if slot_target[i] == 0]
    assert max(loads) - min(loads) <= 1


def test_no_short_episode_bias():
    """A tenth of the episodes are LONG; the rule 'stop when N episodes have ended' would count only SHORT ones."""
    n, b = 256, 128
    result = evaluate(DoublePolicy(b), env=ENV_ID, episodes=n, seed=3, progress=False)
    assert result.lengths.shape == (n,) and set(result.lengths.tolist()) <= {SHORT, LONG}
    se = math.sqrt(P_LONG * (1 - P_LONG) / n)  # standard error of the fraction of LONG episodes
    assert abs(np.mean(result.lengths == LONG) - P_LONG) < 4 * se
    mean, sd = SHORT + P_LONG * (LONG - SHORT), math.sqrt(P_LONG * (1 - P_LONG)) * (LONG - SHORT)
    assert abs(result.lengths.mean() - mean) < 4 * sd / math.sqrt(n)
    np.testing.assert_allclose(result.returns, result.lengths, rtol=0.011)  # reward 1 +- 0.01 per step
    # The biased rule on the same env streams, to show the checks above can see the bias.
    vec = gym.make_vec(ENV_ID, num_envs=b, vectorization_mode="sync")
    vec.reset(seed=3)
    ended: list[int] = []
    while len(ended) < n:
        _, _, terminated, _, _ = vec.step(np.zeros((b, 2), np.float32))
        ended += [vec.envs[i].unwrapped.length for i in np.flatnonzero(terminated)]
    biased = np.array(ended[:n])
    assert abs(np.mean(biased == LONG) - P_LONG) > 4 * se and abs(biased.mean() - mean) > 4 * sd / math.sqrt(n)


@pytest.mark.parametrize("num_envs,episodes,targets", [(4, 9, [10.0]), (5, 6, [0.0, 30.0]), (3, 2, [5.0])])
def test_batched_equals_sequential(num_envs, episodes, targets):
    results = evaluate(
        DoublePolicy(num_envs), env=ENV_ID, episodes=episodes, target_return=targets, seed=11, progress=False
    )
    expected = sequential_returns(ENV_ID, num_envs, episodes, 11, targets)
    for j, result in enumerate(results):
        assert result.target_return == targets[j]
        np.testing.assert_allclose(result.returns, expected[j], rtol=1e-12, atol=0)
    if len(targets) > 1:
        assert not np.allclose(results[0].returns, results[1].returns)  # conditioning reached the rows


def test_given_policy_keeps_its_own_targets():
    policy = DoublePolicy(4, target_return=7.0)
    results = evaluate(policy, env=ENV_ID, episodes=3, target_return=[1.0, 2.0], progress=False)
    assert [r.target_return for r in results] == [1.0, 2.0] and all(len(r.returns) == 3 for r in results)
    np.testing.assert_array_equal(policy.target_return, np.full(4, 7.0))
    assert evaluate(policy, env=ENV_ID, episodes=2, progress=False).target_return == 7.0
    policy.set_target_return([1.0, 2.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"rows condition on different target returns \(\[1.0, 2.0\]\)"):
        evaluate(policy, env=ENV_ID, episodes=2, progress=False)


def test_statistics_and_normalised_score():
    returns = np.array([100.0, 200.0, 400.0, 300.0])
    reference = check_reference("Hopper-v4", None)
    result = EvalResult("Hopper-v4", 3600.0, returns, np.full(4, 10), 1.0, 1.0, reference)
    assert result.mean == 250.0
    assert result.std == pytest.approx(np.std(returns, ddof=1))
    assert result.ci95 == pytest.approx(1.96 * np.std(returns, ddof=1) / 2.0)
    low, high = D4RL_REFERENCE["hopper"]
    assert result.normalized_score == pytest.approx(100 * (250.0 - low) / (high - low))
    assert EvalResult("Hopper-v4", None, np.array([low]), np.ones(1), 1, 1, (low, high)).normalized_score == 0
    assert EvalResult("x", None, np.array([high]), np.ones(1), 1, 1, (low, high)).normalized_score == 100
    assert check_reference("walker2d-medium-v2", None) == D4RL_REFERENCE["walker2d"]
    assert check_reference(ENV_ID, None) is None
    assert check_reference(ENV_ID, (0, 50)) == (0.0, 50.0)
    assert EvalResult(ENV_ID, None, np.array([25.0]), np.ones(1), 1, 1, (0.0, 50.0)).normalized_score == 50.0
    result = evaluate(DoublePolicy(4), env=ENV_ID, episodes=8, seed=0, reference=(0.0, 100.0), progress=False)
    assert result.normalized_score == pytest.approx(result.returns.mean())
    assert result.env_steps_per_s == pytest.approx(result.lengths.sum() / result.wall_s)


@pytest.fixture
def no_env(monkeypatch):
    """Fail the test if an env is created: bad input must be reported before."""

    def boom(*args, **kwargs):
        raise AssertionError("an env was started before the bad input was reported")

    monkeypatch.setattr(sys.modules["dt_fast.evaluation"], "make_vector_env", boom)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(env="Hoper-v4"), "closest known ids: .*Hopper-v4"),
        (dict(episodes=0), "episodes must be an integer >= 1, got 0"),
        (dict(episodes=2.5), "episodes must be an integer >= 1"),
        (dict(num_envs=0), "num_envs must be an integer >= 1, got 0"),
        (dict(target_return="high"), r"target_return\[0\] must be a finite number, got 'high'"),
        (dict(target_return=[1.0, float("nan")]), r"target_return\[1\] must be a finite number"),
        (dict(target_return=[]), "target_return is an empty list"),
        (dict(reference=(1.0, 1.0)), "two different finite returns"),
        (dict(env="Hopper-v4"), "policy has state_dim=3, act_dim=2 but Hopper-v4 has state_dim=11, act_dim=3"),
        (
            dict(env="CartPole-v1"),
            r"CartPole-v1 has .* action space Discrete\(2\); dt_fast supports Box observations "
            "of rank 1 and Box actions of rank 1",
        ),
    ],
)
def test_bad_input_is_reported_before_any_env(no_env, kwargs, message):
    kwargs = {"env": ENV_ID, **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate(DoublePolicy(2), progress=False, **kwargs)


def test_num_envs_of_a_given_policy(no_env):
    with pytest.raises(ValueError, match="num_envs=8 but the policy has num_envs=2"):
        evaluate(DoublePolicy(2), env=ENV_ID, num_envs=8, progress=False)


def test_more_targets_than_slots(no_env):
    with pytest.raises(ValueError, match=r"num_envs=2, fewer than the number of target returns \(3\)"):
        evaluate(DoublePolicy(2), env=ENV_ID, target_return=[1.0, 2.0, 3.0], progress=False)


def test_plot_is_a_png(tmp_path):
    results = evaluate(DoublePolicy(4), env=ENV_ID, episodes=4, target_return=[0.0, 20.0], progress=False)
    path = tmp_path / "returns.png"
    plot_returns(results, path, best_return=55.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)  # [H, W, 4] float
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    table = format_table(results)
    assert "20.0" in table and "env-steps/s" in table


def test_plot_keeps_the_best_return_line_clear_of_the_legend_and_the_frame():
    """The legend sits below the axes (it covers no line) and the y range leaves room above the best return."""
    results = evaluate(DoublePolicy(4), env=ENV_ID, episodes=4, target_return=[0.0, 20.0], progress=False)
    best = max(r.mean for r in results) + 30.0  # above every point: where the old plot drew it on the top border
    fig = returns_figure(results, best_return=best)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= ax.xaxis.label.get_window_extent().y0 and legend.y1 < frame.y0
    assert legend.y0 >= 0 and legend.x0 >= 0 and legend.x1 <= fig.bbox.width  # inside the image
    bottom, top = ax.get_ylim()
    assert top - best >= 0.05 * (top - bottom)
    assert [t.get_text() for t in ax.get_legend().get_texts()][1] == f"best return in dataset ({best:.0f})"


def test_video_is_a_readable_mp4_with_one_frame_per_observation(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "episode.mp4"
    ret, length, frames = record_video(DoublePolicy(2, state_dim=11, act_dim=3), "Hopper-v4", path, seed=0)
    assert 0 < length < 1000 and frames == length + 1 and math.isfinite(ret)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    assert meta["fps"] == 125 and meta["size"] == (480, 480)
    decoded = [np.frombuffer(f, np.uint8) for f in reader]
    assert len(decoded) == frames and decoded[0].size == 480 * 480 * 3 and decoded[-1].std() > 0


@pytest.fixture(scope="module")
def cheetah_checkpoint(tmp_path_factory):
    """A random HalfCheetah-sized checkpoint (state_dim 17, act_dim 6)."""
    from dt_fast.config import DecisionTransformerConfig
    from dt_fast.model import DecisionTransformer

    path = tmp_path_factory.mktemp("cheetah")
    DecisionTransformer(DecisionTransformerConfig(state_dim=17, act_dim=6, max_ep_len=1000)).save_pretrained(path)
    return path


def test_checkpoint_that_disagrees_with_the_env(no_env, cheetah_checkpoint):
    with pytest.raises(
        ValueError,
        match=r"checkpoint .*cheetah.* has state_dim=17, act_dim=6 but Hopper-v4 has "
        r"state_dim=11, act_dim=3",
    ):
        evaluate(str(cheetah_checkpoint), env="Hopper-v4", episodes=2, progress=False)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        evaluate(str(cheetah_checkpoint / "missing"), env="HalfCheetah-v4", progress=False)


def test_cli_reports_bad_input_before_any_env(no_env, cheetah_checkpoint, capsys):
    from dt_fast.cli import main

    assert main(["eval", str(cheetah_checkpoint), "--env", "Hopper-v4", "--no-progress"]) == 2
    assert "dt-fast eval: error: checkpoint" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v9"]) == 2
    assert "closest known ids: HalfCheetah-v" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--num-envs", "0"]) == 2
    assert "num_envs must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--episodes", "-1"]) == 2
    assert "episodes must be an integer >= 1, got -1" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--target-return", "inf"]) == 2
    assert "target_return[0] must be a finite number, got inf" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--plot", "a.jpg"]) == 2
    assert "--plot must name a .png file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--target-return", "high"])
    assert exit_info.value.code == 2
    assert "argument --target-return: invalid float value: 'high'" in capsys.readouterr().err
    assert main(["eval", str(cheetah_checkpoint)]) == 2
    assert "--env is required" in capsys.readouterr().err


def test_cli_names_a_path_that_is_not_a_checkpoint(no_env, tmp_path, capsys):
    """A missing path, an empty directory or a file is reported as not a checkpoint, before anything else."""
    from dt_fast.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "no_such_dir", tmp_path / "empty", tmp_path / "file"):
        for extra in ([], ["--env", "Hopper-v4"]):
            assert main(["eval", str(path), *extra]) == 2
            assert f"dt-fast eval: error: {path}: not a checkpoint directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, name", [("--results", "r.json"), ("--results", "r.csv"), ("--plot", "p.png"), ("--video", "v.mp4")]
)
def test_cli_checks_every_output_before_any_env(no_env, cheetah_checkpoint, tmp_path, capsys, flag, name):
    """A missing directory, an existing file (without --overwrite) or a wrong suffix fails first, writing nothing."""
    from dt_fast.cli import main

    argv = ["eval", str(cheetah_checkpoint), "--env", "HalfCheetah-v4", "--episodes", "1", "--no-progress"]
    missing = tmp_path / "missing" / name
    assert main(argv + [flag, str(missing)]) == 2
    assert f"{flag} {missing}: the directory {missing.parent} does not exist" in capsys.readouterr().err
    (tmp_path / name).write_text("an earlier output")
    assert main(argv + [flag, str(tmp_path / name)]) == 2
    assert f"{flag} {tmp_path / name} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / name).read_text() == "an earlier output"
    assert main(argv + [flag, str(tmp_path / "out.txt")]) == 2
    kinds = {"--results": ".json or .csv", "--plot": ".png", "--video": ".mp4"}
    assert f"{flag} must name a {kinds[flag]} file, got '{tmp_path / 'out.txt'}'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_checks_the_flags_that_replace_dt_fast_json(no_env, cheetah_checkpoint, capsys):
    """--dataset must fit the checkpoint; --scale and --context-len must be positive; all before any env."""
    from dt_fast.cli import main

    flags = {
        "--env": "HalfCheetah-v4",
        "--target-return": "100",
        "--context-len": "5",
        "--scale": "1000",
        "--dataset": "hopper-medium-v4",
    }
    for changed, message in [
        (
            {},
            f"--dataset hopper-medium-v4: observations of size 11, but checkpoint "
            f"{cheetah_checkpoint} has state_dim=17",
        ),
        ({"--scale": "0"}, "--scale must be a positive number, got 0.0"),
        ({"--context-len": "0"}, "--context-len must be >= 1, got 0"),
    ]:
        argv = [x for kv in {**flags, **changed}.items() for x in kv]
        assert main(["eval", str(cheetah_checkpoint), *argv]) == 2
        assert message in capsys.readouterr().err
