"""Environments: which ids exist and whether dt_fast supports them, the batched env, the continuous-batching loop.

The one env check is `env_spec`: the id must be known (envpool first, gymnasium as fallback) and its spaces what
a Decision Transformer over vectors can drive (SUPPORTED), inspected before any env is stepped. Evaluation,
training, collection and ARS all go through it.

The batched env (`make_vector_env`) auto-resets on the NEXT step, in envpool 1.2.5 (gymnasium API) as in
gymnasium's vector env with AutoresetMode.NEXT_STEP: the step on which an env reports `terminated` or
`truncated` returns the true last observation, and that env's next step ignores its action and returns the
first observation of a new episode (reward 0). `run_episodes` hands out episodes to envs as they free up
(continuous batching) and skips the reset steps, so every episode it starts is finished and counted, and no env
waits for the slowest episode (DESIGN.md "Evaluation must not favour short episodes").
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dt_fast.extras import require

# D4RL reference returns (random policy, expert policy) used for normalised scores: d4rl/infos.py, v2 datasets.
D4RL_REFERENCE = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}

SUPPORTED = "Box observations of rank 1 and Box actions of rank 1 (continuous control, such as Hopper-v4)"


@dataclass(frozen=True)
class EnvSpec:
    """What dt_fast needs to know of an environment before it starts one."""

    env_id: str
    state_dim: int
    act_dim: int
    max_episode_steps: int
    backend: str  # "envpool" or "gymnasium"
    action_low: tuple[float, ...]  # [act_dim] bounds of the action box
    action_high: tuple[float, ...]  # [act_dim]


def env_spec(env_id: str) -> EnvSpec:
    """Sizes of `env_id`, from envpool if it has the id, else gymnasium; ValueError if it is unknown (naming the
    closest known ids) or its spaces are not what dt_fast supports."""
    try:
        import envpool

        if env_id in envpool.list_all_envs():
            spec = envpool.make_spec(env_id)
            with warnings.catch_warnings():  # gymnasium warns about the bounds' dtype of some envpool spaces
                warnings.simplefilter("ignore")
                spaces = spec.observation_space, spec.action_space
            return spec_from_spaces(env_id, *spaces, int(spec.config.max_episode_steps), "envpool")
    except ImportError:
        pass
    gym = require("gymnasium", env_id)

    if env_id in gym.registry:
        env = gym.make(env_id)
        try:
            steps = env.spec.max_episode_steps if env.spec is not None else None
            return spec_from_spaces(env_id, env.observation_space, env.action_space, int(steps or 1000), "gymnasium")
        finally:
            env.close()
    raise ValueError(f"unknown env id {env_id!r}; closest known ids: {', '.join(close_env_ids(env_id)) or 'none'}")


def spec_from_spaces(
    env_id: str, observation_space: Any, action_space: Any, max_episode_steps: int, backend: str
) -> EnvSpec:
    """The EnvSpec of an env with these (single-env) spaces; ValueError naming the env if dt_fast cannot drive it."""
    from gymnasium.spaces import Box

    if not (
        isinstance(observation_space, Box)
        and len(observation_space.shape) == 1
        and isinstance(action_space, Box)
        and len(action_space.shape) == 1
    ):
        raise ValueError(
            f"{env_id} has observation space {space_text(observation_space)} and action space "
            f"{space_text(action_space)}; dt_fast supports {SUPPORTED}"
        )
    return EnvSpec(
        env_id,
        int(observation_space.shape[0]),
        int(action_space.shape[0]),
        max_episode_steps,
        backend,
        tuple(float(x) for x in action_space.low),
        tuple(float(x) for x in action_space.high),
    )


def space_text(space: Any) -> str:
    """A short description of a gymnasium space for error messages: a Box's shape and dtype, a Dict's keys."""
    from gymnasium.spaces import Box, Dict

    if isinstance(space, Box):
        return f"Box of shape {space.shape}, {space.dtype}"
    if isinstance(space, Dict):
        return f"Dict with keys {list(space.keys())}"
    return str(space)


def close_env_ids(env_id: str, n: int = 5) -> list[str]:
    """The known env ids most similar to `env_id`."""
    known = set()
    try:
        import envpool

        known.update(envpool.list_all_envs())
    except ImportError:
        pass
    try:
        import gymnasium as gym

        known.update(gym.registry)
    except ImportError:
        pass
    return difflib.get_close_matches(env_id, sorted(known), n=n, cutoff=0.4)


def check_env_matches(env_id: str, state_dim: int, act_dim: int, source: str) -> EnvSpec:
    """Raise if `env_id` is unknown or unsupported, or its observation/action sizes differ from those of `source`."""
    spec = env_spec(env_id)
    if (spec.state_dim, spec.act_dim) != (state_dim, act_dim):
        raise ValueError(
            f"{source} has state_dim={state_dim}, act_dim={act_dim} but {env_id} has "
            f"state_dim={spec.state_dim}, act_dim={spec.act_dim}"
        )
    return spec


def make_vector_env(
    spec: EnvSpec, num_envs: int, seed: int, max_episode_steps: int | None = None
) -> tuple[Any, np.ndarray]:
    """`num_envs` copies of `spec`'s env stepped at once, NEXT_STEP auto-reset, just reset: (env, obs [B, state_dim]).

    envpool when it has the id, else gymnasium's synchronous vector env; env i is seeded `seed + i` in both (envpool
    at construction, gymnasium by the first reset). Later `env.reset()` calls continue those random streams.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    if spec.backend == "envpool":
        import envpool

        env = envpool.make_gymnasium(spec.env_id, num_envs=num_envs, seed=seed, **kwargs)
        obs, _ = env.reset()  # [B, state_dim]
        return env, obs
    import gymnasium as gym

    env = gym.make_vec(
        spec.env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
        **kwargs,
    )
    obs, _ = env.reset(seed=seed)  # [B, state_dim], env i seeded seed + i
    return env, obs


