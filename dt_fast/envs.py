"""Environment ids: which exist (envpool first, gymnasium as fallback), their sizes, D4RL reference scores."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from dt_fast.extras import require

# D4RL reference returns (random policy, expert policy) used for normalised scores: d4rl/infos.py, v2 datasets.
D4RL_REFERENCE = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


@dataclass(frozen=True)
class EnvSpec:
    """What dt_fast needs to know of an environment before it starts one."""

    env_id: str
    state_dim: int
    act_dim: int
    max_episode_steps: int
    backend: str  # "envpool" or "gymnasium"


def env_spec(env_id: str) -> EnvSpec:
    """Sizes of `env_id`, from envpool if it has the id, else gymnasium; unknown ids list the closest known ones."""
    try:
        import envpool

        if env_id in envpool.list_all_envs():
            spec = envpool.make_spec(env_id)
            return EnvSpec(env_id, int(spec.observation_space.shape[0]), int(spec.action_space.shape[0]),
                           int(spec.config.max_episode_steps), "envpool")
    except ImportError:
        pass
    gym = require("gymnasium", env_id)

    if env_id in gym.registry:
        env = gym.make(env_id)
        try:
            steps = env.spec.max_episode_steps if env.spec is not None else None
            return EnvSpec(env_id, int(env.observation_space.shape[0]), int(env.action_space.shape[0]),
                           int(steps or 1000), "gymnasium")
        finally:
            env.close()
    raise ValueError(f"unknown env id {env_id!r}; closest known ids: {', '.join(close_env_ids(env_id)) or 'none'}")


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
    """Raise if `env_id` is unknown or its observation/action sizes differ from those of `source`."""
    spec = env_spec(env_id)
    if (spec.state_dim, spec.act_dim) != (state_dim, act_dim):
        raise ValueError(f"{source} has state_dim={state_dim}, act_dim={act_dim} but {env_id} has "
                         f"state_dim={spec.state_dim}, act_dim={spec.act_dim}")
    return spec


def reference_scores(env_id: str) -> tuple[float, float] | None:
    """D4RL (random, expert) returns for the MuJoCo family of `env_id`, or None if there are none built in."""
    family = env_id.split("-")[0].lower()
    return D4RL_REFERENCE.get(family)


def normalized_score(episode_return: float, reference: tuple[float, float]) -> float:
    """D4RL normalised score: 100 * (return - random) / (expert - random)."""
    low, high = reference
    return 100.0 * (episode_return - low) / (high - low)
