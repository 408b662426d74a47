"""The one env check (dt_fast.envs.env_spec): what dt_fast supports, refused with one clear error before any env is
stepped, for every entry point (evaluation, training, collection, ARS)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dt_fast.envs import SUPPORTED, check_env_matches, env_spec

SUPPORTED_TEXT = "dt_fast supports Box observations of rank 1 and Box actions of rank 1"


class SpacesEnv(gym.Env):
    """An env that only has spaces: stepping or resetting it fails the test (the check must come first)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        raise AssertionError("the env was reset before its spaces were checked")

    def step(self, action):
        raise AssertionError("the env was stepped before its spaces were checked")


VECTOR = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
TEST_ENVS = {
    "DtFastDictObs-v0": (gym.spaces.Dict({"position": VECTOR, "goal": VECTOR}), gym.spaces.Box(-1, 1, (2,))),
    "DtFastImageObs-v0": (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), gym.spaces.Box(-1, 1, (2,))),
    "DtFastMatrixAction-v0": (VECTOR, gym.spaces.Box(-1, 1, (2, 2))),
    "DtFastMultiDiscrete-v0": (VECTOR, gym.spaces.MultiDiscrete([3, 3])),
    "DtFastUnboundedAction-v0": (VECTOR, gym.spaces.Box(-np.inf, np.inf, (2,))),
}
for _id, (_obs, _act) in TEST_ENVS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=SpacesEnv, kwargs={"observation_space": _obs, "action_space": _act})


@pytest.mark.parametrize(
    "env_id, spaces",
    [
        ("CartPole-v1", r"observation space Box of shape \(4,\), float32 and action space Discrete\(2\)"),  # envpool
        ("Parking-v0", r"observation space Dict with keys \['observation', 'achieved_goal', 'desired_goal'\]"),
        ("CarRacing-v3", r"observation space Box of shape \(96, 96, 3\), uint8"),  # envpool, pixels
        ("Highway-v0", r"Box of shape \(5, 5\), float32 and action space Discrete\(5\)"),  # envpool, vehicles
        ("FrozenLake-v1", r"observation space Discrete\(16\) and action space Discrete\(4\)"),  # gymnasium only
        ("DtFastDictObs-v0", r"observation space Dict with keys \['goal', 'position'\]"),
        ("DtFastImageObs-v0", r"Box of shape \(8, 8, 3\), uint8"),
        ("DtFastMatrixAction-v0", r"action space Box of shape \(2, 2\), float32"),
        ("DtFastMultiDiscrete-v0", r"action space MultiDiscrete\(\[3 3\]\)"),
    ],
)
def test_unsupported_spaces_are_named(env_id, spaces):
    with pytest.raises(ValueError, match=f"^{env_id} has .*{spaces}.*; {SUPPORTED_TEXT}"):
        env_spec(env_id)
    with pytest.raises(ValueError, match=SUPPORTED_TEXT):
        check_env_matches(env_id, 4, 2, source="checkpoint x")


def test_supported_envs_give_their_sizes_and_bounds():
    hopper = env_spec("Hopper-v4")
    assert (hopper.state_dim, hopper.act_dim, hopper.backend, hopper.max_episode_steps) == (11, 3, "envpool", 1000)
    assert hopper.action_low == (-1.0,) * 3 and hopper.action_high == (1.0,) * 3
    assert env_spec("Pendulum-v1").action_high == (2.0,)
    free = env_spec("DtFastUnboundedAction-v0")
    assert (free.state_dim, free.act_dim, free.backend) == (4, 2, "gymnasium")
    assert free.action_low == (-np.inf,) * 2
    assert "Box observations of rank 1" in SUPPORTED


def test_unknown_ids_name_the_closest():
    with pytest.raises(ValueError, match="unknown env id 'Hoper-v4'; closest known ids: .*Hopper-v4"):
        env_spec("Hoper-v4")


def test_training_refuses_an_unsupported_env(tmp_path):
    """The trainer checks its env through the same rule, before it builds a model."""
    from dt_fast.train import TrainConfig, Trainer

    cfg = TrainConfig(dataset="hopper-medium-v4", env="CartPole-v1", out=str(tmp_path / "run"), steps=1)
    with pytest.raises(ValueError, match=f"CartPole-v1 has .*; {SUPPORTED_TEXT}"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_random_collection_refuses_an_unbounded_action_box():
    from dt_fast.collect import collect

    with pytest.raises(ValueError, match="DtFastUnboundedAction-v0's is unbounded"):
        collect("DtFastUnboundedAction-v0", None, episodes=1, progress=False)
