"""Pure-torch specification of every dt_fast kernel: the CPU fallback and the test oracle.

Each function here states in plain torch what the Triton kernel of the same name in this package computes. The
tests compare the kernels against these functions; the model and the decoder run them when Triton is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EMBED_LN_EPS = 1e-5  # transformers builds embed_ln with nn.LayerNorm's default eps, not layer_norm_epsilon


def tokens_ref(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
) -> torch.Tensor:
    """The interleaved tokens before embed_ln (B, 3T, C): R_t | s_t | a_t embedding + E[t], ordered R_1, s_1, a_1, ...

    Args: as embed_ref's first eleven. The reference of the C++ training op dt_fast.train_ops.embed_tokens.
    """
    B, T = timesteps.shape
    time = F.embedding(timesteps, time_table)  # (B, T, C)
    r = F.linear(returns_to_go, w_return, b_return) + time  # (B, T, C)
    s = F.linear(states, w_state, b_state) + time  # (B, T, C)
    a = F.linear(actions, w_action, b_action) + time  # (B, T, C)
    return torch.stack((r, s, a), dim=2).reshape(B, 3 * T, -1)  # (B, 3T, C)


def embed_ref(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    wpe0: torch.Tensor | None = None,
    eps: float = EMBED_LN_EPS,
) -> torch.Tensor:
    """Interleaved token embeddings (B, 3T, C): LayerNorm(R_t | s_t | a_t embedding + E[t]) (+ wpe0).

    The one torch statement of the Decision Transformer's embedding: DecisionTransformer.embed and the incremental
    decoder (dt_fast.decode) run it, or the fused kernel (kernels/embed.py), through kernels.dispatch.embed_tokens.

    Args:
        states: (B, T, S). actions: (B, T, A). returns_to_go: (B, T, 1). timesteps: (B, T) integer.
        w_return (C, 1), b_return (C,), w_state (C, S), b_state (C,), w_action (C, A), b_action (C,): the Linear
        embeddings (nn.Linear layout, out x in). time_table: (max_ep_len, C). ln_weight, ln_bias: (C,) of embed_ln.
        wpe0: (C,) GPT-2's position-0 embedding, added after the LayerNorm, or None to leave it to the encoder.
    Returns:
        (B, 3T, C), tokens ordered R_1, s_1, a_1, R_2, ...
    """
    x = tokens_ref(
        states, actions, returns_to_go, timesteps, w_return, b_return, w_state, b_state, w_action, b_action, time_table
    )  # (B, 3T, C)
    x = F.layer_norm(x, x.shape[-1:], ln_weight, ln_bias, eps)  # (B, 3T, C)
    return x if wpe0 is None else x + wpe0  # (B, 3T, C)


def attention_masked_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of queries over keys with an explicit mask, fp32 softmax: (B, nh, n, hs).

    Args:
        q: (B, nh, n, hs). k, v: (B, nh, L, hs). mask: (B, n, L) bool, True where the query may attend.
        scale: multiplies q.k.
    Returns:
        (B, nh, n, hs), dtype of q; a query whose mask row is empty gets zeros (as torch SDPA gives).
    """
    att = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, nh, n, L)
    att = att.masked_fill(~mask[:, None], float("-inf"))  # (B, nh, n, L)
    att = torch.softmax(att, dim=-1).nan_to_num(0.0)  # (B, nh, n, L); a row with no key gives zeros
    return (att @ v.float()).to(q.dtype)  # (B, nh, n, hs)
