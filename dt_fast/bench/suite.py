"""The benchmark suite: dt_fast against the blog's workflow and against this machine, in one job, one table.

What `dt-fast bench` (and `make bench`) runs. It measures the machine once (fp32 matmul: the fastest 512^3 or 2048^3
call of torch and of the engine's kernel, on one thread and on all threads; the fastest numpy copy of 64 MiB), then
runs groups of rows with short windows, each beside its reference from dt_fast/bench/reference.py (`--rows` picks
groups, all by default):
  sampler  TrajectorySampler batches/s vs the blog's collator (Python lists; datasets.Dataset), D4RL-sized data
  train    dt_fast Trainer steps/s (fp32 on its C++ ops, fp32 on torch's, bf16) vs the blog's TrainableDT +
           collator + transformers.Trainer (fed Python lists; a datasets.Dataset, over a quarter of the steps: it
           is ~3x slower) and d3rlpy's Decision Transformer (when installed: `make bench` installs it)
  policy   Policy.act p50/p99 at batch 1, window sliding, exact and rolling, on all threads (the default) and on
           one, vs the blog's get_action (one torch thread, its fastest here); actions/s at batch 64 and 256
  eval     dt_fast.evaluate env-steps/s with 64 envs vs the blog's rollout loop; bound: envpool random actions
  peers    Policy.act p50 at batch 1 (the blog's window sliding) and actions/s at batch 64, exact and rolling, all
           threads, vs ONNX Runtime running transformers' model exported to ONNX (same weights, same threads)
  odt      dt_fast's online fine-tuning (Finetuner) vs the official ODT loop (reference_odt.py) from one briefly
           trained stochastic checkpoint, Hopper-v4, 64 envs: collection env-steps/s per engine mode (bound:
           envpool random actions) and one online iteration's wall time (collection + 30 updates of batch 64)
"x reference" is the speed-up (rate / reference rate, or reference latency / latency); "of bound" is the share of
the bound reached (at most 1). It prints one table and writes OUT/suite.json (CPU model, date, threads, versions,
hardware rates, every row) and OUT/suite.md (the same table in Markdown); nothing else.

    dt-fast bench --out results                 # every group, ~10 minutes on 2 quiet cores (odt ~5)
    dt-fast bench --rows sampler --out results  # one group (~30 s)
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from dt_fast.bench import evaluation as bench_eval  # the names of the scripts these workloads came from
from dt_fast.bench import odt as bench_odt
from dt_fast.bench import peers
from dt_fast.bench import policy as bench_policy
from dt_fast.bench import sampler as bench_sampler
from dt_fast.bench import train as bench_train
from dt_fast.bench.harness import matmul_flops_per_s, memcpy_bytes_per_s, print_table, rate, save_results
from dt_fast.bench.reference import DecisionTransformerGymDataCollator, ListDataset
from dt_fast.checkpoint import atomic_write

COLUMNS = ["measure", "dt_fast", "reference", "x_reference", "bound", "of_bound", "reference_is", "bound_is"]
HEADERS = ["measure", "dt_fast", "reference", "x reference", "bound", "of bound", "reference is", "bound is"]
SECONDS = 2.0  # timing window of each rate measurement
TRAIN_STEPS, LATENCY_STEPS, EVAL_ENVS, EVAL_EPISODES, BLOG_EVAL_STEPS = 40, 1000, 64, 128, 400
ODT_PRETRAIN_STEPS = 200  # the stochastic checkpoint both ODT sides start from
OUTPUTS = ("suite.json", "suite.md")


def row(
    measure: str,
    ours: float,
    reference: float | None,
    bound: float | None,
    reference_is: str,
    bound_is: str = "",
    lower_is_better: bool = False,
) -> dict:
    """One table row; x_reference and of_bound are oriented so that higher is better."""
    if lower_is_better:
        x_ref = reference / ours if reference else None
        of_bound = bound / ours if bound else None
    else:
        x_ref = ours / reference if reference else None
        of_bound = ours / bound if bound else None
    return {
        "measure": measure,
        "dt_fast": ours,
        "reference": reference,
        "x_reference": x_ref,
        "bound": bound,
        "of_bound": of_bound,
        "reference_is": reference_is,
        "bound_is": bound_is,
    }


def hardware() -> dict:
    """This machine's fp32 matmul rate (one thread and all threads) and copy bandwidth, measured now."""
    return {
        "matmul_flops_per_s_1_thread": matmul_flops_per_s(threads=1, min_time=SECONDS),
        "matmul_flops_per_s_all_threads": matmul_flops_per_s(threads=torch.get_num_threads(), min_time=SECONDS),
        "memcpy_bytes_per_s": memcpy_bytes_per_s(min_time=SECONDS),
        "torch_threads": torch.get_num_threads(),
    }


