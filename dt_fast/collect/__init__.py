"""Data collection, a side feature kept off dt_fast's front: a behaviour policy trained by ARS, rollouts that record
every transition, and the `dt-fast collect` stage that writes them as a D4RL HDF5 file.

    from dt_fast.collect import collect, train_ars, write_d4rl
    policy = train_ars("Hopper-v4", target_return=1500.0).policy
    write_d4rl("hopper.hdf5", collect("Hopper-v4", policy, episodes=100), "Hopper-v4")

The rollouts step the evaluator's batched env and continuous-batching loop (dt_fast.envs).
"""

from dt_fast.collect.behaviour import ARSResult, LinearPolicy, train_ars
from dt_fast.collect.collector import collect, write_d4rl
from dt_fast.collect.rollout import Episodes, record_episodes

__all__ = ["ARSResult", "Episodes", "LinearPolicy", "collect", "record_episodes", "train_ars", "write_d4rl"]
