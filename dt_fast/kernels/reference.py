"""Pure-torch specification of every dt_fast kernel: the CPU fallback and the test oracle.

Each function here states in plain torch what the Triton kernel of the same name in this package computes. The
tests compare the kernels against these functions; the model and the decoder run them when Triton is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EMBED_LN_EPS = 1e-5  # transformers builds embed_ln with nn.LayerNorm's default eps, not layer_norm_epsilon


def embed_ref(states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor,
              w_return: torch.Tensor, b_return: torch.Tensor, w_state: torch.Tensor, b_state: torch.Tensor,
              w_action: torch.Tensor, b_action: torch.Tensor, time_table: torch.Tensor, ln_weight: torch.Tensor,
              ln_bias: torch.Tensor, wpe0: torch.Tensor | None = None, eps: float = EMBED_LN_EPS) -> torch.Tensor:
    """Interleaved token embeddings (B, 3T, C): LayerNorm(R_t | s_t | a_t embedding + E[t]) (+ wpe0).

    Args:
        states: (B, T, S). actions: (B, T, A). returns_to_go: (B, T, 1). timesteps: (B, T) integer.
        w_return (C, 1), b_return (C,), w_state (C, S), b_state (C,), w_action (C, A), b_action (C,): the Linear
        embeddings (nn.Linear layout, out x in). time_table: (max_ep_len, C). ln_weight, ln_bias: (C,) of embed_ln.
        wpe0: (C,) GPT-2's position-0 embedding, added after the LayerNorm, or None to leave it to the encoder.
    Returns:
        (B, 3T, C), tokens ordered R_1, s_1, a_1, R_2, ...: DecisionTransformer.embed (+ encoder.wpe[0]).
    """
    B, T = timesteps.shape
    time = F.embedding(timesteps, time_table)  # (B, T, C)
    r = F.linear(returns_to_go, w_return, b_return) + time  # (B, T, C)
    s = F.linear(states, w_state, b_state) + time  # (B, T, C)
    a = F.linear(actions, w_action, b_action) + time  # (B, T, C)
    x = torch.stack((r, s, a), dim=2).reshape(B, 3 * T, -1)  # (B, 3T, C)
    x = F.layer_norm(x, x.shape[-1:], ln_weight, ln_bias, eps)  # (B, 3T, C)
    return x if wpe0 is None else x + wpe0  # (B, 3T, C)


def key_positions(cache_seqlens: torch.Tensor, n_new: int, cache_len: int, ring: bool) -> torch.Tensor:
    """Absolute token position held by each cache slot after appending n_new tokens, (B, cache_len); -1 = empty.

    Append layout: slot j holds position j. Ring layout: position p lives in slot p % cache_len, so slot j holds
    the latest position congruent to j that has been written.
    """
    end = (cache_seqlens.long() + n_new)[:, None]  # (B, 1): tokens in the row after the append
    slot = torch.arange(cache_len, device=cache_seqlens.device)[None, :]  # (1, L)
    pos = end - 1 - torch.remainder(end - 1 - slot, cache_len) if ring else slot.expand(end.shape[0], -1)  # (B, L)
    return torch.where((pos >= 0) & (pos < end), pos, -1)  # (B, L)


def attention_kvcache_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, cache_seqlens: torch.Tensor, cache_starts: torch.Tensor | None = None,
                          ring: bool = False, scale: float | None = None) -> torch.Tensor:
    """Causal attention of new tokens over a per-row KV cache; writes the new K/V into the cache IN PLACE.

    Args:
        q, k, v: (B, nh, Tn, hs) queries, keys and values of the Tn new tokens of each row.
        k_cache, v_cache: (B, nh, L, hs), modified in place: the new token i of row b is written to slot
            cache_seqlens[b] + i (append layout) or (cache_seqlens[b] + i) % L (ring layout).
        cache_seqlens: (B,) integer, tokens already appended to each row (may exceed L in the ring layout).
        cache_starts: (B,) integer or None: keys at absolute positions below it are masked (left padding).
        ring: ring-buffer layout (each row keeps its last L tokens) instead of the append layout.
        scale: softmax scale, hs ** -0.5 if None.
    Returns:
        (B, nh, Tn, hs). The new token at position p = cache_seqlens[b] + i attends to every key held in the cache
        after the append whose position lies in [cache_starts[b], p]; a query with no such key gets zeros.
    """
    B, nh, Tn, hs = q.shape
    L = k_cache.shape[2]
    rows = torch.arange(B, device=q.device)[:, None]  # (B, 1)
    new_pos = cache_seqlens.long()[:, None] + torch.arange(Tn, device=q.device)[None, :]  # (B, Tn)
    slots = torch.remainder(new_pos, L) if ring else new_pos  # (B, Tn)
    k_cache[rows, :, slots] = k.transpose(1, 2).to(k_cache.dtype)  # (B, Tn, nh, hs) into (B, nh, L, hs)
    v_cache[rows, :, slots] = v.transpose(1, 2).to(v_cache.dtype)
    pos = key_positions(cache_seqlens, Tn, L, ring)  # (B, L)
    start = torch.zeros_like(pos[:, :1]) if cache_starts is None else cache_starts.long()[:, None]  # (B, 1)
    allowed = (pos[:, None, :] >= start[:, :, None]) & (pos[:, None, :] <= new_pos[:, :, None])  # (B, Tn, L)
    return attention_masked_ref(q, k_cache, v_cache, allowed, hs**-0.5 if scale is None else scale)


def attention_masked_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                         scale: float) -> torch.Tensor:
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
