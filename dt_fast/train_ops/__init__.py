"""Fused CPU float32 training ops of the model: torch.autograd.Functions over dt_fast._C.TrainOps, one file per op
family, each beside its pure torch reference (tests/test_train_ops.py checks values and gradients against it).

  block.py       a whole GPT-2 block (LayerNorms, attention, MLP, dropouts, residuals) in one C++ call each way
  linear.py      Linear layers on the engine's packed matmul, bias / ReLU / dropout + residual in the epilogue
  layer_norm.py  LayerNorm forward and backward in one pass each
  attention.py   causal self-attention of short windows (softmax, dropout, both products) per head
  dropout.py     dropout of x + a row vector (the embedding's) from a counter-based hash, and the hash's torch
                 reference
  embed.py       the interleaved token embedding (three small Linear layers, the timestep table) before embed_ln
  adamw.py       AdamW and the gradient-norm clip in one pass over every parameter

The model uses these ops where `fused_cpu` holds (extension built, eager mode, no CPU autocast, CPU float32
tensors, DT_FAST_BACKEND not 'torch') and otherwise runs the torch code. Dropout masks come from the counter-based
hash of csrc/train/dropout.h, seeded by one draw from torch's generator per call (`draw_seed`), so
torch.manual_seed and RNG-state resume govern them. Every op gives the same bits whatever the number of threads.
"""

from __future__ import annotations

from dt_fast.train_ops.adamw import FusedAdamW, adamw_reference_step
from dt_fast.train_ops.attention import attention, attention_reference, causal_mask
from dt_fast.train_ops.block import (
    BlockSpec,
    BlockWeights,
    activation,
    transformer_block,
    transformer_block_reference,
)
from dt_fast.train_ops.dropout import dropout_mask_reference, shift_dropout, shift_dropout_reference
from dt_fast.train_ops.embed import embed_tokens, embed_tokens_reference
from dt_fast.train_ops.layer_norm import layer_norm, layer_norm_reference
from dt_fast.train_ops.linear import linear, linear_reference
from dt_fast.train_ops.runtime import configure, context, draw_seed, fused_cpu, team_threads

__all__ = [
    "BlockSpec",
    "BlockWeights",
    "FusedAdamW",
    "activation",
    "adamw_reference_step",
    "attention",
    "attention_reference",
    "causal_mask",
    "configure",
    "context",
    "draw_seed",
    "dropout_mask_reference",
    "embed_tokens",
    "embed_tokens_reference",
    "fused_cpu",
    "layer_norm",
    "layer_norm_reference",
    "linear",
    "linear_reference",
    "shift_dropout",
    "shift_dropout_reference",
    "team_threads",
    "transformer_block",
    "transformer_block_reference",
]
