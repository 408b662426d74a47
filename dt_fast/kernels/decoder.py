"""The "triton" backend of Policy: dt_fast.decode.KVCacheDecoder with its two replaceable steps on the kernels.

- `embed`: the step's new tokens (a_{t-1}, R_t, s_t) by the fused embedding kernel (with wpe[0]). The kernel
  embeds whole steps (R, s, a at one timestep); a_{t-1} belongs to the previous step, so each row is run as two
  steps, (-, -, a_{t-1}) at t-1 and (R_t, s_t, -) at t, and the three wanted tokens are sliced out.
- `attend`: attention of the new queries over the row's KV ring under the decoder's mask, by the masked
  attention kernel.
Everything else (projections, MLPs, the cache bookkeeping) is the torch decoder's. Imported only when the
backend is chosen, so it may import Triton.
"""

from __future__ import annotations

import torch

from dt_fast.decode import KVCacheDecoder
from dt_fast.kernels.attention import attention_masked
from dt_fast.kernels.dispatch import embedding_weights, resolve_backend
from dt_fast.kernels.embed import fused_embed
from dt_fast.model import DecisionTransformer


class TritonKVCacheDecoder(KVCacheDecoder):
    """KVCacheDecoder whose token embedding and attention run the Triton kernels."""

    def __init__(self, model: DecisionTransformer, num_envs: int, context_len: int, mode: str = "exact") -> None:
        """As KVCacheDecoder; raises if the kernels cannot run on the model's device (see dispatch)."""
        resolve_backend(next(model.parameters()).device, "triton")  # raises if the kernels cannot run here
        super().__init__(model, num_envs, context_len, mode)

    def embed(self, prev_actions: torch.Tensor, returns_to_go: torch.Tensor, states: torch.Tensor,
              prev_timesteps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Layer-0 inputs of the new tokens (a_{t-1}, R_t, s_t): (b, 3, C), as KVCacheDecoder.embed."""
        x = fused_embed(torch.stack((torch.zeros_like(states), states), dim=1),  # (b, 2, S)
                        torch.stack((prev_actions, torch.zeros_like(prev_actions)), dim=1),  # (b, 2, A)
                        torch.stack((torch.zeros_like(returns_to_go), returns_to_go), dim=1),  # (b, 2, 1)
                        torch.stack((prev_timesteps, timesteps), dim=1),  # (b, 2)
                        **embedding_weights(self.model, with_wpe=True))  # (b, 6, C): R, s, a at t-1, then at t
        return x[:, 2:5]  # (b, 3, C): a_{t-1}, R_t, s_t

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               scale: float) -> torch.Tensor:
        """Attention of new queries over cached keys/values: (b, H, n, hs), as KVCacheDecoder.attend."""
        return attention_masked(q, k, v, mask, scale)