def peak_rate(hw: dict, threads: int) -> float:
    """The matmul rate a bound uses on `threads` threads: threads x the one-thread rate. N cores cannot beat N times
    one core, and the one-thread rate (the fastest 512^3 call) holds on a loaded machine, where a measured all-thread
    rate falls whenever another tenant holds a core during its window."""
    return threads * hw["matmul_flops_per_s_1_thread"]


def sampler_rows(hw: dict) -> list[dict]:
    """TrajectorySampler vs the blog's collator on a D4RL-sized dataset (1,000 x 1,000 steps), batch 64."""
    from dt_fast import TrajectorySampler

    t = bench_sampler.synthetic(np.full(1000, 1000), seed=1)
    features = [None] * bench_sampler.BATCH_SIZE  # the collator samples by itself; only len() matters
    collator = DecisionTransformerGymDataCollator(
        ListDataset(bench_sampler.as_rows(t)), max_len=bench_sampler.CONTEXT_LEN
    )
    lists_rate = rate(lambda: collator(features), min_time=SECONDS)
    collator.dataset = bench_sampler.as_hf_dataset(t)  # the same statistics; only the data source differs
    dataset_rate = rate(lambda: collator(features), min_time=SECONDS)
    sampler = TrajectorySampler(
        t, context_len=bench_sampler.CONTEXT_LEN, batch_size=bench_sampler.BATCH_SIZE, num_threads=1
    )
    nbytes = sum(v.numel() * v.element_size() for v in sampler.sample().values())
    ours, _ = bench_sampler.rate_and_cpu(sampler.sample, SECONDS, warmup=200)
    sampler.close()
    # The windows are read from a dataset larger than the caches and written into a batch that stays in cache: the
    # bound is the batch's bytes at the memory traffic rate of a copy (read + write counted).
    bound = hw["memcpy_bytes_per_s"] / nbytes
    what = f"the batch's {nbytes / 1e3:.0f} KB at memcpy traffic"
    return [
        row("sampler batches/s, batch 64 x K 20", ours, lists_rate, bound, "blog collator, Python lists", what),
        row("sampler batches/s, batch 64 x K 20", ours, dataset_rate, bound, "blog collator, datasets.Dataset", what),
    ]


