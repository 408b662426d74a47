"""TrajectorySampler: equal to the numpy reference and to the blog's collator for the same draws; uniform starts;
determinism whatever num_threads; resumable; held batches stay valid; bad arguments and indices rejected."""

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast import DecisionTransformer, DecisionTransformerConfig, Trajectories, TrajectorySampler
from dt_fast.data.reference_sampler import reference_draws, reference_windows


def ragged(lengths: list[int], state_dim: int = 4, act_dim: int = 3, seed: int = 0) -> Trajectories:
    """Random episodes of the given lengths, split by terminals."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, bool)
    terminals[np.cumsum(lengths) - 1] = True
    return Trajectories(
        rng.normal(2.0, 3.0, size=(n, state_dim)), rng.uniform(-1, 1, size=(n, act_dim)), rng.normal(size=n), terminals
    )


DATA = ragged([3, 40, 1, 17, 25, 60, 2, 9])


def as_numpy(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in batch.items()}


def assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize(
    "context_len, scale, gamma, max_ep_len",
    [
        (20, 1000.0, 1.0, 1000),
        (5, 1.0, 0.99, 1000),
        (64, 10.0, 1.0, 30),  # windows longer than most episodes; timesteps clipped at 29
        (1, 3.0, 0.0, 1),
    ],
)
def test_cpp_batches_equal_the_numpy_reference(context_len: int, scale: float, gamma: float, max_ep_len: int) -> None:
    sampler = TrajectorySampler(
        DATA, context_len=context_len, batch_size=32, scale=scale, gamma=gamma, max_ep_len=max_ep_len, seed=3
    )
    for k in range(3):
        batch = sampler.sample()
        episode, start = sampler.draws(k)
        assert_batches_equal(
            as_numpy(batch), reference_windows(DATA, episode, start, context_len, scale, gamma, max_ep_len)
        )
    episode, start = reference_draws(DATA, 50, np.random.default_rng(0))  # draws of the reference itself
    assert_batches_equal(
        as_numpy(sampler.windows(episode, start)),
        reference_windows(DATA, episode, start, context_len, scale, gamma, max_ep_len),
    )


def test_equal_to_the_blog_collator_for_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    from dt_fast.bench.reference import DecisionTransformerGymDataCollator

    rows = [
        {
            "observations": DATA.episode(i)["observations"].tolist(),
            "actions": DATA.episode(i)["actions"].tolist(),
            "rewards": DATA.episode(i)["rewards"].tolist(),
            "dones": DATA.episode(i)["terminals"].tolist(),
        }
        for i in range(DATA.num_episodes)
    ]
    collator = DecisionTransformerGymDataCollator(datasets.Dataset.from_list(rows), max_len=20, max_ep_len=30)
    sampler = TrajectorySampler(DATA, context_len=20, batch_size=64, max_ep_len=30, seed=7)
    episode, start = sampler.draws(0)
    starts = iter(start.tolist())
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: episode.copy())
    monkeypatch.setattr(random, "randint", lambda a, b: next(starts))
    expected = collator([None] * 64)
    np.testing.assert_array_equal(collator.state_mean, DATA.state_mean)
    np.testing.assert_array_equal(collator.state_std, DATA.state_std)
    assert_batches_equal(sampler.sample(), expected)


def chi_square_p(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of Pearson's chi-square (Wilson-Hilferty normal approximation, fine for df in the hundreds)."""
    x2, df = float(((observed - expected) ** 2 / expected).sum()), len(observed) - 1
    z = ((x2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_starts_are_uniform_over_timesteps() -> None:
    data = ragged(list(np.random.default_rng(1).integers(1, 120, size=40)))
    sampler = TrajectorySampler(data, batch_size=256, seed=11)
    steps = np.concatenate([data.offsets[e] + s for e, s in (sampler.draws(k) for k in range(400))])  # 102,400
    counts = np.bincount(steps, minlength=data.num_steps)
    assert chi_square_p(counts, np.full(data.num_steps, len(steps) / data.num_steps)) > 1e-4
    per_episode = np.add.reduceat(counts, data.offsets[:-1])  # trajectories chosen proportionally to length
    assert chi_square_p(per_episode, len(steps) * data.episode_lengths / data.num_steps) > 1e-4
    assert counts.min() > 0


def test_windows_are_contiguous_slices_of_one_episode_with_direct_returns_to_go() -> None:
    T, scale = 10, 100.0
    sampler = TrajectorySampler(DATA, context_len=T, batch_size=64, scale=scale, seed=5)
    batch = as_numpy(sampler.sample())
    for i, (e, s) in enumerate(zip(*sampler.draws(0))):
        ep = DATA.episode(int(e))
        tlen = min(T, len(ep["rewards"]) - s)
        pad = T - tlen
        np.testing.assert_array_equal(batch["actions"][i, pad:], ep["actions"][s : s + tlen])
        np.testing.assert_array_equal(batch["rewards"][i, pad:, 0], ep["rewards"][s : s + tlen])
        np.testing.assert_array_equal(batch["timesteps"][i, pad:], np.arange(s, s + tlen))
        np.testing.assert_allclose(
            batch["states"][i, pad:] * DATA.state_std + DATA.state_mean,
            ep["observations"][s : s + tlen],
            rtol=1e-5,
            atol=1e-5,
        )
        future = np.cumsum(ep["rewards"][::-1].astype(np.float64))[::-1]  # sum of rewards to the episode's end
        np.testing.assert_allclose(
            batch["returns_to_go"][i, pad:, 0], future[s : s + tlen] / scale, rtol=1e-5, atol=1e-6
        )


def test_padding_and_mask_of_episodes_shorter_than_the_context() -> None:
    data = ragged([2, 3, 1])
    sampler = TrajectorySampler(data, context_len=8, batch_size=16, seed=0)
    batch = as_numpy(sampler.sample())
    for i, (e, s) in enumerate(zip(*sampler.draws(0))):
        tlen = int(data.episode_lengths[e] - s)
        pad = 8 - tlen
        np.testing.assert_array_equal(batch["attention_mask"][i], [0.0] * pad + [1.0] * tlen)
        assert (batch["actions"][i, :pad] == -10.0).all()
        assert (batch["rewards"][i, :pad] == 0).all() and (batch["returns_to_go"][i, :pad] == 0).all()
        assert (batch["timesteps"][i, :pad] == 0).all()
        padded_state = ((0.0 - data.state_mean) / data.state_std).astype(np.float32)  # the blog pads, then normalises
        np.testing.assert_array_equal(batch["states"][i, :pad], np.broadcast_to(padded_state, (pad, 4)))


def test_shapes_dtypes_and_forward() -> None:
    sampler = TrajectorySampler(DATA, context_len=20, batch_size=5, seed=0)
    batch = sampler.sample()
    assert batch["states"].shape == (5, 20, 4) and batch["actions"].shape == (5, 20, 3)
    assert batch["rewards"].shape == (5, 20, 1) and batch["returns_to_go"].shape == (5, 20, 1)
    assert batch["timesteps"].dtype == torch.int64 and batch["attention_mask"].shape == (5, 20)
    assert all(v.dtype == torch.float32 for k, v in batch.items() if k != "timesteps")
    model = DecisionTransformer(
        DecisionTransformerConfig(state_dim=4, act_dim=3, hidden_size=32, n_layer=1, n_head=1, max_ep_len=1000)
    )
    _, action_preds, _ = model(**batch)
    assert action_preds.shape == (5, 20, 3) and torch.isfinite(action_preds).all()


def test_device_moves_the_batch() -> None:
    batch = TrajectorySampler(DATA, batch_size=3, device="meta").sample()  # the non-CPU path, without a GPU
    assert all(v.device.type == "meta" for v in batch.values()) and batch["states"].shape == (3, 20, 4)


def test_same_seed_same_batches_whatever_num_threads() -> None:
    streams = []
    for num_threads in (1, 2, 3):
        sampler = TrajectorySampler(DATA, batch_size=16, seed=42, num_threads=num_threads)
        streams.append([as_numpy(next(sampler)) for _ in range(25)])
    for other in streams[1:]:
        for a, b in zip(streams[0], other):
            assert_batches_equal(a, b)
    for k, batch in enumerate(streams[0]):
        sampler = TrajectorySampler(DATA, batch_size=16, seed=42)
        assert_batches_equal(batch, as_numpy(sampler.windows(*sampler.draws(k))))


def test_different_seeds_and_ranks_give_different_batches() -> None:
    draws = [
        TrajectorySampler(DATA, batch_size=64, seed=seed, rank=rank).draws(0) for seed, rank in ((0, 0), (1, 0), (0, 1))
    ]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(draws[i][0] * 1000 + draws[i][1], draws[j][0] * 1000 + draws[j][1])


def test_held_batches_are_never_overwritten() -> None:
    sampler = TrajectorySampler(DATA, batch_size=8, seed=9, num_threads=2)  # ring of 6 slots
    held = [sampler.sample() for _ in range(40)]
    for k, batch in enumerate(held):
        assert_batches_equal(as_numpy(batch), as_numpy(sampler.windows(*sampler.draws(k))))
    first = held[0]["states"].clone()
    del sampler  # joins the threads; batches handed out stay valid
    other = TrajectorySampler(DATA, batch_size=8, seed=10)
    held.extend(other.sample() for _ in range(10))
    assert torch.equal(held[0]["states"], first)


def test_state_dict_resumes_the_stream() -> None:
    a = TrajectorySampler(DATA, batch_size=16, seed=4, rank=2, num_threads=2)
    for _ in range(5):
        a.sample()
    state = a.state_dict()
    assert state["next_batch"] == 5 and state["seed"] == 4 and state["rank"] == 2
    b = TrajectorySampler(DATA, batch_size=16, seed=0, num_threads=1)
    b.sample()
    b.load_state_dict(state)
    for _ in range(3):
        assert_batches_equal(as_numpy(a.sample()), as_numpy(b.sample()))
    with pytest.raises(ValueError, match="batch_size=16 but this sampler has batch_size=8"):
        TrajectorySampler(DATA, batch_size=8).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"context_len": 0}, "context_len must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1"),
        ({"max_ep_len": -1}, "max_ep_len must be an integer >= 1"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"scale": 0.0}, "scale must be finite and non-zero"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectorySampler(DATA, **kwargs)