Act = Callable[[np.ndarray, "np.ndarray | None", np.ndarray, np.ndarray], np.ndarray]
Record = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def run_episodes(
    env: Any,
    obs: np.ndarray,
    num_episodes: int,
    next_episode: Callable[[int], int],
    act: Act,
    record: Record | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Continuous batching: step every env until episodes 0 .. num_episodes - 1 have all ended.

    Args:
        env: a vector env from `make_vector_env`; `obs` [B, state_dim] its current observations, each the first
            of an episode.
        next_episode: `next_episode(i)` is the episode env i runs from the observation it holds now (called at
            the start and after each of env i's reset steps, envs in index order), or -1 to leave it uncounted.
            Every id in [0, num_episodes) must be handed out once.
        act: `act(obs [B, state_dim], reward [B] | None, episode [B] int64, fresh [B] bool) -> actions [B, act_dim]`
            for every env at once: `reward` is the previous step's (None on the first step), `episode` the
            episode each env is in (-1: uncounted, or its reset step), `fresh` marks the envs whose episode starts
            with `obs`.
        record: called after every step with (obs, actions, reward, next_obs, terminated, truncated, episode),
            `episode` [B] as `act` saw it, a copy.
        progress: called with the number of episodes that ended on each step that ended some.
    Returns:
        return [E] float64 and length [E] int64 of each episode, indexed by episode id.
    """
    num_envs = len(obs)
    returns = np.zeros(num_episodes)  # [E]
    lengths = np.zeros(num_episodes, dtype=np.int64)  # [E]
    episode = np.array([next_episode(i) for i in range(num_envs)], dtype=np.int64)  # [B], -1 uncounted
    fresh = episode >= 0  # [B] the episode starts with this observation
    ret = np.zeros(num_envs)  # [B] return so far of the running episode
    steps = np.zeros(num_envs, dtype=np.int64)  # [B] steps so far of the running episode
    resetting = np.zeros(num_envs, dtype=bool)  # [B] this step is the env's auto-reset step
    reward = None
    finished = 0
    while finished < num_episodes:
        action = act(obs, reward, episode, fresh)  # [B, act_dim]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        if record is not None:
            record(obs, action, reward, next_obs, terminated, truncated, episode.copy())
        running = episode >= 0
        ret[running] += reward[running]
        steps[running] += 1
        ended = np.flatnonzero(running & (terminated | truncated))
        for i in ended:
            returns[episode[i]], lengths[episode[i]] = ret[i], steps[i]
            ret[i], steps[i], episode[i] = 0.0, 0, -1
        fresh = np.zeros(num_envs, dtype=bool)
        for i in np.flatnonzero(resetting):  # these envs now hold the first observation of a new episode
            episode[i] = next_episode(i)
            fresh[i] = episode[i] >= 0
        finished += len(ended)
        if progress is not None and len(ended):
            progress(len(ended))
        resetting = terminated | truncated
        obs = next_obs
    return returns, lengths


def reference_scores(env_id: str) -> tuple[float, float] | None:
    """D4RL (random, expert) returns for the MuJoCo family of `env_id`, or None if there are none built in."""
    family = env_id.split("-")[0].lower()
    return D4RL_REFERENCE.get(family)


def normalized_score(episode_return: float, reference: tuple[float, float]) -> float:
    """D4RL normalised score: 100 * (return - random) / (expert - random)."""
    low, high = reference
    return 100.0 * (episode_return - low) / (high - low)
