"""Policy: the step API for control loops and batched evaluation, a facade over the C++ engine and the torch decoder.

    policy = Policy.from_pretrained("run/checkpoint", num_envs=1)
    policy.reset(); obs, _ = env.reset(); reward = None
    while not done:
        action = policy.act(obs, reward)
        obs, reward, terminated, truncated, _ = env.step(action); done = terminated or truncated

Online fine-tuning (the Online Decision Transformer): a stochastic model (DecisionTransformer(config,
stochastic=True), or a checkpoint whose dt_fast.json says action_head "stochastic") can sample its actions from its
tanh-Gaussian, `set_sampling(seed)`, with counter-based noise per row (distributions.normal_noise; the same
actions for the same seed whatever the engine's threads, and on both backends to float tolerance), and
`update_weights(model)` loads the weights of a training step into the Policy without building a new one.

It keeps what the blog's `get_action` loop (dt_fast/bench/reference.py) keeps: states normalised with the dataset's
mean and std, the return-to-go (target / scale, minus reward / scale after every step), timesteps (clipped to
max_ep_len - 1), the actions taken, and a KV cache per row. Modes (see dt_fast/decode.py and csrc/engine/engine.h):
"exact" returns the blog's actions to float tolerance; "rolling" is O(1) per step and APPROXIMATE once an episode
is longer than the context length.

Owners: this module owns the step API: the checks of every argument and input, the choice of backend, and two
backends with one interface (set_target_return / reset / act / set_sampling / update_weights). `CppBackend` is the
C++ Controller (csrc/engine/controller.h), which keeps the bookkeeping above and runs the engine; `TorchBackend`
keeps the same bookkeeping in numpy, with the Controller's float rounding, order of checks and messages, over the
torch decoder. It does not own the on-disk formats (dt_fast.checkpoint reads config.json, the weights and
dt_fast.json), the model (dt_fast.model), the incremental decoding (dt_fast.decode, and csrc/engine for the cpp
backend), the kernels (dt_fast.kernels), nor the CUDA-graph capture (dt_fast.cuda_graph).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dt_fast.checkpoint import METADATA_NAME, hf_state_dict, read_metadata
from dt_fast.cuda_graph import GraphedStep
from dt_fast.decode import MODES, KVCacheDecoder
from dt_fast.distributions import normal_noise
from dt_fast.kernels.dispatch import resolve_backend
from dt_fast.model import DecisionTransformer

try:
    from dt_fast import _C
except ImportError:  # the package works without its C++ extension, on the torch backend
    _C = None

BACKENDS = ("auto", "cpp", "torch", "triton")
# The config fields an action depends on: update_weights needs a model equal in all of them (the others are
# training-only: dropout rates, initialisation; or unused at inference: vocab_size, reorder_and_upcast_attn).
INFERENCE_FIELDS = (
    "state_dim",
    "act_dim",
    "hidden_size",
    "max_ep_len",
    "action_tanh",
    "n_positions",
    "n_layer",
    "n_head",
    "inner_dim",
    "activation_function",
    "layer_norm_epsilon",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
)
UINT64 = 2**64


class Policy:
    """A Decision Transformer acting in `num_envs` environments at once, one `act` call per environment step.

    Calls on one Policy are serialised: its act, reset and set_target_return never run at the same time (the cpp
    backend locks each C++ Controller, the torch backend holds a lock per Policy). That makes concurrent calls
    safe, not meaningful: each row is one episode, and two threads stepping one episode is a usage error even when
    it does not crash, as the steps interleave in an order neither thread chose. Give each thread its own Policy.

    Args:
        model: the DecisionTransformer (the cpp backend copies its weights, the others run it in place).
        target_return: return to condition on, environment units: a number, or one per row (num_envs,).
        state_mean, state_std: (state_dim,) observation statistics of the training data.
        scale: returns-to-go are divided by it (1000 for MuJoCo).
        context_len: K, steps in the model's window (the blog's max_length).
        mode: "exact" (the blog's window recompute, to float tolerance) or "rolling" (O(1) per step,
            approximate after context_len steps).
        backend: "cpp" (the C++ engine, CPU), "torch" (the torch decoder on the model's device, dt_fast/decode.py),
            "triton" (the same decoder with the Triton embedding and attention kernels; on a CUDA device both
            decoders run as one captured CUDA graph per step, dt_fast/cuda_graph.py), or "auto" (on the CPU: cpp
            when dt_fast._C is built, else torch; on a GPU: triton when installed).
        num_envs: rows, each its own episode.
        n_threads: engine threads, 0 = every hardware thread (cpp backend only; more than the machine has are
            clamped to it, with a warning). At num_envs 1 they split each matmul's columns and wait for the next
            step spinning (up to 2 ms, then asleep): lowest latency for a control loop, at the cost of a busy
            core; at larger batches they take rows.

    Raises:
        ValueError: an argument of the wrong type, shape or range (the message names it).
        RuntimeError: backend="cpp" without the compiled extension dt_fast._C.
    """

    def __init__(
        self,
        model: DecisionTransformer,
        *,
        target_return: Any,
        state_mean: Any,
        state_std: Any,
        scale: float,
        context_len: int,
        mode: str = "exact",
        backend: str = "auto",
        num_envs: int = 1,
        n_threads: int = 0,
    ) -> None:
        cfg = model.config
        self.config, self.state_dim, self.act_dim = cfg, cfg.state_dim, cfg.act_dim
        self.mode = _choice("mode", mode, MODES)
        self.num_envs = _positive_int("num_envs", num_envs)
        self.context_len = _positive_int("context_len", context_len)
        self.state_mean = _vector("state_mean", state_mean, cfg.state_dim)  # (S,) float64
        self.state_std = _vector("state_std", state_std, cfg.state_dim, positive=True)  # (S,) float64
        self.scale = _positive_number("scale", scale)
        self.n_threads = _thread_count(n_threads)
        self.stochastic = model.stochastic  # the model has the log-std head that sampling needs
        self.backend = _resolve(_choice("backend", backend, BACKENDS), next(model.parameters()).device)
        self._backend = _open_backend(
            self.backend,
            model,
            self.mode,
            self.num_envs,
            self.context_len,
            self.state_mean,
            self.state_std,
            self.scale,
            self.n_threads,
        )
        self._sample_seed: int | None = None
        self.set_target_return(target_return)
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        target_return: Any = None,
        mode: str = "exact",
        backend: str = "auto",
        num_envs: int = 1,
        state_mean: Any = None,
        state_std: Any = None,
        scale: float | None = None,
        context_len: int | None = None,
        n_threads: int = 0,
    ) -> Policy:
        """A Policy over the checkpoint directory `path`; arguments left None default to its dt_fast.json.

        Args:
            path: a directory written by dt_fast (config.json, model.safetensors, dt_fast.json) or a plain
                transformers checkpoint, which has no dt_fast.json: then target_return, state_mean, state_std,
                scale and context_len must be given.
            target_return, mode, backend, num_envs, state_mean, state_std, scale, context_len, n_threads: as for
                `Policy`.

        Raises:
            FileNotFoundError: `path` is not a directory, or holds no config.json or weights.
            ValueError: a value is missing (no dt_fast.json), a file is malformed, or an argument is wrong; the
                message names the directory.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a checkpoint directory")
        meta = read_metadata(path)
        given = dict(
            target_return=target_return,
            state_mean=state_mean,
            state_std=state_std,
            scale=scale,
            context_len=context_len,
        )
        values = {k: getattr(meta, k) if v is None and meta is not None else v for k, v in given.items()}
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise ValueError(
                f"{path} (no {METADATA_NAME}): missing {', '.join(missing)}: pass them as arguments (a "
                f"plain transformers checkpoint has no {METADATA_NAME} to take them from)"
            )
        model = DecisionTransformer.from_pretrained(path)
        try:
            return cls(model, mode=mode, backend=backend, num_envs=num_envs, n_threads=n_threads, **values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    @property
    def target_return(self) -> np.ndarray:
        """(num_envs,) return each row conditions on from its next reset, environment units."""
        return self._target.copy()

    def set_target_return(self, target_return: Any) -> None:
        """Condition every row (a number) or each row (num_envs,) on a return, environment units, from the row's
        next reset.

        Raises:
            ValueError: not a finite number or (num_envs,) array of them.
        """
        target = _targets(target_return, self.num_envs)  # (B,) float64
        self._backend.set_target_return(target)
        self._target = target

    def reset(self, env_ids: Any = None) -> None:
        """Start new episodes in the rows `env_ids` (an int or a 1-D sequence of ints in [0, num_envs)), or in
        every row (None).

        Raises:
            ValueError: an index out of range or not an int.
        """
        self._backend.reset(_rows(env_ids, self.num_envs))

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        """The action for the current observation of every row.

        Args:
            obs: (state_dim,) when num_envs == 1, or (num_envs, state_dim): the current observations, raw (the
                Policy normalises them).
            reward: the reward each row received for its previous action: a number (num_envs == 1) or
                (num_envs,); ignored on a row's first step after reset, so None is fine there.

        Returns:
            float32 (act_dim,) for obs of shape (state_dim,), else (num_envs, act_dim).

        Raises:
            ValueError: a wrong shape or dtype, a NaN or inf, or a missing reward past a row's first step; the
                message names the first bad value, and no state changes.
        """
        return self._backend.act(obs, reward)

    @property
    def sample_seed(self) -> int | None:
        """The seed actions are sampled with (set_sampling), or None: the mean action."""
        return self._sample_seed

    def set_sampling(self, seed: int | None) -> None:
        """Sample every action from the stochastic model's tanh-Gaussian with counter-based noise (seed: an int in
        [0, 2**64)), or act with its mean action (None, the default).

        Row r's action at its d-th step since this call is tanh(loc + exp(log_std) * z), z =
        distributions.normal_noise(seed, r, d): d counts every step of the row (reset does not restart it, so
        each episode of a row draws new noise), and the sampled action is what the next step embeds as a_{t-1}.

        Raises:
            ValueError: `seed` is not None or an integer in [0, 2**64), or the model has no log-std head (a
                deterministic checkpoint).
        """
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < UINT64
        ):
            raise ValueError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
        if seed is not None and not self.stochastic:
            raise ValueError(
                "set_sampling needs a stochastic model (DecisionTransformer(config, stochastic=True), or "
                "a checkpoint whose dt_fast.json has action_head 'stochastic'): this one has no log-std "
                "head to sample with"
            )
        seed = None if seed is None else int(seed)
        self._backend.set_sampling(seed)
        self._sample_seed = seed

    def update_weights(self, model: DecisionTransformer) -> None:
        """Act with `model`'s weights from now on, and start a new episode in every row (the cached keys came from
        the old weights: call it between episodes). The cpp backend copies the weights into its engine (no new
        engine); the torch backends run `model` in place, on the Policy's device, and set it to eval mode (as
        building a torch Policy does: a model that goes on training needs model.train() again). `model` must have
        the Policy's config (every field an action depends on) and action head; the sampling seed and draw counters
        are kept.

        Raises:
            ValueError: `model` is not a DecisionTransformer, differs from the Policy's in a config field or its
                action head, or (torch backends) lies on another device.
        """
        if not isinstance(model, DecisionTransformer):
            raise ValueError(f"model must be a dt_fast.DecisionTransformer, got {type(model).__name__}")
        for name in INFERENCE_FIELDS:
            ours, theirs = getattr(self.config, name), getattr(model.config, name)
            if ours != theirs:
                raise ValueError(
                    f"update_weights needs the Policy's model config: {name} is {theirs!r}, the Policy's is {ours!r}"
                )
        if model.stochastic != self.stochastic:
            heads = {True: "stochastic", False: "deterministic"}
            raise ValueError(
                f"update_weights needs the Policy's action head: the model's is "
                f"{heads[model.stochastic]}, the Policy's {heads[self.stochastic]}"
            )
        self._backend.update_weights(model)


class CppBackend:
    """The C++ Controller (csrc/engine/controller.h): bookkeeping, value checks and the engine step in C++."""

    def __init__(
        self,
        model: DecisionTransformer,
        mode: str,
        num_envs: int,
        context_len: int,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        scale: float,
        n_threads: int,
    ) -> None:
        if _C is None:
            raise RuntimeError(
                "backend='cpp' needs the compiled extension dt_fast._C, which did not import; "
                "build it (make build) or use backend='torch'"
            )
        self.controller = _C.Controller(
            model.config.to_json_string(),
            _engine_tensors(model),
            num_envs,
            context_len,
            mode,
            n_threads,
            state_mean,
            state_std,
            scale,
        )
        self.num_envs, self.state_dim = num_envs, model.config.state_dim
        self.obs_shapes = [(num_envs, self.state_dim)] + [(self.state_dim,)] * (num_envs == 1)  # passed unchecked

    def set_target_return(self, target: np.ndarray) -> None:
        """Targets (B,) float64, environment units, from each row's next reset."""
        self.controller.set_target_returns(target)

    def reset(self, rows: np.ndarray) -> None:
        """Start new episodes in `rows` (int64, in range)."""
        self.controller.reset(rows)

    def act(self, obs: Any, reward: Any) -> np.ndarray:
        """As Policy.act; shapes are checked here and by the binding, values by the Controller."""
        if not (type(obs) is np.ndarray and obs.dtype.kind in "fiu" and obs.shape in self.obs_shapes):
            single = self.num_envs == 1 and np.ndim(obs) == 1
            obs = _observations(obs, self.num_envs, self.state_dim)  # (B, S) float32
            obs = obs[0] if single else obs  # (S,) or (B, S)
        if isinstance(reward, torch.Tensor):
            reward = reward.detach().cpu().double().numpy()
        return self.controller.act(obs, reward)  # (A,) or (B, A)

    def set_sampling(self, seed: int | None) -> None:
        """Sampled actions with the noise of `seed`, or the mean action (None); counters restart at 0."""
        self.controller.set_sampling(seed)

    def update_weights(self, model: DecisionTransformer) -> None:
        """Copy `model`'s weights into the engine (re-packed in place); every row starts a new episode."""
        self.controller.load_weights(model.config.to_json_string(), _engine_tensors(model))


class TorchBackend:
    """The torch decoder (dt_fast.decode) under the C++ Controller's bookkeeping, done here in numpy with the same
    float rounding, checks and messages; a lock serialises the calls."""

    def __init__(
        self,
        model: DecisionTransformer,
        mode: str,
        num_envs: int,
        context_len: int,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        scale: float,
        kernels: str,
    ) -> None:
        self.mode, self.context_len, self.kernels = mode, context_len, kernels
        self.num_envs, self.state_dim, self.max_t = num_envs, model.config.state_dim, model.config.max_ep_len - 1
        self.act_dim, self.device = model.config.act_dim, next(model.parameters()).device
        self.decoder = self._decoder(model)
        self.mean, self.std, self.scale = state_mean, state_std, scale  # (S,), (S,) float64
        self.target = np.zeros(num_envs)  # (B,) env units, taken at each row's reset
        self.rtg = np.zeros(num_envs, dtype=np.float32)  # (B,) return-to-go / scale
        self.steps = np.zeros(num_envs, dtype=np.int64)  # (B,) steps since reset
        self.seed: int | None = None  # sampling seed, or None: the mean action
        self.draws = np.zeros(num_envs, dtype=np.int64)  # (B,) sampled steps of each row since the seed was set
        self.lock = threading.Lock()

    def _decoder(self, model: DecisionTransformer) -> KVCacheDecoder | GraphedStep:
        """The decoder over `model`: on CUDA a static one captured in a CUDA graph (one graph per batch size)."""
        static = self.device.type == "cuda"
        decoder = KVCacheDecoder(model, self.num_envs, self.context_len, self.mode, static=static, backend=self.kernels)
        return GraphedStep(decoder) if static else decoder

    def set_target_return(self, target: np.ndarray) -> None:
        """Targets (B,) float64, environment units, from each row's next reset."""
        with self.lock:
            self.target = target.copy()

    def reset(self, rows: np.ndarray) -> None:
        """Start new episodes in `rows` (int64, in range)."""
        with self.lock:
            self.steps[rows] = 0
            self.rtg[rows] = (self.target[rows] / self.scale).astype(np.float32)
            self.decoder.reset(torch.from_numpy(rows))

    def act(self, obs: Any, reward: Any) -> np.ndarray:
        """As Policy.act: the checks of CppBackend (shapes) and of the Controller (values), in their order."""
        single = self.num_envs == 1 and np.ndim(obs) == 1
        obs = _observations(obs, self.num_envs, self.state_dim)  # (B, S) float32
        rew = None if reward is None else _rewards(reward, self.num_envs)  # (B,) float64
        with self.lock:
            first = self.steps == 0  # (B,) rows on their first step: their reward is ignored
            _check_values(obs, rew, first)
            if rew is not None:
                self.rtg -= np.where(first, np.float32(0), (rew / self.scale).astype(np.float32))
            states = ((obs - self.mean) / self.std).astype(np.float32)  # (B, S), float64 arithmetic
            timesteps = np.minimum(self.steps, self.max_t)  # (B,)
            noise = (
                None
                if self.seed is None
                else normal_noise(self.seed, torch.arange(self.num_envs), torch.from_numpy(self.draws), self.act_dim)
            )  # (B, A)
            actions = (
                self.decoder.step(
                    torch.from_numpy(states), torch.from_numpy(self.rtg), torch.from_numpy(timesteps), noise
                )
                .cpu()
                .numpy()
            )  # (B, A)
            self.steps += 1
            if self.seed is not None:
                self.draws += 1
        return actions[0] if single else actions

    def set_sampling(self, seed: int | None) -> None:
        """Sampled actions with the noise of `seed`, or the mean action (None); counters restart at 0."""
        with self.lock:
            self.seed = seed
            self.draws[:] = 0

    def update_weights(self, model: DecisionTransformer) -> None:
        """A decoder over `model` (on this backend's device); every row starts a new episode."""
        device = next(model.parameters()).device
        if device != self.device:
            raise ValueError(f"update_weights: the model is on {device} but this Policy runs on {self.device}")
        with self.lock:
            self.decoder = self._decoder(model)
            self.steps[:] = 0
            self.rtg[:] = (self.target / self.scale).astype(np.float32)


def _open_backend(
    name: str,
    model: DecisionTransformer,
    mode: str,
    num_envs: int,
    context_len: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    scale: float,
    n_threads: int,
) -> CppBackend | TorchBackend:
    """The backend `name` ("cpp", "torch" or "triton") over `model`, from checked arguments."""
    if name == "cpp":
        return CppBackend(model, mode, num_envs, context_len, state_mean, state_std, scale, n_threads)
    return TorchBackend(model, mode, num_envs, context_len, state_mean, state_std, scale, kernels=name)


def _engine_tensors(model: DecisionTransformer) -> dict[str, np.ndarray]:
    """The model's weights in transformers' layout (plus the log-std head of a stochastic model) as float32 numpy
    arrays on the CPU, for the C++ engine."""
    return {k: v.detach().cpu().float().contiguous().numpy() for k, v in hf_state_dict(model).items()}


def _resolve(backend: str, device: torch.device) -> str:
    """The backend that runs: `backend`, or for "auto" cpp on the CPU (torch without dt_fast._C), else
    kernels.dispatch's choice for `device`."""
    if backend != "auto":
        return backend
    if device.type == "cpu":
        return "cpp" if _C is not None else "torch"
    return resolve_backend(device, "auto")


def _observations(obs: Any, num_envs: int, state_dim: int) -> np.ndarray:
    """obs as a (num_envs, state_dim) float32 array, or ValueError naming what is wrong with its type or shape."""
    if isinstance(obs, torch.Tensor):
        obs = obs.detach().cpu().numpy()
    obs = np.asarray(obs)
    if obs.dtype.kind not in "fiu":
        raise ValueError(f"obs must be a real-valued array, got dtype {obs.dtype}")
    if obs.ndim == 1 and num_envs == 1:
        obs = obs[None]
    if obs.ndim != 2:
        want = (
            f"({state_dim},) or (1, {state_dim})"
            if num_envs == 1
            else f"({num_envs}, {state_dim}) (num_envs, state_dim)"
        )
        raise ValueError(f"obs must have shape {want}, got rank {obs.ndim} shape {obs.shape}")
    if obs.shape[1] != state_dim:
        raise ValueError(
            f"obs has {obs.shape[1]} values per row but the checkpoint's state_dim is {state_dim}: the "
            f"environment and the checkpoint disagree"
        )
    if obs.shape[0] != num_envs:
        raise ValueError(f"obs has {obs.shape[0]} rows but the policy has num_envs={num_envs}")
    return obs.astype(np.float32)


def _rewards(reward: Any, num_envs: int) -> np.ndarray:
    """reward (a number when num_envs == 1, or (num_envs,)) as float64 (num_envs,), or ValueError worded as the
    C++ Controller's binding words it."""
    if isinstance(reward, torch.Tensor):
        reward = reward.detach().cpu().double().numpy()
    rew = np.asarray(reward)
    if rew.dtype.kind not in "iufb":
        raise ValueError(f"reward must be a real-valued array, got dtype {rew.dtype}")
    rew = rew.astype(np.float64)
    if rew.ndim == 0 and num_envs == 1:
        rew = rew.reshape(1)
    if rew.shape != (num_envs,):
        raise ValueError(f"reward must have shape ({num_envs},) (num_envs), got shape {rew.shape}")
    return rew


def _check_values(obs: np.ndarray, rew: np.ndarray | None, first: np.ndarray) -> None:
    """The value checks of the C++ Controller's act, in its order and words: obs (B, S) finite; a reward for every
    row past its first step (`first` (B,) bool); those rewards finite."""
    if not np.isfinite(obs).all():
        r, c = np.argwhere(~np.isfinite(obs))[0]
        raise ValueError(f"obs contains NaN or inf: first at obs[{r}, {c}] = {obs[r, c]}")
    if rew is None:
        if not first.all():
            rows = np.flatnonzero(~first)[:5].tolist()
            raise ValueError(
                f"reward is None but rows {rows} are past their first step: pass the reward received "
                f"for the previous action"
            )
    else:
        bad = np.flatnonzero(~np.isfinite(rew) & ~first)
        if bad.size:
            raise ValueError(f"reward contains NaN or inf: first at reward[{bad[0]}] = {rew[bad[0]]}")


def _rows(env_ids: Any, num_envs: int) -> np.ndarray:
    """env_ids (None = every row, an int, or a 1-D sequence of ints in [0, num_envs)) as int64 rows, or ValueError."""
    if env_ids is None:
        return np.arange(num_envs)
    rows = np.asarray(env_ids)
    if rows.ndim > 1 or not (rows.dtype.kind in "iu" or rows.size == 0):
        raise ValueError(f"env_ids must be an int or a 1-D sequence of ints, got {env_ids!r}")
    rows = rows.reshape(-1).astype(np.int64)
    bad = np.flatnonzero((rows < 0) | (rows >= num_envs))
    if bad.size:
        raise ValueError(f"env_ids[{bad[0]}] = {rows[bad[0]]} is out of range [0, {num_envs}) (num_envs={num_envs})")
    return rows


def _targets(target_return: Any, num_envs: int) -> np.ndarray:
    """target_return (a number or (num_envs,)) as a finite float64 (num_envs,) array, or ValueError."""
    try:
        target = np.asarray(target_return, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"target_return must be a number or a sequence of numbers, got {target_return!r}") from None
    if target.ndim == 0:
        target = np.full(num_envs, float(target))
    if target.shape != (num_envs,):
        raise ValueError(
            f"target_return must be a number or have shape ({num_envs},) (num_envs), got shape {target.shape}"
        )
    if not np.isfinite(target).all():
        i = int(np.flatnonzero(~np.isfinite(target))[0])
        raise ValueError(f"target_return must be finite, target_return[{i}] is {target[i]}")
    return target


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """value if it is one of `choices`, else ValueError naming `name`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _positive_int(name: str, value: Any) -> int:
    """value as an int >= 1, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _thread_count(value: Any) -> int:
    """n_threads as an int in [0, hardware threads] (0 = every hardware thread), or ValueError if it is not an int
    >= 0. A larger count is clamped to the machine's, with a warning: more threads would only contend for the cores
    (the engine's outputs are the same bits with any number of threads)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"n_threads must be an int >= 0 (0 = every hardware thread), got {value!r}")
    available = os.cpu_count() or 1
    if value > available:
        warnings.warn(
            f"n_threads={value} is more than the {available} hardware threads of this machine: using {available}",
            stacklevel=3,
        )
        return available
    return int(value)


def _positive_number(name: str, value: Any) -> float:
    """value as a positive finite float, or ValueError naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {number}")
    return number


def _vector(name: str, value: Any, size: int, positive: bool = False) -> np.ndarray:
    """A finite (positive if asked) float64 vector of length `size` (the checkpoint's state_dim), or ValueError."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {value!r}") from None
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) (the checkpoint's state_dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, {name}[{int(np.flatnonzero(~np.isfinite(arr))[0])}] is not")
    if positive and (arr <= 0).any():
        i = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"{name} must be positive, {name}[{i}] = {arr[i]}")
    return arr