@pytest.mark.parametrize(
    "episode, start, message",
    [
        ([0, 8], [0, 0], r"episode\[1\] = 8 is out of range \[0, 8\)"),
        ([-1], [0], r"episode\[0\] = -1 is out of range"),
        ([1, 0], [39, 3], r"start\[1\] = 3 is out of range \[0, 3\) of episode 0"),
        ([2], [-5], r"start\[0\] = -5 is out of range"),
        ([0, 1], [0], r"start.shape\[0\] = 1 must equal len\(episode\) = 2"),
    ],
)
def test_every_index_is_checked(episode: list, start: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectorySampler(DATA).windows(np.array(episode), np.array(start))


def test_core_rejects_inconsistent_arrays() -> None:
    from dt_fast import _C

    obs, act, rew = np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32), np.zeros(10, np.float32)
    mean, std = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError, match=r"actions.shape\[0\] = 9 must equal the number of observations = 10"):
        _C.SamplerCore(obs, act[:9], rew, np.array([0, 10]), mean, std, 5, 2, 1.0, 1.0, 100)
    with pytest.raises(ValueError, match="last episode offset"):
        _C.SamplerCore(obs, act, rew, np.array([0, 12]), mean, std, 5, 2, 1.0, 1.0, 100)
    with pytest.raises(ValueError, match=r"state_std\[1\] must be finite and > 0"):
        _C.SamplerCore(obs, act, rew, np.array([0, 10]), mean, np.array([1.0, 0.0]), 5, 2, 1.0, 1.0, 100)


