"""DecisionTransformerConfig: the fields, defaults and config.json of transformers' DecisionTransformerConfig."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_TYPE = "decision_transformer"

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "silu", "swish",
               "tanh", "sigmoid")
"""Activation names (transformers' ACT2FN keys) that dt_fast implements."""

# config.json keys that transformers renames through `attribute_map`.
_ALIASES = {"max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
            "num_hidden_layers": "n_layer"}


@dataclass
class DecisionTransformerConfig:
    """Hyper-parameters of a Decision Transformer, with transformers' names and defaults."""

    state_dim: int = 17
    """Size of the observation vector."""
    act_dim: int = 4
    """Size of the action vector."""
    hidden_size: int = 128
    """Width of every token embedding and of the GPT-2 residual stream."""
    max_ep_len: int = 4096
    """Rows of the timestep embedding: timesteps must lie in [0, max_ep_len)."""
    action_tanh: bool = True
    """Squash predicted actions with tanh."""
    vocab_size: int = 1
    """Rows of GPT-2's unused token embedding (kept so checkpoints round-trip)."""
    n_positions: int = 1024
    """Rows of GPT-2's position embedding; DT only ever uses row 0."""
    n_layer: int = 3
    """Number of GPT-2 blocks."""
    n_head: int = 1
    """Attention heads per block; must divide hidden_size."""
    n_inner: int | None = None
    """Width of the MLP; None means 4 * hidden_size."""
    activation_function: str = "relu"
    """MLP activation, a transformers ACT2FN name."""
    resid_pdrop: float = 0.1
    """Dropout after attention and MLP outputs."""
    embd_pdrop: float = 0.1
    """Dropout on the token embeddings entering GPT-2."""
    attn_pdrop: float = 0.1
    """Dropout on attention probabilities."""
    layer_norm_epsilon: float = 1e-5
    """Epsilon of the GPT-2 LayerNorms (embed_ln always uses 1e-5, as transformers does)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    scale_attn_weights: bool = True
    """Divide attention scores by sqrt(head_dim)."""
    scale_attn_by_inverse_layer_idx: bool = False
    """Also divide attention scores of layer i by (i + 1)."""
    reorder_and_upcast_attn: bool = False
    """transformers' mixed-precision switch; identical results in float32."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Other config.json keys (written by transformers), kept so that a load-save round trip loses nothing."""

    def __post_init__(self) -> None:
        for name in ("state_dim", "act_dim", "hidden_size", "max_ep_len", "n_layer", "n_head", "n_positions",
                     "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecisionTransformerConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.n_head:
            raise ValueError(f"DecisionTransformerConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"n_head ({self.n_head})")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner < 1):
            raise ValueError(f"DecisionTransformerConfig.n_inner must be a positive int or None, got {self.n_inner!r}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"DecisionTransformerConfig.activation_function {self.activation_function!r} is not "
                             f"supported; choose one of {', '.join(ACTIVATIONS)}")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"DecisionTransformerConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")

    @property
    def inner_dim(self) -> int:
        """Width of the MLP hidden layer."""
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.n_head

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> DecisionTransformerConfig:
        """Build a config from a config.json dict; `source` names the file in error messages."""
        data = dict(data)
        model_type = data.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"{source}: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
        for alias, name in _ALIASES.items():
            if alias in data:
                data.setdefault(name, data.pop(alias))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict, readable by transformers.DecisionTransformerConfig.from_pretrained."""
        data = {"architectures": ["DecisionTransformerModel"], **self.extra}
        data.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        data["model_type"] = MODEL_TYPE
        return data

    @classmethod
    def from_json_file(cls, path: str | Path) -> DecisionTransformerConfig:
        """Read a config.json written by dt_fast or by transformers."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    def to_json_string(self) -> str:
        """config.json text, keys sorted as transformers writes them."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
