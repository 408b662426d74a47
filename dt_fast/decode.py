"""Incremental decoding of a DecisionTransformer with a KV cache in torch: the reference path of `Policy`.

It mirrors the C++ engine (csrc/engine/engine.h) step for step, on any torch device. Tokens of a row are
numbered from its reset: step j has R_j at 3j, s_j at 3j + 1, a_j at 3j + 2. Each step embeds the tokens that
became known (a_{t-1}: the action returned at the previous step, R_t, s_t) and returns the action read from s_t;
the blog's zero a_t placeholder comes after s_t and, by causality, never changes the action, so it is skipped.

Modes:
- "exact": the action of the blog's `get_action` window recompute (benchmarks/reference.py), to float tolerance.
  While t < K the cache is exact and only the new tokens are computed. Once the window slides, layers >= 1 are
  recomputed over the 3K - 1 window tokens, layer 0 is not (a token's layer-0 query, key and value depend on its
  own embedding only and stay cached), and the last layer runs attention and MLP for s_t alone.
- "rolling": APPROXIMATE after K steps, O(1) work per step: every token attends to the cached keys and values of
  the tokens of its own step and the K - 1 steps before it; nothing is recomputed. Equal to "exact" while t < K.

Two steps are separate methods so that a subclass (the Triton backend) can replace them: `embed` (the step's new
tokens) and `attend` (attention of the new queries over the cache).
"""

from __future__ import annotations

import torch

from dt_fast.model import DecisionTransformer, activation

MODES = ("exact", "rolling")


