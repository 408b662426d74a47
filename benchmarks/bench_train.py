"""Training speed: dt_fast's Trainer against the blog's TrainableDT + collator + transformers.Trainer and d3rlpy.

Side by side in one process, same model (hidden 128, 3 layers, 1 head), batch 64, context 20, HalfCheetah sizes:
  blog/datasets   the blog as it runs: the collator over a `datasets.Dataset`
  blog/lists      the same set-up fed Python lists
  d3rlpy          d3rlpy's DecisionTransformer at the same sizes (an optional peer that `make bench` installs;
                  skipped with the reason printed when it does not import)
  eager/fixed     plain eager torch (our model on torch's ops, AdamW) on one fixed batch: no data loading at all
  dt_fast torch   dt_fast.train.Trainer (C++ sampler) on torch's ops (DT_FAST_BACKEND=torch): the torch path
  dt_fast fused   the same Trainer on dt_fast's C++ training ops (the default for CPU float32): the new path
  dt_fast bf16 / compile   torch's ops under bf16 autocast / torch.compile
Reports optimizer steps/s, ratios to the blog and to d3rlpy, the data-loading share of step time, and the share of
the bound reached: model FLOPs per step over the fastest fp32 matmul rate measured in the same run (torch's or
the engine's own kernel, the fastest 512^3 or 2048^3 call, all threads). Then a profile of the fused path by op
family (torch.profiler).

    python -m benchmarks.bench_train [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import h5py
import torch

from benchmarks import RESULTS_DIR
from dt_fast.bench.harness import matmul_rates, print_table, save_results
from dt_fast.bench.reference import ListDataset
from dt_fast.bench.train import (
    ACT_DIM,
    BATCH,
    CONTEXT,
    STATE_DIM,
    blog_trainer_rate,
    d3rlpy_rate,
    dt_fast_rate,
    make_dataset,
    torch_path,
    train_flops_per_step,
)


def eager_fixed_batch_rate(steps: int) -> float:
    """Steps/s of plain eager torch on one fixed batch: our model on torch's ops, AdamW, masked MSE, clipping."""
    from dt_fast import DecisionTransformer, DecisionTransformerConfig
    from dt_fast.train import action_loss

    model = DecisionTransformer(DecisionTransformerConfig(state_dim=STATE_DIM, act_dim=ACT_DIM, max_ep_len=1000))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    b = dict(states=torch.randn(BATCH, CONTEXT, STATE_DIM), actions=torch.randn(BATCH, CONTEXT, ACT_DIM),
             returns_to_go=torch.randn(BATCH, CONTEXT, 1), timesteps=torch.randint(0, 1000, (BATCH, CONTEXT)),
             attention_mask=torch.ones(BATCH, CONTEXT))

    def step() -> None:
        _, a, _ = model(**b)
        loss = action_loss(a, b["actions"], b["attention_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    with torch_path():
        for _ in range(3):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps / (time.perf_counter() - start)


# dropout + residual, the gradient's masks and sums): on the fused path "GEMM" is those ops whole.
FAMILIES = {
    "GEMM": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "_Linear", "_LinearBackward"),
    "attention": ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_softmax_backward_data",
                  "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_attention_math",
                  "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "_Attention", "_AttentionBackward"),
    "optimizer": ("aten::_fused_adamw_", "aten::_foreach_norm", "aten::linalg_vector_norm", "aten::_foreach_mul_",
                  "aten::clamp", "aten::_foreach_add_", "Optimizer.step#AdamW.step", "Optimizer.step#FusedAdamW.step",
                  "Optimizer.zero_grad#AdamW.zero_grad", "Optimizer.zero_grad#FusedAdamW.zero_grad"),
}


def profile_breakdown(path: Path, steps: int, fused: bool = True) -> dict[str, float]:
    """Share of step time by op family (GEMM, attention, elementwise, optimizer, data, framework) of dt_fast's
    Trainer, from torch.profiler's self CPU times; data is the time spent waiting for the sampler's batch, framework
    the rest of the step (Python, the autograd engine, dispatch)."""
    from torch.profiler import ProfilerActivity, profile

    from dt_fast.train import TrainConfig, Trainer

    with contextlib.nullcontext() if fused else torch_path(), tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset=str(path), out=out, steps=steps + 5, batch_size=BATCH, context_len=CONTEXT,
                          save_every=10**9, log_every=10**9)
        trainer = Trainer(cfg)
        batches = iter(trainer.sampler)
        for _ in range(5):
            trainer.train_step(next(batches))
        load = 0.0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                batch = next(batches)
                load += time.perf_counter() - t0
                trainer.train_step(batch)
            total = time.perf_counter() - start
        trainer.close()
    seconds = {"data": load}
    for event in prof.key_averages():
        family = next((f for f, names in FAMILIES.items() if event.key in names), None)
        if family is None and event.key.startswith(("aten::", "_")) and not event.key.startswith("aten::_to_copy"):
            family = "elementwise"  # every other op: LayerNorm, dropout, the embedding, adds, copies
        if family is not None:
            seconds[family] = seconds.get(family, 0.0) + event.self_cpu_time_total / 1e6
    seconds["framework"] = max(total - sum(seconds.values()), 0.0)
    return {family: value / total for family, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per configuration")
    parser.add_argument("--quick", action="store_true", help="skip the compile, bf16 and datasets.Dataset runs")
    args = parser.parse_args()
    steps = args.steps

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        rows_py = make_dataset(path)
        flops, flops_ours = train_flops_per_step(), train_flops_per_step(action_only=True)
        rates = matmul_rates(threads=1, min_time=2.0)
        peak = torch.get_num_threads() * max(rates.values())  # N cores cannot beat N x one core
        rows = []
        blog_lists, blog_lists_load = blog_trainer_rate(ListDataset(rows_py), steps)
        rows.append(dict(setup="blog/lists", steps_per_s=blog_lists, data_share=blog_lists_load))
        if not args.quick:
            from datasets import Dataset

            hf = Dataset.from_list(rows_py)
            blog_ds, blog_ds_load = blog_trainer_rate(hf, max(steps // 4, 8))
            rows.append(dict(setup="blog/datasets", steps_per_s=blog_ds, data_share=blog_ds_load))
        with h5py.File(path) as f:
            arrays = [f[k][()] for k in ("observations", "actions", "rewards", "timeouts")]
        peer = d3rlpy_rate(*arrays, steps)
        if isinstance(peer, str):
            print(f"d3rlpy row skipped: {peer}")
        else:
            rows.append(dict(setup="d3rlpy", steps_per_s=peer[0], data_share=peer[1]))
        rows.append(dict(setup="eager/fixed-batch", steps_per_s=eager_fixed_batch_rate(steps), data_share=0.0))
        configs = [("dt_fast torch", {"fused": False}), ("dt_fast fused", {})]
        if not args.quick:
            configs += [("dt_fast bf16", {"fused": False, "precision": "bf16"}),
                        ("dt_fast compile", {"fused": False, "compile": True})]
        for name, options in configs:
            r, load = dt_fast_rate(path, steps, **options)
            rows.append(dict(setup=name, steps_per_s=r, data_share=load))
        profiles = {name: profile_breakdown(path, max(steps // 2, 10), fused=fused)
                    for name, fused in (("dt_fast torch", False), ("dt_fast fused", True))}
    by = {r["setup"]: r["steps_per_s"] for r in rows}
    for r in rows:
        r["x_blog_lists"] = r["steps_per_s"] / by["blog/lists"]
        if "blog/datasets" in by:
            r["x_blog_datasets"] = r["steps_per_s"] / by["blog/datasets"]
        if "d3rlpy" in by:
            r["x_d3rlpy"] = r["steps_per_s"] / by["d3rlpy"]
        r["of_bound"] = r["steps_per_s"] * (flops_ours if r["setup"].startswith("dt_fast") else flops) / peak
    bound = dict(setup="bound", steps_per_s=peak / flops_ours, of_bound=1.0)
    print(f"model FLOPs per step {flops / 1e9:.2f} GFLOP ({flops_ours / 1e9:.2f} as dt_fast computes only the "
          f"action loss's inputs); fp32 matmul (fastest 512^3 or 2048^3 call) on 1 thread, times "
          f"{torch.get_num_threads()} for the bound: torch {rates['torch'] / 1e9:.1f}, the engine's kernel "
          f"{rates['engine'] / 1e9:.1f} GFLOP/s -> bound {peak / flops:.1f} steps/s ({peak / flops_ours:.1f} for "
          f"dt_fast)")
    print_table(rows + [bound], ["setup", "steps_per_s", "x_blog_datasets", "x_blog_lists", "x_d3rlpy", "data_share",
                                 "of_bound"])
    families = ["GEMM", "attention", "elementwise", "optimizer", "data", "framework"]
    print("\nshare of step time by op family (torch.profiler self CPU time; GEMM on the fused path: the Linear "
          "layers' C++ ops whole, epilogues included)")
    print_table([{"setup": name, **{f: p.get(f, 0.0) for f in families}} for name, p in profiles.items()],
                ["setup", *families])
    print("results:", save_results("train", rows + [bound], {
        "flops_per_step": flops, "flops_per_step_dt_fast": flops_ours, "matmul_flops_per_s": peak,
        "matmul_rates": rates, "profile_shares": profiles, "steps": steps, "quick": args.quick},
        directory=RESULTS_DIR))


if __name__ == "__main__":
    main()