def test_core_refuses_conversions_that_lose_values() -> None:
    """Arrays are converted to the dtype the core reads, but not fractional indices or complex values."""
    from dt_fast import _C

    obs, act, rew = np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32), np.zeros(10, np.float32)
    mean, std = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError, match="offsets must be an integer array, got dtype float64"):
        _C.SamplerCore(obs, act, rew, np.array([0.0, 9.5]), mean, std, 5, 2, 1.0, 1.0, 100)
    with pytest.raises(ValueError, match="observations must be a real-valued array, got dtype complex64"):
        _C.SamplerCore(obs.astype(np.complex64), act, rew, np.array([0, 10]), mean, std, 5, 2, 1.0, 1.0, 100)
    core = _C.SamplerCore(
        obs.astype(np.float64), act, rew, np.array([0, 4, 10], np.int32), mean, std, 5, 2, 1.0, 1.0, 100
    )
    with pytest.raises(ValueError, match="start must be an integer array, got dtype float64"):
        core.windows(np.array([1]), np.array([2.7]))
    with pytest.raises(ValueError, match="episode must be an integer array, got dtype bool"):
        core.windows(np.array([True]), np.array([2]))
    assert core.windows([1, 0], np.array([2, 3], np.uint8))["timesteps"].shape == (2, 5)


def test_interpreter_exits_cleanly_with_threads_running(tmp_path: Path) -> None:
    code = (
        "import numpy as np, dt_fast\n"
        "t = dt_fast.Trajectories(np.ones((50, 2)), np.ones((50, 1)), np.ones(50))\n"
        "s = dt_fast.TrajectorySampler(t, batch_size=4, num_threads=2)\n"
        "b = s.sample()\n"
        "print(int(b['attention_mask'].sum() > 0))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(dt_fast.__file__).parent.parent)}  # this dt_fast, with its _C
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
