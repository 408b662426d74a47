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

Several target returns run in one batch: slot i is conditioned on target i % T. The env (envpool or gymnasium),
its checks and the continuous-batching loop are dt_fast.envs's, shared with data collection (dt_fast.collect).

`dt-fast eval` checks every input and every output path (--results, --plot, --video: suffix, directory, no
existing file unless --overwrite) before it starts an env, and writes each output atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dt_fast.checkpoint import (
    CONFIG_NAME,
    METADATA_NAME,
    SAFE_WEIGHTS_NAME,
    atomic_write,
    check_output,
    read_metadata,
    write_text,
)
from dt_fast.envs import check_env_matches, make_vector_env, normalized_score, reference_scores, run_episodes
from dt_fast.extras import require

DEFAULT_NUM_ENVS = 64  # slots when num_envs is not given (fewer if fewer episodes are asked for)


@dataclass
class EvalResult:
    """Per-episode returns and lengths of one target return, with summary statistics."""

    env_id: str
    """The environment evaluated."""
    target_return: float
    """The return the policy was conditioned on, environment units."""
    returns: np.ndarray
    """(N,) float64, the undiscounted return of each episode, in episode order."""
    lengths: np.ndarray
    """(N,) int64, the steps of each episode."""
    env_steps_per_s: float
    """Counted env steps of the whole batched run over its wall time."""
    wall_s: float
    """Wall time of the whole batched loop (env creation and first reset excluded)."""
    reference: tuple[float, float] | None = None
    """(random, expert) returns for the normalised score."""
    mode: str = ""
    """The policy's inference mode; "rolling" is approximate."""

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
    if num_envs is not None and (
        isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1
    ):
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    for i, target in enumerate(targets):
        if target is None and len(targets) == 1:
            continue
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not math.isfinite(target):
            raise ValueError(f"target_return[{i}] must be a finite number, got {target!r}")
    if num_envs is not None and num_envs < len(targets):
        raise ValueError(
            f"num_envs={num_envs} is smaller than the number of target returns ({len(targets)}): "
            "each target needs at least one env slot"
        )


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


def default_num_envs(episodes: int, num_targets: int) -> int:
    """Env slots when num_envs is not given: min(64, total episodes), at least one per target."""
    return max(num_targets, min(DEFAULT_NUM_ENVS, episodes * num_targets))


