"""The benchmark suite: dt_fast against the blog's workflow and against this machine, in one job, one table.

What `make bench` and `dt-fast bench` run. It measures the machine once (torch 2048^3 fp32 matmul on one thread
and on all threads, numpy copy of 256 MiB), then runs the component benchmarks' own functions with short windows,
each beside its reference from benchmarks/reference.py:
  sampler     TrajectorySampler batches/s vs the blog's collator (Python lists; datasets.Dataset), D4RL-sized data
  training    dt_fast Trainer steps/s (fp32 on its C++ ops, fp32 on torch's, bf16) vs the blog's TrainableDT +
              collator + transformers.Trainer (fed Python lists; a datasets.Dataset, over a quarter of the steps: it
              is ~3x slower) and d3rlpy's Decision Transformer (when installed: the bench extra)
  latency     Policy.act p50/p99 at batch 1, window sliding, exact and rolling, on all threads (the default) and
              on one, vs the blog's get_action (one torch thread, its fastest here)
  throughput  Policy.act actions/s at batch 64 and 256, one thread and all threads, vs the blog's loop
  evaluation  dt_fast.evaluate env-steps/s with 64 envs vs the blog's rollout loop; bound: envpool random actions
  online      dt_fast's ODT fine-tuning (Finetuner) vs the official ODT loop from one briefly trained stochastic
              checkpoint, Hopper-v4, 64 envs: collection env-steps/s per engine mode (bound: envpool random
              actions) and one online iteration's wall time (collection + 30 updates of batch 64), one round
  micro       pytest-benchmark over benchmarks/micro (kernels reference path, sampler, engine step, dropout mask)
"x reference" is the speed-up (rate / reference rate, or reference latency / latency); "of bound" is the share of
the bound reached. It prints one table, writes benchmarks/results/suite.json (CPU model, date, git revision,
every row) and micro.json, and rewrites the README block between the bench markers with the same table.

    .venv/bin/python -m benchmarks.suite          # ~2 minutes on 2 quiet cores, longer when they are shared
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import bench_eval, bench_odt, bench_policy, bench_sampler, bench_train
from benchmarks.harness import (RESULTS_DIR, matmul_flops_per_s, memcpy_bytes_per_s, print_table, rate,
                                save_results)
from benchmarks.reference import DecisionTransformerGymDataCollator, ListDataset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COMMAND = "make bench"
COLUMNS = ["measure", "dt_fast", "reference", "x_reference", "bound", "of_bound", "reference_is", "bound_is"]
HEADERS = ["measure", "dt_fast", "reference", "x reference", "bound", "of bound", "reference is", "bound is"]
SECONDS = 2.0  # timing window of each rate measurement
TRAIN_STEPS, LATENCY_STEPS, EVAL_ENVS, EVAL_EPISODES, BLOG_EVAL_STEPS = 40, 1000, 64, 128, 400
ODT_PRETRAIN_STEPS = 200


def row(measure: str, ours: float, reference: float | None, bound: float | None, reference_is: str,
        bound_is: str = "", lower_is_better: bool = False) -> dict:
    """One table row; x_reference and of_bound are oriented so that higher is better."""
    if lower_is_better:
        x_ref = reference / ours if reference else None
        of_bound = bound / ours if bound else None
    else:
        x_ref = ours / reference if reference else None
        of_bound = ours / bound if bound else None
    return {"measure": measure, "dt_fast": ours, "reference": reference, "x_reference": x_ref, "bound": bound,
            "of_bound": of_bound, "reference_is": reference_is, "bound_is": bound_is}


def hardware() -> dict:
    """This machine's fp32 matmul rate (one thread and all threads) and copy bandwidth, measured now."""
    return {"matmul_flops_per_s_1_thread": matmul_flops_per_s(threads=1, min_time=SECONDS),
            "matmul_flops_per_s_all_threads": matmul_flops_per_s(threads=torch.get_num_threads(), min_time=SECONDS),
            "memcpy_bytes_per_s": memcpy_bytes_per_s(min_time=SECONDS), "torch_threads": torch.get_num_threads()}


