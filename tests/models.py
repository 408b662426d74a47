"""Random Decision Transformers for the equality tests of the decoders, the engine and the kernels."""

from __future__ import annotations

import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig


def random_model(seed: int, config: DecisionTransformerConfig) -> DecisionTransformer:
    """A model with large random weights, so that actions depend on every input, and LayerNorm gains near 1 (near
    0 they would flatten every attention score and hide errors in attention); in eval mode."""
    torch.manual_seed(seed)
    model = DecisionTransformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() > 1 else 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
    return model