class KVCacheDecoder:
    """Step-by-step DecisionTransformer inference for `num_envs` independent rows with a per-layer ring cache.

    The ring has R = 3K + 3 slots per row and layer; token p lives in slot p % R. `slot_pos` (B, R + 1) records
    the position held by each slot (-1 when empty); an attention mask built from it selects the keys in range.
    Slot R is a spare that is never valid: writes of tokens that do not exist go there, so every cache write has
    a static shape (no boolean indexing), which dt_fast/cuda_graph.py needs to capture a step.
    """

    def __init__(self, model: DecisionTransformer, num_envs: int, context_len: int, mode: str = "exact") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(context_len, int) or context_len < 1:
            raise ValueError(f"context_len must be a positive int, got {context_len!r}")
        cfg = model.config
        self.model, self.mode, self.B, self.K, self.R = model.eval(), mode, num_envs, context_len, 3 * context_len + 3
        self.L, self.C, self.H = cfg.n_layer, cfg.hidden_size, cfg.n_head
        device = next(model.parameters()).device
        self.device = device
        S = self.R + 1  # ring slots and the spare
        self.k_cache = torch.zeros(self.L, self.B, S, self.C, device=device)  # (L, B, R + 1, C)
        self.v_cache = torch.zeros(self.L, self.B, S, self.C, device=device)  # (L, B, R + 1, C)
        self.x0_cache = torch.zeros(self.B, S, self.C, device=device)  # (B, R + 1, C) layer-0 inputs
        self.q0_cache = torch.zeros(self.B, S, self.C, device=device)  # (B, R + 1, C) layer-0 queries
        self.slot_pos = torch.full((self.B, S), -1, dtype=torch.long, device=device)  # (B, R + 1)
        self.n_steps = torch.zeros(self.B, dtype=torch.long, device=device)  # (B,) steps since reset
        self.prev_action = torch.zeros(self.B, cfg.act_dim, device=device)  # (B, A)
        self.prev_timestep = torch.zeros(self.B, dtype=torch.long, device=device)  # (B,)

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Start new episodes in `rows` (long indices), or in every row."""
        rows = torch.arange(self.B, device=self.device) if rows is None else rows.to(self.device)
        self.n_steps[rows] = 0
        self.slot_pos[rows] = -1

    def embed(self, prev_actions: torch.Tensor, returns_to_go: torch.Tensor, states: torch.Tensor,
              prev_timesteps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Layer-0 inputs of the step's new tokens (a_{t-1}, R_t, s_t): (b, 3, C).

        Each token is its Linear embedding plus the timestep embedding, then embed_ln, plus GPT-2's wpe[0].
        Args: prev_actions (b, A), returns_to_go (b, 1), states (b, S) float; prev_timesteps (b,) and
        timesteps (b,) long (a_{t-1} uses the previous step's timestep).
        """
        m = self.model
        a = m.embed_action(prev_actions) + m.embed_timestep(prev_timesteps)  # (b, C)
        time = m.embed_timestep(timesteps)  # (b, C)
        r = m.embed_return(returns_to_go) + time  # (b, C)
        s = m.embed_state(states) + time  # (b, C)
        x = m.embed_ln(torch.stack((a, r, s), dim=1))  # (b, 3, C)
        return x + m.encoder.wpe[0]  # (b, 3, C)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               scale: float) -> torch.Tensor:
        """Attention of new queries over cached keys/values: (b, H, n, hs).

        Args: q (b, H, n, hs); k, v (b, H, R, hs) the whole ring; mask (b, n, R) bool, True where the query may
        attend (every valid query has at least its own key); scale multiplies q.k. A query whose mask row is
        empty (a padding query) gets a zero output, as transformers gives padded positions.
        """
        att = (q @ k.transpose(-2, -1)) * scale  # (b, H, n, R)
        att = att.masked_fill(~mask[:, None], float("-inf"))  # (b, H, n, R)
        att = torch.softmax(att, dim=-1).nan_to_num(0.0)  # (b, H, n, R); empty rows give 0
        return att @ v  # (b, H, n, hs)

    @torch.no_grad()
    def step(self, states: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """One environment step for every row: the actions (B, A).

        Args: states (B, S) normalised float; returns_to_go (B,) float, already divided by scale; timesteps (B,)
        long in [0, max_ep_len).
        """
        B, K = self.B, self.K
        states = states.to(self.device, torch.float32)  # (B, S)
        returns_to_go = returns_to_go.to(self.device, torch.float32).reshape(B, 1)  # (B, 1)
        timesteps = timesteps.to(self.device, torch.long)  # (B,)
        t = self.n_steps  # (B,)
        rows = torch.arange(B, device=self.device)  # (B,)
        new_pos = 3 * t[:, None] + torch.arange(-1, 2, device=self.device)  # (B, 3): a_{t-1}, R_t, s_t
        new_pos = torch.where(new_pos >= 0, new_pos, -1)  # a_{-1} does not exist
        self._embed_new(new_pos, states, returns_to_go, timesteps)

        actions = torch.empty(B, self.model.config.act_dim, device=self.device)  # (B, A)
        recompute = (t >= K) if self.mode == "exact" else torch.zeros_like(t, dtype=torch.bool)  # (B,)
        if bool((~recompute).any()):  # new tokens only: exact while t < K, and rolling
            inc = rows[~recompute]  # (b,)
            floor = torch.clamp(3 * (torch.div(new_pos[inc], 3, rounding_mode="floor") - K + 1), min=0)  # (b, 3)
            actions[inc] = self._forward(inc, new_pos[inc], floor)
        if bool(recompute.any()):  # exact once the window slides: the 3K - 1 window tokens
            rec = rows[recompute]  # (b,)
            w0 = 3 * (t[rec] - K + 1)  # (b,) first token of the window
            pos = w0[:, None] + torch.arange(3 * K - 1, device=self.device)  # (b, 3K - 1)
            actions[rec] = self._forward(rec, pos, w0[:, None].expand_as(pos))
        self.prev_action = actions.clone()
        self.prev_timestep = timesteps.clone()
        self.n_steps += 1
        return actions

    def _slots(self, pos: torch.Tensor) -> torch.Tensor:
        """Cache slot of each position (any shape): p % R, or the spare slot R for -1 (no token)."""
        return torch.where(pos >= 0, pos % self.R, self.R)

    def _embed_new(self, new_pos: torch.Tensor, states: torch.Tensor, returns_to_go: torch.Tensor,
                   timesteps: torch.Tensor) -> None:
        """Embed every row's new tokens `new_pos` (B, 3) (-1: none) into the layer-0 caches."""
        x0 = self.embed(self.prev_action, returns_to_go, states, self.prev_timestep, timesteps)  # (B, 3, C)
        r_idx = torch.arange(self.B, device=self.device)[:, None].expand(self.B, 3)  # (B, 3)
        slots = self._slots(new_pos)  # (B, 3)
        self.x0_cache[r_idx, slots] = x0
        self.slot_pos[r_idx, slots] = new_pos  # the spare slot gets -1
        layer0 = self.model.encoder.h[0]
        q, k, v = layer0.attn.c_attn(layer0.ln_1(x0)).split(self.C, dim=2)  # 3 x (B, 3, C)
        self.q0_cache[r_idx, slots] = q
        self.k_cache[0, r_idx, slots] = k
        self.v_cache[0, r_idx, slots] = v

    def _forward(self, rows: torch.Tensor, pos: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
        """Actions (b, A) of `rows`, running the residual stream of tokens `pos` (b, n) (-1 = none; the last
        column is s_t), each query attending to cached positions in [floor, itself]; layer 0 reads the cache."""
        m, cfg, C, H, S = self.model, self.model.config, self.C, self.H, self.R + 1
        b, n = pos.shape
        hs = C // H
        valid = pos >= 0  # (b, n)
        slots = self._slots(pos)  # (b, n)
        r_idx = rows[:, None].expand(b, n)  # (b, n)
        h = self.x0_cache[r_idx, slots] * valid[..., None]  # (b, n, C)
        held = self.slot_pos[rows]  # (b, R + 1)
        mask = (held[:, None, :] >= floor[..., None]) & (held[:, None, :] <= pos[..., None])  # (b, n, R + 1)
        mask &= valid[..., None] & (held[:, None, :] >= 0)
        for l, block in enumerate(m.encoder.h):
            last = l == cfg.n_layer - 1
            if l == 0:
                q = self.q0_cache[r_idx, slots]  # (b, n, C)
            else:
                q, k, v = block.attn.c_attn(block.ln_1(h)).split(C, dim=2)  # 3 x (b, n, C)
                self.k_cache[l, r_idx, slots] = k
                self.v_cache[l, r_idx, slots] = v
            if last:  # only s_t's residual stream is needed after the last layer's keys and values
                q, h, mask = q[:, -1:], h[:, -1:], mask[:, -1:]  # (b, 1, C), (b, 1, C), (b, 1, R)
            nq = q.shape[1]
            kh = self.k_cache[l, rows].view(b, S, H, hs).transpose(1, 2)  # (b, H, R + 1, hs)
            vh = self.v_cache[l, rows].view(b, S, H, hs).transpose(1, 2)  # (b, H, R + 1, hs)
            qh = q.view(b, nq, H, hs).transpose(1, 2)  # (b, H, nq, hs)
            y = self.attend(qh, kh, vh, mask, block.attn.scale)  # (b, H, nq, hs)
            y = y.transpose(1, 2).reshape(b, nq, C)  # (b, nq, C)
            h = h + block.attn.c_proj(y)  # (b, nq, C)
            mlp = block.mlp
            h = h + mlp.c_proj(activation(mlp.act, mlp.c_fc(block.ln_2(h))))  # (b, nq, C)
        return m.predict_action(m.encoder.ln_f(h[:, -1]))  # (b, A)

