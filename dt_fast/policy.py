"""Policy: the step API for control loops and batched evaluation, over the C++ engine or the torch decoder.

    policy = Policy.from_pretrained("run/checkpoint", num_envs=1)
    policy.reset(); obs, _ = env.reset(); reward = None
    while not done:
        action = policy.act(obs, reward)
        obs, reward, terminated, truncated, _ = env.step(action); done = terminated or truncated

It keeps what the blog's `get_action` loop (benchmarks/reference.py) keeps (on the cpp backend, in the C++
Controller, csrc/engine/controller.h, with the same float rounding): states normalised with the dataset's
mean and std, the return-to-go (target / scale, minus reward / scale after every step), timesteps (clipped to
max_ep_len - 1), the actions taken, and a KV cache per row. Modes (see dt_fast/decode.py and csrc/engine/engine.h):
"exact" returns the blog's actions to float tolerance; "rolling" is O(1) per step and APPROXIMATE once an episode
is longer than the context length.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dt_fast.checkpoint import METADATA_NAME, SAFE_WEIGHTS_NAME, hf_state_dict, read_metadata
from dt_fast.config import DecisionTransformerConfig
from dt_fast.cuda_graph import GraphedStep
from dt_fast.decode import MODES, KVCacheDecoder
from dt_fast.model import DecisionTransformer

try:
    from dt_fast import _C
except ImportError:  # the package works without its C++ extension, on the torch backend
    _C = None

BACKENDS = ("auto", "cpp", "torch", "triton")


class Policy:
    """A Decision Transformer acting in `num_envs` environments at once, one `act` call per environment step.

    Args:
        model: the DecisionTransformer (weights are copied to the backend).
        target_return: return to condition on, environment units: a number, or one per row (num_envs,).
        mode: "exact" (the blog's window recompute, to float tolerance) or "rolling" (O(1) per step,
            approximate after context_len steps).
        backend: "cpp" (the C++ engine, CPU), "torch" (the reference decoder, the model's device), "triton"
            (the same decoder, dt_fast/decode.py, with the Triton embedding and attention kernels; on a
            CUDA device both decoders run as one captured CUDA graph per step, dt_fast/cuda_graph.py), or
            "auto" (on the CPU: cpp when dt_fast._C is built, else torch; on a GPU: triton when installed).
        num_envs: rows, each its own episode.
        state_mean, state_std: (state_dim,) observation statistics of the training data.
        scale: returns-to-go are divided by it (1000 for MuJoCo).
        context_len: K, steps in the model's window (the blog's max_length).
        n_threads: engine threads, 0 = every core (cpp backend only). At num_envs 1 they split each matmul's
            columns and wait for the next step spinning (up to 2 ms, then asleep): lowest latency for a control
            loop, at the cost of a busy core; at larger batches they take rows.
    """

    def __init__(self, model: DecisionTransformer, target_return: Any = None, mode: str = "exact",
                 backend: str = "auto", num_envs: int = 1, state_mean: Any = None, state_std: Any = None,
                 scale: float | None = None, context_len: int | None = None, n_threads: int = 0,
                 _checkpoint: Path | None = None, _source: str = "Policy") -> None:
        missing = [name for name, value in (("target_return", target_return), ("state_mean", state_mean),
                                            ("state_std", state_std), ("scale", scale),
                                            ("context_len", context_len)) if value is None]
        if missing:
            raise ValueError(f"{_source}: missing {', '.join(missing)}: pass them as arguments (a plain "
                             f"transformers checkpoint has no {METADATA_NAME} to take them from)")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if isinstance(context_len, bool) or not isinstance(context_len, (int, np.integer)) or context_len < 1:
            raise ValueError(f"context_len must be a positive int, got {context_len!r}")
        cfg: DecisionTransformerConfig = model.config
        self.config, self.mode, self.num_envs, self.context_len = cfg, mode, int(num_envs), int(context_len)
        self.state_dim, self.act_dim = cfg.state_dim, cfg.act_dim
        self.state_mean = _vector(state_mean, "state_mean", cfg.state_dim, _source)  # (S,) float64
        self.state_std = _vector(state_std, "state_std", cfg.state_dim, _source)  # (S,) float64
        if (self.state_std <= 0).any():
            i = int(np.flatnonzero(self.state_std <= 0)[0])
            raise ValueError(f"{_source}: state_std must be positive, state_std[{i}] = {self.state_std[i]}")
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"{_source}: scale must be a positive finite number, got {scale}")
        self.scale = scale
        self._target = _targets(target_return, self.num_envs)  # (B,) env units, used from each row's next reset
        device = next(model.parameters()).device
        if backend == "auto":
            if device.type == "cpu":
                backend = "cpp" if _C is not None else "torch"
            else:
                from dt_fast.kernels.dispatch import resolve_backend

                backend = resolve_backend(device, "auto")
        self.backend = backend
        if backend == "cpp":
            if _C is None:
                raise RuntimeError("backend='cpp' needs the compiled extension dt_fast._C, which did not import; "
                                   "build it (make build) or use backend='torch'")
            stats = (self.state_mean, self.state_std, self.scale)
            if _checkpoint is not None and (_checkpoint / SAFE_WEIGHTS_NAME).is_file():
                self._ctl = _C.Controller.from_checkpoint(str(_checkpoint), self.num_envs, self.context_len, mode,
                                                          n_threads, *stats)
            else:
                tensors = {k: v.detach().cpu().float().contiguous().numpy() for k, v in hf_state_dict(model).items()}
                self._ctl = _C.Controller(cfg.to_json_string(), tensors, self.num_envs, self.context_len, mode,
                                          n_threads, *stats)
            self._engine = self._ctl.engine
            self._ctl.set_target_returns(self._target)
        else:
            static = device.type == "cuda"  # the step captured in a CUDA graph (one per Policy: one batch size)
            decoder = KVCacheDecoder(model, self.num_envs, self.context_len, mode, static=static, backend=backend)
            self._decoder = GraphedStep(decoder) if static else decoder
        if backend == "cpp":  # obs shapes act hands to the Controller unchecked (it checks values)
            self._obs_shapes = [(self.num_envs, self.state_dim)] + [(self.state_dim,)] * (self.num_envs == 1)
        else:  # the bookkeeping the C++ Controller keeps for the cpp backend
            self._rtg = np.zeros(self.num_envs, dtype=np.float32)  # (B,) return-to-go / scale
            self._steps = np.zeros(self.num_envs, dtype=np.int64)  # (B,) steps since reset
            self._fresh = False  # a row was reset since the last act
        self.reset()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, target_return: Any = None, mode: str = "exact",
                        backend: str = "auto", num_envs: int = 1, state_mean: Any = None, state_std: Any = None,
                        scale: float | None = None, context_len: int | None = None, n_threads: int = 0) -> Policy:
        """Load a checkpoint directory; arguments left None default to its dt_fast.json (when present)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a checkpoint directory")
        meta = read_metadata(path)
        if meta is not None:
            target_return = meta.target_return if target_return is None else target_return
            state_mean = meta.state_mean if state_mean is None else state_mean
            state_std = meta.state_std if state_std is None else state_std
            scale = meta.scale if scale is None else scale
            context_len = meta.context_len if context_len is None else context_len
        source = str(path) if meta is not None else f"{path} (no {METADATA_NAME})"
        model = DecisionTransformer.from_pretrained(path)
        return cls(model, target_return=target_return, mode=mode, backend=backend, num_envs=num_envs,
                   state_mean=state_mean, state_std=state_std, scale=scale, context_len=context_len,
                   n_threads=n_threads, _checkpoint=path, _source=source)

    @property
    def target_return(self) -> np.ndarray:
        """(num_envs,) return each row conditions on from its next reset, environment units."""
        return self._target.copy()

    def set_target_return(self, target_return: Any) -> None:
        """Condition every row (a number) or each row (num_envs,) on a return, from the row's next reset."""
        self._target = _targets(target_return, self.num_envs)
        if self.backend == "cpp":
            self._ctl.set_target_returns(self._target)

    def reset(self, env_ids: Any = None) -> None:
        """Start new episodes in the rows `env_ids` (ints in [0, num_envs)), or in every row."""
        if env_ids is None:
            rows = np.arange(self.num_envs)
        else:
            rows = np.asarray(env_ids)
            if rows.ndim > 1 or not (rows.dtype.kind in "iu" or rows.size == 0):
                raise ValueError(f"env_ids must be an int or a 1-D sequence of ints, got {env_ids!r}")
            rows = rows.reshape(-1).astype(np.int64)
            bad = np.flatnonzero((rows < 0) | (rows >= self.num_envs))
            if bad.size:
                raise ValueError(f"env_ids[{bad[0]}] = {rows[bad[0]]} is out of range [0, {self.num_envs}) "
                                 f"(num_envs={self.num_envs})")
        if self.backend == "cpp":
            self._ctl.reset(rows)
            return
        self._steps[rows] = 0
        self._fresh = self._fresh or rows.size > 0
        self._rtg[rows] = (self._target[rows] / self.scale).astype(np.float32)
        self._decoder.reset(torch.from_numpy(rows))

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        """The action for the current observation: (act_dim,) for obs (state_dim,), else (num_envs, act_dim).

        Args:
            obs: (state_dim,) when num_envs == 1, or (num_envs, state_dim): the current observations.
            reward: the reward each row received for its previous action: a number (num_envs == 1) or
                (num_envs,); ignored on a row's first step after reset, so None is fine there.
        """
        single = self.num_envs == 1 and np.ndim(obs) == 1
        if self.backend == "cpp":  # the C++ Controller keeps the bookkeeping and checks values
            if not (type(obs) is np.ndarray and obs.dtype.kind in "fiu" and obs.shape in self._obs_shapes):
                obs = self._check_obs(obs)[0] if single else self._check_obs(obs)  # (S,) or (B, S) float32
            if isinstance(reward, torch.Tensor):
                reward = reward.detach().cpu().double().numpy()
            return self._ctl.act(obs, reward)  # (A,) or (B, A)
        obs = self._check_obs(obs)  # (B, S) float32
        fresh = self._fresh  # some rows are on their first step (their reward is ignored)
        first = self._steps == 0 if fresh else None  # (B,)
        rew = None if reward is None else self._check_reward(reward, first)  # (B,) float64
        if not fresh or not first.all():
            if rew is None:
                rows = np.flatnonzero(self._steps > 0)[:5].tolist()
                raise ValueError(f"reward is None but rows {rows} are past their first step: pass the reward "
                                 f"received for the previous action")
            decrement = (rew / self.scale).astype(np.float32)  # (B,)
            if fresh:
                decrement[first] = 0.0
            self._rtg -= decrement
        states = ((obs - self.state_mean) / self.state_std).astype(np.float32)  # (B, S), float64 arithmetic
        timesteps = np.minimum(self._steps, self.config.max_ep_len - 1)  # (B,)
        if self.backend == "cpp":
            actions = self._engine.step(states, self._rtg, timesteps)  # (B, A)
        else:
            actions = self._decoder.step(torch.from_numpy(states), torch.from_numpy(self._rtg),
                                         torch.from_numpy(timesteps)).cpu().numpy()  # (B, A)
        self._steps += 1
        self._fresh = False
        return actions[0] if single else actions

    def _check_obs(self, obs: Any) -> np.ndarray:
        """obs as a (num_envs, state_dim) float32 array, or ValueError naming what is wrong."""
        if isinstance(obs, torch.Tensor):
            obs = obs.detach().cpu().numpy()
        obs = np.asarray(obs)
        if obs.dtype.kind not in "fiu":
            raise ValueError(f"obs must be a real-valued array, got dtype {obs.dtype}")
        B, S = self.num_envs, self.state_dim
        if obs.ndim == 1 and B == 1:
            obs = obs[None]
        if obs.ndim != 2:
            want = f"({S},) or ({B}, {S})" if B == 1 else f"({B}, {S}) (num_envs, state_dim)"
            raise ValueError(f"obs must have shape {want}, got rank {obs.ndim} shape {obs.shape}")
        if obs.shape[1] != S:
            raise ValueError(f"obs has {obs.shape[1]} values per row but the checkpoint's state_dim is {S}: the "
                             f"environment and the checkpoint disagree")
        if obs.shape[0] != B:
            raise ValueError(f"obs has {obs.shape[0]} rows but the policy has num_envs={B}")
        obs = obs.astype(np.float32)
        if not np.isfinite(obs).all():
            r, c = np.argwhere(~np.isfinite(obs))[0]
            raise ValueError(f"obs contains NaN or inf: first at obs[{r}, {c}] = {obs[r, c]}")
        return obs

    def _check_reward(self, reward: Any, first: np.ndarray | None) -> np.ndarray:
        """reward as (num_envs,) float64, or ValueError; rows on their first step (`first`, None when no row
        is) may hold anything, it is ignored."""
        rew = np.asarray(reward, dtype=np.float64) if not isinstance(reward, torch.Tensor) else reward.double().numpy()
        if rew.ndim == 0 and self.num_envs == 1:
            rew = rew.reshape(1)
        if rew.shape != (self.num_envs,):
            raise ValueError(f"reward must have shape ({self.num_envs},) (num_envs), got shape {rew.shape}")
        if not np.isfinite(rew).all():
            bad = np.flatnonzero(~np.isfinite(rew) & (True if first is None else ~first))
            if bad.size:
                    raise ValueError(f"reward contains NaN or inf: first at reward[{bad[0]}] = {rew[bad[0]]}")
        return rew


def _targets(target_return: Any, num_envs: int) -> np.ndarray:
    """target_return (a number or (num_envs,)) as a finite float64 (num_envs,) array, or ValueError."""
    target = np.asarray(target_return, dtype=np.float64)
    if target.ndim == 0:
        target = np.full(num_envs, float(target))
    if target.shape != (num_envs,):
        raise ValueError(f"target_return must be a number or have shape ({num_envs},) (num_envs), got shape "
                         f"{target.shape}")
    if not np.isfinite(target).all():
        i = int(np.flatnonzero(~np.isfinite(target))[0])
        raise ValueError(f"target_return must be finite, target_return[{i}] is {target[i]}")
    return target


def _vector(value: Any, name: str, size: int, source: str) -> np.ndarray:
    """A finite float64 vector of length `size`, or ValueError naming `name` and `source`."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{source}: {name} must have shape ({size},) (the checkpoint's state_dim), got shape "
                         f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{source}: {name} must be finite, {name}[{int(np.flatnonzero(~np.isfinite(arr))[0])}] is not")
    return arr
