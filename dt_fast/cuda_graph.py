"""CUDA-graph capture of a decoder step: the GPU path of `Policy` with backend "torch" or "triton".

A decoder step launches a few hundred small kernels; at batch 1 their launch cost, not the GPU, sets the latency.
`GraphedStep` captures one step of a static-shape decoder (dt_fast.decode.KVCacheDecoder with static=True, one
batch size) in a torch.cuda.CUDAGraph and replays it: the host copies the inputs into static buffers, replays, and
copies the actions out. A stochastic model's step is captured with a static noise input (the sampled path of
dt_fast.decode); its mean action is replayed with zero noise, tanh(loc + exp(log_std) * 0) = tanh(loc) exactly.
This module owns the capture only; what a step computes, and why it can be captured, is
dt_fast.decode's. The tests check the static step on the CPU (tests/test_cuda_graph.py); the capture itself runs
only on a GPU.
"""

from __future__ import annotations

import torch

from dt_fast.decode import KVCacheDecoder


class GraphedStep:
    """A static KVCacheDecoder's step captured once in a CUDA graph and replayed every step (CUDA devices only)."""

    def __init__(self, decoder: KVCacheDecoder, warmup: int = 3) -> None:
        """Warm up on a side stream, restore the decoder's state, capture one step."""
        if not decoder.static or decoder.device.type != "cuda":
            raise ValueError("GraphedStep needs a KVCacheDecoder with static=True on a CUDA device")
        B, S, dev = decoder.B, decoder.model.config.state_dim, decoder.device
        self.decoder = decoder
        self.states = torch.zeros(B, S, device=dev)  # (B, S) static inputs
        self.returns_to_go = torch.zeros(B, device=dev)  # (B,)
        self.timesteps = torch.zeros(B, dtype=torch.long, device=dev)  # (B,)
        A = decoder.model.config.act_dim
        self.noise = torch.zeros(B, A, device=dev) if decoder.model.stochastic else None  # (B, A) or None
        saved = [x.clone() for x in decoder.state()]
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                decoder.step(self.states, self.returns_to_go, self.timesteps, self.noise)
        torch.cuda.current_stream(dev).wait_stream(side)
        for x, old in zip(decoder.state(), saved):
            x.copy_(old)  # warm-up steps must not count
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.actions = decoder.step(
                self.states, self.returns_to_go, self.timesteps, self.noise
            )  # (B, A) static output

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Start new episodes in `rows` (long indices), or in every row (in place: the graph keeps its tensors)."""
        self.decoder.reset(rows)

    def step(
        self,
        states: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One environment step for every row by graph replay: the actions (B, A), a fresh tensor; sampled with
        `noise` (B, A) (a stochastic model only), else the mean action."""
        if noise is not None and self.noise is None:
            raise ValueError(
                "sampled actions need a stochastic model (a log-std head, predict_action_log_std); "
                "this model's action head is deterministic"
            )
        self.states.copy_(states)
        self.returns_to_go.copy_(returns_to_go.reshape(-1))
        self.timesteps.copy_(timesteps)
        if self.noise is not None and noise is not None:
            self.noise.copy_(noise)
        elif self.noise is not None:
            self.noise.zero_()
        self.graph.replay()
        return self.actions.clone()
