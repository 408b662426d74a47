"""dt_fast: a fast Decision Transformer library (C++ sampler and engine, Triton kernels, batched evaluation)."""

from dt_fast.config import DecisionTransformerConfig
from dt_fast.model import DecisionTransformer

try:
    from dt_fast import _C  # noqa: F401

    HAS_C_EXT = True
except ImportError:
    HAS_C_EXT = False

__version__ = "0.1.0"
__all__ = ["DecisionTransformer", "DecisionTransformerConfig", "HAS_C_EXT"]
