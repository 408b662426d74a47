"""Dataset formats: D4RL HDF5, .npz, Hugging Face parquet / save_to_disk, Minari; each loader returns Trajectories.

Every loader validates through `Trajectories`, so errors name the file, the file's key and the first bad index.
Datasets shipped inside the package (dt_fast/datasets/) are loaded by name: `load_dataset("hopper-medium-v4")`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dt_fast.data.trajectories import Trajectories, split_episodes
from dt_fast.extras import require

D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals")  # `timeouts` is optional (D4RL v0 lacks it)
HF_KEYS = ("observations", "actions", "rewards", "dones")
HDF5_MAGIC, ZIP_MAGIC, PARQUET_MAGIC = b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"PAR1"
BUNDLED = {"hopper-medium-v4": "hopper_medium_v4.hdf5"}
"""Datasets shipped in dt_fast/datasets/, by name (see its README.md for how each was made)."""
DEFAULT_DATASET = "hopper-medium-v4"


def load_dataset(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """Load a dataset into `Trajectories`: a bundled one by name, or a file or directory (format from its suffix,
    magic bytes or layout).

    Args:
        source: the name of a bundled dataset (a key of `BUNDLED`, e.g. "hopper-medium-v4"; a path that exists is
            taken as a path first), a D4RL HDF5 file (.hdf5 / .h5), an .npz with the same keys, a Hugging Face
            .parquet file or directory of them, a `datasets` `save_to_disk` directory, or a Minari dataset (a
            directory or an id under the Minari root).
        drop_nonfinite: drop the episodes holding a NaN or inf (with a warning) instead of raising.

    Returns:
        The episodes: observations (N, state_dim), actions (N, act_dim), rewards (N,), episode offsets (E + 1,).

    Raises:
        FileNotFoundError: `source` is neither a bundled name, an existing path nor a Minari id.
        ValueError: an unknown format, or a malformed dataset; the message names the file, the key and the first
            bad index.
        ImportError: the format needs an extra that is not installed (`[formats]` for parquet, `datasets`, Minari).
    """
    path = bundled_path(str(source)) if str(source) in BUNDLED and not Path(source).exists() else source
    return LOADERS[detect_format(path)](path, drop_nonfinite=drop_nonfinite)


def bundled_path(name: str) -> Path:
    """The file of the dataset shipped with dt_fast under `name`.

    Raises:
        ValueError: `name` is not a key of `BUNDLED`; the message lists the bundled names.
    """
    if name not in BUNDLED:
        raise ValueError(f"no bundled dataset named {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    return Path(__file__).resolve().parents[1] / "datasets" / BUNDLED[name]


def detect_format(source: str | os.PathLike) -> str:
    """The format of a dataset path: 'hdf5', 'npz', 'parquet', 'hf_disk' or 'minari'."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".hdf5", ".h5"):
            return "hdf5"
        if suffix == ".npz":
            return "npz"
        if suffix == ".parquet":
            return "parquet"
        with open(path, "rb") as f:
            head = f.read(8)
        for magic, fmt in ((HDF5_MAGIC, "hdf5"), (ZIP_MAGIC, "npz"), (PARQUET_MAGIC, "parquet")):
            if head.startswith(magic):
                return fmt
        raise ValueError(
            f"{path}: unknown dataset format (expected .hdf5/.h5, .npz, .parquet, a datasets "
            f"save_to_disk directory or a Minari dataset)"
        )
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf_disk"
        if (path / "data" / "metadata.json").is_file() or (path / "metadata.json").is_file():
            return "minari"
        if next(path.rglob("*.parquet"), None) is not None:
            return "parquet"
        raise ValueError(
            f"{path}: unknown dataset directory (no datasets state.json / dataset_dict.json, no "
            f"Minari metadata.json, no .parquet files)"
        )
    if _minari_data_dir(str(source)) is not None:
        return "minari"
    raise FileNotFoundError(
        f"{source}: no such file or directory, and no Minari dataset of that id under {_minari_root()}"
    )


