"""Training speed: dt_fast's Trainer against the blog's TrainableDT + collator + transformers.Trainer and d3rlpy.

Side by side in one process, same model (hidden 128, 3 layers, 1 head), batch 64, context 20, HalfCheetah sizes:
  blog/datasets   the blog as it runs: the collator over a `datasets.Dataset`
  blog/lists      the same set-up fed Python lists
  d3rlpy          d3rlpy's DecisionTransformer at the same sizes (an optional peer: pip install "dt-fast[bench]";
                  skipped with the reason printed when it does not import)
  eager/fixed     plain eager torch (our model on torch's ops, AdamW) on one fixed batch: no data loading at all
  dt_fast torch   dt_fast.train.Trainer (C++ sampler) on torch's ops (DT_FAST_BACKEND=torch): the torch path
  dt_fast fused   the same Trainer on dt_fast's C++ training ops (the default for CPU float32): the new path
  dt_fast bf16 / compile   torch's ops under bf16 autocast / torch.compile
Reports optimizer steps/s, ratios to the blog and to d3rlpy, the data-loading share of step time, and the share of
the bound reached: model FLOPs per step over the fastest fp32 matmul rate measured in the same run (torch's or the
engine's own kernel, the fastest 512^3 or 2048^3 call, one thread, times the threads). On a shared machine wall time
counts the other tenants' load too, so every row also gives its process CPU time per step (every thread: the step's,
the sampler's, torch's or the team's) and the share of the CPU-time bound: FLOPs over the fastest rate one core
reaches by its own thread CPU time (torch or the engine's kernel, 2048^3 or the model's largest GEMM, whichever is
faster), divided by the CPU seconds of a step. The dt_fast paths run in alternating rounds of steps (medians over
rounds), each the same batches. Then a profile of the fused path by op family (torch.profiler).

    python -m benchmarks.bench_train [--steps 40] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import torch

from benchmarks import RESULTS_DIR
from dt_fast import train_ops
from dt_fast.bench.harness import load_average, matmul_rates, print_table, save_results
from dt_fast.bench.reference import ListDataset
from dt_fast.bench.train import (
    ACT_DIM,
    BATCH,
    CONTEXT,
    STATE_DIM,
    blog_trainer_rate,
    d3rlpy_rate,
    make_dataset,
    torch_path,
    train_flops_per_step,
)


def eager_fixed_batch_rate(steps: int) -> tuple[float, float]:
    """(steps/s, process CPU seconds per step) of plain eager torch on one fixed batch: our model on torch's ops,
    AdamW, masked MSE, clipping."""
    from dt_fast import DecisionTransformer, DecisionTransformerConfig
    from dt_fast.train import action_loss

    model = DecisionTransformer(DecisionTransformerConfig(state_dim=STATE_DIM, act_dim=ACT_DIM, max_ep_len=1000))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    b = dict(
        states=torch.randn(BATCH, CONTEXT, STATE_DIM),
        actions=torch.randn(BATCH, CONTEXT, ACT_DIM),
        returns_to_go=torch.randn(BATCH, CONTEXT, 1),
        timesteps=torch.randint(0, 1000, (BATCH, CONTEXT)),
        attention_mask=torch.ones(BATCH, CONTEXT),
    )

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
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        return steps / (time.perf_counter() - start), (time.process_time() - cpu) / steps


def dt_fast_rounds(path: Path, steps: int, rounds: int, configs: list[tuple[str, dict]]) -> dict[str, dict[str, float]]:
    """Per configuration (name, Trainer options; fused=False for the torch path): medians over `rounds` alternating
    rounds of `steps` steps each (every configuration runs one round, then the next round begins) of steps/s,
    process CPU seconds per step (the sampler's thread included) and the data-loading share, each configuration
    drawing its batches from its own sampler as dt_fast_rate does."""
    from dt_fast.train import TrainConfig, Trainer

    runs = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as out:
        for name, options in configs:
            options = dict(options)
            fused = options.pop("fused", True)
            with contextlib.nullcontext() if fused else torch_path():
                cfg = TrainConfig(
                    dataset=str(path),
                    out=str(Path(out) / str(len(runs))),
                    steps=10**6,
                    batch_size=BATCH,
                    context_len=CONTEXT,
                    save_every=10**9,
                    log_every=10**9,
                    **options,
                )
                trainer = Trainer(cfg)
                stack.callback(trainer.close)
                trainer.model.train()
                batches = iter(trainer.sampler)
                for _ in range(5):  # warm-up (and compilation)
                    trainer.train_step(next(batches))
            runs[name] = (trainer, batches, fused, [])
        for _ in range(rounds):
            for trainer, batches, fused, samples in runs.values():
                with contextlib.nullcontext() if fused else torch_path():
                    load, start, cpu = 0.0, time.perf_counter(), time.process_time()
                    for _ in range(steps):
                        t0 = time.perf_counter()
                        batch = next(batches)
                        load += time.perf_counter() - t0
                        trainer.train_step(batch)
                    total = time.perf_counter() - start
                    samples.append((steps / total, (time.process_time() - cpu) / steps, load / total))
    return {
        name: {
            key: statistics.median(s[i] for s in samples)
            for i, key in enumerate(("steps_per_s", "cpu_s", "data_share"))
        }
        for name, (_, _, _, samples) in runs.items()
    }


def cpu_matmul_rate(min_time: float = 1.0) -> dict[str, float]:
    """FLOP per second of thread CPU time of the fastest single fp32 matmul call on one thread (a load-independent
    per-core rate): torch and the engine's packed kernel at 2048^3, and the engine's kernel at the model's largest
    GEMM shape (M = BATCH * 3 * CONTEXT tokens, K 128, N 512), where its operands stay in cache."""
    from dt_fast import _C

    def fastest_cpu(fn: Callable[[], object], flops: float) -> float:
        fn()
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < min_time:
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
        return flops / best

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = 2048
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        rates = {"torch 2048^3": fastest_cpu(lambda: torch.matmul(a, b, out=out), 2.0 * n**3)}
    finally:
        torch.set_num_threads(previous)
    packed = _C.PackedMatmul(b.numpy())
    rates["engine 2048^3"] = fastest_cpu(lambda: packed(a.numpy(), 1), 2.0 * n**3)
    M, K, N = BATCH * 3 * CONTEXT, 128, 512
    x = torch.randn(M, K).numpy()
    packed_model = _C.PackedMatmul(torch.randn(K, N).numpy())
    rates[f"engine {M}x{K}x{N}"] = fastest_cpu(lambda: packed_model(x, 1), 2.0 * M * K * N)
    return rates


# torch.profiler event names of each op family. The linear layers' C++ ops carry their fused epilogues (bias, ReLU,
# dropout + residual, the gradient's masks and sums): on the fused path "GEMM" is those ops whole. A transformer
# block is one C++ call each way (BLOCK_EVENTS): its ops are split by family by the C++ context's own clock.
BLOCK_EVENTS = ("_Block", "_BlockBackward")
FAMILIES = {
    "GEMM": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "_Linear", "_LinearBackward"),
    "attention": (
        "aten::bmm",
        "aten::baddbmm",
        "aten::_softmax",
        "aten::_softmax_backward_data",
        "aten::scaled_dot_product_attention",
        "aten::_scaled_dot_product_attention_math",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "_Attention",
        "_AttentionBackward",
    ),
    "optimizer": (
        "aten::_fused_adamw_",
        "aten::_foreach_norm",
        "aten::linalg_vector_norm",
        "aten::_foreach_mul_",
        "aten::clamp",
        "aten::_foreach_add_",
        "Optimizer.step#AdamW.step",
        "Optimizer.step#FusedAdamW.step",
        "Optimizer.zero_grad#AdamW.zero_grad",
        "Optimizer.zero_grad#FusedAdamW.zero_grad",
    ),
}


def profile_breakdown(path: Path, steps: int, fused: bool = True) -> dict[str, float]:
    """Share of step time by op family (GEMM, attention, elementwise, optimizer, data, framework) of dt_fast's
    Trainer, from torch.profiler's self CPU times; data is the time spent waiting for the sampler's batch, framework
    the rest of the step (Python, the autograd engine, dispatch)."""
    from torch.profiler import ProfilerActivity, profile

    from dt_fast.train import TrainConfig, Trainer

    with contextlib.nullcontext() if fused else torch_path(), tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            dataset=str(path),
            out=out,
            steps=steps + 5,
            batch_size=BATCH,
            context_len=CONTEXT,
            save_every=10**9,
            log_every=10**9,
        )
        trainer = Trainer(cfg)
        batches = iter(trainer.sampler)
        for _ in range(5):
            trainer.train_step(next(batches))
        load = 0.0
        if fused:
            train_ops.context().profile(True)
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
    if fused:  # the blocks' ops by family; the rest of the blocks' time (their Python) stays in framework
        seconds.update(train_ops.context().block_seconds)
        train_ops.context().profile(False)
    for event in prof.key_averages():
        if event.key in BLOCK_EVENTS:
            continue
        family = next((f for f, names in FAMILIES.items() if event.key in names), None)
        if family is None and event.key.startswith(("aten::", "_")) and not event.key.startswith("aten::_to_copy"):
            family = "elementwise"  # every other op: LayerNorm, dropout, the embedding, adds, copies
        if family is not None:
            seconds[family] = seconds.get(family, 0.0) + event.self_cpu_time_total / 1e6
    seconds["framework"] = max(total - sum(seconds.values()), 0.0)
    return {family: value / total for family, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per configuration (and round)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the dt_fast configurations")
    parser.add_argument("--quick", action="store_true", help="skip the compile, bf16 and datasets.Dataset runs")
    args = parser.parse_args()
    steps = args.steps
    load_before = load_average()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        rows_py = make_dataset(path)
        flops, flops_ours = train_flops_per_step(), train_flops_per_step(action_only=True)
        rates = matmul_rates(threads=1, min_time=2.0)
        peak = torch.get_num_threads() * max(rates.values())  # N cores cannot beat N x one core
        core_rates = cpu_matmul_rate()
        core_peak = max(core_rates.values())
        rows = []
        blog_lists, blog_lists_load, blog_lists_cpu = blog_trainer_rate(ListDataset(rows_py), steps)
        rows.append(
            dict(setup="blog/lists", steps_per_s=blog_lists, data_share=blog_lists_load, cpu_ms=1e3 * blog_lists_cpu)
        )
        if not args.quick:
            from datasets import Dataset

            hf = Dataset.from_list(rows_py)
            blog_ds, blog_ds_load, blog_ds_cpu = blog_trainer_rate(hf, max(steps // 4, 8))
            rows.append(
                dict(setup="blog/datasets", steps_per_s=blog_ds, data_share=blog_ds_load, cpu_ms=1e3 * blog_ds_cpu)
            )
        with h5py.File(path) as f:
            arrays = [f[k][()] for k in ("observations", "actions", "rewards", "timeouts")]
        peer = d3rlpy_rate(*arrays, steps)
        if isinstance(peer, str):
            print(f"d3rlpy row skipped: {peer}")
        else:
            rows.append(dict(setup="d3rlpy", steps_per_s=peer[0], data_share=peer[1], cpu_ms=1e3 * peer[2]))
        eager, eager_cpu = eager_fixed_batch_rate(steps)
        rows.append(dict(setup="eager/fixed-batch", steps_per_s=eager, data_share=0.0, cpu_ms=1e3 * eager_cpu))
        configs = [("dt_fast torch", {"fused": False}), ("dt_fast fused", {})]
        if not args.quick:
            configs += [
                ("dt_fast bf16", {"fused": False, "precision": "bf16"}),
                ("dt_fast compile", {"fused": False, "compile": True}),
            ]
        for name, r in dt_fast_rounds(path, steps, args.rounds, configs).items():
            rows.append(
                dict(setup=name, steps_per_s=r["steps_per_s"], data_share=r["data_share"], cpu_ms=1e3 * r["cpu_s"])
            )
        profiles = {
            name: profile_breakdown(path, max(steps // 2, 10), fused=fused)
            for name, fused in (("dt_fast torch", False), ("dt_fast fused", True))
        }
    by = {r["setup"]: r for r in rows}
    for r in rows:
        r["x_blog_lists"] = r["steps_per_s"] / by["blog/lists"]["steps_per_s"]
        if "blog/datasets" in by:
            r["x_blog_datasets"] = r["steps_per_s"] / by["blog/datasets"]["steps_per_s"]
        if "d3rlpy" in by:
            r["x_d3rlpy"] = r["steps_per_s"] / by["d3rlpy"]["steps_per_s"]
            r["x_d3rlpy_cpu"] = by["d3rlpy"]["cpu_ms"] / r["cpu_ms"]
        step_flops = flops_ours if r["setup"].startswith("dt_fast") else flops
        r["of_bound"] = r["steps_per_s"] * step_flops / peak
        r["of_bound_cpu"] = step_flops / core_peak / (r["cpu_ms"] / 1e3)
    bound = dict(
        setup="bound",
        steps_per_s=peak / flops_ours,
        cpu_ms=1e3 * flops_ours / core_peak,
        of_bound=1.0,
        of_bound_cpu=1.0,
    )
    print(f"load average before {load_before}, after {load_average()} (1, 5, 15 min) on {os.cpu_count()} CPUs")
    print(
        f"model FLOPs per step {flops / 1e9:.2f} GFLOP ({flops_ours / 1e9:.2f} as dt_fast computes only the "
        f"action loss's inputs); fp32 matmul (fastest 512^3 or 2048^3 call) on 1 thread, times "
        f"{torch.get_num_threads()} for the bound: torch {rates['torch'] / 1e9:.1f}, the engine's kernel "
        f"{rates['engine'] / 1e9:.1f} GFLOP/s -> bound {peak / flops:.1f} steps/s ({peak / flops_ours:.1f} for "
        f"dt_fast)"
    )
    print(
        "one core by its thread CPU time: "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in core_rates.items())
        + f" GFLOP/s -> CPU-time bound {1e3 * flops_ours / core_peak:.1f} CPU ms per dt_fast step"
    )
    print_table(
        rows + [bound],
        [
            "setup",
            "steps_per_s",
            "cpu_ms",
            "x_blog_datasets",
            "x_blog_lists",
            "x_d3rlpy",
            "x_d3rlpy_cpu",
            "data_share",
            "of_bound",
            "of_bound_cpu",
        ],
    )
    families = ["GEMM", "attention", "elementwise", "optimizer", "data", "framework"]
    print(
        "\nshare of step time by op family (torch.profiler self CPU time, and the C++ context's clock inside each "
        "transformer block's call; GEMM on the fused path: the Linear layers' C++ ops whole, epilogues included)"
    )
    print_table(
        [{"setup": name, **{f: p.get(f, 0.0) for f in families}} for name, p in profiles.items()], ["setup", *families]
    )
    print(
        "results:",
        save_results(
            "train",
            rows + [bound],
            {
                "flops_per_step": flops,
                "flops_per_step_dt_fast": flops_ours,
                "matmul_flops_per_s": peak,
                "matmul_rates": rates,
                "matmul_flops_per_cpu_s": core_peak,
                "matmul_rates_per_core": core_rates,
                "rounds": args.rounds,
                "load_average": [load_before, load_average()],
                "profile_shares": profiles,
                "steps": steps,
                "quick": args.quick,
            },
            directory=RESULTS_DIR,
        ),
    )


if __name__ == "__main__":
    main()
