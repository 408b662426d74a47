"""The interleaved token embedding before embed_ln in C++ (csrc/train/embed.h), forward and backward: the three
small Linear layers, the timestep table and the interleaving in one pass, no (B, T, C) intermediates."""

from __future__ import annotations

import torch

from dt_fast.kernels.reference import tokens_ref
from dt_fast.train_ops.runtime import array, context


class _EmbedTokens(torch.autograd.Function):
    """x[:, 3t + i] = token i of step t (R, s, a) before embed_ln; the inputs get no gradient."""

    @staticmethod
    def forward(
        ctx,
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
        table: torch.Tensor,
    ) -> torch.Tensor:
        B, T = timesteps.shape
        inputs = (
            states.reshape(B * T, -1).contiguous(),
            actions.reshape(B * T, -1).contiguous(),
            returns_to_go.reshape(B * T).contiguous(),
            timesteps.reshape(B * T).to(torch.int64).contiguous(),
        )
        x = torch.empty(B, 3 * T, table.shape[1])  # (B, 3T, C)
        context().embed_forward(
            *map(array, inputs),
            *map(array, (w_return, b_return, w_state, b_state, w_action, b_action, table)),
            array(x.view(3 * B * T, -1)),
        )
        ctx.save_for_backward(*inputs)
        ctx.shapes = [t.shape for t in (w_return, b_return, w_state, b_state, w_action, b_action, table)]
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        grads = [torch.empty(shape) for shape in ctx.shapes]
        dx = grad.reshape(-1, grad.shape[-1]).contiguous()  # (3N, C)
        context().embed_backward(array(dx), *map(array, ctx.saved_tensors), *map(array, grads))
        return (None, None, None, None, *grads)


def embed_tokens(
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
    table: torch.Tensor,
) -> torch.Tensor:
    """The tokens R_1, s_1, a_1, R_2, ... before embed_ln, (B, 3T, C); gradients for the weights only.

    Args:
        states: (B, T, S). actions: (B, T, A). returns_to_go: (B, T, 1). timesteps: (B, T) integer in
            [0, table rows). w_return (C, 1), w_state (C, S), w_action (C, A) and their biases (C,): nn.Linear
            layout. table: (max_ep_len, C), the timestep embedding.
    """
    return _EmbedTokens.apply(
        states, actions, returns_to_go, timesteps, w_return, b_return, w_state, b_state, w_action, b_action, table
    )


embed_tokens_reference = tokens_ref  # the pure torch embed_tokens lives with the other kernel references
