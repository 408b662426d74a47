"""CUDA-graph capture of the training step: the GPU path of Trainer with TrainConfig.cuda_graph.

At the paper's sizes (batch 64, 3 x 20 tokens, hidden 128) one optimizer step launches several hundred small
kernels (forward, backward, the clip's norms, AdamW's per-tensor updates), and the host's launches, not the GPU, can
set the step time. `GraphedTrainStep` captures the whole step once in a torch.cuda.CUDAGraph and replays it: the
host copies each batch of the sampler (static shapes: (B, K, ...)) into static buffers, replays, and reads the loss.
What a step computes is dt_fast.train's (Trainer.device_step, the same function the eager path runs); this module
owns the capture and what capture asks of the step:

- no host synchronisation and no data-dependent Python branch: the model's timestep range check, which reads values
  back, is off (Trainer.policy_loss), the clip is torch's (foreach norms, no error_if_nonfinite), and AdamW is
  `capturable_adamw`: step counts and bias corrections on the device, the learning rate a device tensor that the
  schedule (LambdaLR, run on the host after each replay) fills in place and the graph reads;
- dropout draws from the default CUDA generator, which capture registers with the graph: each replay advances its
  philox offset by the graph's total, so every replay draws new masks (a step that drew from another generator would
  need graph.register_generator_state);
- warm-up: the first `warmup` steps run eagerly on a side stream (cuBLAS workspaces, the autograd engine's streams,
  AdamW's state created before capture); they are real, counted steps;
- the step sets the gradients to None before its backward, which therefore allocates them in the graph's memory
  pool during capture; every replay writes them there again.

tests/test_train_graph.py checks on the CPU what can be checked there: that step function against the eager step,
that it reads nothing back and runs the same ops every step, that the optimizer and schedule update their tensors in
place. The capture and replay need a GPU: none was available to this project, so GPU speed is unmeasured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

STEP_KEYS = ("states", "actions", "returns_to_go", "timesteps", "attention_mask")
"""The batch entries a training step reads (the sampler's `rewards` are not)."""


def capturable_adamw(
    params: Iterable[torch.Tensor], lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """torch.optim.AdamW as a CUDA graph can hold it: capturable (its step counts and bias corrections stay on the
    device), foreach, and the learning rate a 0-dim tensor on `device` that an LRScheduler fills in place."""
    return torch.optim.AdamW(
        params, lr=torch.tensor(lr, device=device), weight_decay=weight_decay, foreach=True, capturable=True
    )


class GraphedTrainStep:
    """`step(batch) -> loss` run eagerly for `warmup` steps, then captured once in a CUDA graph and replayed on every
    later batch (CUDA devices only).

    `step` takes a dict of device tensors (STEP_KEYS) and returns the loss as a 0-dim device tensor; it must be fit
    for capture (see the module). Calls take the sampler's host batch and return the loss tensor, overwritten by the
    next call: read it first.
    """

    def __init__(
        self, step: Callable[[dict[str, torch.Tensor]], torch.Tensor], device: torch.device, warmup: int = 3
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"GraphedTrainStep needs a CUDA device, got {device}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (AdamW's state must exist before capture), got {warmup}")
        self.step, self.device, self.warmup = step, device, warmup
        self.side = torch.cuda.Stream(device)  # of the warm-up steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, torch.Tensor] = {}  # static input buffers, STEP_KEYS
        self.loss: torch.Tensor | None = None  # the graph's static output

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One training step on `batch` (host or device tensors): the loss, a 0-dim device tensor."""
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            return self.eager(batch)
        if self.graph is None:
            self.capture(batch)
        for key, buffer in self.inputs.items():
            buffer.copy_(batch[key], non_blocking=True)
        self.graph.replay()
        return self.loss

    def eager(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A warm-up step: `step` run eagerly on a side stream, ordered after and before the current stream's work."""
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            loss = self.step({k: batch[k].to(self.device, non_blocking=True) for k in STEP_KEYS})
        current.wait_stream(self.side)
        return loss

    def capture(self, batch: dict[str, torch.Tensor]) -> None:
        """Allocate the static inputs (shapes and dtypes of `batch`) and capture `step` on them; nothing runs."""
        self.inputs = {k: torch.empty(batch[k].shape, dtype=batch[k].dtype, device=self.device) for k in STEP_KEYS}
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.step(self.inputs)