def sampler_rows(hw: dict) -> list[dict]:
    """TrajectorySampler vs the blog's collator on a D4RL-sized dataset (1,000 x 1,000 steps), batch 64."""
    from dt_fast import TrajectorySampler

    t = bench_sampler.synthetic(np.full(1000, 1000), seed=1)
    features = [None] * bench_sampler.BATCH_SIZE  # the collator samples by itself; only len() matters
    collator = DecisionTransformerGymDataCollator(ListDataset(bench_sampler.as_rows(t)),
                                                  max_len=bench_sampler.CONTEXT_LEN)
    lists_rate = rate(lambda: collator(features), min_time=SECONDS)
    collator.dataset = bench_sampler.as_hf_dataset(t)  # the same statistics; only the data source differs
    dataset_rate = rate(lambda: collator(features), min_time=SECONDS)
    sampler = TrajectorySampler(t, context_len=bench_sampler.CONTEXT_LEN, batch_size=bench_sampler.BATCH_SIZE,
                                num_threads=1)
    nbytes = sum(v.numel() * v.element_size() for v in sampler.sample().values())
    ours, _ = bench_sampler.rate_and_cpu(sampler.sample, SECONDS, warmup=200)
    sampler.close()
    bound = hw["memcpy_bytes_per_s"] / 2 / nbytes  # copying the batch's bytes once (memcpy counts read + write)
    what = f"memcpy of the batch ({nbytes / 1e3:.0f} KB)"
    return [row("sampler batches/s, batch 64 x K 20", ours, lists_rate, bound, "blog collator, Python lists", what),
            row("sampler batches/s, batch 64 x K 20", ours, dataset_rate, bound, "blog collator, datasets.Dataset",
                what)]


