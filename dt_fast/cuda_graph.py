"""CUDA-graph capture of the Policy step: the GPU path of `Policy` with backend "torch" or "triton".

A decoder step launches a few hundred small kernels; at batch 1 their launch cost, not the GPU, sets the
latency. `StaticStep` makes the step capturable: static shapes, no data-dependent Python branch, no host
synchronisation, and its state (caches, step counts, previous action and timestep) updated in place. Every row
runs one path: exact mode the 3K - 1 token window (positions before token 0 are padding, so while t < K it gives
the incremental result), rolling mode the step's 3 new tokens. `GraphedStep` captures one step of one decoder
(one batch size) in a torch.cuda.CUDAGraph and replays it: the host copies the inputs into static buffers,
replays, and copies the actions out. The tests run StaticStep on the CPU against dt_fast.decode.KVCacheDecoder
and trace it with torch.compile(fullgraph=True) (no graph break: no host sync); the capture itself runs only on
a GPU.
"""

from __future__ import annotations

import torch

from dt_fast.decode import KVCacheDecoder
from dt_fast.model import DecisionTransformer


class StaticStep:
    """Mixin over KVCacheDecoder (or its Triton subclass) whose step has static shapes and no host sync."""

    @torch.no_grad()
    def step(self, states: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """As KVCacheDecoder.step (same actions to float tolerance), every row on one path."""
        B, K = self.B, self.K
        states = states.to(self.device, torch.float32)  # (B, S)
        returns_to_go = returns_to_go.to(self.device, torch.float32).reshape(B, 1)  # (B, 1)
        timesteps = timesteps.to(self.device, torch.long)  # (B,)
        t = self.n_steps  # (B,)
        new_pos = 3 * t[:, None] + torch.arange(-1, 2, device=self.device)  # (B, 3): a_{t-1}, R_t, s_t
        new_pos = torch.where(new_pos >= 0, new_pos, -1)  # a_{-1} does not exist
        self._embed_new(new_pos, states, returns_to_go, timesteps)
        if self.mode == "exact":  # the window of the last K steps, padded with -1 before token 0
            w0 = 3 * (t - K + 1)  # (B,) first token of the window
            pos = w0[:, None] + torch.arange(3 * K - 1, device=self.device)  # (B, 3K - 1)
            pos = torch.where(pos >= 0, pos, -1)  # (B, 3K - 1)
            floor = w0.clamp(min=0)[:, None].expand_as(pos)  # (B, 3K - 1)
        else:
            pos = new_pos  # (B, 3)
            floor = torch.clamp(3 * (torch.div(pos, 3, rounding_mode="floor") - K + 1), min=0)  # (B, 3)
        actions = self._forward(torch.arange(B, device=self.device), pos, floor)  # (B, A)
        self.prev_action.copy_(actions)
        self.prev_timestep.copy_(timesteps)
        self.n_steps += 1
        return actions


def static_decoder(base: type[KVCacheDecoder], model: DecisionTransformer, num_envs: int, context_len: int,
                   mode: str) -> KVCacheDecoder:
    """A decoder of class `base` (KVCacheDecoder or a subclass) whose step is StaticStep's."""
    cls = type(f"Static{base.__name__}", (StaticStep, base), {"__doc__": f"{base.__name__} with StaticStep.step."})
    return cls(model, num_envs, context_len, mode)


class GraphedStep:
    """A StaticStep decoder's step captured once in a CUDA graph and replayed every step (CUDA devices only)."""

    def __init__(self, decoder: KVCacheDecoder, warmup: int = 3) -> None:
        """Warm up on a side stream, restore the decoder's state, capture one step."""
        if not isinstance(decoder, StaticStep) or decoder.device.type != "cuda":
            raise ValueError("GraphedStep needs a StaticStep decoder on a CUDA device")
        B, S, dev = decoder.B, decoder.model.config.state_dim, decoder.device
        self.decoder = decoder
        self.states = torch.zeros(B, S, device=dev)  # (B, S) static inputs
        self.returns_to_go = torch.zeros(B, device=dev)  # (B,)
        self.timesteps = torch.zeros(B, dtype=torch.long, device=dev)  # (B,)
        saved = [x.clone() for x in self._state()]
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                decoder.step(self.states, self.returns_to_go, self.timesteps)
        torch.cuda.current_stream(dev).wait_stream(side)
        for x, old in zip(self._state(), saved):
            x.copy_(old)  # warm-up steps must not count
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.actions = decoder.step(self.states, self.returns_to_go, self.timesteps)  # (B, A) static output

    def _state(self) -> list[torch.Tensor]:
        """Every tensor a step updates in place."""
        d = self.decoder
        return [d.k_cache, d.v_cache, d.x0_cache, d.q0_cache, d.slot_pos, d.n_steps, d.prev_action, d.prev_timestep]

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Start new episodes in `rows` (long indices), or in every row (in place: the graph keeps its tensors)."""
        self.decoder.reset(rows)

    def step(self, states: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """One environment step for every row by graph replay: the actions (B, A), a fresh tensor."""
        self.states.copy_(states)
        self.returns_to_go.copy_(returns_to_go.reshape(-1))
        self.timesteps.copy_(timesteps)
        self.graph.replay()
        return self.actions.clone()