def run_batched(
    env: Any,
    obs: np.ndarray,
    policy: Any,
    slot_target: np.ndarray,
    queues: list[list[int]],
    episodes: int,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run every scheduled episode to its end; returns and lengths, each [T, N] indexed (target, episode).

    Args:
        env: vector env from `dt_fast.envs.make_vector_env`, just reset; `obs` [B, state_dim] its first observations.
        policy: `reset(env_ids)` / `act(obs [B, state_dim], reward [B] | None) -> [B, act_dim]`, B rows.
        slot_target, queues: from `assign_slots`; episode k of target j has id j * episodes + k in the loop.
    """
    from tqdm import tqdm

    num_targets = int(slot_target.max()) + 1
    taken = [0] * len(queues)  # episodes each slot has started

    def next_episode(i: int) -> int:
        if taken[i] == len(queues[i]):
            return -1
        taken[i] += 1
        return int(slot_target[i]) * episodes + queues[i][taken[i] - 1]

    def act(obs: np.ndarray, reward: np.ndarray | None, _episode: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        if reward is None:  # the first step: every row starts
            policy.reset()
        elif fresh.any():
            policy.reset(np.flatnonzero(fresh))
        return policy.act(obs, reward)  # [B, act_dim]

    with tqdm(total=num_targets * episodes, desc="eval", unit="ep", disable=not progress) as bar:
        returns, lengths = run_episodes(env, obs, num_targets * episodes, next_episode, act, progress=bar.update)
    return returns.reshape(num_targets, episodes), lengths.reshape(num_targets, episodes)  # [T, N]


def evaluate(
    policy_or_checkpoint: Any,
    env: str = "Hopper-v4",
    episodes: int = 100,
    num_envs: int | None = None,
    target_return: float | Sequence[float] | None = None,
    seed: int = 0,
    mode: str = "exact",
    backend: str = "auto",
    reference: tuple[float, float] | None = None,
    progress: bool = True,
) -> EvalResult | list[EvalResult]:
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
        mode, backend: the Policy built from a checkpoint directory (see `dt_fast.Policy`).
        progress: show a progress bar.

    Returns:
        An EvalResult, or a list of them (one per target) when `target_return` is a list.

    Raises:
        ValueError: a bad argument (episodes, num_envs, an empty or non-finite target list, a reference), an env
            that dt_fast cannot drive (not Box observations and actions of rank 1), or an env whose sizes differ
            from the checkpoint's; checked before any env starts.
        FileNotFoundError: the checkpoint directory or its files are missing.
        ImportError: envpool and gymnasium are missing (the `[envs]` extra).
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
        num_envs = num_envs or default_num_envs(episodes, len(targets))
        slot_target, queues = assign_slots(num_envs, episodes, len(targets))
        policy = load_policy(path, num_envs, mode, backend)
    else:
        policy = policy_or_checkpoint
        spec = check_env_matches(env, policy.state_dim, policy.act_dim, source="policy")
        if num_envs is not None and num_envs != policy.num_envs:
            raise ValueError(
                f"num_envs={num_envs} but the policy has num_envs={policy.num_envs}: a Policy's own "
                "rows are the env slots (leave num_envs out)"
            )
        if policy.num_envs < len(targets):
            raise ValueError(
                f"the policy has num_envs={policy.num_envs}, fewer than the number of target "
                f"returns ({len(targets)}): each target needs at least one env slot"
            )
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
    results = [
        EvalResult(env, float(t), returns[j], lengths[j], rate, wall, reference, policy.mode)
        for j, t in enumerate(targets)
    ]
    return results if many else results[0]


def load_policy(path: Path, num_envs: int, mode: str, backend: str) -> Any:
    """A Policy over `num_envs` rows from a checkpoint directory (its dt_fast.json supplies the statistics)."""
    from dt_fast.policy import Policy

    return Policy.from_pretrained(path, mode=mode, backend=backend, num_envs=num_envs)


def policy_target(policy: Any) -> float:
    """The one target return (env units) all rows of `policy` condition on; ValueError if the rows differ."""
    targets = np.asarray(policy.target_return, dtype=np.float64).reshape(-1)  # [B]
    if not np.all(targets == targets[0]):
        raise ValueError(
            f"the policy's rows condition on different target returns ({np.unique(targets).tolist()}):"
            " pass target_return to evaluate"
        )
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

    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{path}: not a checkpoint directory (expected {CONFIG_NAME} and {SAFE_WEIGHTS_NAME}, "
            f"plus {METADATA_NAME} from dt_fast)"
        )
    config = DecisionTransformerConfig.from_json_file(path / CONFIG_NAME)
    return config.state_dim, config.act_dim


def returns_figure(results: Sequence[EvalResult], best_return: float | None = None) -> Any:
    """Figure of achieved against target return (mean and 95% interval), the dataset's best return marked if known.

    The legend sits below the axes and the y range has headroom, so no line hides under the legend or the frame.
    """
    require("matplotlib", "the return plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    targets = np.array([r.target_return for r in results], dtype=np.float64)  # [T]
    means = np.array([r.mean for r in results])  # [T]
    ci = np.array([r.ci95 for r in results])  # [T]
    ax.errorbar(
        targets,
        means,
        yerr=ci,
        fmt="o-",
        capsize=3,
        label=f"achieved ({results[0].mode}, {len(results[0].returns)} episodes, 95% CI)",
    )
    lims = [min(targets.min(), means.min(), 0.0), max(targets.max(), means.max())]
    ax.plot(lims, lims, "k--", lw=1, label="achieved = target")
    shown = [*lims, (means - ci).min(), (means + ci).max()]
    if best_return is not None:
        ax.axhline(best_return, color="tab:red", ls=":", label=f"best return in dataset ({best_return:.0f})")
        shown.append(best_return)
    low, high = min(shown), max(shown)
    pad = 0.08 * (high - low) if high > low else 1.0
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(results[0].env_id)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_returns(results: Sequence[EvalResult], path: str | os.PathLike, best_return: float | None = None) -> None:
    """Write `returns_figure` to a PNG, atomically."""
    fig = returns_figure(results, best_return)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_results(path: str | os.PathLike, results: Sequence[EvalResult], seed: int, num_envs: int) -> None:
    """Per-episode results (target, episode index, return, length) and the summary of each target, atomically;
    JSON for a .json path (a "summary" and an "episodes" list), else CSV (one row per episode, the summary of its
    target repeated on each row)."""
    run = {"env_id": results[0].env_id, "mode": results[0].mode, "seed": seed, "num_envs": num_envs}
    summary = [
        {
            "target_return": r.target_return,
            "episodes": len(r.returns),
            "mean": r.mean,
            "std": r.std,
            "ci95": r.ci95,
            "normalized_score": r.normalized_score,
            "mean_length": float(r.lengths.mean()),
            "env_steps_per_s": r.env_steps_per_s,
            "wall_s": r.wall_s,
        }
        for r in results
    ]
    episodes = [
        [
            {"target_return": r.target_return, "episode": k, "return": float(ret), "length": int(length)}
            for k, (ret, length) in enumerate(zip(r.returns, r.lengths))
        ]
        for r in results
    ]  # [T][N]
    if Path(path).suffix.lower() == ".json":
        flat = [row for rows in episodes for row in rows]
        write_text(path, json.dumps({**run, "summary": summary, "episodes": flat}, indent=2) + "\n")
        return
    columns = [
        "target_return",
        "episode",
        "return",
        "length",
        "mean",
        "std",
        "ci95",
        "normalized_score",
        "env_id",
        "mode",
        "seed",
        "num_envs",
    ]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for target, rows in zip(summary, episodes):
        writer.writerows({**target, **run, **row} for row in rows)
    write_text(path, text.getvalue())


def record_video(policy: Any, env_id: str, path: str | os.PathLike, seed: int = 0) -> tuple[float, int, int]:
    """Render one episode of row 0 of `policy` offscreen to an mp4; returns (return, length, frames).

    MuJoCo renders offscreen with EGL unless MUJOCO_GL says otherwise. Frames: the first observation and one after each
    step, so length + 1. Every row of the policy sees the same observation; only row 0's action is used.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = require("gymnasium", f"the video of {env_id}")
    imageio_ffmpeg = require("imageio_ffmpeg", "the video")

    env = gym.make(env_id, render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=seed)
        simplify_mujoco_rendering(env)
        frame = env.render()  # [H, W, 3] uint8
        with atomic_write(path) as tmp:
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (frame.shape[1], frame.shape[0]), fps=env.metadata.get("render_fps", 30), macro_block_size=1
            )
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
    finally:
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


