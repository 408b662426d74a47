"""The Decision Transformer of Chen et al. (2021), equal to transformers.DecisionTransformerModel.

References:
1) the paper's code, kzl/decision-transformer gym/decision_transformer/models/decision_transformer.py
2) transformers/models/decision_transformer/modeling_decision_transformer.py (the checkpoint format)

Per step t the tokens R_t, s_t, a_t are embedded by their own Linear layers, each plus the timestep embedding
E[t], interleaved as (R_1, s_1, a_1, R_2, ...), normalised by embed_ln, shifted by GPT-2's wpe[0] (all position
ids are zero) and run through GPT-2 blocks with a causal + padding mask. The action is read from the s_t token,
the state and return predictions from the a_t token.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from dt_fast import checkpoint
from dt_fast.config import DecisionTransformerConfig
from dt_fast.distributions import TanhNormal, bounded_log_std
from dt_fast.kernels.dispatch import embed_tokens, embedding_weights, resolve_backend
from dt_fast.train_ops import (
    BlockSpec,
    BlockWeights,
    activation,
    causal_mask,
    draw_seed,
    fused_cpu,
    layer_norm,
    linear,
    shift_dropout,
    transformer_block,
)
from dt_fast.train_ops import embed_tokens as tokens_before_ln


class Dropout(nn.Dropout):
    """nn.Dropout that can also add a residual: `forward(x, residual)` = residual + dropout(x). (In CPU float32
    training the blocks' and the embedding's dropouts run inside the C++ ops, with masks from a counter-based hash
    seeded by torch's generator: train_ops.)"""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = super().forward(x)  # torch.compile generates its own fused mask
        return x if residual is None else residual + x


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm; in CPU float32 training (train_ops.fused_cpu) one C++ pass forward and one backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and fused_cpu(x, self.weight):
            return layer_norm(x, self.weight, self.bias, self.eps)  # (*x.shape)
        return super().forward(x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention of GPT-2."""

    def __init__(self, config: DecisionTransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)
        self.scale = config.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        residual: torch.Tensor,
        rows: slice | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """residual + dropout(attention(x)), (B, Tq, C): every token (Tq = T), or only the queries x[:, rows]; mask
        None with start: causal from token start[b] of each batch row (left padding)."""
        B, T, C = x.shape  # batch, tokens (3 * steps), hidden_size
        if rows is None:
            q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        else:  # keys and values of every token, queries of the selected ones
            q = F.linear(x[:, rows], self.c_attn.weight[:C], self.c_attn.bias[:C])  # (B, Tq, C)
            k, v = F.linear(x, self.c_attn.weight[C:], self.c_attn.bias[C:]).split(C, dim=2)  # 2 x (B, T, C)
        Tq = q.shape[1]
        if mask is not None and rows is not None:
            mask = mask[:, :, rows]  # (B, 1, Tq, T)
        elif mask is None and (start is not None or rows is not None):  # is_causal: only the square, from key 0
            mask = causal_mask(B, Tq, T, start, rows, x.device)  # (B, 1, Tq, T)
        q = q.view(B, Tq, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,  # (B, 1, Tq, T) bool, or None for plain causal
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=mask is None,
            scale=self.scale,
        )  # (B, nh, Tq, hs)
        y = y.transpose(1, 2).reshape(B, Tq, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y), residual)  # (B, Tq, C)


class MLP(nn.Module):
    """GPT-2 feed-forward block."""

    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.inner_dim)
        self.c_proj = nn.Linear(config.inner_dim, config.hidden_size)
        self.act = config.activation_function
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + dropout(mlp(x)), (B, T, C)."""
        return self.dropout(self.c_proj(activation(self.act, self.c_fc(x))), residual)  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block of GPT-2."""

    def __init__(self, config: DecisionTransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, rows: slice | None = None, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output (B, T, C), or (B, Tq, C) at the tokens x[:, rows] only."""
        if self.training and fused_cpu(x, self.ln_1.weight):  # one C++ call each way (train_ops.transformer_block)
            return transformer_block(x, self.weights(), self.spec(), mask, start, rows)
        residual = x if rows is None else x[:, rows]  # (B, Tq, C)
        x = self.attn(self.ln_1(x), mask, residual=residual, rows=rows, start=start)  # (B, Tq, C)
        return self.mlp(self.ln_2(x), residual=x)  # (B, Tq, C)

    def weights(self) -> BlockWeights:
        """The block's parameters in transformer_block's order."""
        attn, mlp = self.attn, self.mlp
        return BlockWeights(
            self.ln_1.weight,
            self.ln_1.bias,
            attn.c_attn.weight,
            attn.c_attn.bias,
            attn.c_proj.weight,
            attn.c_proj.bias,
            self.ln_2.weight,
            self.ln_2.bias,
            mlp.c_fc.weight,
            mlp.c_fc.bias,
            mlp.c_proj.weight,
            mlp.c_proj.bias,
        )

    def spec(self) -> BlockSpec:
        """The block's hyper-parameters and fresh seeds of its three dropout masks (attention, its projection, the
        MLP's), drawn in that order."""
        attn, mlp = self.attn, self.mlp
        seeds = tuple(draw_seed() if p > 0.0 else 0 for p in (attn.attn_dropout, attn.resid_dropout.p, mlp.dropout.p))
        return BlockSpec(
            attn.n_head, attn.scale, attn.attn_dropout, mlp.dropout.p, self.ln_1.eps, self.ln_2.eps, mlp.act, seeds
        )


class GPT2(nn.Module):
    """GPT-2 over given input embeddings, every position id zero (named `encoder` as in transformers)."""

    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__()
        # Token embedding of GPT-2: never used by DT, kept as a buffer so checkpoints round-trip unchanged.
        self.register_buffer("wte", torch.zeros(config.vocab_size, config.hidden_size))
        self.wpe = nn.Parameter(torch.zeros(config.n_positions, config.hidden_size))  # only row 0 is used
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, rows: slice | None = None, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final hidden states (B, T, C), or (B, Tq, C) of the tokens x[:, rows] only: the last block then
        computes queries, projections and MLP for those rows alone (earlier blocks need every token). The mask
        (B, 1, T, T) bool, or None: causal, from token start[b] of each batch row if start (B,) is given."""
        if self.drop.training and self.drop.p > 0.0 and fused_cpu(x, self.wpe):  # the add in the dropout's pass
            x = shift_dropout(x, self.wpe[0], self.drop.p, draw_seed())  # (B, T, C)
        else:
            x = self.drop(x + self.wpe[0])  # (B, T, C); position ids are all zero
        for i, block in enumerate(self.h):
            x = block(x, mask, rows if i == len(self.h) - 1 else None, start)  # (B, T, C); last block (B, Tq, C)
        if rows is not None and not self.h:
            x = x[:, rows]  # (B, Tq, C)
        return self.ln_f(x)  # (B, Tq, C)


def attention_mask_3t(attention_mask: torch.Tensor) -> torch.Tensor:
    """Causal + padding mask over the 3T interleaved tokens, (B, 1, 3T, 3T) bool, True = may attend.

    A left-padded query has no valid key at or before it; SDPA then gives it a zero attention output (and a
    zero gradient), exactly as transformers does, so padded outputs match too.
    """
    B, T = attention_mask.shape
    valid = attention_mask.bool().repeat_interleave(3, dim=1)  # (B, 3T): R_t, s_t, a_t share step t's mask
    causal = torch.ones(3 * T, 3 * T, dtype=torch.bool, device=valid.device).tril()  # (3T, 3T)
    return (causal & valid[:, None, :])[:, None]  # (B, 1, 3T, 3T), broadcast over heads


def token_masks(attention_mask: torch.Tensor | None, fused: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask, start) of the encoder from attention_mask (B, T): for the fused ops, when every batch row is padded on
    the left only (its valid steps are its last ones), no mask but the first valid token of each row, (B,) int32
    (the same keys: causal from that token); else attention_mask_3t's (B, 1, 3T, 3T) mask, or None if no mask."""
    if attention_mask is None:
        return None, None
    if fused:
        valid = attention_mask.bool()  # (B, T)
        first = (~valid).sum(dim=1)  # (B,) padded steps
        if torch.equal(valid, torch.arange(valid.shape[1]) >= first[:, None]):
            return None, (3 * first).int()
    return attention_mask_3t(attention_mask), None


class DecisionTransformer(nn.Module):
    """Decision Transformer; state_dict keys equal transformers.DecisionTransformerModel's (Linear layout).

    stochastic=True adds ODT's log-std head (`predict_action_log_std`, see dt_fast/distributions.py): the action
    head then gives the mean of a tanh-Gaussian policy. Every other weight, and the mean action, stay as in
    transformers' model.

    Args:
        config: the sizes and hyper-parameters (state_dim, act_dim, hidden_size, n_layer, ...).
        stochastic: add the Online Decision Transformer's log-std head.

    Raises:
        ValueError: stochastic=True with config.action_tanh False (the tanh-Gaussian squashes with tanh).
    """

    def __init__(self, config: DecisionTransformerConfig, stochastic: bool = False) -> None:
        super().__init__()
        if stochastic and not config.action_tanh:
            raise ValueError("a stochastic action head squashes with tanh: it needs action_tanh=True")
        self.config, self.stochastic = config, stochastic
        C = config.hidden_size
        self.embed_timestep = nn.Embedding(config.max_ep_len, C)
        self.embed_return = nn.Linear(1, C)
        self.embed_state = nn.Linear(config.state_dim, C)
        self.embed_action = nn.Linear(config.act_dim, C)
        self.embed_ln = LayerNorm(C)  # transformers uses the default eps here, not layer_norm_epsilon
        self.encoder = GPT2(config)
        self.predict_state = nn.Linear(C, config.state_dim)
        self.predict_action = nn.Sequential(nn.Linear(C, config.act_dim), *([nn.Tanh()] if config.action_tanh else []))
        self.predict_return = nn.Linear(C, 1)
        if stochastic:
            self.predict_action_log_std = nn.Linear(C, config.act_dim)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.n_layer))
        nn.init.normal_(self.encoder.wpe, mean=0.0, std=config.initializer_range)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def embed(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Interleaved, normalised token embeddings (B, 3T, C): R_1, s_1, a_1, R_2, ... (arguments as `forward`).

        In CPU float32 training the tokens before embed_ln come from C++ (train_ops.embed_tokens, forward and
        backward); otherwise kernels.dispatch runs the fused Triton kernel (CUDA, or DT_FAST_BACKEND=triton) or its
        torch reference, kernels.reference.embed_ref.
        """
        if (
            self.training
            and resolve_backend(timesteps.device) == "torch"
            and fused_cpu(states, actions, returns_to_go, self.embed_state.weight)
            and not any(t.requires_grad for t in (states, actions, returns_to_go))
        ):
            x = tokens_before_ln(
                states,
                actions,
                returns_to_go,
                timesteps,
                self.embed_return.weight,
                self.embed_return.bias,
                self.embed_state.weight,
                self.embed_state.bias,
                self.embed_action.weight,
                self.embed_action.bias,
                self.embed_timestep.weight,
            )
            return self.embed_ln(x)  # (B, 3T, C)
        return embed_tokens(states, actions, returns_to_go, timesteps, **embedding_weights(self))  # (B, 3T, C)

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        *,
        action_only: bool = False,
        check_timesteps: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """The predictions of every step, as transformers.DecisionTransformerModel returns them.

        Args:
            states: (B, T, state_dim) float, normalised observations.
            actions: (B, T, act_dim) float.
            returns_to_go: (B, T, 1) float, divided by the reward scale.
            timesteps: (B, T) integer in [0, max_ep_len).
            attention_mask: (B, T), 1 = real step, 0 = padding; None = every step is real.
            rewards: accepted for transformers compatibility and unused, as there.
            action_only: compute action_preds alone (the training loss's input), state_preds and return_preds
                are None: the last block then runs only on the s_t tokens, a third of its rows.
            check_timesteps: check that timesteps lie in [0, max_ep_len). That reads them back: on a GPU a host
                synchronisation, which a CUDA graph cannot hold; the Trainer, whose sampler clips them, passes False.

        Returns:
            (state_preds (B, T, state_dim), action_preds (B, T, act_dim), return_preds (B, T, 1)); the action of
            step t is read from the s_t token, the state and return predictions from the a_t token.

        Raises:
            ValueError: an argument's shape, rank or dtype is wrong, or a timestep is out of range; the message
                names the argument.
        """
        self.check_inputs(states, actions, returns_to_go, timesteps, attention_mask, values=check_timesteps)
        B, T = timesteps.shape
        x = self.embed(states, actions, returns_to_go, timesteps)  # (B, 3T, C)
        mask, start = token_masks(attention_mask, self.training and fused_cpu(x))  # (B, 1, 3T, 3T) or (B,)
        if action_only:  # (B, T, act_dim)
            return None, self.action_head(self.encoder(x, mask, rows=slice(1, None, 3), start=start)), None
        x = self.encoder(x, mask, start=start)  # (B, 3T, C)
        x = x.reshape(B, T, 3, -1)  # (B, T, 3, C): x[:, t, 1] is the token of s_t
        state_preds = self.predict_state(x[:, :, 2])  # (B, T, state_dim), from a_t
        action_preds = self.predict_action(x[:, :, 1])  # (B, T, act_dim), from s_t
        return_preds = self.predict_return(x[:, :, 2])  # (B, T, 1), from a_t
        return state_preds, action_preds, return_preds

    def action_head(self, h: torch.Tensor) -> torch.Tensor:
        """predict_action(h), (B, T, act_dim) from the s_t tokens (B, T, C); in CPU float32 training its Linear on
        the engine's matmul (train_ops.linear)."""
        head = self.predict_action[0]
        if self.training and fused_cpu(h, head.weight):
            y = linear(h, head.weight, head.bias)  # (B, T, act_dim)
            return torch.tanh(y) if self.config.action_tanh else y
        return self.predict_action(h)  # (B, T, act_dim)

    def action_distribution(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        check_timesteps: bool = True,
    ) -> TanhNormal:
        """The tanh-Gaussian policy at every step, (B, T, act_dim), of a stochastic model (arguments as `forward`).

        Raises:
            ValueError: the model is deterministic, or an argument is wrong (as `forward`).
        """
        if not self.stochastic:
            raise ValueError(
                "action_distribution needs a stochastic model (DecisionTransformer(config, "
                "stochastic=True)); this one has a deterministic action head"
            )
        self.check_inputs(states, actions, returns_to_go, timesteps, attention_mask, values=check_timesteps)
        x = self.embed(states, actions, returns_to_go, timesteps)  # (B, 3T, C)
        mask, start = token_masks(attention_mask, self.training and fused_cpu(x))  # (B, 1, 3T, 3T) or (B,)
        h = self.encoder(x, mask, rows=slice(1, None, 3), start=start)  # (B, T, C): the s_t tokens
        loc = self.predict_action[0](h)  # (B, T, act_dim), before the tanh
        return TanhNormal(loc, bounded_log_std(self.predict_action_log_std(h)))  # (B, T, act_dim)

    def check_inputs(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None,
        values: bool = True,
    ) -> None:
        """Check the arguments of `forward`; values=True also checks the timesteps' range (the one check that reads
        tensor values).

        Raises:
            ValueError: naming the first argument whose shape, rank, dtype or range is wrong.
        """
        cfg = self.config
        if not isinstance(timesteps, torch.Tensor) or timesteps.dim() != 2:
            raise ValueError(f"timesteps must be a (batch, steps) tensor, got {_describe(timesteps)}")
        if timesteps.dtype.is_floating_point or timesteps.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise ValueError(f"timesteps must be an integer tensor, got dtype {timesteps.dtype}")
        B, T = timesteps.shape
        expected = {"states": (B, T, cfg.state_dim), "actions": (B, T, cfg.act_dim), "returns_to_go": (B, T, 1)}
        for name, tensor in (("states", states), ("actions", actions), ("returns_to_go", returns_to_go)):
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"{name} must have shape {expected[name]} (batch, steps, "
                    f"{'1' if name == 'returns_to_go' else name[:-1] + '_dim'}), got {_describe(tensor)}"
                )
            if not tensor.dtype.is_floating_point:
                raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
        if attention_mask is not None and (
            not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (B, T)
        ):
            raise ValueError(f"attention_mask must have shape {(B, T)} (batch, steps), got {_describe(attention_mask)}")
        if values and T and (int(timesteps.min()) < 0 or int(timesteps.max()) >= cfg.max_ep_len):
            raise ValueError(
                f"timesteps must lie in [0, max_ep_len={cfg.max_ep_len}), got values in "
                f"[{int(timesteps.min())}, {int(timesteps.max())}]"
            )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> DecisionTransformer:
        """Load a directory written by `save_pretrained` here or by transformers' DecisionTransformerModel (its
        dt_fast.json, when there is one, says whether the action head is stochastic), in eval mode on the CPU.

        Raises:
            FileNotFoundError: `path` is not a directory, or holds no config.json or weights.
            ValueError: a malformed config.json, dt_fast.json or weights file, or weights that do not match the
                config (missing, unexpected or mis-shaped keys); the message names the file and key.
        """
        meta = checkpoint.read_metadata(path) if os.path.isdir(path) else None
        stochastic = meta is not None and meta.action_head == "stochastic"
        model = cls(checkpoint.read_config(path), stochastic=stochastic)
        checkpoint.load_hf_state_dict(model, checkpoint.read_weights(path), source=str(path))
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json and model.safetensors into directory `path` (created if needed) as transformers'
        save_pretrained does, each atomically.

        Raises:
            OSError: `path` cannot be written; a file being written is removed, the old one kept.
        """
        checkpoint.write_model(path, self.config, checkpoint.hf_state_dict(self))


def _describe(x: object) -> str:
    """Short description of a bad argument for error messages."""
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__
