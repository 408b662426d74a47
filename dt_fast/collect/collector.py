"""`dt-fast collect`: roll a behaviour policy out in envpool and write the episodes as a D4RL HDF5 file.

Layout (what D4RL's `get_dataset` returns, read back by `dt_fast.load_dataset`): float32 `observations`
[N, obs_dim], `actions` [N, act_dim], `rewards` [N], `next_observations` [N, obs_dim]; bool `terminals` [N]
(the episode ended in a terminal state) and `timeouts` [N] (the time limit cut it: timeouts 1, terminals 0);
transitions ordered by episode then time, every episode complete. Root attributes: `env_id` plus how the
data was made (`policy`, `noise`, `seed`, `episodes`).

Policies: `random` (uniform in the action box), `ars` (train a linear policy with ARS, see
dt_fast/collect/behaviour.py, then collect with it), or the path of a linear policy saved as .npz.
An existing --out is replaced only with --overwrite, and its directory must exist (dt_fast.checkpoint.check_output).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dt_fast.checkpoint import atomic_write, check_output
from dt_fast.collect.behaviour import LinearPolicy, train_ars
from dt_fast.collect.rollout import Episodes, record_episodes
from dt_fast.envs import env_spec, make_vector_env

MAX_ENVS = 16  # envs stepped in parallel; fixed so that a seed always gives the same file

Policy = Callable[[np.ndarray], np.ndarray]


def collect(
    env_id: str,
    policy: Policy | None,
    episodes: int,
    noise: Sequence[float] = (0.0,),
    seed: int = 0,
    progress: bool = True,
) -> Episodes:
    """Run `episodes` complete episodes of `policy` (None: uniform random actions) with Gaussian action noise.

    Episode k gets noise std `noise[k % len(noise)]`, so a list of levels mixes them evenly; actions are
    clipped to the action box after the noise is added.
    """
    check_counts(episodes, noise)
    spec = env_spec(env_id)
    low, high = np.array(spec.action_low), np.array(spec.action_high)  # [act_dim]
    if policy is None and not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"random actions are drawn uniformly in the action box, but {env_id}'s is unbounded "
            f"(low {low.tolist()}, high {high.tolist()})"
        )
    env, obs = make_vector_env(spec, num_envs=min(MAX_ENVS, episodes), seed=seed)
    rng = np.random.default_rng([seed, 1])
    levels = np.asarray(noise, dtype=np.float64)  # [L]

    def act(obs: np.ndarray, episode: np.ndarray) -> np.ndarray:
        base = rng.uniform(low, high, (len(obs), len(low))) if policy is None else policy(obs)  # [B, act_dim]
        sigma = levels[episode % len(levels)][:, None]  # [B, 1]
        return np.clip(base + sigma * rng.standard_normal((len(obs), len(low))), low, high)  # [B, act_dim]

    try:
        with tqdm(total=episodes, desc=f"collect {env_id}", unit="ep", disable=not progress) as bar:
            return record_episodes(env, obs, episodes, act, progress=bar.update)
    finally:
        env.close()


def check_counts(episodes: int, noise: Sequence[float]) -> None:
    """ValueError naming the argument if the episode count or a noise level is out of range."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if not noise or min(noise) < 0:
        raise ValueError(f"--noise levels must be >= 0, got {list(noise)}")


def write_d4rl(path: str | Path, data: Episodes, env_id: str, **attrs: object) -> None:
    """Write `data` to `path` in the D4RL layout, atomically (checkpoint.atomic_write)."""
    import h5py

    arrays = {
        "observations": data.observations.astype(np.float32),
        "actions": data.actions.astype(np.float32),
        "rewards": data.rewards.astype(np.float32),
        "terminals": data.terminals.astype(bool),
        "timeouts": data.timeouts.astype(bool),
        "next_observations": data.next_observations.astype(np.float32),
    }
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["env_id"] = env_id
        for key, value in attrs.items():
            f.attrs[key] = value
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression="gzip", shuffle=True)


def load_policy(spec: str, env_id: str) -> LinearPolicy | None:
    """The policy named by `--policy` that needs no training: None for `random`, or a saved .npz policy."""
    if spec == "random":
        return None
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--policy {spec!r}: expected 'ars', 'random' or an existing .npz linear policy file")
    policy = LinearPolicy.load(path)
    env = env_spec(env_id)
    shape = (env.act_dim, env.state_dim)
    if policy.weights.shape != shape:
        raise ValueError(
            f"--policy {spec}: weights {policy.weights.shape} do not fit {env_id} "
            f"(act_dim, obs_dim) = {shape}" + (f"; it was trained on {policy.env_id}" if policy.env_id else "")
        )
    return policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast collect`."""
    parser.add_argument("--env", required=True, help="env id, e.g. Hopper-v4 (envpool, else gymnasium)")
    parser.add_argument(
        "--policy", required=True, help="'ars' (train a linear policy with ARS first), 'random', or a saved policy .npz"
    )
    parser.add_argument("--episodes", type=int, required=True, help="episodes to collect, all complete")
    parser.add_argument("--out", required=True, help="output HDF5 file (D4RL layout); its directory must exist")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (and --save-policy) file instead of refusing",
    )
    parser.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="S",
        help="std of Gaussian action noise; several values are used in turn, one per episode",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of ARS, the envs and the noise")
    parser.add_argument(
        "--target-return",
        type=float,
        default=1500.0,
        help="with --policy ars: train until the evaluation mean return reaches this "
        "(1500 is medium quality on Hopper)",
    )
    parser.add_argument("--max-iterations", type=int, default=300, help="with --policy ars: ARS iteration cap")
    parser.add_argument("--save-policy", default=None, help="with --policy ars: also save the trained policy .npz")


def run(args: argparse.Namespace) -> int:
    """Check every input, get the policy (training it for 'ars'), collect, write, print a summary."""
    check_counts(args.episodes, args.noise)
    if args.save_policy is not None and args.policy != "ars":
        raise ValueError("--save-policy applies only to --policy ars (the other policies are not trained)")
    env_spec(args.env)
    out = check_output(args.out, args.overwrite, "--out")
    if args.save_policy is not None:
        check_output(args.save_policy, args.overwrite, "--save-policy")
    start = time.perf_counter()
    if args.policy == "ars":
        result = train_ars(
            args.env,
            target_return=args.target_return,
            max_iterations=args.max_iterations,
            seed=args.seed,
            log=lambda line: print(line, file=sys.stderr),
        )
        policy: LinearPolicy | None = result.policy
        print(
            f"ARS: evaluation return {result.eval_return:.1f} after {result.iterations} iterations, "
            f"{result.env_steps:,} env steps, {result.seconds:.1f} s"
        )
        if args.save_policy is not None:
            result.policy.save(args.save_policy)
    else:
        policy = load_policy(args.policy, args.env)
    data = collect(args.env, policy, args.episodes, args.noise, args.seed)
    write_d4rl(
        out, data, args.env, policy=args.policy, noise=np.asarray(args.noise), seed=args.seed, episodes=args.episodes
    )
    r = data.returns
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(r)} episodes, {len(data.rewards):,} transitions, "
        f"return mean {r.mean():.1f} std {r.std():.1f} min {r.min():.1f} max {r.max():.1f}, "
        f"{int(data.timeouts.sum())} time-limit ends, {time.perf_counter() - start:.1f} s"
    )
    return 0
