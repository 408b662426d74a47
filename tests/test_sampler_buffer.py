"""TrajectorySampler(capacity=...) as ODT's replay buffer: the offline episodes kept, FIFO eviction, relabelled
returns-to-go equal to the sampler's own, determinism with appends whatever num_threads, resumption from a state
dict read with weights_only=True, and a clear error for every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dt_fast import Trajectories, TrajectorySampler
from dt_fast.data.reference_sampler import reference_windows

S, A = 4, 3


def episodes(lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random whole episodes (observations, actions, rewards, lengths) as add_episodes takes them."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    return (
        rng.normal(2.0, 3.0, size=(n, S)),
        rng.uniform(-1, 1, size=(n, A)).astype(np.float32),
        rng.normal(size=n),
        np.array(lengths),
    )


def as_trajectories(obs: np.ndarray, act: np.ndarray, rew: np.ndarray, lengths: np.ndarray) -> Trajectories:
    """The same episodes as offline data."""
    return Trajectories(obs, act, rew, offsets=np.concatenate([[0], np.cumsum(lengths)]))


OFFLINE = as_trajectories(*episodes([3, 40, 1, 17, 25, 60, 2, 9], seed=0))


def held(sampler: TrajectorySampler) -> list[np.ndarray]:
    """The actions of every held episode, oldest first (from the state dict)."""
    buffer = sampler.state_dict()["buffer"]
    return np.split(buffer["actions"].numpy(), np.cumsum(buffer["lengths"].numpy())[:-1])


def actions_of(obs: np.ndarray, act: np.ndarray, rew: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """The actions of each of these episodes."""
    return np.split(act, np.cumsum(lengths)[:-1])


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_capacity_and_eviction_order_are_first_in_first_out() -> None:
    sampler = TrajectorySampler(OFFLINE, batch_size=8, capacity=10)
    offline = [OFFLINE.episode(e)["actions"] for e in range(8)]
    assert sampler.held_episodes == 8 and sampler.held_steps == OFFLINE.num_steps
    assert_same(held(sampler), offline)  # all offline episodes fit: dataset order
    first = episodes([5, 7, 11], seed=1)
    sampler.add_episodes(*first)
    assert sampler.held_episodes == 10  # 8 + 3 - 10: the oldest offline episode is evicted
    assert_same(held(sampler), offline[1:] + actions_of(*first))
    second = episodes([2, 4], seed=2)
    sampler.add_episodes(*second)
    assert_same(held(sampler), offline[3:] + actions_of(*first) + actions_of(*second))
    assert sampler.held_steps == sum(len(a) for a in held(sampler))
    many = episodes(list(range(1, 14)), seed=3)  # 13 episodes in one call: the last 10 stay, in order
    sampler.add_episodes(*many)
    assert_same(held(sampler), actions_of(*many)[3:])


def test_more_offline_episodes_than_capacity_keeps_the_highest_returns_lowest_first() -> None:
    sampler = TrajectorySampler(OFFLINE, capacity=3)
    top = np.argsort(OFFLINE.episode_returns, kind="stable")[-3:]  # ODT: sorted lowest to highest, last `capacity`
    assert OFFLINE.episode_returns[top[0]] < OFFLINE.episode_returns[top[-1]]
    assert_same(held(sampler), [OFFLINE.episode(int(e))["actions"] for e in top])
    new = episodes([6], seed=4)
    sampler.add_episodes(*new)  # evicts the lowest of the three
    assert_same(held(sampler), [OFFLINE.episode(int(e))["actions"] for e in top[1:]] + actions_of(*new))


def test_a_buffer_that_fits_the_offline_data_samples_as_the_fixed_sampler() -> None:
    fixed = TrajectorySampler(OFFLINE, batch_size=32, seed=5)
    buffer = TrajectorySampler(OFFLINE, batch_size=32, seed=5, capacity=8)
    for _ in range(3):
        assert_batches_equal(fixed.sample(), buffer.sample())


@pytest.mark.parametrize("gamma, scale", [(1.0, 1000.0), (0.99, 10.0)])
def test_relabelled_returns_to_go_equal_the_samplers_own(gamma: float, scale: float) -> None:
    """A fixed episode appended to a buffer gives, window for window, the bits it gives as offline data (the
    returns-to-go of its own rewards); its states are normalised with the offline data's mean and std."""
    other = episodes([30, 12], seed=6)
    ep = episodes([45], seed=7)
    as_offline = TrajectorySampler(
        as_trajectories(*(np.concatenate([o, e]) for o, e in zip(other, ep))), context_len=20, scale=scale, gamma=gamma
    )
    buffer = TrajectorySampler(as_trajectories(*other), context_len=20, scale=scale, gamma=gamma, capacity=5)
    buffer.add_episodes(*ep)
    start = np.arange(45)
    got = buffer.windows(np.full(45, 2), start)
    want = as_offline.windows(np.full(45, 2), start)
    for key in ("returns_to_go", "rewards", "actions", "timesteps", "attention_mask"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
    offline = as_trajectories(*other)
    expected = reference_windows(as_trajectories(*ep), np.zeros(45, np.int64), start, 20, scale, gamma)
    np.testing.assert_array_equal(got["returns_to_go"].numpy(), expected["returns_to_go"])
    obs = ep[0].astype(np.float32)  # (45, S) as the sampler reads it
    for s in range(45):
        tlen = min(20, 45 - s)
        window = np.concatenate([np.zeros((20 - tlen, S)), obs[s : s + tlen]])  # padded before normalising, as the blog
        normalised = ((window - offline.state_mean) / offline.state_std).astype(np.float32)  # (20, S)
        np.testing.assert_array_equal(got["states"][s].numpy(), normalised)


def run_stream(num_threads: int) -> list[dict[str, np.ndarray]]:
    """Batches of a fixed sequence of samples and appends (the second append evicts)."""
    sampler = TrajectorySampler(OFFLINE, batch_size=16, seed=42, num_threads=num_threads, capacity=10)
    out = [{k: v.numpy().copy() for k, v in sampler.sample().items()} for _ in range(5)]
    sampler.add_episodes(*episodes([50, 3], seed=8))
    out += [{k: v.numpy().copy() for k, v in sampler.sample().items()} for _ in range(4)]
    sampler.add_episodes(*episodes([20, 20, 20], seed=9))
    out += [{k: v.numpy().copy() for k, v in sampler.sample().items()} for _ in range(5)]
    for k in range(9, 14):  # batches after the last append are drawn from the buffer it left
        assert_batches_equal(out[k], {k2: v.numpy() for k2, v in sampler.windows(*sampler.draws(k)).items()})
    return out


def test_same_seed_and_appends_give_the_same_batches_whatever_num_threads() -> None:
    streams = [run_stream(n) for n in (1, 2, 3)]
    for other in streams[1:]:
        for a, b in zip(streams[0], other, strict=True):
            assert_batches_equal(a, b)
    assert not np.array_equal(streams[0][4]["states"], streams[0][5]["states"])


def test_state_dict_round_trip_through_weights_only_load_gives_the_same_next_batches() -> None:
    a = TrajectorySampler(OFFLINE, batch_size=16, seed=3, num_threads=2, capacity=6)
    a.add_episodes(*episodes([8, 33, 2], seed=10))
    for _ in range(4):
        a.sample()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["next_batch"] == 4 and state["capacity"] == 6 and len(state["buffer"]["lengths"]) == 6
    b = TrajectorySampler(OFFLINE, batch_size=16, seed=0, capacity=6)  # the offline data again, other seed
    b.sample()
    b.load_state_dict(state)
    assert (b.held_episodes, b.held_steps) == (a.held_episodes, a.held_steps)
    for _ in range(3):
        assert_batches_equal(a.sample(), b.sample())
    more = episodes([4, 9], seed=11)
    a.add_episodes(*more)
    b.add_episodes(*more)  # the restored buffer evicts the same episodes
    assert_same(held(a), held(b))
    for _ in range(3):
        assert_batches_equal(a.sample(), b.sample())


def test_load_state_dict_refuses_a_state_that_does_not_fit() -> None:
    state = TrajectorySampler(OFFLINE, capacity=6).state_dict()
    with pytest.raises(ValueError, match="sampler state has capacity=6 but this sampler has capacity=7"):
        TrajectorySampler(OFFLINE, capacity=7).load_state_dict(state)
    with pytest.raises(ValueError, match="capacity=None but this sampler has capacity=6"):
        TrajectorySampler(OFFLINE, capacity=6).load_state_dict(TrajectorySampler(OFFLINE).state_dict())
    with pytest.raises(ValueError, match="gamma=1.0 but this sampler has gamma=0.9"):
        TrajectorySampler(OFFLINE, capacity=6, gamma=0.9).load_state_dict(state)
    shifted = Trajectories(OFFLINE.observations + 1.0, OFFLINE.actions, OFFLINE.rewards, offsets=OFFLINE.offsets)
    target, twin = (TrajectorySampler(shifted, capacity=6, seed=1) for _ in range(2))
    assert_batches_equal(target.sample(), twin.sample())
    with pytest.raises(ValueError, match="normalised with another state_mean"):
        target.load_state_dict(state)
    assert target.state_dict()["next_batch"] == 1
    assert_batches_equal(target.sample(), twin.sample())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o, a, r, n: (o, a, r, np.array([10, 0, 6])), r"lengths\[1\] = 0 must be in \[1, 16\]"),
        (lambda o, a, r, n: (o, a, r, np.array([10, 5])), "lengths sum to 15 but observations has 16 rows"),
        (lambda o, a, r, n: (o, a, r, np.array([10, 5, 5])), "lengths sum to more than the 16 rows"),
        (lambda o, a, r, n: (o, a, r, n.astype(np.float64)), "lengths must be an integer array, got dtype float64"),
        (lambda o, a, r, n: (o[:, :3], a, r, n), r"observations.shape\[1\] = 3 must equal state_dim = 4"),
        (lambda o, a, r, n: (o[0], a, r, n), "observations must have 2 dimensions, got 1"),
        (lambda o, a, r, n: (o, a[:15], r, n), r"actions.shape\[0\] = 15 must equal the number of observations = 16"),
        (lambda o, a, r, n: (o, a[:, :2], r, n), r"actions.shape\[1\] = 2 must equal act_dim = 3"),
        (lambda o, a, r, n: (o, a, r[:, None], n), "rewards must have 2 dimensions|rewards must have 1 dimensions"),
        (lambda o, a, r, n: (o, a, np.where(np.arange(16) == 7, np.nan, r), n), r"rewards\[7\] is not finite: nan"),
        (
            lambda o, a, r, n: (np.where(np.arange(16)[:, None] == 3, np.inf, o), a, r, n),
            r"observations\[3, 0\] is not finite: inf",
        ),
        (lambda o, a, r, n: (o.astype(np.complex64), a, r, n), "observations must be a real-valued array"),
    ],
)
def test_add_episodes_rejects_bad_input_naming_it_and_changes_nothing(change, message: str) -> None:
    sampler = TrajectorySampler(OFFLINE, batch_size=8, seed=2, capacity=10)
    first = sampler.sample()
    with pytest.raises(ValueError, match=message):
        sampler.add_episodes(*change(*episodes([10, 6], seed=12)))
    assert sampler.held_episodes == 8
    twin = TrajectorySampler(OFFLINE, batch_size=8, seed=2, capacity=10)
    assert_batches_equal(twin.sample(), first)
    assert_batches_equal(twin.sample(), sampler.sample())


