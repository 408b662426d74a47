"""GPU benchmark of the Triton kernels against their pure-torch references, side by side in one run.

  embed fwd / fwd+bwd   dt_fast.kernels.embed.fused_embed vs reference.embed_ref (the model's torch embedding),
                        B x K=20 steps, HalfCheetah sizes, hidden 128; GB/s = bytes of inputs + output / time
  attn new tokens       attention_masked as the decoder runs it: 3 queries per row over a KV ring of 3K + 4 = 64
                        slots (rolling mode, exact while the window fills) vs reference.attention_masked_ref
  attn exact window     the same with the 3K - 1 = 59 queries of an exact window recompute
  policy step           Policy.act (Hopper-sized random checkpoint, hidden 128, 3 layers, K=20, exact and
                        rolling) with backend "triton" vs "torch", each as the CUDA graph Policy captures
                        ("+graph", dt_fast/cuda_graph.py), that static step run eagerly (" static"), and the
                        eager incremental decoder on the same kernels (dt_fast/decode.py, no suffix), each timed
                        alone (inputs on the GPU, actions copied back to the host); and Policy.act (" Policy.act":
                        the graph plus the host round trip, numpy in and out): p50/p99 over --policy-steps steps
  train step            Trainer.train_step on bench_train's HalfCheetah-sized synthetic dataset (hidden 128, 3
                        layers, context 20, fp32, the batch size of the row): eager ("eager") against the whole step
                        captured in a CUDA graph ("graph", --cuda-graph, dt_fast/train_graph.py), each with the
                        batch's copy to the GPU and the loss read back: p50/p99 over --train-steps steps after the
                        warm-up and the capture
Times are triton.testing.do_bench medians (p20/p80 beside) in milliseconds; "speedup" = reference (torch, eager) /
kernel.
Without a CUDA device (as on the machines dt_fast is built on) it prints that no GPU was found and exits 0:
GPU speed is unmeasured until this has been run on one.

    python -m benchmarks.bench_gpu [--batch-sizes 1 64 1024]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from dt_fast.bench.harness import print_table, save_results

QUANTILES = [0.5, 0.2, 0.8]


def timed(fn) -> tuple[float, float, float]:
    """(p50, p20, p80) milliseconds of fn on the GPU."""
    import triton.testing

    return tuple(triton.testing.do_bench(fn, quantiles=QUANTILES))


def row(bench: str, provider: str, batch: int, times: tuple[float, float, float], **extra) -> dict:
    """One result row."""
    return {
        "bench": bench,
        "provider": provider,
        "batch": batch,
        "p50_ms": times[0],
        "p20_ms": times[1],
        "p80_ms": times[2],
        **extra,
    }


def bench_embed(batch: int, device: torch.device) -> list[dict]:
    """Fused embedding vs reference, forward and forward+backward, fp32."""
    from dt_fast.kernels.embed import fused_embed
    from dt_fast.kernels.reference import embed_ref

    T, S, A, C, E = 20, 17, 6, 128, 1000
    inputs = [
        torch.randn(batch, T, S, device=device),
        torch.randn(batch, T, A, device=device),
        torch.randn(batch, T, 1, device=device),
        torch.randint(0, E, (batch, T), device=device),
    ]
    weights = [
        torch.randn(*s, device=device, requires_grad=True)
        for s in [(C, 1), (C,), (C, S), (C,), (C, A), (C,), (E, C), (C,), (C,), (C,)]
    ]
    n_bytes = 4 * (batch * T * (S + A + 1) + batch * 3 * T * C) + 8 * batch * T  # inputs + output, fp32
    grad = torch.randn(batch, 3 * T, C, device=device)
    rows = []
    for name, fn in (("triton", fused_embed), ("torch", embed_ref)):
        with torch.no_grad():
            t = timed(lambda: fn(*inputs, *weights))
        rows.append(row("embed fwd", name, batch, t, GB_per_s=n_bytes / t[0] / 1e6))
        t = timed(lambda: torch.autograd.grad(fn(*inputs, *weights), weights, grad))
        rows.append(row("embed fwd+bwd", name, batch, t))
    return rows


def bench_attention(batch: int, device: torch.device) -> list[dict]:
    """Masked attention over a KV ring vs reference, on the decoder's shapes (K = 20, one head of 128), fp32."""
    from dt_fast.kernels.attention import attention_masked
    from dt_fast.kernels.reference import attention_masked_ref

    nh, hs, L = 1, 128, 64
    k, v = torch.randn(batch, nh, L, hs, device=device), torch.randn(batch, nh, L, hs, device=device)
    rows = []
    for bench, n in (("attn new tokens", 3), ("attn exact window", 59)):
        q = torch.randn(batch, nh, n, hs, device=device)  # (B, nh, n, hs)
        mask = torch.rand(batch, n, L, device=device) < 0.9  # (B, n, L)
        for name, fn in (("triton", attention_masked), ("torch", attention_masked_ref)):
            t = timed(lambda: fn(q, k, v, mask, hs**-0.5))
            rows.append(row(bench, name, batch, t))
    return rows


