"""dt_fast.json: the evaluation metadata stored next to config.json and model.safetensors in a checkpoint directory.

Fields (DESIGN.md "Checkpoint directory"):
    format_version  int, 1
    state_mean      list of state_dim floats: mean of the dataset's observations
    state_std       list of state_dim floats (> 0): their standard deviation (the blog adds 1e-6)
    scale           float > 0: returns-to-go are divided by it (1000 for MuJoCo)
    env_id          str or null: environment the data came from
    context_len     int >= 1: K, steps in the model's window
    target_return   float: default return to condition on, environment units
    dataset         object or null: a summary of the training data (path, sizes, returns)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

METADATA_NAME = "dt_fast.json"
FORMAT_VERSION = 1


def write_metadata(path: str | os.PathLike, *, state_mean: Any, state_std: Any, scale: float, context_len: int,
                   target_return: float, env_id: str | None = None, dataset: dict[str, Any] | None = None) -> Path:
    """Validate and write `path`/dt_fast.json atomically (temporary file, fsync, rename); returns the file."""
    meta = {"format_version": FORMAT_VERSION, "state_mean": np.asarray(state_mean, dtype=np.float64).tolist(),
            "state_std": np.asarray(state_std, dtype=np.float64).tolist(), "scale": float(scale),
            "env_id": env_id, "context_len": context_len, "target_return": float(target_return),
            "dataset": _jsonable(dataset)}
    out = Path(path) / METADATA_NAME
    check_metadata(meta, source=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate `path`/dt_fast.json (or the file itself); raise naming the file and the bad key."""
    path = Path(path)
    file = path / METADATA_NAME if path.is_dir() else path
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such file (the checkpoint has no dt_fast metadata)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    check_metadata(meta, source=str(file))
    return meta


def check_metadata(meta: Any, source: str) -> None:
    """Raise ValueError naming `source` and the first missing or malformed field of a dt_fast.json dict."""
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source}: format_version must be {FORMAT_VERSION}, got {meta.get('format_version')!r}")
    for key in ("state_mean", "state_std"):
        value = meta.get(key)
        if (not isinstance(value, list) or not value
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                           for x in value)):
            raise ValueError(f"{source}: {key} must be a non-empty list of finite numbers, got {_short(value)}")
    if len(meta["state_mean"]) != len(meta["state_std"]):
        raise ValueError(f"{source}: state_mean has {len(meta['state_mean'])} values but state_std has "
                         f"{len(meta['state_std'])}")
    bad = [i for i, x in enumerate(meta["state_std"]) if x <= 0]
    if bad:
        raise ValueError(f"{source}: state_std must be positive, state_std[{bad[0]}] = {meta['state_std'][bad[0]]}")
    scale = meta.get("scale")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{source}: scale must be a positive number, got {scale!r}")
    k = meta.get("context_len")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{source}: context_len must be a positive int, got {k!r}")
    target = meta.get("target_return")
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target):
        raise ValueError(f"{source}: target_return must be a finite number, got {target!r}")
    if meta.get("env_id") is not None and not isinstance(meta["env_id"], str):
        raise ValueError(f"{source}: env_id must be a string or null, got {meta['env_id']!r}")
    if meta.get("dataset") is not None and not isinstance(meta["dataset"], dict):
        raise ValueError(f"{source}: dataset must be an object or null, got {type(meta['dataset']).__name__}")


def _jsonable(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into plain JSON types (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _short(value: Any) -> str:
    """A short repr for error messages."""
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