def train_rows(hw: dict) -> list[dict]:
    """dt_fast's Trainer (fp32 on its C++ training ops, fp32 on torch's ops, bf16 autocast) vs the blog's
    transformers.Trainer set-up fed Python lists and a datasets.Dataset; fp32 on the C++ ops vs d3rlpy's Decision
    Transformer (a row without a reference that says why when d3rlpy does not import), batch 64."""
    import h5py
    from datasets import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        rows_py = bench_train.make_dataset(path)
        refs = {
            "blog TrainableDT + transformers.Trainer, lists": bench_train.blog_trainer_rate(
                ListDataset(rows_py), TRAIN_STEPS
            )[0],
            "blog TrainableDT + transformers.Trainer, datasets.Dataset": bench_train.blog_trainer_rate(
                Dataset.from_list(rows_py), TRAIN_STEPS // 4
            )[0],
        }
        with h5py.File(path) as f:
            peer = bench_train.d3rlpy_rate(
                *[f[k][()] for k in ("observations", "actions", "rewards", "timeouts")], TRAIN_STEPS
            )
        ours = {
            "fp32, C++ training ops": bench_train.dt_fast_rate(path, TRAIN_STEPS)[0],
            "fp32, torch ops": bench_train.dt_fast_rate(path, TRAIN_STEPS, fused=False)[0],
            "bf16 autocast": bench_train.dt_fast_rate(path, TRAIN_STEPS, fused=False, precision="bf16")[0],
        }
    flops = bench_train.train_flops_per_step(action_only=True)  # what dt_fast's Trainer computes
    bound = peak_rate(hw, hw["torch_threads"]) / flops
    what = f"{flops / 1e9:.1f} GFLOP/step at the matmul rate, {hw['torch_threads']} threads"
    rows = [
        row(f"training steps/s, {name}", rate_, ref_rate, bound, ref, what)
        for name, rate_ in ours.items()
        for ref, ref_rate in refs.items()
    ]
    d3rlpy = "d3rlpy DecisionTransformer, same sizes" if isinstance(peer, tuple) else f"d3rlpy: {peer}"
    rows.append(
        row(
            "training steps/s, fp32, C++ training ops",
            ours["fp32, C++ training ops"],
            peer[0] if isinstance(peer, tuple) else None,
            bound,
            d3rlpy,
            what,
        )
    )
    return rows


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Inside: torch on one thread. Batch-1 forwards of this small model run fastest so: kind to the blog's loop."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def policy_rows(hw: dict) -> list[dict]:
    """Policy.act (C++ engine) latency at batch 1 and actions/s at batch 64 and 256 vs the blog's get_action.

    Bound: the FLOPs of the engine's plan (csrc/engine/engine.h; fewer than the pruned plan it replaces) at the
    matmul rate of the case's threads. No bytes term: the 2.4 MB of weights and the window's cache stay in cache
    between steps, so DRAM bandwidth does not limit a step (and cache bandwidth is not measured).
    """
    from dt_fast.policy import Policy

    S, A = bench_policy.ENVS["Hopper"]
    K = bench_policy.K
    rng = np.random.default_rng(0)
    hf, ours = bench_policy.paired_models(S, A)
    common = dict(
        target_return=3600.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=bench_policy.SCALE, context_len=K
    )
    with one_torch_thread():
        blog = bench_policy.blog_latencies(hf, LATENCY_STEPS, "t>=K", rng)
    blog_p50, blog_p99 = np.median(blog), np.percentile(blog, 99)
    ref = "blog get_action on transformers"
    rows = []
    all_threads = hw["torch_threads"]
    for mode in ("exact", "rolling"):
        flops, _ = bench_policy.step_cost(ours.config, mode, K + 30, absorbed=True)
        for threads in (all_threads, 1):
            lat = bench_policy.policy_latencies(
                Policy(ours, mode=mode, backend="cpp", n_threads=threads, **common), LATENCY_STEPS, "t>=K", rng
            )
            bound = flops / peak_rate(hw, threads)
            what = f"{flops / 1e6:.1f} MFLOP at {threads}-thread matmul"
            name = f"batch 1, {mode}, {threads} thread{'s' if threads > 1 else ''}"
            rows.append(
                row(
                    f"step latency p50 us, {name}",
                    np.median(lat) * 1e6,
                    blog_p50 * 1e6,
                    bound * 1e6,
                    ref,
                    what,
                    lower_is_better=True,
                )
            )
            rows.append(
                row(
                    f"step latency p99 us, {name}",
                    np.percentile(lat, 99) * 1e6,
                    blog_p99 * 1e6,
                    None,
                    ref,
                    lower_is_better=True,
                )
            )
    for mode in ("exact", "rolling"):
        flops, _ = bench_policy.step_cost(ours.config, mode, K + 30, absorbed=True)
        for batch in (64, 256):
            for threads in (1, all_threads):
                policy = Policy(ours, mode=mode, backend="cpp", num_envs=batch, n_threads=threads, **common)
                steps = (4 if mode == "exact" else 40) * (256 // batch)
                rate = peak_rate(hw, threads)
                rows.append(
                    row(
                        f"actions/s, batch {batch}, {mode}, {threads} thread{'s' if threads > 1 else ''}",
                        bench_policy.throughput(policy, steps, rng, SECONDS),
                        1.0 / blog_p50,
                        rate / flops,
                        "blog get_action loop, 1 env",
                        f"{flops / 1e6:.1f} MFLOP/action at {threads}-thread matmul",
                    )
                )
    return rows


def eval_rows() -> list[dict]:
    """dt_fast.evaluate env-steps/s over 64 envpool Hopper-v4 envs vs the blog's rollout loop; envpool as bound."""
    with tempfile.TemporaryDirectory() as tmp, one_torch_thread():
        ckpt = Path(tmp)
        bench_eval.make_checkpoint(ckpt)
        ceiling = bench_eval.envpool_random(EVAL_ENVS, 500, seed=0)
        blog = bench_eval.blog_loop(ckpt, BLOG_EVAL_STEPS, seed=0)["rate"]
        return [
            row(
                f"evaluation env-steps/s, {EVAL_ENVS} envs, {mode}",
                bench_eval.evaluator(ckpt, mode, EVAL_ENVS, EVAL_EPISODES, seed=0)["rate"],
                blog,
                ceiling,
                "blog rollout loop, 1 gymnasium env",
                f"envpool stepping {EVAL_ENVS} envs with random actions",
            )
            for mode in ("exact", "rolling")
        ]


def peer_rows(hw: dict) -> list[dict]:
    """Policy.act (C++ engine, all threads) vs ONNX Runtime running transformers' model (the same weights) exported
    to ONNX, on the same threads: batch-1 step p50 latency with the blog's window sliding, actions/s at batch 64.
    ONNX Runtime's actions are checked against transformers' get_action (1e-4) on every timed step."""
    import onnxruntime

    from dt_fast.policy import Policy

    S, A = bench_policy.ENVS["Hopper"]
    K, threads = bench_policy.K, hw["torch_threads"]
    rng = np.random.default_rng(0)
    hf, ours = bench_policy.paired_models(S, A)
    with tempfile.TemporaryDirectory() as tmp:
        session = peers.ort_session(peers.export_onnx(hf, Path(tmp) / "dt.onnx", K), threads)
        ort_latency, worst = peers.ort_latencies(session, hf, LATENCY_STEPS, K, rng)
        if worst > 1e-4:
            raise AssertionError(f"ONNX Runtime's actions differ from transformers' get_action by {worst:.2e} > 1e-4")
        ort_rate = peers.ort_throughput(session, S, A, 64, K, rng, SECONDS)
    ref = f"ONNX Runtime {onnxruntime.__version__}, {threads} threads (|action - transformers'| <= {worst:.0e})"
    common = dict(
        target_return=3600.0,
        state_mean=np.zeros(S),
        state_std=np.ones(S),
        scale=bench_policy.SCALE,
        context_len=K,
        backend="cpp",
        n_threads=threads,
    )
    rows = []
    for mode in ("exact", "rolling"):
        policy = Policy(ours, mode=mode, **common)
        latency = bench_policy.policy_latencies(policy, LATENCY_STEPS, "t>=K", rng)
        rows.append(
            row(
                f"step latency p50 us, batch 1, {mode}, {threads} threads",
                np.median(latency) * 1e6,
                np.median(ort_latency) * 1e6,
                None,
                ref,
                lower_is_better=True,
            )
        )
    for mode in ("exact", "rolling"):
        policy = Policy(ours, mode=mode, num_envs=64, **common)
        rows.append(
            row(
                f"actions/s, batch 64, {mode}, {threads} threads",
                bench_policy.throughput(policy, 4 if mode == "exact" else 40, rng, SECONDS),
                ort_rate,
                None,
                ref,
            )
        )
    return rows


def odt_rows() -> list[dict]:
    """dt_fast's online fine-tuning vs the official ODT loop (odt.online_rounds, one round after warm-up) from a
    stochastic checkpoint trained for ODT_PRETRAIN_STEPS steps: collection env-steps/s, online iteration seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = bench_odt.make_checkpoint(Path(tmp) / "odt", steps=ODT_PRETRAIN_STEPS)
        summary = bench_odt.online_summary(bench_odt.online_rounds(ckpt, rounds=1))
    ceiling = bench_eval.envpool_random(bench_odt.ENVS, 500, seed=0)
    ref = summary[bench_odt.REFERENCE]
    envs, updates, batch = bench_odt.ENVS, bench_odt.UPDATES, bench_odt.BATCH
    rows = [
        row(
            f"ODT collection env-steps/s, {envs} envs, {mode}",
            summary[f"dt_fast {mode}"]["env_steps_per_s"],
            ref["env_steps_per_s"],
            ceiling,
            "official ODT loop, gymnasium SyncVectorEnv",
            f"envpool stepping {envs} envs with random actions",
        )
        for mode in bench_odt.MODES
    ]
    rows += [
        row(
            f"ODT online iteration s, {envs} envs + {updates} updates x batch {batch}, {mode}",
            summary[f"dt_fast {mode}"]["total_s"],
            ref["total_s"],
            None,
            "official ODT loop (LAMB, DataLoader)",
            lower_is_better=True,
        )
        for mode in bench_odt.MODES
    ]
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (numbers to 3 significant digits)."""

    def fmt(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * 5 + "---|---|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


ROWS: dict[str, Callable[[dict], list[dict]]] = {
    "sampler": sampler_rows,
    "train": train_rows,
    "policy": policy_rows,
    "eval": lambda hw: eval_rows(),  # its bound is envpool's own rate, measured inside
    "peers": peer_rows,
    "odt": lambda hw: odt_rows(),  # the same
}
"""The groups of rows, in the order they run (dt_fast.bench.GROUPS names them for `--rows`)."""


def output_paths(out: Path, overwrite: bool) -> list[Path]:
    """The files the suite writes in `out`; FileExistsError naming one that exists unless `overwrite`."""
    paths = [out / name for name in OUTPUTS]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exists: pass --overwrite to replace it, or another --out")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: not a directory")
    return paths


def summary(doc: dict) -> str:
    """One paragraph: the command, date, CPU, threads, versions and the hardware rates of a suite.json document."""
    hw = doc["hardware"]
    return (
        f"`{doc['command']}`, {doc['date']}, {doc['cpu']}, {hw['torch_threads']} threads, dt_fast "
        f"{doc['dt_fast']} (git {doc['git']}), torch {doc['torch']}, total {doc['total_seconds']:.0f} s. "
        f"Measured in the same run: fp32 matmul {hw['matmul_flops_per_s_1_thread'] / 1e9:.1f} GFLOP/s on 1 "
        f"thread, {hw['matmul_flops_per_s_all_threads'] / 1e9:.1f} GFLOP/s on {hw['torch_threads']} (the "
        f"bounds use threads x the one-thread rate); memcpy "
        f'{hw["memcpy_bytes_per_s"] / 1e9:.1f} GB/s (read + write). "x reference" is the speed-up over the '
        f'reference, "of bound" the share of the hardware (or envpool) bound reached; both higher is better.'
    )


def run_suite(groups: list[str], out: Path, command: str, overwrite: bool = False) -> Path:
    """Measure the machine, run the row groups, print the table, write out/suite.json and out/suite.md; returns
    the json's path. The output files are checked before anything runs."""
    json_path, md_path = output_paths(out, overwrite)
    start = time.perf_counter()
    print("measuring the machine (matmul, memcpy)", flush=True)
    hw = hardware()
    rows = []
    for name in groups:
        print(name, flush=True)
        rows += ROWS[name](hw)
    total = time.perf_counter() - start
    path = save_results(
        "suite", rows, {"hardware": hw, "total_seconds": total, "command": command, "groups": groups}, directory=out
    )
    doc = json.loads(path.read_text())
    print()
    print_table([{k: ("" if v is None else v) for k, v in r.items()} for r in rows], COLUMNS)
    print(f"\n{summary(doc)}")
    with atomic_write(md_path) as tmp:
        tmp.write_text(summary(doc) + "\n\n" + markdown_table(rows) + "\n")
    print(f"\nwrote {json_path} and {md_path}")
    return json_path
