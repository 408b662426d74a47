"""dt_fast: a fast Decision Transformer library (C++ sampler and engine, Triton kernels, batched evaluation)."""

from dt_fast.config import DecisionTransformerConfig
from dt_fast.data import Trajectories, TrajectorySampler, load_dataset
from dt_fast.evaluation import EvalResult, evaluate
from dt_fast.finetune import FinetuneConfig, Finetuner
from dt_fast.model import DecisionTransformer
from dt_fast.policy import Policy
from dt_fast.train import TrainConfig, Trainer

try:
    from dt_fast import _C  # noqa: F401

    HAS_C_EXT = True
except ImportError:
    HAS_C_EXT = False

__version__ = "0.1.0"
__all__ = [
    "DecisionTransformer",
    "DecisionTransformerConfig",
    "EvalResult",
    "FinetuneConfig",
    "Finetuner",
    "HAS_C_EXT",
    "Policy",
    "TrainConfig",
    "Trainer",
    "Trajectories",
    "TrajectorySampler",
    "evaluate",
    "load_dataset",
]
