"""Hypothesis fuzzing of the loaders: random episode lengths, dims, formats, NaN/inf placement and drop option."""

import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dt_fast import load_dataset


def write(path: Path, fmt: str, episodes: list[dict]) -> Path:
    """Write episodes with the format's own library: D4RL HDF5 (h5py), npz (numpy) or HF parquet (pyarrow)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table({k: [e[k].tolist() for e in episodes] for k in ("observations", "actions", "rewards", "dones")}),
            path,
        )
        return path
    arrays = {k: np.concatenate([e[k] for e in episodes]) for k in ("observations", "actions", "rewards")}
    arrays["terminals"] = np.concatenate([e["dones"] for e in episodes])
    arrays["timeouts"] = np.zeros_like(arrays["terminals"])
    if fmt == "npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    return path


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 25), min_size=1, max_size=8),
    state_dim=st.integers(1, 5),
    act_dim=st.integers(1, 3),
    fmt=st.sampled_from(["hdf5", "npz", "parquet"]),
    bad=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["observations", "actions", "rewards"]),
            st.integers(0, 10**6),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
    ),
    drop=st.booleans(),
)
def test_fuzz_loaders(
    lengths: list[int], state_dim: int, act_dim: int, fmt: str, bad: tuple | None, drop: bool
) -> None:
    rng = np.random.default_rng(len(lengths) * 7 + state_dim)
    episodes = []
    for n in lengths:
        dones = np.zeros(n, bool)
        dones[-1] = True
        episodes.append(
            {
                "observations": rng.normal(size=(n, state_dim)).astype(np.float32),
                "actions": rng.normal(size=(n, act_dim)).astype(np.float32),
                "rewards": rng.normal(size=n).astype(np.float32),
                "dones": dones,
            }
        )
    bad_episode = None
    if bad is not None:
        key, where, value = bad
        row = where % sum(lengths)
        bad_episode = int(np.searchsorted(np.cumsum(lengths), row, side="right"))
        step = row - (sum(lengths[:bad_episode]))
        episodes[bad_episode][key].reshape(lengths[bad_episode], -1)[step, 0] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / f"data.{fmt}", fmt, episodes)
        if bad is not None and not drop:
            with pytest.raises(
                ValueError,
                match=rf"data\.{fmt}: key '{bad[0]}' has a non-finite value at index "
                rf"\[{row}.*\(episode {bad_episode}, step {step}\)",
            ):
                load_dataset(path)
            return
        kept = [e for i, e in enumerate(episodes) if i != bad_episode]
        if not kept:
            with pytest.raises(ValueError, match="no steps left"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_dataset(path, drop_nonfinite=drop)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = load_dataset(path, drop_nonfinite=drop)
    assert t.num_episodes == len(kept) and t.state_dim == state_dim and t.act_dim == act_dim
    for i, e in enumerate(kept):
        got = t.episode(i)
        for key in ("observations", "actions", "rewards"):
            np.testing.assert_array_equal(got[key], e[key])
        np.testing.assert_array_equal(got["terminals"], e["dones"])