def test_bad_capacity_and_appends_without_one() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="capacity must be None .* or an integer >= 1"):
            TrajectorySampler(OFFLINE, capacity=bad)
    with pytest.raises(ValueError, match="add_episodes needs a replay buffer"):
        TrajectorySampler(OFFLINE).add_episodes(*episodes([3], seed=0))


def test_core_refuses_empty_offline_episodes_in_a_buffer() -> None:
    from dt_fast import _C

    obs, act, rew = np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="a replay buffer holds whole episodes: episode 1 has no steps"):
        _C.SamplerCore(obs, act, rew, np.array([0, 4, 4, 10]), np.zeros(2), np.ones(2), 5, 2, 1.0, 1.0, 100, 3)
    core = _C.SamplerCore(obs, act, rew, np.array([0, 4, 10]), np.zeros(2), np.ones(2), 5, 2, 1.0, 1.0, 100, 3)
    with pytest.raises(ValueError, match=r"a restored buffer holds 1 to capacity = 3 episodes, got 4"):
        core.restored(np.zeros((4, 2)), np.zeros((4, 1)), np.zeros(4), np.ones(4, np.int64))
    with pytest.raises(ValueError, match=r"a restored buffer holds 1 to capacity = 3 episodes, got 0"):
        core.restored(np.zeros((0, 2)), np.zeros((0, 1)), np.zeros(0), np.zeros(0, np.int64))
