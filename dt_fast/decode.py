"""Incremental decoding of a DecisionTransformer with a KV cache in torch: the decoder of Policy's torch and triton
backends.

Owners: this module owns the one incremental decoder, `KVCacheDecoder`, for every torch device and both kernel
backends, with a static-shape option for CUDA graphs. It mirrors the C++ engine (csrc/engine/engine.h, Policy's cpp
backend) step for step. It does not own the model's weights and full forward (dt_fast.model), the embedding and
attention arithmetic (dt_fast.kernels: the torch reference and the Triton kernels, chosen by kernels.dispatch, the
switch the model's forward goes through too), the capture of a step in a CUDA graph (dt_fast.cuda_graph), nor the
control loop around a step: input checks, normalisation, returns-to-go, timesteps (dt_fast.policy).

Tokens of a row are numbered from its reset: step j has R_j at 3j, s_j at 3j + 1, a_j at 3j + 2. Each step embeds
the tokens that became known (a_{t-1}: the action returned at the previous step, R_t, s_t) and returns the action
read from s_t; the blog's zero a_t placeholder comes after s_t and, by causality, never changes the action, so it
is skipped.

Modes:
- "exact": the action of the blog's `get_action` window recompute (dt_fast/bench/reference.py), to float tolerance.
  While t < K the cache is exact and only the new tokens are computed. Once the window slides, layers >= 1 are
  recomputed over the 3K - 1 window tokens, layer 0 is not (a token's layer-0 query, key and value depend on its
  own embedding only and stay cached), and the last layer runs attention and MLP for s_t alone.
- "rolling": APPROXIMATE after K steps, O(1) work per step: every token attends to the cached keys and values of
  the tokens of its own step and the K - 1 steps before it; nothing is recomputed. Equal to "exact" while t < K.

Sampling: given noise (B, act_dim), a step returns, instead of the mean action, a sample of a stochastic model's
tanh-Gaussian (dt_fast.distributions.TanhNormal: tanh(loc + exp(log_std) * noise)); the caller draws the noise
(Policy's torch backend: distributions.normal_noise with the C++ engine's per-row counters), and the action fed back
as a_{t-1} is the sampled one.

Static shapes (`static=True`): every row runs one path, exact mode the 3K - 1 token window (positions before token
0 are padding, so while t < K it gives the incremental result), rolling mode the step's 3 new tokens; no
data-dependent Python branch, no host synchronisation, every state tensor updated in place. Same actions to float
tolerance; torch.compile(fullgraph=True) traces such a step and dt_fast.cuda_graph captures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dt_fast.distributions import TanhNormal, bounded_log_std
from dt_fast.kernels.dispatch import attention_masked, embed_tokens, embedding_weights, resolve_backend
from dt_fast.model import DecisionTransformer
from dt_fast.train_ops import activation

MODES = ("exact", "rolling")


class KVCacheDecoder:
    """Step-by-step DecisionTransformer inference for `num_envs` independent rows with a per-layer ring cache.

    The ring has R = 3K + 3 slots per row and layer; token p lives in slot p % R. `slot_pos` (B, R + 1) records
    the position held by each slot (-1 when empty); an attention mask built from it selects the keys in range.
    Slot R is a spare that is never valid: writes of tokens that do not exist go there, so every cache write has
    a static shape (no boolean indexing).

    Args:
        model: the DecisionTransformer (eval mode is set; its weights are read, not copied).
        num_envs: rows B. context_len: K, steps in the window. mode: "exact" or "rolling" (see the module).
        static: every row on one path with static shapes and no host synchronisation (see the module); otherwise
            rows whose window slides and rows whose window fills each take their cheapest path.
        backend: kernels for the embedding and the attention, "torch", "triton" or None (DT_FAST_BACKEND, else
            auto), resolved here by kernels.dispatch.resolve_backend, which raises if Triton cannot run.
    """

    def __init__(
        self,
        model: DecisionTransformer,
        num_envs: int,
        context_len: int,
        mode: str = "exact",
        static: bool = False,
        backend: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(context_len, int) or context_len < 1:
            raise ValueError(f"context_len must be a positive int, got {context_len!r}")
        cfg = model.config
        self.model, self.mode, self.B, self.K, self.R = model.eval(), mode, num_envs, context_len, 3 * context_len + 3
        self.L, self.C, self.H, self.static = cfg.n_layer, cfg.hidden_size, cfg.n_head, static
        self.device = next(model.parameters()).device
        self.backend = resolve_backend(self.device, backend)  # "torch" or "triton"
        self.embedding = embedding_weights(model, with_wpe=True)  # keyword arguments of embed_tokens
        S = self.R + 1  # ring slots and the spare
        self.k_cache = torch.zeros(self.L, self.B, S, self.C, device=self.device)  # (L, B, R + 1, C)
        self.v_cache = torch.zeros(self.L, self.B, S, self.C, device=self.device)  # (L, B, R + 1, C)
        self.x0_cache = torch.zeros(self.B, S, self.C, device=self.device)  # (B, R + 1, C) layer-0 inputs
        self.q0_cache = torch.zeros(self.B, S, self.C, device=self.device)  # (B, R + 1, C) layer-0 queries
        self.slot_pos = torch.full((self.B, S), -1, dtype=torch.long, device=self.device)  # (B, R + 1)
        self.n_steps = torch.zeros(self.B, dtype=torch.long, device=self.device)  # (B,) steps since reset
        self.prev_action = torch.zeros(self.B, cfg.act_dim, device=self.device)  # (B, A)
        self.prev_timestep = torch.zeros(self.B, dtype=torch.long, device=self.device)  # (B,)

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step or a reset updates (in place)."""
        return [
            self.k_cache,
            self.v_cache,
            self.x0_cache,
            self.q0_cache,
            self.slot_pos,
            self.n_steps,
            self.prev_action,
            self.prev_timestep,
        ]

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Start new episodes in `rows` (long indices), or in every row."""
        rows = torch.arange(self.B, device=self.device) if rows is None else rows.to(self.device)
        self.n_steps[rows] = 0
        self.slot_pos[rows] = -1

    def embed(
        self,
        prev_actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        states: torch.Tensor,
        prev_timesteps: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """Layer-0 inputs of the step's new tokens (a_{t-1}, R_t, s_t): (b, 3, C), by kernels.dispatch.embed_tokens.

        Each token is its Linear embedding plus the timestep embedding, then embed_ln, plus GPT-2's wpe[0]. The
        embedding takes whole steps (R, s, a at one timestep) and a_{t-1} belongs to the previous step, so each row
        is embedded as two steps, (0, 0, a_{t-1}) at t-1 and (R_t, s_t, 0) at t, and the three wanted tokens are
        sliced out (the other three are per-token work thrown away).
        Args: prev_actions (b, A), returns_to_go (b, 1), states (b, S) float; prev_timesteps (b,) and
        timesteps (b,) long (a_{t-1} uses the previous step's timestep).
        """
        x = embed_tokens(
            F.pad(states[:, None], (0, 0, 1, 0)),  # (b, 2, S): 0, s_t
            F.pad(prev_actions[:, None], (0, 0, 0, 1)),  # (b, 2, A): a_{t-1}, 0
            F.pad(returns_to_go[:, None], (0, 0, 1, 0)),  # (b, 2, 1): 0, R_t
            torch.stack((prev_timesteps, timesteps), dim=1),  # (b, 2)
            **self.embedding,
            backend=self.backend,
        )  # (b, 6, C): R, s, a at t-1, then at t
        return x[:, 2:5]  # (b, 3, C): a_{t-1}, R_t, s_t

    @torch.no_grad()
    def step(
        self,
        states: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One environment step for every row: the actions (B, A).

        Args: states (B, S) normalised float; returns_to_go (B,) float, already divided by scale; timesteps (B,)
        long in [0, max_ep_len); noise (B, A) float or None: sample the stochastic head's tanh-Gaussian with this
        standard normal noise instead of returning the mean action (a stochastic model only).
        """
        if noise is not None:
            if not self.model.stochastic:
                raise ValueError(
                    "sampled actions need a stochastic model (a log-std head, predict_action_log_std); "
                    "this model's action head is deterministic"
                )
            noise = noise.to(self.device, torch.float32)  # (B, A)
        B = self.B
        states = states.to(self.device, torch.float32)  # (B, S)
        returns_to_go = returns_to_go.to(self.device, torch.float32).reshape(B, 1)  # (B, 1)
        timesteps = timesteps.to(self.device, torch.long)  # (B,)
        t = self.n_steps  # (B,)
        new_pos = 3 * t[:, None] + torch.arange(-1, 2, device=self.device)  # (B, 3): a_{t-1}, R_t, s_t
        new_pos = torch.where(new_pos >= 0, new_pos, -1)  # a_{-1} does not exist
        self._embed_new(new_pos, states, returns_to_go, timesteps)
        actions = self._static_actions(t, new_pos, noise) if self.static else self._actions(t, new_pos, noise)  # (B, A)
        self.prev_action.copy_(actions)
        self.prev_timestep.copy_(timesteps)
        self.n_steps += 1
        return actions

    def _actions(self, t: torch.Tensor, new_pos: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Actions (B, A), each row on its cheapest path: the new tokens only (exact while t < K, and rolling), or
        the window's 3K - 1 tokens (exact once the window slides); sampled with `noise` (B, A) if given."""
        B, K = self.B, self.K
        rows = torch.arange(B, device=self.device)  # (B,)
        actions = torch.empty(B, self.model.config.act_dim, device=self.device)  # (B, A)
        recompute = (t >= K) if self.mode == "exact" else torch.zeros_like(t, dtype=torch.bool)  # (B,)
        if bool((~recompute).any()):
            inc = rows[~recompute]  # (b,)
            actions[inc] = self._forward(
                inc, new_pos[inc], self._rolling_floor(new_pos[inc]), None if noise is None else noise[inc]
            )
        if bool(recompute.any()):
            rec = rows[recompute]  # (b,)
            w0 = 3 * (t[rec] - K + 1)  # (b,) first token of the window
            pos = w0[:, None] + torch.arange(3 * K - 1, device=self.device)  # (b, 3K - 1)
            actions[rec] = self._forward(rec, pos, w0[:, None].expand_as(pos), None if noise is None else noise[rec])
        return actions

    def _static_actions(self, t: torch.Tensor, new_pos: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Actions (B, A), every row on one path of static shape: exact the window of the last K steps (padded with
        -1 before token 0), rolling the new tokens; sampled with `noise` (B, A) if given."""
        K = self.K
        if self.mode == "exact":
            w0 = 3 * (t - K + 1)  # (B,) first token of the window
            pos = w0[:, None] + torch.arange(3 * K - 1, device=self.device)  # (B, 3K - 1)
            pos = torch.where(pos >= 0, pos, -1)  # (B, 3K - 1)
            floor = w0.clamp(min=0)[:, None].expand_as(pos)  # (B, 3K - 1)
        else:
            pos, floor = new_pos, self._rolling_floor(new_pos)  # (B, 3), (B, 3)
        return self._forward(torch.arange(self.B, device=self.device), pos, floor, noise)

    def _rolling_floor(self, pos: torch.Tensor) -> torch.Tensor:
        """First position each token at `pos` attends to: the R token of K - 1 steps before its own (or 0)."""
        return torch.clamp(3 * (torch.div(pos, 3, rounding_mode="floor") - self.K + 1), min=0)

    def _slots(self, pos: torch.Tensor) -> torch.Tensor:
        """Cache slot of each position (any shape): p % R, or the spare slot R for -1 (no token)."""
        return torch.where(pos >= 0, pos % self.R, self.R)

    def _embed_new(
        self, new_pos: torch.Tensor, states: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor
    ) -> None:
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

    def _forward(
        self, rows: torch.Tensor, pos: torch.Tensor, floor: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """Actions (b, A) of `rows`, running the residual stream of tokens `pos` (b, n) (-1 = none; the last
        column is s_t), each query attending to cached positions in [floor, itself]; layer 0 reads the cache. The
        mean action, or sampled with `noise` (b, A)."""
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
            y = attention_masked(qh, kh, vh, mask, block.attn.scale, backend=self.backend)  # (b, H, nq, hs)
            y = y.transpose(1, 2).reshape(b, nq, C)  # (b, nq, C)
            h = h + block.attn.c_proj(y)  # (b, nq, C)
            mlp = block.mlp
            h = h + mlp.c_proj(activation(mlp.act, mlp.c_fc(block.ln_2(h))))  # (b, nq, C)
        x = m.encoder.ln_f(h[:, -1])  # (b, C) the s_t tokens
        if noise is None:
            return m.predict_action(x)  # (b, A)
        log_std = bounded_log_std(m.predict_action_log_std(x))  # (b, A)
        return TanhNormal(m.predict_action[0](x), log_std).sample(noise)  # (b, A)
