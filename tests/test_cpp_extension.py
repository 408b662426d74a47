"""The compiled module dt_fast._C is built and its first function agrees with numpy."""

import numpy as np
import pytest

import dt_fast


def discounted_returns(rewards: np.ndarray, offsets: np.ndarray, gamma: float) -> np.ndarray:
    out = np.zeros_like(rewards, dtype=np.float64)
    for start, end in zip(offsets[:-1], offsets[1:]):
        acc = 0.0
        for t in range(end - 1, start - 1, -1):
            acc = rewards[t] + gamma * acc
            out[t] = acc
    return out


def test_extension_is_built() -> None:
    assert dt_fast.HAS_C_EXT, "dt_fast._C did not import: the C++ build is broken"


@pytest.mark.parametrize("gamma", [1.0, 0.99, 0.0])
def test_returns_to_go_matches_numpy(gamma: float) -> None:
    rng = np.random.default_rng(0)
    offsets = np.array([0, 1, 1, 40, 41, 300])  # includes an empty and a one-step episode
    rewards = rng.normal(size=300).astype(np.float32)
    got = dt_fast._C.returns_to_go(rewards, offsets, gamma)
    np.testing.assert_allclose(got, discounted_returns(rewards, offsets, gamma), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "offsets, message",
    [
        ([1, 5], "must start at 0"),
        ([0, 4], r"last episode offset \(4\) must equal the number of steps \(5\)"),
        ([0, 3, 2, 5], r"non-decreasing: offsets\[1\] = 3 > offsets\[2\] = 2"),
        ([], "at least one entry"),
    ],
)
def test_returns_to_go_rejects_bad_offsets(offsets: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dt_fast._C.returns_to_go(np.zeros(5, np.float32), np.array(offsets, dtype=np.int64), 1.0)


def test_returns_to_go_refuses_conversions_that_lose_values() -> None:
    """Inputs are converted to the dtype the C++ reads (a list, int32 offsets, float64 rewards are fine), but not
    fractional offsets or complex rewards."""
    rewards = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(dt_fast._C.returns_to_go(rewards, np.array([0, 3], np.int32)), [6.0, 5.0, 3.0])
    np.testing.assert_array_equal(dt_fast._C.returns_to_go([1, 2, 3], [0, 1, 3]), [1.0, 5.0, 3.0])
    with pytest.raises(ValueError, match="offsets must be an integer array, got dtype float64"):
        dt_fast._C.returns_to_go(rewards, np.array([0.0, 1.5, 3.0]))
    with pytest.raises(ValueError, match="rewards must be a real-valued array, got dtype complex128"):
        dt_fast._C.returns_to_go(rewards + 1j, np.array([0, 3]))
