"""`dt-fast eval`: batched evaluation of a Decision Transformer policy over envpool, with continuous batching.

B environments are stepped at once in C++ (envpool; gymnasium's synchronous vector env for ids envpool lacks)
and one `Policy` keeps a row of state per environment. The episodes are assigned to the B slots up front
(episode k of target j goes to the k-th slot of that target, round robin) and every episode that is started is
finished and counted, so short episodes are not favoured. When a slot's episode ends, the env auto-resets on
its next step (envpool and gymnasium's NEXT_STEP mode: the action of that step is ignored, its reward is 0 and
it returns the first observation of a new episode); the evaluator then resets that policy row and runs the
next episode the slot owes. Seeds: slot i is seeded `seed + i` by both envpool and gymnasium; its later
episodes continue that env's random stream, so results depend on (seed, num_envs). envpool and gymnasium draw
different start states for the same seed, but from the same start state their MuJoCo dynamics agree
(tests/test_evaluate_policy.py compares the two on Hopper-v4).

Several target returns run in one batch: slot i is conditioned on target i % T.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dt_fast.envs import EnvSpec, check_env_matches, normalized_score, reference_scores
from dt_fast.extras import require

DEFAULT_NUM_ENVS = 64  # slots when num_envs is not given (fewer if fewer episodes are asked for)


@dataclass
class EvalResult:
    """Per-episode returns and lengths of one target return, with summary statistics."""

    env_id: str
    target_return: float  # in environment units
    returns: np.ndarray  # [N] float64, undiscounted return of each episode, in episode order
    lengths: np.ndarray  # [N] int64, steps of each episode
    env_steps_per_s: float  # counted env steps of the whole batched run over its wall time
    wall_s: float  # wall time of the whole batched loop (env creation and first reset excluded)
    reference: tuple[float, float] | None = None  # (random, expert) returns for the normalised score
    mode: str = ""  # the policy's inference mode, "rolling" is approximate (see DESIGN.md)

    @property
    def mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Sample standard deviation of the episode returns (ddof=1; 0 for one episode)."""
        return float(np.std(self.returns, ddof=1)) if len(self.returns) > 1 else 0.0

    @property
    def ci95(self) -> float:
        """Half-width of the 95% interval of the mean return (normal approximation: 1.96 std / sqrt(N))."""
        return 1.96 * self.std / math.sqrt(len(self.returns))

    @property
    def normalized_score(self) -> float | None:
        """D4RL-normalised mean return, 100 * (mean - random) / (expert - random); None without a reference."""
        return None if self.reference is None else normalized_score(self.mean, self.reference)


def check_arguments(episodes: int, num_envs: int | None, targets: Sequence[float | None]) -> None:
    """ValueError naming the argument if an episode count, env count or target return is invalid."""
    if isinstance(episodes, bool) or not isinstance(episodes, numbers.Integral) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    if num_envs is not None and (isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral)
                                 or num_envs < 1):
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    for i, target in enumerate(targets):
        if target is None and len(targets) == 1:
            continue
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not math.isfinite(target):
            raise ValueError(f"target_return[{i}] must be a finite number, got {target!r}")
    if num_envs is not None and num_envs < len(targets):
        raise ValueError(f"num_envs={num_envs} is smaller than the number of target returns ({len(targets)}): "
                         "each target needs at least one env slot")


def assign_slots(num_envs: int, episodes: int, num_targets: int) -> tuple[np.ndarray, list[list[int]]]:
    """Up-front schedule: the target index of each slot [B], and for each slot the episodes it runs, in order.

    Slot i serves target i % T; episode k of a target goes to the (k mod S)-th of the S slots serving it.
    """
    slot_target = np.arange(num_envs) % num_targets  # [B]
    queues: list[list[int]] = [[] for _ in range(num_envs)]
    for j in range(num_targets):
        slots = np.flatnonzero(slot_target == j)
        for k in range(episodes):
            queues[slots[k % len(slots)]].append(k)
    return slot_target, queues


def make_vector_env(spec: EnvSpec, num_envs: int, seed: int) -> tuple[Any, np.ndarray]:
    """A synchronous vector env of `num_envs` copies with NEXT_STEP auto-reset, and its first observations."""
    if spec.backend == "envpool":
        from dt_fast.rollout import make_env

        env = make_env(spec.env_id, num_envs=num_envs, seed=seed)
        obs, _ = env.reset()  # [B, state_dim]
        return env, obs
    import gymnasium as gym

    env = gym.make_vec(spec.env_id, num_envs=num_envs, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP})
    obs, _ = env.reset(seed=seed)  # [B, state_dim], env i seeded seed + i
    return env, obs