OUTPUTS = (("--results", (".json", ".csv")), ("--plot", (".png",)), ("--video", (".mp4",)))
"""Output flags of `dt-fast eval` and the suffixes each accepts."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast eval`."""
    parser.add_argument("checkpoint", help="checkpoint directory (config.json, model.safetensors, dt_fast.json)")
    parser.add_argument("--env", default=None, help="environment id (default: the one stored with the checkpoint)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per target return")
    parser.add_argument(
        "--target-return",
        type=float,
        nargs="+",
        default=None,
        metavar="R",
        help="one or more returns to condition on, env units (default: the checkpoint's)",
    )
    parser.add_argument(
        "--context-len",
        type=int,
        default=None,
        metavar="K",
        help="steps in the model's window (default: the checkpoint's dt_fast.json)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="returns-to-go are divided by it, 1000 for MuJoCo (default: the checkpoint's)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="FILE_OR_NAME",
        help="training data (a dataset file or a bundled name such as hopper-medium-v4) to take the "
        "state mean and std from (default: the checkpoint's dt_fast.json)",
    )
    parser.add_argument(
        "--num-envs", type=int, default=None, help="envs stepped at once (default min(64, episodes x targets))"
    )
    parser.add_argument(
        "--mode",
        choices=["exact", "rolling"],
        default="exact",
        help="inference mode; rolling is O(1) per step but approximate once the window slides",
    )
    parser.add_argument("--backend", default="auto", help="policy backend: auto (fastest available), cpp or torch")
    parser.add_argument("--seed", type=int, default=0, help="env i is seeded seed + i")
    parser.add_argument(
        "--results",
        default=None,
        metavar="FILE.json|FILE.csv",
        help="write every episode's target, index, return and length, and the summary",
    )
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="plot achieved against target return")
    parser.add_argument("--video", default=None, metavar="FILE.mp4", help="render one episode to this mp4")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --results, --plot, --video files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of `dt-fast eval`, before any work: its suffix, its directory, no file replaced unasked."""
    for flag, suffixes in OUTPUTS:
        value = getattr(args, flag[2:])
        if value is None:
            continue
        if Path(value).suffix.lower() not in suffixes:
            raise ValueError(f"{flag} must name a {' or '.join(suffixes)} file, got {value!r}")
        check_output(value, args.overwrite, flag)


def check_policy_inputs(path: Path, meta: Any, env_id: str | None, args: argparse.Namespace) -> None:
    """ValueError naming every flag the checkpoint needs (it has no dt_fast.json, or no env id in it), or a bad
    --context-len or --scale."""
    missing = [] if env_id is not None else ["--env"]
    if meta is None:
        given = (
            ("--target-return", args.target_return),
            ("--context-len", args.context_len),
            ("--scale", args.scale),
            ("--dataset", args.dataset),
        )
        missing += [flag for flag, value in given if value is None]
    if missing:
        where = (
            f"{path} has no {METADATA_NAME} (a plain transformers checkpoint)"
            if meta is None
            else f"{path / METADATA_NAME} has no env id"
        )
        rest = missing[1:]
        also = f", as {'is' if len(rest) == 1 else 'are'} {', '.join(rest)}" if rest else ""
        raise ValueError(f"{missing[0]} is required{also}: {where} to take {'them' if also else 'it'} from")
    if args.context_len is not None and args.context_len < 1:
        raise ValueError(f"--context-len must be >= 1, got {args.context_len}")
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        raise ValueError(f"--scale must be a positive number, got {args.scale}")


def dataset_statistics(name: str, state_dim: int, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """State mean, std (as training computes them) and best episode return of dataset `name` (a file or bundled
    name); ValueError if its observations do not fit the checkpoint."""
    from dt_fast.data import load_dataset

    data = load_dataset(name)
    if data.observations.shape[1] != state_dim:
        raise ValueError(
            f"--dataset {name}: observations of size {data.observations.shape[1]}, but checkpoint "
            f"{path} has state_dim={state_dim}"
        )
    return data.state_mean, data.state_std, float(data.episode_returns.max())


def run(args: argparse.Namespace) -> int:
    """Check every input and output, evaluate, print a table, and write the results, plot and video if asked."""
    from dt_fast.policy import Policy

    path = Path(args.checkpoint)
    state_dim, act_dim = checkpoint_sizes(path)
    targets = args.target_return or [None]
    check_arguments(args.episodes, args.num_envs, targets)
    check_outputs(args)
    meta = read_metadata(path)
    env_id = args.env or (meta.env_id if meta is not None else None)
    if env_id is not None:
        check_env_matches(env_id, state_dim, act_dim, source=f"checkpoint {path}")
    check_policy_inputs(path, meta, env_id, args)
    best_return = None if meta is None else meta.best_return
    stats = {"scale": args.scale, "context_len": args.context_len}
    if args.dataset is not None:
        stats["state_mean"], stats["state_std"], best_return = dataset_statistics(args.dataset, state_dim, path)
    num_envs = args.num_envs or default_num_envs(args.episodes, len(targets))
    policy = Policy.from_pretrained(
        path, target_return=targets[0], mode=args.mode, backend=args.backend, num_envs=num_envs, **stats
    )
    results = evaluate(
        policy,
        env=env_id,
        episodes=args.episodes,
        target_return=args.target_return,
        seed=args.seed,
        progress=not args.no_progress,
    )
    results = results if isinstance(results, list) else [results]
    print(format_table(results))
    if args.results:
        write_results(args.results, results, args.seed, num_envs)
        print(f"results: {args.results}")
    if args.plot:
        plot_returns(results, args.plot, best_return=best_return)
        print(f"plot: {args.plot}")
    if args.video:
        policy = Policy.from_pretrained(
            path, target_return=results[0].target_return, mode=args.mode, backend=args.backend, num_envs=1, **stats
        )
        ret, length, frames = record_video(policy, env_id, args.video, seed=args.seed)
        print(
            f"video: {args.video} ({frames} frames, one episode of return {ret:.1f} over {length} steps, "
            f"target {results[0].target_return:g}, gymnasium seed {args.seed})"
        )
    return 0


def format_table(results: Sequence[EvalResult]) -> str:
    """A text table with one row per target return."""
    head = (
        f"{'target':>9} {'episodes':>8} {'mean':>9} {'std':>8} {'ci95':>8} {'norm':>7} {'mean len':>8} "
        f"{'env-steps/s':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        norm = "-" if r.normalized_score is None else f"{r.normalized_score:.1f}"
        rows.append(
            f"{r.target_return:>9.1f} {len(r.returns):>8} {r.mean:>9.1f} {r.std:>8.1f} {r.ci95:>8.1f} "
            f"{norm:>7} {r.lengths.mean():>8.1f} {r.env_steps_per_s:>11.0f}"
        )
    first = results[0]
    rows.append(
        f"{first.env_id}, mode {first.mode}{' (approximate)' if first.mode == 'rolling' else ''}, "
        f"{first.wall_s:.1f} s wall for the whole batched run; ci95 = 1.96 std / sqrt(episodes)"
    )
    return "\n".join(rows)
