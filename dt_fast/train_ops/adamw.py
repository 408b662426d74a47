"""AdamW and the gradient-norm clip in one C++ call over every parameter (csrc/train/adamw.h); its reference is
torch.nn.utils.clip_grad_norm_ followed by torch.optim.AdamW."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dt_fast.train_ops.runtime import context


class FusedAdamW(torch.optim.AdamW):
    """torch.optim.AdamW (the same hyper-parameters, per-parameter state and state_dict, so runs resume across the
    two) whose step on CPU float32 parameters is one C++ call: the global gradient norm, then every update with the
    gradient scaled by min(1, max_grad_norm / (norm + 1e-6)), as clip_grad_norm_ would have scaled it in place (the
    .grad tensors themselves are left unscaled). Parameters without a gradient are skipped, as torch does.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        max_grad_norm: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm = float("nan")
        self._arrays: dict[int, tuple] = {}  # id(param) -> (param, its state tensors, their numpy views)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One AdamW step of every parameter with a gradient (CPU float32, dense); the global gradient norm before
        clipping is left in `last_grad_norm`."""
        if closure is not None:
            raise ValueError("FusedAdamW.step takes no closure")
        for group in self.param_groups:
            arrays, grads = [], []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse or p.dtype != torch.float32 or p.device.type != "cpu":
                    raise ValueError(
                        f"FusedAdamW needs dense CPU float32 parameters and gradients, got {p.dtype} on "
                        f"{p.device}{' (sparse gradient)' if grad.is_sparse else ''}"
                    )
                arrays.append(self._state_arrays(p))
                grads.append(grad.contiguous().numpy())
            if not arrays:
                continue
            params, exp_avgs, exp_avg_sqs, steps = zip(*arrays)
            beta1, beta2 = group["betas"]
            self.last_grad_norm = context().adamw(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,  # incremented in place
                float(group["lr"]),
                float(beta1),
                float(beta2),
                group["eps"],
                group["weight_decay"],
                self.max_grad_norm,
            )

    def _state_arrays(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Numpy views of p, its moments and its step count (created as torch.optim.AdamW creates them; the views
        cached while the state tensors stay the same objects: load_state_dict replaces them)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        cached = self._arrays.get(id(p))
        if cached is None or not (
            cached[0] is p
            and cached[1] is state["exp_avg"]
            and cached[2] is state["exp_avg_sq"]
            and cached[3] is state["step"]
        ):
            if state["step"].dtype != torch.float32 or state["step"].device.type != "cpu":
                state["step"] = torch.tensor(float(state["step"]))  # the float32 CPU count torch keeps
            tensors = (p, state["exp_avg"], state["exp_avg_sq"], state["step"])
            if not all(t.is_contiguous() for t in tensors):
                raise ValueError("FusedAdamW needs contiguous parameters and moments")
            cached = (*tensors, tuple(t.detach().numpy() for t in tensors))
            self._arrays[id(p)] = cached
        return cached[4]


def adamw_reference_step(optimizer: torch.optim.AdamW, max_grad_norm: float) -> None:
    """FusedAdamW.step in torch: clip_grad_norm_ over the optimizer's parameters (max_grad_norm > 0), then its
    step."""
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()
