"""DecisionTransformerConfig (the fields, defaults and config.json of transformers' DecisionTransformerConfig), and
`setting` / `parse_setting`: the one validation layer of dataclass config fields (type, range, units), shared by
the command line, YAML/JSON files and Python.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_TYPE = "decision_transformer"

ACTIVATIONS = (
    "relu",
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
)
"""Activation names (transformers' ACT2FN keys) that dt_fast implements."""

# config.json keys that transformers renames through `attribute_map`.
_ALIASES = {"max_position_embeddings": "n_positions", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}


@dataclass
class DecisionTransformerConfig:
    """Hyper-parameters of a Decision Transformer, with transformers' names and defaults (each field below).

    Raises:
        ValueError: a size that is not a positive int, hidden_size not a multiple of n_head, an unsupported
            activation or a dropout rate outside [0, 1); the message names the field.
    """

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
        for name in (
            "state_dim",
            "act_dim",
            "hidden_size",
            "max_ep_len",
            "n_layer",
            "n_head",
            "n_positions",
            "vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecisionTransformerConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.n_head:
            raise ValueError(
                f"DecisionTransformerConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"n_head ({self.n_head})"
            )
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner < 1):
            raise ValueError(f"DecisionTransformerConfig.n_inner must be a positive int or None, got {self.n_inner!r}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"DecisionTransformerConfig.activation_function {self.activation_function!r} is not "
                f"supported; choose one of {', '.join(ACTIVATIONS)}"
            )
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
        """Build a config from a config.json dict (transformers' aliases such as num_hidden_layers accepted; keys
        that are not fields are kept in `extra`).

        Args:
            data: the parsed config.json.
            source: names the file in error messages.

        Raises:
            ValueError: a model_type other than "decision_transformer", or a bad field value; the message names
                `source` and the field.
        """
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
        """Read a config.json written by dt_fast or by transformers.

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: not a JSON object, or a bad field (as `from_dict`); the message names the file.
        """
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


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] = (),
    pattern: str = "",
    means: str = "",
    units: str = "",
    derived: str = "",
) -> Any:
    """A dataclass field that declares its valid values: bounds (ge/gt/le/lt), choices, or a regex `pattern`
    described by `means`; `units` and, for a None default computed later, how it is `derived`, for --help."""
    return field(
        default=default,
        metadata={
            "ge": ge,
            "gt": gt,
            "le": le,
            "lt": lt,
            "choices": choices,
            "pattern": pattern,
            "means": means,
            "units": units,
            "derived": derived,
        },
    )


def parse_setting(cls: type, name: str, value: Any, where: str) -> Any:
    """`value` of field `name` of dataclass `cls` converted to the field's type (strings as the command line and
    YAML give them are parsed: "1e-3", "100"), then checked against its `setting`; ValueError starting with `where`
    (a flag, a file and key, ...) and giving the value otherwise."""
    kind = typing.get_type_hints(cls)[name]
    optional = type(None) in typing.get_args(kind)
    if optional:
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if value is None and optional:
        return None
    parsed = _convert(kind, value, where)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
    if meta and not _allowed(parsed, meta):
        raise ValueError(f"{where} must be {describe_setting(meta)}, got {value!r}")
    return parsed


def describe_setting(meta: typing.Mapping[str, Any]) -> str:
    """The valid values of a `setting` in words: ">= 1", "> 0 and <= 1", "one of fp32, bf16", ..."""
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    if meta.get("pattern"):
        return meta["means"]
    bounds = [
        f"{op} {meta[key]}"
        for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if meta.get(key) is not None
    ]
    return " and ".join(bounds) or "any value"


def _allowed(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    """Whether `value` (already of the field's type) lies within a `setting`'s bounds, choices and pattern."""
    if meta["choices"] and value not in meta["choices"]:
        return False
    if meta["pattern"] and not re.fullmatch(meta["pattern"], value):
        return False
    return not (
        (meta["ge"] is not None and value < meta["ge"])
        or (meta["gt"] is not None and value <= meta["gt"])
        or (meta["le"] is not None and value > meta["le"])
        or (meta["lt"] is not None and value >= meta["lt"])
    )


def _convert(kind: type, value: Any, where: str) -> Any:
    """`value` as `kind` (bool, str, int or float); an int field takes integral floats (1e5) but not 3.7."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where} must be a string, got {value!r}")
    wanted = "an integer" if kind is int else "a number"
    number = value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                number = parse(value.strip())
                break
            except ValueError:
                continue
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or isinstance(number, str):
        raise ValueError(f"{where} must be {wanted}, got {value!r}")
    if isinstance(number, numbers.Integral) and kind is int:
        return int(number)
    try:
        number = float(number)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if kind is float:
        return number
    if not number.is_integer():
        raise ValueError(f"{where} must be {wanted}, got {value!r}")
    return int(number)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass `cls`, for --help: read from the class's own lines of its source
    file (parsing the whole module, as inspect.getsource does, slows the command's start-up)."""
    import ast
    import sys

    source = Path(sys.modules[cls.__module__].__file__).read_text()
    start = source.index(f"\nclass {cls.__name__}") + 1
    end = start + re.search(r"\n(?=\S)", source[start:]).end()  # the next top-level line
    body = ast.parse(source[start:end]).body[0].body
    return {
        node.target.id: " ".join(nxt.value.value.split())
        for node, nxt in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
    }
