"""Every file dt_fast writes or reads in a checkpoint or run directory, and the one way it writes files.

A checkpoint directory (DESIGN.md "Checkpoint directory"):
    config.json        transformers' DecisionTransformerConfig (dt_fast.config)
    model.safetensors  the weights in transformers' layout (GPT-2 projections stored as Conv1D, in x out);
                       pytorch_model.bin is read too, without executing pickles
    dt_fast.json       `Metadata`: what evaluation needs (state statistics, reward scale, env id, context length,
                       default target return, a summary of the training data)
A run directory (dt_fast.train) adds:
    train_state.pt     the resume state (model, optimiser, scheduler, sampler, RNG, step), tensors only
    train_config.json  the resolved TrainConfig of the run
    log.csv, tensorboard/  the run's log (step, key, value rows) and TensorBoard scalars
A run directory is never trained into again unless asked (`check_run_dir`): resume it, or overwrite it.

Owners: this module owns the formats and `atomic_write`, the helper every file of dt_fast goes through (a
temporary file in the same directory, fsync, rename: a reader sees the old file or the new one, never half of
one; on failure the temporary file is removed and the error says what was kept), and `check_output`, the one
rule for outputs checked before any work (nothing existing is replaced unless asked, no directory is created).
dt_fast.model owns the Module, dt_fast.train what goes into the train state.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dt_fast.config import DecisionTransformerConfig

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
METADATA_NAME = "dt_fast.json"
TRAIN_STATE_NAME = "train_state.pt"
TRAIN_CONFIG_NAME = "train_config.json"
LOG_NAME = "log.csv"
TENSORBOARD_NAME = "tensorboard"
RUN_NAMES = (
    TRAIN_STATE_NAME,
    TRAIN_CONFIG_NAME,
    LOG_NAME,
    TENSORBOARD_NAME,
    CONFIG_NAME,
    SAFE_WEIGHTS_NAME,
    METADATA_NAME,
)
"""What a run directory holds; any of them marks a directory as a dt_fast run (or checkpoint)."""
METADATA_VERSION = 1
ACTION_HEADS = ("deterministic", "stochastic")

# GPT-2 keeps these as Conv1D (weight shape in x out); dt_fast's model uses nn.Linear (out x in).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers of older GPT-2 checkpoints: not weights.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# transformers names GPT-2's embedding tables `<name>.weight`; dt_fast's model holds them as a parameter and a buffer.
TABLE_KEYS = {"encoder.wpe": "encoder.wpe.weight", "encoder.wte": "encoder.wte.weight"}


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path` (fsync, rename).

    Any error (KeyboardInterrupt included) removes the temporary file.

    Raises:
        OSError: writing failed with an OSError or RuntimeError (a full disk: torch.save raises the latter); the
            message names `path` and says whether an older version of it was kept. Other errors propagate
            unchanged.
    """
    path = Path(path)
    # The temporary name keeps the suffix: writers such as ffmpeg choose the format from it.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise OSError(f"{path}: could not write the file ({err}); {kept}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically.

    Raises:
        OSError: as `atomic_write`.
    """
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def check_output(path: str | os.PathLike, overwrite: bool, kind: str, directory: bool = False) -> Path:
    """Refuse, before any work, an output `path` that cannot be written or that would replace one unasked.

    The one rule for what dt_fast writes: an existing `path` (a file, or a directory for outputs that are
    directories, such as a run) is an error unless `overwrite`; its parent directory must exist (it is not
    created) and be writable.

    Args:
        path: the output file, or directory when `directory`.
        overwrite: allow an existing `path`.
        kind: names the output in the messages, e.g. "--out".
        directory: the output is a directory.

    Raises:
        FileExistsError: `path` exists and not `overwrite`.
        FileNotFoundError: the parent directory does not exist.
        PermissionError: the parent directory cannot be written.
        ValueError: a directory where a file is expected, or the reverse.
    """
    path = Path(path)
    expected = "directory" if directory else "file"
    if path.exists():
        if path.is_dir() != directory:
            raise ValueError(f"{kind} {path} is a {'directory' if path.is_dir() else 'file'}, expected a {expected}")
        if not overwrite:
            raise FileExistsError(f"{kind} {path} already exists; pass --overwrite to replace it")
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(f"{kind} {path}: the directory {parent} does not exist (it is not created)")
    if not parent.is_dir():
        raise PermissionError(f"{kind} {path}: cannot write there ({parent} is not a directory)")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise PermissionError(f"{kind} {path}: cannot write there ({err.strerror or err})") from None
    return path


def read_config(path: str | os.PathLike) -> DecisionTransformerConfig:
    """The config.json of checkpoint directory `path` (written by dt_fast or by transformers).

    Raises:
        FileNotFoundError: `path` is not a directory or has no config.json.
        ValueError: config.json is malformed; the message names the file and field.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory")
    return DecisionTransformerConfig.from_json_file(path / CONFIG_NAME)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of checkpoint directory `path` in transformers' layout (name -> tensor on the CPU):
    model.safetensors, else pytorch_model.bin loaded without executing pickles.

    Raises:
        FileNotFoundError: neither file exists.
        ValueError: the file is unreadable (corrupt, or a pickle that is not plain tensors).
    """
    path = Path(path)
    safe, pt = path / SAFE_WEIGHTS_NAME, path / TORCH_WEIGHTS_NAME
    if safe.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safe))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{safe}: unreadable safetensors file ({err})") from None
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt or unsafe pickles
            raise ValueError(f"{pt}: unreadable weights file ({err})") from None
    raise FileNotFoundError(f"{path}: no weights: expected {SAFE_WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME}")


def write_model(
    path: str | os.PathLike, config: DecisionTransformerConfig, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Write config.json and model.safetensors (transformers' layout, as `hf_state_dict` gives) into `path`."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_write(path / SAFE_WEIGHTS_NAME) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        except SafetensorError as err:  # a full disk surfaces as this type: let atomic_write report it as an OSError
            raise OSError(str(err)) from err
    write_text(path / CONFIG_NAME, config.to_json_string())


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a dt_fast DecisionTransformer in transformers' layout (GPT-2 projections as Conv1D)."""
    out = {}
    for key, value in model.state_dict().items():
        key = TABLE_KEYS.get(key, key)
        out[key] = value.t() if key.endswith(CONV1D_SUFFIXES) else value
    return out


