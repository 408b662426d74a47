"""Offline data: dataset formats in, Trajectories, and the C++ TrajectorySampler of training windows out."""

from dt_fast.data.formats import BUNDLED, DEFAULT_DATASET, bundled_path, load_dataset
from dt_fast.data.sampler import TrajectorySampler
from dt_fast.data.trajectories import Trajectories

__all__ = ["BUNDLED", "DEFAULT_DATASET", "Trajectories", "TrajectorySampler", "bundled_path", "load_dataset"]
