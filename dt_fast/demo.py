"""`dt-fast demo`: the main job on the embedded default dataset, end to end with what exists today."""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dt_fast.config import DecisionTransformerConfig
from dt_fast.model import DecisionTransformer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dt-fast demo`."""
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    """Build a Hopper-sized model, round-trip it through a checkpoint directory and run a forward pass."""
    torch.manual_seed(args.seed)
    config = DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000)
    model = DecisionTransformer(config).eval()
    with tempfile.TemporaryDirectory() as ckpt:
        model.save_pretrained(ckpt)
        loaded = DecisionTransformer.from_pretrained(ckpt)
    B, T = 64, 20
    batch = dict(states=torch.randn(B, T, 11), actions=torch.randn(B, T, 3), returns_to_go=torch.randn(B, T, 1),
                 timesteps=torch.randint(0, 1000, (B, T)), attention_mask=torch.ones(B, T))
    start = time.perf_counter()
    with torch.no_grad():
        _, a1, _ = model(**batch)
        _, a2, _ = loaded(**batch)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, checkpoint round trip max |diff| = "
          f"{(a1 - a2).abs().max().item():.1e}, forward of batch {B}x{T} in "
          f"{(time.perf_counter() - start) / 2 * 1e3:.1f} ms")
    print("not yet in the demo: training on the embedded dataset and evaluating the policy (see README status)")
    return 0