def load_hf_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load weights in transformers' layout into `model`.

    Raises:
        ValueError: missing, unexpected or mis-shaped keys; the message names `source` and the keys.
    """
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    expected = hf_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not match the config: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    own_keys = {hf: own for own, hf in TABLE_KEYS.items()}
    own = {}
    for key, ref in expected.items():
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(value.shape)}, the config implies {tuple(ref.shape)}"
            )
        own[own_keys.get(key, key)] = value.t() if key.endswith(CONV1D_SUFFIXES) else value
    model.load_state_dict(own)


@dataclass(frozen=True)
class Metadata:
    """dt_fast.json: what evaluating a checkpoint needs beyond its weights; validated on construction."""

    state_mean: tuple[float, ...]
    """Mean of the dataset's observations, state_dim finite floats."""
    state_std: tuple[float, ...]
    """Their standard deviation (the blog adds 1e-6), state_dim positive floats."""
    scale: float
    """Returns-to-go are divided by it (1000 for MuJoCo)."""
    context_len: int
    """K: steps in the model's window."""
    target_return: float
    """Default return to condition on, environment units."""
    env_id: str | None = None
    """Environment the data came from."""
    dataset: dict[str, Any] | None = None
    """A summary of the training data (path, sizes, best and mean return), JSON types only."""
    action_head: str = "deterministic"
    """"deterministic", or "stochastic": the model has ODT's log-std head (dt_fast/distributions.py)."""

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std"):
            value = getattr(self, name)
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a list of numbers, got {_short(value)}") from None
            if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
                raise ValueError(f"{name} must be a non-empty list of finite numbers, got {_short(value)}")
            object.__setattr__(self, name, tuple(float(x) for x in arr))
        if len(self.state_mean) != len(self.state_std):
            raise ValueError(f"state_mean has {len(self.state_mean)} values but state_std has {len(self.state_std)}")
        bad = [i for i, x in enumerate(self.state_std) if x <= 0]
        if bad:
            raise ValueError(f"state_std must be positive, state_std[{bad[0]}] = {self.state_std[bad[0]]}")
        if not _is_number(self.scale) or not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        if (
            not isinstance(self.context_len, (int, np.integer))
            or isinstance(self.context_len, bool)
            or self.context_len < 1
        ):
            raise ValueError(f"context_len must be a positive int, got {self.context_len!r}")
        if not _is_number(self.target_return) or not math.isfinite(self.target_return):
            raise ValueError(f"target_return must be a finite number, got {self.target_return!r}")
        if self.env_id is not None and not isinstance(self.env_id, str):
            raise ValueError(f"env_id must be a string or null, got {self.env_id!r}")
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {ACTION_HEADS}, got {self.action_head!r}")
        if self.dataset is not None and not isinstance(self.dataset, Mapping):
            raise ValueError(f"dataset must be an object or null, got {type(self.dataset).__name__}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "context_len", int(self.context_len))
        object.__setattr__(self, "target_return", float(self.target_return))
        object.__setattr__(self, "dataset", None if self.dataset is None else _jsonable(dict(self.dataset)))

    @property
    def best_return(self) -> float | None:
        """The best episode return of the training data, if the summary records it."""
        best = (self.dataset or {}).get("best_return")
        return None if best is None else float(best)


def write_metadata(path: str | os.PathLike, metadata: Metadata) -> Path:
    """Write `path`/dt_fast.json atomically; returns the file."""
    out = Path(path) / METADATA_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps({"format_version": METADATA_VERSION, **asdict(metadata)}, indent=2) + "\n")
    return out


