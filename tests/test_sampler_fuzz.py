"""Hypothesis fuzzing of the sampler: random episode lengths (empty ones included), dims, options and indices."""

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dt_fast import Trajectories, TrajectorySampler
from dt_fast.data.reference_sampler import reference_windows

lengths_st = st.lists(st.integers(0, 30), min_size=1, max_size=10).filter(lambda lengths: sum(lengths) > 0)


def build(lengths: list[int], state_dim: int, act_dim: int, seed: int) -> Trajectories:
    """Episodes of the given lengths (zero-length ones skipped with a warning)."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trajectories(
            rng.normal(size=(n, state_dim)) * rng.uniform(0.1, 5.0, size=state_dim),
            rng.normal(size=(n, act_dim)),
            rng.normal(size=n),
            offsets=offsets,
        )


@settings(max_examples=300, deadline=None)
@given(
    lengths=lengths_st,
    state_dim=st.integers(1, 6),
    act_dim=st.integers(1, 4),
    context_len=st.integers(1, 40),
    batch_size=st.integers(1, 9),
    gamma=st.sampled_from([1.0, 0.99, 0.5, 0.0]),
    scale=st.sampled_from([1.0, 1000.0, -2.5]),
    max_ep_len=st.integers(1, 50),
    seed=st.integers(0, 2**64 - 1),
    num_threads=st.integers(1, 3),
)
def test_fuzz_sampler_equals_reference(
    lengths: list[int],
    state_dim: int,
    act_dim: int,
    context_len: int,
    batch_size: int,
    gamma: float,
    scale: float,
    max_ep_len: int,
    seed: int,
    num_threads: int,
) -> None:
    data = build(lengths, state_dim, act_dim, seed % 1000)
    sampler = TrajectorySampler(
        data,
        context_len=context_len,
        batch_size=batch_size,
        scale=scale,
        gamma=gamma,
        max_ep_len=max_ep_len,
        seed=seed,
        num_threads=num_threads,
    )
    for k in range(3):
        batch = sampler.sample()
        episode, start = sampler.draws(k)
        assert ((0 <= start) & (start < data.episode_lengths[episode])).all()
        expected = reference_windows(data, episode, start, context_len, scale, gamma, max_ep_len)
        for key, value in expected.items():
            np.testing.assert_array_equal(batch[key].numpy(), value, err_msg=key)


@settings(max_examples=200, deadline=None)
@given(
    lengths=lengths_st,
    episode=st.lists(st.integers(-3, 12), min_size=1, max_size=6),
    start=st.lists(st.integers(-3, 35), min_size=1, max_size=6),
)
def test_fuzz_indices_are_checked(lengths: list[int], episode: list[int], start: list[int]) -> None:
    data = build(lengths, 2, 1, 0)
    sampler = TrajectorySampler(data, context_len=7)
    episode, start = np.array(episode), np.array(start[: len(episode)] + [0] * (len(episode) - len(start)))
    valid = (0 <= episode) & (episode < data.num_episodes)
    valid &= (0 <= start) & (start < data.episode_lengths[np.where(valid, episode, 0)])
    try:
        got = sampler.windows(episode, start)
    except ValueError as err:
        assert not valid.all(), err
        first = int(np.flatnonzero(~valid)[0])
        assert f"[{first}] = " in str(err)
        return
    assert valid.all()
    for key, value in reference_windows(data, episode, start, 7).items():
        np.testing.assert_array_equal(got[key].numpy(), value, err_msg=key)