def load_hdf5(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """A D4RL HDF5 file: observations, actions, rewards, terminals, timeouts (optional); root attributes (env_id,
    ...) are kept as env_id and metadata."""
    import h5py

    try:
        f = h5py.File(source, "r")
    except OSError as err:
        raise ValueError(f"{source}: cannot open as HDF5 (corrupt or truncated file?): {err}") from err
    with f:
        names = sorted(f.keys())
        arrays = {}
        optional = ("timeouts",) if "timeouts" in f else ("next_observations",)  # the latter to infer the former
        for key in (*D4RL_REQUIRED, *optional):
            if key not in f:
                if key in optional:
                    continue
                raise ValueError(f"{source}: missing key {key!r} (keys in the file: {names})")
            if not isinstance(f[key], h5py.Dataset):
                raise ValueError(f"{source}: key {key!r} is a group, expected an array")
            try:
                arrays[key] = f[key][()]
            except (OSError, RuntimeError) as err:
                raise ValueError(f"{source}: cannot read key {key!r} (corrupt or truncated file?): {err}") from err
        attrs = {k: _text(v) if isinstance(v, (bytes, str)) else v for k, v in f.attrs.items()}
    env_id = attrs.pop("env_id", None)
    if "timeouts" not in arrays:
        arrays["timeouts"] = infer_timeouts(arrays, env_id, str(source))
    arrays.pop("next_observations", None)
    return Trajectories(**arrays, env_id=env_id, metadata=attrs, source=str(source), drop_nonfinite=drop_nonfinite)


def load_npz(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """An .npz with the D4RL keys (timeouts optional); an optional 0-d `env_id` string."""
    import zipfile

    try:
        with np.load(source, allow_pickle=False) as f:
            found = {k: f[k] for k in f.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:  # numpy reads a non-zip as a pickle
        raise ValueError(f"{source}: cannot read as .npz (corrupt or truncated file?): {err}") from err
    for key in D4RL_REQUIRED:
        if key not in found:
            raise ValueError(f"{source}: missing key {key!r} (keys in the file: {sorted(found)})")
    arrays = {k: found[k] for k in (*D4RL_REQUIRED, "timeouts", "next_observations") if k in found}
    env_id = str(found["env_id"]) if "env_id" in found else None
    if "timeouts" not in arrays:
        arrays["timeouts"] = infer_timeouts(arrays, env_id, str(source))
    arrays.pop("next_observations", None)
    return Trajectories(**arrays, env_id=env_id, source=str(source), drop_nonfinite=drop_nonfinite)


def infer_timeouts(arrays: dict[str, np.ndarray], env_id: str | None, source: str) -> np.ndarray:
    """`timeouts` [N] for a D4RL-layout file without them (D4RL v0), whose time-limited episodes would otherwise
    merge with the next: an episode ends where `next_observations[i]` differs from `observations[i + 1]` (exact,
    when the file has next_observations); else every time limit of `env_id` within a run of steps longer than it
    (episodes cut by the limit are exactly that long). A warning gives the count, or says that nothing could be
    inferred."""
    obs, terminals = np.asarray(arrays["observations"]), np.asarray(arrays["terminals"])
    timeouts = np.zeros(len(terminals), bool)
    numeric = obs.dtype.kind in "biuf" and terminals.dtype.kind in "biuf"
    if obs.ndim != 2 or len(obs) != len(terminals) or not numeric:
        return timeouts  # Trajectories reports the malformed keys
    terminals = terminals != 0
    nxt = arrays.get("next_observations")
    if nxt is not None:
        nxt = np.asarray(nxt)
        if nxt.shape != obs.shape or nxt.dtype.kind not in "biuf":
            raise ValueError(
                f"{source}: key 'next_observations' has shape {nxt.shape} dtype {nxt.dtype}; expected "
                f"the shape of 'observations' {obs.shape}, real numbers"
            )
        ends = np.flatnonzero((nxt[:-1] != obs[1:]).any(axis=1))  # (M,) last steps of episodes
        timeouts[ends] = ~terminals[ends]
        how = "where 'next_observations' differs from the next step's 'observations'"
    else:
        limit = _time_limit(env_id)
        if limit is None:
            warnings.warn(
                f"{source}: no 'timeouts' key and nothing to infer episode ends from (no "
                f"'next_observations', no known env id): episodes are split at terminals only, so an "
                f"episode cut by a time limit is merged with the next; add a 'timeouts' key (all false "
                f"if no episode was cut)",
                stacklevel=4,
            )
            return timeouts
        offsets = split_episodes(terminals, timeouts)
        for start, length in zip(offsets[:-1], np.diff(offsets)):
            timeouts[start + np.arange(limit, length, limit) - 1] = True
        how = f"from the {limit}-step time limit of {env_id}"
    if timeouts.any():
        warnings.warn(
            f"{source}: no 'timeouts' key: inferred {int(timeouts.sum())} time-limit episode end(s) {how}", stacklevel=4
        )
    return timeouts


def _time_limit(env_id: str | None) -> int | None:
    """max_episode_steps of `env_id`, or None if the id is missing or unknown."""
    if not env_id:
        return None
    from dt_fast.envs import env_spec

    try:
        return env_spec(env_id).max_episode_steps
    except (ValueError, ImportError):
        return None


def load_parquet(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """HF decision_transformer_gym_replay layout as parquet: a file, or every .parquet under a directory."""
    pa = require("pyarrow", f"{source}: reading parquet")
    import pyarrow.parquet as pq

    path = Path(source)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files])
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{source}: cannot read parquet (corrupt or truncated file?): {err}") from err
    return _from_rows(table, str(source), drop_nonfinite)


def load_hf_disk(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """A `datasets.Dataset` (or the train split of a DatasetDict) written by `save_to_disk`."""
    datasets = require("datasets", f"{source}: reading a datasets directory")

    try:
        ds = datasets.load_from_disk(str(source))
    except Exception as err:  # datasets raises many types for a damaged directory
        raise ValueError(f"{source}: cannot load with datasets.load_from_disk: {err}") from err
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise ValueError(f"{source}: DatasetDict without a 'train' split and several splits {list(ds)}")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return _from_rows(ds.with_format("arrow")[:], str(source), drop_nonfinite)


def load_minari(source: str | os.PathLike, *, drop_nonfinite: bool = False) -> Trajectories:
    """A Minari dataset: its directory (or its data/ directory), or an id under the Minari data path."""
    minari = require("minari", f"{source}: reading a Minari dataset")

    path = Path(source)
    if path.is_dir():
        data_dir = path / "data" if (path / "data").is_dir() else path
    else:
        data_dir = _minari_data_dir(str(source))
    try:
        ds = minari.MinariDataset(data_dir)
        episodes = list(ds.iterate_episodes())
    except Exception as err:  # minari raises many types for a damaged dataset
        raise ValueError(f"{source}: cannot read Minari dataset: {err}") from err
    obs, act, rew, term, trunc = [], [], [], [], []
    for i, ep in enumerate(episodes):
        if not isinstance(ep.observations, np.ndarray) or not isinstance(ep.actions, np.ndarray):
            raise ValueError(
                f"{source}: episode {i}: only Box observation and action spaces are supported, got "
                f"{type(ep.observations).__name__} observations / {type(ep.actions).__name__} actions"
            )
        if len(ep.observations) != len(ep.rewards) + 1:
            raise ValueError(
                f"{source}: key 'observations' of episode {i} has {len(ep.observations)} rows, "
                f"expected {len(ep.rewards) + 1} (steps + the final observation)"
            )
        obs.append(ep.observations[:-1].reshape(len(ep.rewards), -1))  # drop the observation after the last step
        act.append(ep.actions.reshape(len(ep.actions), -1))
        rew.append(ep.rewards)
        term.append(ep.terminations)
        trunc.append(ep.truncations)
    if not episodes:
        raise ValueError(f"{source}: the Minari dataset has no episodes")
    lengths = [len(r) for r in rew]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    env_spec = ds.env_spec
    return Trajectories(
        np.concatenate(obs),
        np.concatenate(act),
        np.concatenate(rew),
        np.concatenate(term),
        np.concatenate(trunc),
        offsets,
        env_id=env_spec.id if env_spec is not None else None,
        source=str(source),
        keys={"terminals": "terminations", "timeouts": "truncations"},
        drop_nonfinite=drop_nonfinite,
    )


LOADERS: dict[str, Callable[..., Trajectories]] = {
    "hdf5": load_hdf5,
    "npz": load_npz,
    "parquet": load_parquet,
    "hf_disk": load_hf_disk,
    "minari": load_minari,
}


def _from_rows(table, source: str, drop_nonfinite: bool) -> Trajectories:
    """One trajectory per row (observations, actions, rewards, dones list columns) to Trajectories."""
    import pyarrow.compute as pc

    missing = [k for k in HF_KEYS if k not in table.column_names]
    if missing:
        raise ValueError(f"{source}: missing key {missing[0]!r} (columns: {table.column_names})")
    columns, lengths = {}, {}
    for key in HF_KEYS:
        col = table.column(key).combine_chunks()
        if col.null_count:
            raise ValueError(f"{source}: key {key!r} is null at row {int(np.flatnonzero(col.is_null())[0])}")
        if not hasattr(col, "flatten"):
            raise ValueError(f"{source}: key {key!r} must hold one list per trajectory, got type {col.type}")
        lengths[key] = np.asarray(pc.list_value_length(col), dtype=np.int64)  # (E,) steps per row
        columns[key] = col.flatten()
    arrays = {k: _step_matrix(columns[k], lengths[k], k, source) for k in ("observations", "actions")}
    for key in ("rewards", "dones"):
        if hasattr(columns[key], "flatten"):
            raise ValueError(f"{source}: key {key!r} must hold one scalar per step, got type {columns[key].type}")
        arrays[key] = np.asarray(columns[key].to_numpy(zero_copy_only=False))  # (N,)
    for key in ("actions", "rewards", "dones"):
        bad = np.flatnonzero(lengths[key] != lengths["observations"])
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"{source}: key {key!r} has {lengths[key][i]} steps in row {i} but key "
                f"'observations' has {lengths['observations'][i]}: keys must have equal lengths"
            )
    offsets = np.concatenate([[0], np.cumsum(lengths["observations"])]).astype(np.int64)
    dones = arrays["dones"].astype(bool)
    timeouts = np.zeros_like(dones)
    ends = offsets[1:][offsets[1:] > offsets[:-1]] - 1
    timeouts[ends] = ~dones[ends]  # a row that ends without `done` was cut off: keep the boundary on save
    return Trajectories(
        arrays["observations"],
        arrays["actions"],
        arrays["rewards"],
        dones,
        timeouts,
        offsets,
        source=source,
        keys={"terminals": "dones"},
        drop_nonfinite=drop_nonfinite,
    )


def _step_matrix(values, row_lengths: np.ndarray, key: str, source: str) -> np.ndarray:
    """Per-step lists (one per step) of equal size to a [N, dim] array; row_lengths [E] locate a bad step."""
    import pyarrow.compute as pc

    if not hasattr(values, "flatten"):
        raise ValueError(f"{source}: key {key!r} must hold a list per step (rank 2 per trajectory), got {values.type}")
    sizes = np.asarray(pc.list_value_length(values), dtype=np.int64)  # (N,)
    if len(sizes) and (sizes != sizes[0]).any():
        step = int(np.flatnonzero(sizes != sizes[0])[0])
        row = int(np.searchsorted(np.cumsum(row_lengths), step, side="right"))
        raise ValueError(
            f"{source}: key {key!r} has {sizes[step]} values at row {row}, step "
            f"{step - int(row_lengths[:row].sum())}, but {sizes[0]} at row 0, step 0"
        )
    dim = int(sizes[0]) if len(sizes) else 1
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False)).reshape(len(sizes), dim)


def _text(value: bytes | str) -> str:
    """An HDF5 string attribute as str (h5py may return bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _minari_root() -> Path:
    """The Minari data path (MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def _minari_data_dir(dataset_id: str) -> Path | None:
    """The data/ directory of a Minari dataset id under the Minari data path, if it exists."""
    data_dir = _minari_root() / dataset_id / "data"
    return data_dir if (data_dir / "metadata.json").is_file() else None