def train_rows(hw: dict) -> list[dict]:
    """dt_fast's Trainer (fp32 on its C++ training ops, fp32 on torch's ops, bf16 autocast) vs the blog's
    transformers.Trainer set-up fed Python lists and a datasets.Dataset, and vs d3rlpy's Decision Transformer when
    it is installed, batch 64."""
    import h5py
    from datasets import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        rows_py = bench_train.make_dataset(path)
        refs = {"blog TrainableDT + transformers.Trainer, lists":
                bench_train.blog_trainer_rate(ListDataset(rows_py), TRAIN_STEPS)[0],
                "blog TrainableDT + transformers.Trainer, datasets.Dataset":
                bench_train.blog_trainer_rate(Dataset.from_list(rows_py), TRAIN_STEPS // 4)[0]}
        with h5py.File(path) as f:
            peer = bench_train.d3rlpy_rate(*[f[k][()] for k in ("observations", "actions", "rewards", "timeouts")],
                                           TRAIN_STEPS)
        if isinstance(peer, str):
            print(f"training: d3rlpy skipped: {peer}")
        else:
            refs["d3rlpy DecisionTransformer, same sizes"] = peer[0]
        ours = {"fp32, C++ training ops": bench_train.dt_fast_rate(path, TRAIN_STEPS)[0],
                "fp32, torch ops": bench_train.dt_fast_rate(path, TRAIN_STEPS, fused=False)[0],
                "bf16 autocast": bench_train.dt_fast_rate(path, TRAIN_STEPS, fused=False, precision="bf16")[0]}
    flops = bench_train.train_flops_per_step(action_only=True)  # what dt_fast's Trainer computes
    bound = hw["matmul_flops_per_s_all_threads"] / flops
    what = f"{flops / 1e9:.1f} GFLOP/step at the matmul rate, {hw['torch_threads']} threads"
    return [row(f"training steps/s, {name}", rate_, ref_rate, bound, ref, what)
            for name, rate_ in ours.items() for ref, ref_rate in refs.items()]


def policy_rows(hw: dict) -> list[dict]:
    """Policy.act (C++ engine) latency at batch 1 and actions/s at batch 64 and 256 vs the blog's get_action."""
    from dt_fast.policy import Policy

    S, A = bench_policy.ENVS["Hopper"]
    K = bench_policy.K
    rng = np.random.default_rng(0)
    hf, ours = bench_policy.paired_models(S, A)
    common = dict(target_return=3600.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=bench_policy.SCALE,
                  context_len=K)
    blog = bench_policy.blog_latencies(hf, LATENCY_STEPS, "t>=K", rng)
    blog_p50, blog_p99 = np.median(blog), np.percentile(blog, 99)
    ref = "blog get_action on transformers"
    rows = []
    all_threads = hw["torch_threads"]
    for mode in ("exact", "rolling"):
        flops, nbytes = bench_policy.step_cost(ours.config, mode, K + 30)
        for threads in (all_threads, 1):
            lat = bench_policy.policy_latencies(Policy(ours, mode=mode, backend="cpp", n_threads=threads, **common),
                                                LATENCY_STEPS, "t>=K", rng)
            rate = hw["matmul_flops_per_s_1_thread" if threads == 1 else "matmul_flops_per_s_all_threads"]
            bound = max(flops / rate, nbytes / hw["memcpy_bytes_per_s"])
            what = f"max({flops / 1e6:.1f} MFLOP at {threads}-thread matmul, {nbytes / 1e6:.2f} MB at memcpy)"
            name = f"batch 1, {mode}, {threads} thread{'s' if threads > 1 else ''}"
            rows.append(row(f"step latency p50 us, {name}", np.median(lat) * 1e6, blog_p50 * 1e6, bound * 1e6,
                            ref, what, lower_is_better=True))
            rows.append(row(f"step latency p99 us, {name}", np.percentile(lat, 99) * 1e6, blog_p99 * 1e6,
                            None, ref, lower_is_better=True))
    for mode in ("exact", "rolling"):
        flops, _ = bench_policy.step_cost(ours.config, mode, K + 30)
        for batch in (64, 256):
            for threads in (1, all_threads):
                policy = Policy(ours, mode=mode, backend="cpp", num_envs=batch, n_threads=threads, **common)
                steps = (4 if mode == "exact" else 40) * (256 // batch)
                rate = hw["matmul_flops_per_s_1_thread" if threads == 1 else "matmul_flops_per_s_all_threads"]
                rows.append(row(f"actions/s, batch {batch}, {mode}, {threads} thread{'s' if threads > 1 else ''}",
                                bench_policy.throughput(policy, steps, rng, SECONDS), 1.0 / blog_p50, rate / flops,
                                "blog get_action loop, 1 env", f"{flops / 1e6:.1f} MFLOP/action at {threads}-thread "
                                "matmul"))
    return rows


def eval_rows() -> list[dict]:
    """dt_fast.evaluate env-steps/s over 64 envpool Hopper-v4 envs vs the blog's rollout loop; envpool as bound."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        bench_eval.make_checkpoint(ckpt)
        ceiling = bench_eval.envpool_random(EVAL_ENVS, 500, seed=0)
        blog = bench_eval.blog_loop(ckpt, BLOG_EVAL_STEPS, seed=0)["rate"]
        return [row(f"evaluation env-steps/s, {EVAL_ENVS} envs, {mode}",
                    bench_eval.evaluator(ckpt, mode, EVAL_ENVS, EVAL_EPISODES, seed=0)["rate"], blog, ceiling,
                    "blog rollout loop, 1 gymnasium env", f"envpool stepping {EVAL_ENVS} envs with random actions")
                for mode in ("exact", "rolling")]


def odt_rows() -> list[dict]:
    """dt_fast's online fine-tuning vs the official ODT loop (bench_odt.online_rounds, one round after warm-up) from
    a stochastic checkpoint trained for ODT_PRETRAIN_STEPS steps: collection env-steps/s, online iteration seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = bench_odt.make_checkpoint(Path(tmp) / "odt", steps=ODT_PRETRAIN_STEPS)
        summary = bench_odt.online_summary(bench_odt.online_rounds(ckpt, rounds=1))
    ceiling = bench_eval.envpool_random(bench_odt.ENVS, 500, seed=0)
    ref = summary[bench_odt.REFERENCE]
    envs, updates, batch = bench_odt.ENVS, bench_odt.UPDATES, bench_odt.BATCH
    rows = [row(f"ODT collection env-steps/s, {envs} envs, {mode}", summary[f"dt_fast {mode}"]["env_steps_per_s"],
                ref["env_steps_per_s"], ceiling, "official ODT loop, gymnasium SyncVectorEnv",
                f"envpool stepping {envs} envs with random actions") for mode in bench_odt.MODES]
    rows += [row(f"ODT online iteration s, {envs} envs + {updates} updates x batch {batch}, {mode}",
                 summary[f"dt_fast {mode}"]["total_s"], ref["total_s"], None, "official ODT loop (LAMB, DataLoader)",
                 lower_is_better=True) for mode in bench_odt.MODES]
    return rows


def micro_rows(json_path: Path) -> list[dict]:
    """Run benchmarks/micro under pytest-benchmark into json_path; one row per case, median us vs its group's
    reference case."""
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "micro"), "-q", "-p", "no:cacheprovider",
           "--benchmark-max-time=1.0", f"--benchmark-json={json_path}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    benches = json.loads(json_path.read_text())["benchmarks"]
    reference = {b["group"]: b for b in benches if b["extra_info"].get("reference")}
    rows = []
    for b in benches:
        if b["extra_info"].get("reference"):
            continue
        ref = reference.get(b["group"])
        rows.append(row(f"micro {b['name'].removeprefix('test_')}, median us",
                        b["stats"]["median"] * 1e6, ref["stats"]["median"] * 1e6 if ref else None, None,
                        ref["name"].removeprefix("test_") if ref else "", lower_is_better=True))
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


def replace_block(text: str, block: str, source: str = "README.md") -> str:
    """`text` with everything between the START and END markers replaced by `block`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{source}: needs the markers {START} and then {END} around the performance table")
    return text[:start + len(START)] + "\n" + block + "\n" + text[end:]


def readme_block(rows: list[dict], doc: dict) -> str:
    """The README's performance section body: the command, date, CPU, revision, hardware rates and the table."""
    hw = doc["hardware"]
    return (f"`{COMMAND}`, {doc['date']}, {doc['cpu']}, git {doc['git']}, torch {doc['torch']}, total "
            f"{doc['total_seconds']:.0f} s.\nWritten by `benchmarks/suite.py`, do not edit by hand. Measured in the "
            f"same run: fp32 matmul {hw['matmul_flops_per_s_1_thread'] / 1e9:.1f} GFLOP/s on 1 thread, "
            f"{hw['matmul_flops_per_s_all_threads'] / 1e9:.1f} GFLOP/s on {hw['torch_threads']};\nmemcpy "
            f"{hw['memcpy_bytes_per_s'] / 1e9:.1f} GB/s (read + write). \"x reference\" is the speed-up over the "
            f"reference, \"of bound\" the share\nof the hardware (or envpool) bound reached; both higher is better."
            f"\n\n" + markdown_table(rows))


def run_suite() -> Path:
    """Run every benchmark, print the table, save results/suite.json, rewrite the README block; returns the json."""
    start = time.perf_counter()
    threads = torch.get_num_threads()
    print("measuring the machine (matmul, memcpy)", flush=True)
    hw = hardware()
    print("sampler", flush=True)
    rows = sampler_rows(hw)
    print("training", flush=True)
    rows += train_rows(hw)
    torch.set_num_threads(1)  # batch-1 forwards of this small model run fastest on one thread: kind to the blog
    try:
        print("policy latency and throughput", flush=True)
        rows += policy_rows(hw)
        print("evaluation", flush=True)
        rows += eval_rows()
        print("online fine-tuning (ODT)", flush=True)
        rows += odt_rows()
    finally:
        torch.set_num_threads(threads)
    print("micro-benchmarks (pytest-benchmark)", flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    rows += micro_rows(RESULTS_DIR / "micro.json")
    total = time.perf_counter() - start
    extra = {"hardware": hw, "total_seconds": total, "command": COMMAND}
    path = save_results("suite", rows, extra)
    doc = json.loads(path.read_text())
    print(f"\n{doc['cpu']}, {doc['date']}, git {doc['git']}, total {total:.0f} s; matmul "
          f"{hw['matmul_flops_per_s_1_thread'] / 1e9:.1f} GFLOP/s (1 thread), "
          f"{hw['matmul_flops_per_s_all_threads'] / 1e9:.1f} GFLOP/s ({hw['torch_threads']} threads), memcpy "
          f"{hw['memcpy_bytes_per_s'] / 1e9:.1f} GB/s\n")
    print_table([{k: ("" if v is None else v) for k, v in r.items()} for r in rows], COLUMNS)
    print(f"\nsaved {path} and {RESULTS_DIR / 'micro.json'}")
    README.write_text(replace_block(README.read_text(), readme_block(rows, doc), str(README)))
    print(f"rewrote the performance table in {README}")
    return path


def main() -> None:
    """`python -m benchmarks.suite`."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    run_suite()


if __name__ == "__main__":
    main()