def run_batched(env: Any, obs: np.ndarray, policy: Any, slot_target: np.ndarray, queues: list[list[int]],
                episodes: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run every scheduled episode to its end; returns and lengths, each [T, N] indexed (target, episode).

    Args:
        env: vector env with NEXT_STEP auto-reset, already reset; `obs` [B, state_dim] its first observations.
        policy: `reset(env_ids)` / `act(obs [B, state_dim], reward [B] | None) -> [B, act_dim]`, B rows.
        slot_target, queues: from `assign_slots`.
    """
    from tqdm import tqdm

    num_envs, num_targets = len(queues), int(slot_target.max()) + 1
    returns = np.zeros((num_targets, episodes))  # [T, N]
    lengths = np.zeros((num_targets, episodes), dtype=np.int64)  # [T, N]
    nxt = np.ones(num_envs, dtype=np.int64)  # position in its queue of each slot's next episode
    current = np.array([q[0] if q else -1 for q in queues])  # [B] episode each slot runs, -1 idle
    ret = np.zeros(num_envs)  # [B] return so far of the running episode
    steps = np.zeros(num_envs, dtype=np.int64)  # [B] steps so far of the running episode
    resetting = np.zeros(num_envs, dtype=bool)  # [B] this step is the env's auto-reset step
    policy.reset()
    reward = None
    remaining = num_targets * episodes
    with tqdm(total=remaining, desc="eval", unit="ep", disable=not progress) as bar:
        while remaining:
            action = policy.act(obs, reward)  # [B, act_dim]
            obs, reward, terminated, truncated, _ = env.step(action)
            running = (current >= 0) & ~resetting
            ret[running] += reward[running]
            steps[running] += 1
            started = resetting & (current >= 0)  # the slot's next episode got its first observation
            if started.any():
                policy.reset(np.flatnonzero(started))
            ended = np.flatnonzero(running & (terminated | truncated))
            for i in ended:
                returns[slot_target[i], current[i]], lengths[slot_target[i], current[i]] = ret[i], steps[i]
                ret[i], steps[i] = 0.0, 0
                current[i] = queues[i][nxt[i]] if nxt[i] < len(queues[i]) else -1
                nxt[i] += 1
            remaining -= len(ended)
            bar.update(len(ended))
            resetting = terminated | truncated
    return returns, lengths


def evaluate(policy_or_checkpoint: Any, env: str = "Hopper-v4", episodes: int = 100, num_envs: int | None = None,
             target_return: float | Sequence[float] | None = None, seed: int = 0, mode: str = "exact",
             backend: str = "auto", reference: tuple[float, float] | None = None,
             progress: bool = True) -> EvalResult | list[EvalResult]:
    """Run `episodes` complete episodes per target return over a batch of envs; one EvalResult per target.

    Args:
        policy_or_checkpoint: a `dt_fast.Policy` (its mode, backend and num_envs are used) or a checkpoint
            directory (a Policy is built with `mode`, `backend` and `num_envs`).
        env: environment id, envpool first, gymnasium's vector env as fallback.
        episodes: episodes per target return; every one is finished and counted.
        num_envs: env slots (default min(64, total episodes), at least one per target).
        target_return: None (the checkpoint's default), a number, or a list of numbers (environment units);
            a list gives a list of results, slot i conditioned on target i % len(list).
        seed: env i is seeded seed + i.
        reference: (random, expert) returns for the normalised score; D4RL's are built in for hopper,
            halfcheetah and walker2d.
    Returns:
        An EvalResult, or a list of them (one per target) when `target_return` is a list.
    """
    many = isinstance(target_return, (list, tuple, np.ndarray))
    targets = list(target_return) if many else [target_return]
    if not targets:
        raise ValueError("target_return is an empty list")
    check_arguments(episodes, num_envs, targets)
    reference = check_reference(env, reference)
    if isinstance(policy_or_checkpoint, (str, os.PathLike)):
        path = Path(policy_or_checkpoint)
        state_dim, act_dim = checkpoint_sizes(path)
        spec = check_env_matches(env, state_dim, act_dim, source=f"checkpoint {path}")
        num_envs = num_envs or max(len(targets), min(DEFAULT_NUM_ENVS, episodes * len(targets)))
        slot_target, queues = assign_slots(num_envs, episodes, len(targets))
        policy = load_policy(path, num_envs, mode, backend)
    else:
        policy = policy_or_checkpoint
        spec = check_env_matches(env, policy.state_dim, policy.act_dim, source="policy")
        if num_envs is not None and num_envs != policy.num_envs:
            raise ValueError(f"num_envs={num_envs} but the policy has num_envs={policy.num_envs}: a Policy's own "
                             "rows are the env slots (leave num_envs out)")
        if policy.num_envs < len(targets):
            raise ValueError(f"the policy has num_envs={policy.num_envs}, fewer than the number of target "
                             f"returns ({len(targets)}): each target needs at least one env slot")
        slot_target, queues = assign_slots(policy.num_envs, episodes, len(targets))
    own_targets = policy.target_return  # [B], restored after the run
    if targets == [None]:
        targets = [policy_target(policy)]
    policy.set_target_return(np.asarray(targets, dtype=np.float64)[slot_target])  # [B]
    vec, obs = make_vector_env(spec, len(queues), seed)
    try:
        start = time.perf_counter()
        returns, lengths = run_batched(vec, obs, policy, slot_target, queues, episodes, progress)
        wall = time.perf_counter() - start
    finally:
        vec.close()
        policy.set_target_return(own_targets)
    rate = float(lengths.sum()) / wall
    results = [EvalResult(env, float(t), returns[j], lengths[j], rate, wall, reference, policy.mode)
               for j, t in enumerate(targets)]
    return results if many else results[0]


def load_policy(path: Path, num_envs: int, mode: str, backend: str) -> Any:
    """A Policy over `num_envs` rows from a checkpoint directory (its dt_fast.json supplies the statistics)."""
    from dt_fast.policy import Policy

    return Policy.from_pretrained(path, mode=mode, backend=backend, num_envs=num_envs)


def policy_target(policy: Any) -> float:
    """The one target return (env units) all rows of `policy` condition on; ValueError if the rows differ."""
    targets = np.asarray(policy.target_return, dtype=np.float64).reshape(-1)  # [B]
    if not np.all(targets == targets[0]):
        raise ValueError(f"the policy's rows condition on different target returns ({np.unique(targets).tolist()}):"
                         " pass target_return to evaluate")
    return float(targets[0])


def check_reference(env_id: str, reference: tuple[float, float] | None) -> tuple[float, float] | None:
    """The (random, expert) pair for normalised scores: the one given (validated) or the built-in one."""
    if reference is None:
        return reference_scores(env_id)
    try:
        low, high = (float(x) for x in reference)
    except (TypeError, ValueError):
        raise ValueError(f"reference must be a (random, expert) pair of numbers, got {reference!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        raise ValueError(f"reference must be two different finite returns (random, expert), got {reference!r}")
    return low, high


def checkpoint_sizes(path: Path) -> tuple[int, int]:
    """(state_dim, act_dim) from a checkpoint directory's config.json, without loading the weights."""
    from dt_fast.config import DecisionTransformerConfig

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory")
    config = DecisionTransformerConfig.from_json_file(path / "config.json")
    return config.state_dim, config.act_dim


def plot_returns(results: Sequence[EvalResult], path: str | os.PathLike, best_return: float | None = None) -> None:
    """PNG of achieved against target return (mean and 95% interval), the dataset's best return marked if known."""
    require("matplotlib", "the return plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    targets = np.array([r.target_return for r in results], dtype=np.float64)  # [T]
    means = np.array([r.mean for r in results])  # [T]
    ax.errorbar(targets, means, yerr=[r.ci95 for r in results], fmt="o-", capsize=3,
                label=f"achieved ({results[0].mode}, {len(results[0].returns)} episodes, 95% CI)")
    lims = [min(targets.min(), means.min(), 0.0), max(targets.max(), means.max())]
    ax.plot(lims, lims, "k--", lw=1, label="achieved = target")
    if best_return is not None:
        ax.axhline(best_return, color="tab:red", ls=":", label=f"best return in dataset ({best_return:.0f})")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(results[0].env_id)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def record_video(policy: Any, env_id: str, path: str | os.PathLike, seed: int = 0) -> tuple[float, int, int]:
    """Render one episode of row 0 of `policy` offscreen to an mp4; returns (return, length, frames).

    MuJoCo renders offscreen with EGL unless MUJOCO_GL says otherwise. Frames: the first observation and one after each
    step, so length + 1. Every row of the policy sees the same observation; only row 0's action is used.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = require("gymnasium", f"the video of {env_id}")
    imageio_ffmpeg = require("imageio_ffmpeg", "the video")

    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    simplify_mujoco_rendering(env)
    frame = env.render()  # [H, W, 3] uint8
    writer = imageio_ffmpeg.write_frames(str(path), (frame.shape[1], frame.shape[0]),
                                         fps=env.metadata.get("render_fps", 30), macro_block_size=1)
    writer.send(None)
    try:
        writer.send(np.ascontiguousarray(frame))
        policy.reset()
        rows, reward, total, length, done = policy.num_envs, None, 0.0, 0, False
        while not done:
            rewards = None if reward is None else np.full(rows, reward)  # [rows]
            action = policy.act(np.repeat(obs[None], rows, axis=0), rewards)[0]  # [act_dim]
            obs, reward, terminated, truncated, _ = env.step(action)
            total, length, done = total + float(reward), length + 1, terminated or truncated
            writer.send(np.ascontiguousarray(env.render()))
    finally:
        writer.close()
        env.close()
    return total, length, length + 1


def simplify_mujoco_rendering(env: Any) -> None:
    """No multisampling, shadows or reflections: 8x faster frames in software (Mesa llvmpipe) on 2 cores."""
    base = env.unwrapped
    if not hasattr(base, "mujoco_renderer"):
        return
    import mujoco

    base.model.vis.quality.offsamples = 0  # read when the offscreen buffer is created, by the first render
    scene = base.mujoco_renderer._get_viewer("rgb_array").scn  # gymnasium creates the viewer lazily; no public getter
    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast eval`."""
    parser.add_argument("checkpoint", help="checkpoint directory (config.json, model.safetensors, dt_fast.json)")
    parser.add_argument("--env", default=None, help="environment id (default: the one stored with the checkpoint)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per target return")
    parser.add_argument("--target-return", type=float, nargs="+", default=None, metavar="R",
                        help="one or more returns to condition on, env units (default: the checkpoint's)")
    parser.add_argument("--num-envs", type=int, default=None,
                        help="envs stepped at once (default min(64, episodes x targets))")
    parser.add_argument("--mode", choices=["exact", "rolling"], default="exact",
                        help="inference mode; rolling is O(1) per step but approximate once the window slides")
    parser.add_argument("--backend", default="auto", help="policy backend: auto (fastest available), cpp or torch")
    parser.add_argument("--seed", type=int, default=0, help="env i is seeded seed + i")
    parser.add_argument("--video", default=None, metavar="FILE.mp4", help="render one episode to this mp4")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="plot achieved against target return")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint, print a table, and write the plot and video if asked."""
    from dt_fast.checkpoint import METADATA_NAME, read_metadata

    path = Path(args.checkpoint)
    meta = read_metadata(path) if (path / METADATA_NAME).is_file() else {}
    env_id = args.env or meta.get("env_id")
    if env_id is None:
        raise ValueError(f"--env is required: {path} has no env id in {METADATA_NAME}")
    for name, suffix in (("--video", ".mp4"), ("--plot", ".png")):
        value = getattr(args, name[2:])
        if value is not None and Path(value).suffix.lower() != suffix:
            raise ValueError(f"{name} must name a {suffix} file, got {value!r}")
    results = evaluate(path, env=env_id, episodes=args.episodes, num_envs=args.num_envs,
                       target_return=args.target_return, seed=args.seed, mode=args.mode, backend=args.backend,
                       progress=not args.no_progress)
    results = results if isinstance(results, list) else [results]
    print(format_table(results))
    if args.plot:
        plot_returns(results, args.plot, best_return=dataset_best_return(meta))
        print(f"plot: {args.plot}")
    if args.video:
        from dt_fast.policy import Policy

        policy = Policy.from_pretrained(path, target_return=results[0].target_return, mode=args.mode,
                                        backend=args.backend, num_envs=1)
        ret, length, frames = record_video(policy, env_id, args.video, seed=args.seed)
        print(f"video: {args.video} ({frames} frames, one episode of return {ret:.1f} over {length} steps, "
              f"target {results[0].target_return:g}, gymnasium seed {args.seed})")
    return 0


def dataset_best_return(meta: dict[str, Any]) -> float | None:
    """The best episode return of the training dataset if dt_fast.json records it."""
    dataset = meta.get("dataset") or {}
    best = dataset.get("best_return") if isinstance(dataset, dict) else None
    return None if best is None else float(best)


def format_table(results: Sequence[EvalResult]) -> str:
    """A text table with one row per target return."""
    head = (f"{'target':>9} {'episodes':>8} {'mean':>9} {'std':>8} {'ci95':>8} {'norm':>7} {'mean len':>8} "
            f"{'env-steps/s':>11}")
    rows = [head, "-" * len(head)]
    for r in results:
        norm = "-" if r.normalized_score is None else f"{r.normalized_score:.1f}"
        rows.append(f"{r.target_return:>9.1f} {len(r.returns):>8} {r.mean:>9.1f} {r.std:>8.1f} {r.ci95:>8.1f} "
                    f"{norm:>7} {r.lengths.mean():>8.1f} {r.env_steps_per_s:>11.0f}")
    first = results[0]
    rows.append(f"{first.env_id}, mode {first.mode}{' (approximate)' if first.mode == 'rolling' else ''}, "
                f"{first.wall_s:.1f} s wall for the whole batched run; ci95 = 1.96 std / sqrt(episodes)")
    return "\n".join(rows)