def bench_policy(batch: int, device: torch.device, steps: int) -> list[dict]:
    """Decoder step latency (p50/p99 ms over `steps` steps after warm-up), kernels torch vs triton, both modes:
    the CUDA graph of the static step Policy captures, that static step eagerly, the incremental decoder, and
    Policy.act."""
    from dt_fast import DecisionTransformer, DecisionTransformerConfig, Policy
    from dt_fast.bench.harness import latencies
    from dt_fast.cuda_graph import GraphedStep
    from dt_fast.decode import KVCacheDecoder

    torch.manual_seed(0)
    model = DecisionTransformer(DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000)).to(device)
    states = torch.randn(steps + 100, batch, 11, device=device)  # (steps + warm-up, B, S)
    rtg = torch.full((batch,), 3.6, device=device)  # (B,)
    obs = states.cpu().numpy()  # (steps + warm-up, B, S)
    rows = []
    for mode in ("exact", "rolling"):
        for name in ("triton", "torch"):
            static = KVCacheDecoder(model, batch, 20, mode, static=True, backend=name)
            policy = Policy(
                model,
                target_return=3600.0,
                mode=mode,
                backend=name,
                num_envs=batch,
                state_mean=np.zeros(11),
                state_std=np.ones(11),
                scale=1000.0,
                context_len=20,
            )
            for provider, decoder in (
                (f"{name}+graph", GraphedStep(static)),
                (f"{name} static", static),
                (name, KVCacheDecoder(model, batch, 20, mode, backend=name)),
            ):
                decoder.reset()
                it = iter(states)
                t = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) steps since reset

                def step() -> None:
                    decoder.step(next(it), rtg, t.clamp(max=999)).cpu()
                    t.add_(1)

                rows.append(latency_row(f"policy step {mode}", provider, batch, latencies(step, n=steps, warmup=50)))
            it = iter(obs)
            policy.act(next(it))
            times = latencies(lambda: policy.act(next(it), np.ones(batch)), n=steps, warmup=50)
            rows.append(latency_row(f"policy step {mode}", f"{name} Policy.act", batch, times))
    return rows


def bench_train(batch: int, device: torch.device, steps: int) -> list[dict]:
    """Training step wall time (p50/p99 ms over `steps` steps after warm-up), eager against the CUDA graph."""
    from dt_fast.bench.harness import latencies
    from dt_fast.bench.train import CONTEXT, make_dataset
    from dt_fast.train import TrainConfig, Trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        make_dataset(path)
        for provider, graph in (("eager", False), ("graph", True)):
            cfg = TrainConfig(
                dataset=str(path),
                out=str(Path(tmp) / provider),
                batch_size=batch,
                context_len=CONTEXT,
                device=str(device),
                cuda_graph=graph,
                save_every=10**9,
                log_every=10**9,
            )
            trainer = Trainer(cfg)
            trainer.model.train()
            batches = iter(trainer.sampler)
            times = latencies(lambda: trainer.train_step(next(batches)), n=steps, warmup=20)
            rows.append(latency_row("train step", provider, batch, times))
            trainer.close()
    return rows


def latency_row(bench: str, provider: str, batch: int, seconds: np.ndarray) -> dict:
    """One result row of per-call wall times: p50, p20, p80 and p99 in milliseconds."""
    ms = seconds * 1e3
    return row(
        bench,
        provider,
        batch,
        tuple(float(np.percentile(ms, p)) for p in (50, 20, 80)),
        p99_ms=float(np.percentile(ms, 99)),
    )


def main() -> None:
    """Run every GPU benchmark, print a table with speedups and save benchmarks/results/bench_gpu.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--policy-steps", type=int, default=1000, help="timed Policy.act calls per case")
    parser.add_argument("--train-steps", type=int, default=200, help="timed training steps per case")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no GPU found (torch.cuda.is_available() is False); GPU speed is unmeasured. Nothing run.")
        return
    device = torch.device("cuda")
    rows = []
    for batch in args.batch_sizes:
        rows += (
            bench_embed(batch, device) + bench_attention(batch, device) + bench_policy(batch, device, args.policy_steps)
        )
        rows += bench_train(batch, device, args.train_steps)
    reference = {(r["bench"], r["batch"]): r["p50_ms"] for r in rows if r["provider"] in ("torch", "eager")}
    for r in rows:
        r["speedup"] = reference[(r["bench"], r["batch"])] / r["p50_ms"]
    print(f"device: {torch.cuda.get_device_name(device)}")
    print_table(rows, ["bench", "provider", "batch", "p50_ms", "p20_ms", "p80_ms", "p99_ms", "speedup", "GB_per_s"])
    path = save_results("bench_gpu", rows, {"gpu": torch.cuda.get_device_name(device)}, directory=RESULTS_DIR)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
