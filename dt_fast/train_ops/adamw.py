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
        self._arrays: dict[int, tuple] = {}  # id(param) -> (its state tensors, their numpy views)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One AdamW step of every parameter with a gradient (CPU float32, dense); the global gradient norm before
        clipping is left in `last_grad_norm`."""
        if closure is not None:
            raise ValueError("FusedAdamW.step takes no closure")
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or p.dtype != torch.float32 or p.device.type != "cpu":
                    raise ValueError(
                        f"FusedAdamW needs dense CPU float32 parameters and gradients, got {p.dtype} on "
                        f"{p.device}{' (sparse gradient)' if p.grad.is_sparse else ''}"
                    )
                p_np, m_np, v_np, step = self._state_arrays(p)
                params.append(p_np)
                grads.append(p.grad.contiguous().numpy())
                exp_avgs.append(m_np)
                exp_avg_sqs.append(v_np)
                steps.append(step)
            if not params:
                continue
            torch._foreach_add_(steps, 1.0)
            steps = [float(s) for s in steps]
            beta1, beta2 = group["betas"]
            self.last_grad_norm = context().adamw(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                float(group["lr"]),
                float(beta1),
                float(beta2),
                group["eps"],
                group["weight_decay"],
                self.max_grad_norm,
            )

    def _state_arrays(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """Numpy views of p and its moments (created as torch.optim.AdamW creates them, views cached while the state
        tensors stay the same objects: load_state_dict replaces them), and its step tensor."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        cached = self._arrays.get(id(p))
        tensors = (p, state["exp_avg"], state["exp_avg_sq"])
        if cached is None or any(a is not b for a, b in zip(cached[0], tensors)):
            if not all(t.is_contiguous() for t in tensors):
                raise ValueError("FusedAdamW needs contiguous parameters and moments")
            cached = (tensors, tuple(t.detach().numpy() for t in tensors))
            self._arrays[id(p)] = cached
        return (*cached[1], state["step"])


def adamw_reference_step(optimizer: torch.optim.AdamW, max_grad_norm: float) -> None:
    """FusedAdamW.step in torch: clip_grad_norm_ over the optimizer's parameters (max_grad_norm > 0), then its
    step."""
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()
