"""Dataset loaders: each format written with its own library and read back; Trajectories; errors on bad input."""

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from dt_fast import Trajectories, load_dataset
from dt_fast.data.formats import bundled_path, detect_format


def random_episodes(lengths: list[int], state_dim: int = 3, act_dim: int = 2, seed: int = 0) -> list[dict]:
    """Episodes as dicts of float32 arrays; every episode but the last ends with a terminal."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i, n in enumerate(lengths):
        dones = np.zeros(n, bool)
        dones[-1] = i < len(lengths) - 1
        episodes.append(
            {
                "observations": rng.normal(size=(n, state_dim)).astype(np.float32),
                "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
                "rewards": rng.normal(size=n).astype(np.float32),
                "dones": dones,
            }
        )
    return episodes


def flat(episodes: list[dict]) -> dict[str, np.ndarray]:
    """D4RL layout of episodes: concatenated keys, terminals from dones, no timeouts."""
    cat = {k: np.concatenate([e[k] for e in episodes]) for k in ("observations", "actions", "rewards")}
    cat["terminals"] = np.concatenate([e["dones"] for e in episodes])
    cat["timeouts"] = np.zeros_like(cat["terminals"])
    return cat


def assert_matches(t: Trajectories, episodes: list[dict]) -> None:
    """t holds exactly these episodes, in order."""
    assert t.num_episodes == len(episodes)
    np.testing.assert_array_equal(t.episode_lengths, [len(e["rewards"]) for e in episodes])
    for i, e in enumerate(episodes):
        got = t.episode(i)
        for key in ("observations", "actions", "rewards"):
            np.testing.assert_array_equal(got[key], e[key])
        np.testing.assert_array_equal(got["terminals"], e["dones"])


def write_hdf5(path: Path, arrays: dict[str, np.ndarray], **attrs: str) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        f.attrs.update(attrs)
    return path


def hf_table(episodes: list[dict]):
    """The HF decision_transformer_gym_replay layout: one row per trajectory, lists of lists."""
    import pyarrow as pa

    return pa.table({k: [e[k].tolist() for e in episodes] for k in ("observations", "actions", "rewards", "dones")})


EPISODES = random_episodes([7, 1, 12, 5])


def test_d4rl_hdf5_splits_after_terminals_and_timeouts_and_keeps_the_last_episode(tmp_path: Path) -> None:
    arrays = flat(EPISODES)
    arrays["terminals"][6] = False
    arrays["timeouts"][6] = True  # the first episode ends on a timeout instead
    path = write_hdf5(tmp_path / "d.hdf5", arrays, env_id="HalfCheetah-v4", policy="ars")
    t = load_dataset(path)
    assert t.metadata == {"policy": "ars"}
    np.testing.assert_array_equal(t.offsets, [0, 7, 8, 20, 25])
    np.testing.assert_array_equal(t.observations, arrays["observations"])
    assert t.timeouts[6] and not t.terminals[6]
    assert t.env_id == "HalfCheetah-v4"
    assert t.observations.dtype == np.float32 and t.terminals.dtype == bool and t.offsets.dtype == np.int64


def test_hdf5_without_timeouts_loads(tmp_path: Path) -> None:
    arrays = flat(EPISODES)
    del arrays["timeouts"]
    with pytest.warns(UserWarning, match=r"v0\.h5: no 'timeouts' key and nothing to infer episode ends from"):
        assert_matches(load_dataset(write_hdf5(tmp_path / "v0.h5", arrays)), EPISODES)


@pytest.fixture(scope="module")
def embedded() -> dict:
    """The arrays and attributes of the bundled dataset (150 episodes, 10 of them cut by the 1,000-step limit)."""
    with h5py.File(bundled_path("hopper-medium-v4")) as f:
        return {"arrays": {k: f[k][()] for k in f}, "attrs": dict(f.attrs)}


@pytest.mark.parametrize("suffix", [".hdf5", ".npz"])
@pytest.mark.parametrize(
    "dropped, how",
    [
        (("timeouts",), "where 'next_observations' differs"),
        (("timeouts", "next_observations"), "from the 1000-step time limit of Hopper-v4"),
    ],
)
def test_time_limited_episodes_are_split_again_without_timeouts(
    tmp_path: Path, embedded: dict, suffix: str, dropped: tuple, how: str
) -> None:
    """D4RL v0 layout: without `timeouts`, 150 episodes loaded as 140, some 1,689 steps long, best return 5,342."""
    full = load_dataset("hopper-medium-v4")
    arrays = {k: v for k, v in embedded["arrays"].items() if k not in dropped}
    path = tmp_path / f"v0{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays, env_id="Hopper-v4")
    else:
        write_hdf5(path, arrays, **embedded["attrs"])
    with pytest.warns(
        UserWarning,
        match=rf"v0\{suffix}: no 'timeouts' key: inferred 10 time-limit episode end\(s\) "
        rf"{how}",
    ):
        t = load_dataset(path)
    assert (full.num_episodes, t.num_episodes) == (150, 150)
    np.testing.assert_array_equal(t.offsets, full.offsets)
    np.testing.assert_array_equal(t.timeouts, full.timeouts)
    assert t.episode_lengths.max() == 1000
    assert round(t.episode_returns.max(), 1) == round(full.episode_returns.max(), 1) == 3078.2


def test_merged_episodes_without_anything_to_split_them_by_warn(tmp_path: Path, embedded: dict) -> None:
    arrays = {k: v for k, v in embedded["arrays"].items() if k not in ("timeouts", "next_observations")}
    with pytest.warns(UserWarning, match="nothing to infer episode ends from"):
        t = load_dataset(write_hdf5(tmp_path / "anon.hdf5", arrays))  # no env_id attribute
    assert t.num_episodes == 140  # what the file says; the warning tells why it may be wrong


def test_next_observations_of_the_wrong_shape(tmp_path: Path) -> None:
    arrays = flat(EPISODES)
    del arrays["timeouts"]
    arrays["next_observations"] = arrays["observations"][:, :2]
    with pytest.raises(ValueError, match=r"n\.hdf5: key 'next_observations' has shape \(25, 2\)"):
        load_dataset(write_hdf5(tmp_path / "n.hdf5", arrays))


def test_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **flat(EPISODES), env_id="Hopper-v4")
    t = load_dataset(tmp_path / "d.npz")
    assert_matches(t, EPISODES)
    assert t.env_id == "Hopper-v4"


def test_parquet_file_and_directory(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(hf_table(EPISODES), tmp_path / "train.parquet")
    assert_matches(load_dataset(tmp_path / "train.parquet"), EPISODES)
    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(hf_table(EPISODES[:2]), tmp_path / "hub" / "data" / "train-00000-of-00002.parquet")
    pq.write_table(hf_table(EPISODES[2:]), tmp_path / "hub" / "data" / "train-00001-of-00002.parquet")
    t = load_dataset(tmp_path / "hub")
    assert_matches(t, EPISODES)
    assert t.timeouts[-1], "a row ending without done keeps its boundary as a timeout"


def test_datasets_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset(hf_table(EPISODES))
    ds.save_to_disk(str(tmp_path / "ds"))
    assert detect_format(tmp_path / "ds") == "hf_disk"
    assert_matches(load_dataset(tmp_path / "ds"), EPISODES)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    assert_matches(load_dataset(tmp_path / "dd"), EPISODES)


def test_minari_directory_and_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = random_episodes([6, 3, 9], state_dim=17, act_dim=6, seed=1)
    rng = np.random.default_rng(2)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=np.concatenate([e["observations"], rng.normal(size=(1, 17))]),
            actions=e["actions"],
            rewards=e["rewards"],
            terminations=e["dones"],
            truncations=np.zeros_like(e["dones"]),
        )
        for i, e in enumerate(episodes)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about missing author / permalink metadata
        minari.create_dataset_from_buffers(
            "dtfast/cheetah/toy-v0", buffers, env="HalfCheetah-v5", algorithm_name="random"
        )
    for source in ("dtfast/cheetah/toy-v0", tmp_path / "dtfast" / "cheetah" / "toy-v0"):
        t = load_dataset(source)
        assert_matches(t, episodes)
        assert t.env_id == "HalfCheetah-v5"


def test_save_writes_d4rl_layout_that_round_trips(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(hf_table(EPISODES), tmp_path / "t.parquet")
    t = load_dataset(tmp_path / "t.parquet")
    t.env_id, t.metadata = "Walker2d-v4", {"noise": np.array([0.0, 0.1])}
    t.save(tmp_path / "t.hdf5")
    with h5py.File(tmp_path / "t.hdf5") as f:
        assert set(f) == {"observations", "actions", "rewards", "terminals", "timeouts"}
        assert f.attrs["env_id"] == "Walker2d-v4"
    back = load_dataset(tmp_path / "t.hdf5")
    assert_matches(back, EPISODES)
    assert back.env_id == "Walker2d-v4"
    np.testing.assert_array_equal(back.metadata["noise"], [0.0, 0.1])


def test_stats_and_repr_match_the_blog_computation() -> None:
    t = Trajectories(**flat(EPISODES))
    states = np.vstack([obs for e in EPISODES for obs in e["observations"].tolist()])  # the blog's vstack
    np.testing.assert_array_equal(t.state_mean, np.mean(states, axis=0))
    np.testing.assert_array_equal(t.state_std, np.std(states, axis=0) + 1e-6)
    np.testing.assert_allclose(t.episode_returns, [e["rewards"].astype(np.float64).sum() for e in EPISODES])
    r = repr(t)
    assert "\n" not in r and "episodes=4" in r and "transitions=25" in r and "state_dim=3" in r
    assert f"{t.episode_returns.min():.4g}" in r


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_values_name_file_key_and_first_index(tmp_path: Path, key: str, value: float) -> None:
    arrays = flat(EPISODES)
    arrays[key][9] = value  # flat step 9 = episode 2, step 1
    arrays[key][15] = value
    path = write_hdf5(tmp_path / "bad.hdf5", arrays)
    index = r"\[9\]" if key == "rewards" else r"\[9, 0\]"
    with pytest.raises(
        ValueError,
        match=rf"bad\.hdf5: key '{key}' has a non-finite value at index {index} "
        r"\(episode 2, step 1\).*drop_nonfinite=True",
    ):
        load_dataset(path)
    with pytest.warns(UserWarning, match="dropping 1 episode"):
        t = load_dataset(path, drop_nonfinite=True)
    assert_matches(t, [EPISODES[0], EPISODES[1], EPISODES[3]])


def test_nonfinite_in_a_parquet_row_names_the_episode(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    episodes = random_episodes([4, 6])
    episodes[1]["actions"][3, 1] = np.nan
    pq.write_table(hf_table(episodes), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: key 'actions' .* index \[7, 1\] \(episode 1, step 3\)"):
        load_dataset(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("observations", np.array([["a", "b", "c"]] * 25), "holds strings \\(dtype <U1\\); expected real numbers"),
        ("observations", np.array([[b"a", b"b", b"c"]] * 25), "holds byte strings \\(dtype \\|S1\\)"),
        ("observations", np.ones((25, 3), np.complex64), "holds complex numbers \\(dtype complex64\\)"),
        ("actions", np.ones((25, 2), np.complex128) * 1j, "holds complex numbers \\(dtype complex128\\)"),
        ("rewards", np.ones(25, np.complex64), "holds complex numbers"),
        ("rewards", np.array(["1.0"] * 25), "holds strings"),
        ("terminals", np.where(np.arange(25) == 6, 0.5, 0.0), "must hold booleans or 0/1, got 0.5 at index \\[6\\]"),
        ("terminals", np.where(np.arange(25) == 3, np.nan, 0.0), "must hold booleans or 0/1, got nan at index \\[3\\]"),
        ("timeouts", np.where(np.arange(25) == 2, 2, 0), "must hold booleans or 0/1, got 2 at index \\[2\\]"),
        ("timeouts", np.array(["no"] * 25), "must hold booleans or 0/1, got dtype <U2"),
    ],
)
@pytest.mark.parametrize("suffix", [".hdf5", ".npz"])
def test_values_of_the_wrong_kind_name_file_and_key(
    tmp_path: Path, key: str, value: np.ndarray, message: str, suffix: str
) -> None:
    if suffix == ".hdf5" and value.dtype.kind == "U":
        value = value.astype("S")  # HDF5 stores fixed-length byte strings
        message = message.replace("strings", "byte strings").replace("<U", "\\|S")
    arrays = flat(EPISODES) | {key: value}
    path = tmp_path / f"kind{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        write_hdf5(path, arrays)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: key '{key}' {message}"):
        load_dataset(path)


def test_numeric_objects_and_integer_or_float_flags_are_accepted() -> None:
    arrays = flat(EPISODES)
    t = Trajectories(
        arrays["observations"].astype(object),
        arrays["actions"],
        arrays["rewards"],
        arrays["terminals"].astype(np.uint8),
        arrays["timeouts"].astype(np.float32),
    )
    assert_matches(t, EPISODES)


def test_keys_of_different_lengths(tmp_path: Path) -> None:
    arrays = flat(EPISODES)
    arrays["actions"] = arrays["actions"][:-1]
    with pytest.raises(ValueError, match=r"len\.hdf5: key 'actions' has 24 rows but key 'observations' has 25"):
        load_dataset(write_hdf5(tmp_path / "len.hdf5", arrays))
    episodes = random_episodes([4, 6])
    episodes[1]["rewards"] = episodes[1]["rewards"][:5]
    import pyarrow.parquet as pq

    pq.write_table(hf_table(episodes), tmp_path / "len.parquet")
    with pytest.raises(ValueError, match=r"key 'rewards' has 5 steps in row 1 but key 'observations' has 6"):
        load_dataset(tmp_path / "len.parquet")


@pytest.mark.parametrize("key, shape", [("observations", (25,)), ("actions", (25, 2, 1)), ("rewards", (25, 1))])
def test_wrong_rank(tmp_path: Path, key: str, shape: tuple) -> None:
    arrays = flat(EPISODES)
    arrays[key] = np.zeros(shape, np.float32)
    np.savez(tmp_path / "rank.npz", **arrays)
    with pytest.raises(ValueError, match=rf"rank\.npz: key '{key}' must have rank"):
        load_dataset(tmp_path / "rank.npz")


def test_wrong_rank_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = hf_table(EPISODES)
    flat_obs = pa.array([e["observations"].reshape(-1).tolist() for e in EPISODES])  # one list per row, not per step
    pq.write_table(table.set_column(0, "observations", flat_obs), tmp_path / "r.parquet")
    with pytest.raises(ValueError, match=r"r\.parquet: key 'observations' must hold a list per step"):
        load_dataset(tmp_path / "r.parquet")
    ragged_obs = [e["observations"].tolist() for e in EPISODES]
    ragged_obs[2][4] = ragged_obs[2][4][:2]  # one step of row 2 has 2 values instead of 3
    pq.write_table(table.set_column(0, "observations", pa.array(ragged_obs)), tmp_path / "s.parquet")
    with pytest.raises(ValueError, match=r"s\.parquet: key 'observations' has 2 values at row 2, step 4"):
        load_dataset(tmp_path / "s.parquet")


@pytest.mark.parametrize("suffix", [".hdf5", ".npz"])
def test_missing_key(tmp_path: Path, suffix: str) -> None:
    arrays = flat(EPISODES)
    del arrays["actions"]
    path = tmp_path / f"miss{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        write_hdf5(path, arrays)
    with pytest.raises(ValueError, match=rf"miss\{suffix}: missing key 'actions'"):
        load_dataset(path)


def test_missing_column_in_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(hf_table(EPISODES).drop_columns(["dones"]), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"m\.parquet: missing key 'dones'"):
        load_dataset(tmp_path / "m.parquet")


@pytest.mark.parametrize("suffix", [".hdf5", ".npz", ".parquet"])
def test_truncated_and_corrupt_files(tmp_path: Path, suffix: str) -> None:
    import pyarrow.parquet as pq

    good = tmp_path / f"good{suffix}"
    if suffix == ".hdf5":
        write_hdf5(good, flat(EPISODES))
    elif suffix == ".npz":
        np.savez(good, **flat(EPISODES))
    else:
        pq.write_table(hf_table(EPISODES), good)
    data = good.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"junk{suffix}").write_bytes(b"\x00garbage" * 64)
    for name in ("cut", "junk"):
        with pytest.raises(ValueError, match=rf"{name}\{suffix}: cannot"):
            load_dataset(tmp_path / f"{name}{suffix}")


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"data\.csv: unknown dataset format"):
        load_dataset(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unknown dataset directory"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset(tmp_path / "nope.hdf5")


def test_zero_length_episodes_are_skipped_with_a_warning() -> None:
    arrays = flat(EPISODES)
    offsets = np.array([0, 7, 7, 8, 20, 25, 25])
    with pytest.warns(UserWarning, match="skipping 2 zero-length episode"):
        t = Trajectories(arrays["observations"], arrays["actions"], arrays["rewards"], offsets=offsets)
    np.testing.assert_array_equal(t.offsets, [0, 7, 8, 20, 25])


def test_empty_parquet_row_is_skipped(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    empty = {
        "observations": np.zeros((0, 3), np.float32),
        "actions": np.zeros((0, 2), np.float32),
        "rewards": np.zeros(0, np.float32),
        "dones": np.zeros(0, bool),
    }
    episodes = [EPISODES[0], empty, EPISODES[1]]
    pq.write_table(hf_table(episodes), tmp_path / "e.parquet")
    with pytest.warns(UserWarning, match=r"e\.parquet: skipping 1 zero-length episode\(s\), first at episode 1"):
        t = load_dataset(tmp_path / "e.parquet")
    assert t.num_episodes == 2


def test_bad_offsets_and_empty_dataset() -> None:
    arrays = flat(EPISODES)
    with pytest.raises(ValueError, match="offsets decrease at index 2"):
        Trajectories(arrays["observations"], arrays["actions"], arrays["rewards"], offsets=np.array([0, 9, 3, 25]))
    with pytest.raises(ValueError, match="must run from 0 to 25"):
        Trajectories(arrays["observations"], arrays["actions"], arrays["rewards"], offsets=np.array([0, 20]))
    with pytest.raises(ValueError, match="no steps"):
        Trajectories(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0))
