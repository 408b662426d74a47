"""Offline data: dataset formats in, Trajectories, and the C++ TrajectorySampler of training windows out."""

from dt_fast.data.sampler import TrajectorySampler
from dt_fast.data.trajectories import Trajectories, load_dataset

__all__ = ["Trajectories", "TrajectorySampler", "load_dataset"]