def read_metadata(path: str | os.PathLike) -> Metadata | None:
    """`path`/dt_fast.json (or the file itself), None if a checkpoint directory has none (a plain transformers
    checkpoint).

    Raises:
        FileNotFoundError: `path` is a file path that does not exist.
        ValueError: the file is not valid JSON, has another format_version, unknown or missing keys, or a bad
            value; the message names the file and the field.
    """
    path = Path(path)
    file = path / METADATA_NAME if path.is_dir() else path
    if path.is_dir() and not file.exists():
        return None
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    if data.get("format_version") != METADATA_VERSION:
        raise ValueError(f"{file}: format_version must be {METADATA_VERSION}, got {data.get('format_version')!r}")
    fields = set(Metadata.__dataclass_fields__)
    unknown = sorted(set(data) - fields - {"format_version"})
    missing = sorted(
        name for name in ("state_mean", "state_std", "scale", "context_len", "target_return") if name not in data
    )
    if unknown or missing:
        raise ValueError(
            f"{file}: {'unknown keys ' + str(unknown) if unknown else ''}"
            f"{'; ' if unknown and missing else ''}{'missing keys ' + str(missing) if missing else ''}"
        )
    try:
        return Metadata(**{k: v for k, v in data.items() if k in fields})
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None


def write_train_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write the resume state (tensors, numbers, strings, dicts and lists of them) to `path` atomically."""
    with atomic_write(path) as tmp:
        torch.save(dict(state), tmp)


def read_train_state(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The resume state written by `write_train_state`, loaded onto `device` without executing pickles.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is unreadable (truncated, corrupt, or holding more than tensors and plain values).
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: unreadable ({err})") from None


def write_train_config(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Write `run_dir`/train_config.json atomically."""
    write_text(Path(run_dir) / TRAIN_CONFIG_NAME, json.dumps(dict(config), indent=2) + "\n")


def read_train_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The resolved config (TrainConfig fields) of the run in `run_dir`.

    Raises:
        ValueError: `run_dir` is not a dt_fast run directory (no train_state.pt or train_config.json), or its
            train_config.json is malformed.
    """
    run_dir = Path(run_dir)
    if not (run_dir / TRAIN_STATE_NAME).is_file() or not (run_dir / TRAIN_CONFIG_NAME).is_file():
        raise ValueError(
            f"{run_dir}: not a dt_fast run directory (expected {TRAIN_STATE_NAME} and {TRAIN_CONFIG_NAME})"
        )
    try:
        data = json.loads((run_dir / TRAIN_CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{run_dir / TRAIN_CONFIG_NAME}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{run_dir / TRAIN_CONFIG_NAME}: expected a JSON object, got {type(data).__name__}")
    return data


def check_run_dir(path: str | os.PathLike, overwrite: bool = False, resume: str | os.PathLike | None = None) -> Path:
    """`path` if a run may be written there: it holds no run, or it is the run being resumed, or `overwrite` is
    set.

    Raises:
        FileExistsError: `path` holds another run (the message says how to continue), or is a file.
        ValueError: both `resume` and `overwrite` are given.
    """
    path = Path(path)
    if resume is not None and overwrite:
        raise ValueError(
            "--resume and --overwrite exclude each other: resume continues the run, overwrite starts it over"
        )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path}: exists and is not a directory")
    found = run_files(path)
    if not found or overwrite or (resume is not None and path.resolve() == Path(resume).resolve()):
        return path
    raise FileExistsError(
        f"--out {path} already holds a dt_fast run ({', '.join(found)}): pass --resume {path} "
        f"to continue it, --overwrite to start over (its run files are deleted when training "
        f"starts), or another --out"
    )


def run_files(path: str | os.PathLike) -> list[str]:
    """The names of `RUN_NAMES` present in directory `path`."""
    path = Path(path)
    return [name for name in RUN_NAMES if (path / name).exists()] if path.is_dir() else []


def clear_run_dir(path: str | os.PathLike) -> list[str]:
    """Delete the run files (`RUN_NAMES`) of `path`, leaving any other file; returns the names deleted."""
    import shutil

    found = run_files(path)
    for name in found:
        target = Path(path) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return found


def _is_number(x: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _jsonable(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into plain JSON types (recursively)."""
    if isinstance(value, Mapping):
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
