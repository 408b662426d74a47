"""Step latency and throughput of dt_fast.Policy against the blog's get_action loop, with hardware bounds.

    .venv/bin/python -m benchmarks.bench_policy            # full run (about 3-5 minutes on 2 cores)
    .venv/bin/python -m benchmarks.bench_policy --quick    # fewer steps, for a smoke run
    .venv/bin/python -m benchmarks.bench_policy --odt      # only the online fine-tuning rows (about 1 minute)

All in one process, one torch thread: for Hopper (11/3) and HalfCheetah (17/6) sized models (hidden 128,
3 layers, 1 head, K = 20, the blog's configuration):
- p50 / p99 latency of one step at batch 1, while the window fills (t < K) and once it slides (t >= K), for the
  Policy on the C++ engine (exact, rolling; on every core, the default, which splits each matmul's columns, and
  on one thread), the Policy on the torch decoder (exact, rolling), the engine's step alone (one thread), and
  the blog's per-step `get_action` (dt_fast/bench/reference.py) on transformers'
  DecisionTransformerModel (timed around the get_action call only, without the loop's torch.cat bookkeeping,
  which favours the blog); at least 1,000 timed steps each after warm-up;
- the cost of the engine's lock (csrc/engine/engine.h, "Thread safety") at batch 1: p50 / p99 of Engine.step
  timed in C++ with the lock taken per step (as every call takes it) and held once around the run (no locking
  per step), alternated in rounds of 50 steps on one engine;
- actions per second at batch 64 and 256 (window sliding) for the engine, one thread and all threads (the fastest
  of repeated runs over 1.5 s);
- the bound of each case: the FLOPs of the engine's plan for the step over the matmul rate on the case's threads
  (the fastest 512^3 or 2048^3 fp32 GEMM call by torch or by the engine's own kernel, on 1 and on all threads,
  measured in the same run); "of bound" = bound / p50 (latency) or actions/s / bound (throughput), at most 1. No
  bytes term: the 2.4 MB of weights and the window's cache stay in cache between steps, so DRAM bandwidth does not
  limit a step.
- online fine-tuning (the Online Decision Transformer's exploration rollouts), on a stochastic Hopper-sized model:
  p50 / p99 of Policy.act (cpp) with sampled actions (set_sampling) beside the mean action, at batch 1 and 64,
  window sliding, in alternating rounds of steps on two Policies over the same weights; and the time to load new
  weights into an existing Policy (update_weights) and Engine (load_weights) beside building a new one, the
  median of repeated calls.
FLOPs count 2 per multiply-add of every matmul and attention product the mode must do. The MFLOP column is the
pruned plan of the inference issue (exact: the window recompute; rolling: the 3 new tokens); the engine does fewer:
where it caches ln_1 outputs instead of keys and values (every layer in rolling mode, the last layer in exact mode;
csrc/engine/engine.h, "Cached inputs") a query costs two C x C products instead of four. The bounds use the
engine's (smaller) count, so a faster plan cannot beat its bound. KB counts the weights plus the cache a step reads.
Every table is saved to benchmarks/results/bench_policy.json (date, CPU, threads); the online fine-tuning rows
are printed only.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.bench.harness import matmul_rates, save_results
from dt_fast.bench.policy import ENVS, SCALE, K, blog_latencies, paired_models, policy_latencies, step_cost, throughput
from dt_fast.checkpoint import hf_state_dict
from dt_fast.policy import Policy


def batch1_engine(model: DecisionTransformer, mode: str, threads: int):
    """A batch-1 dt_fast._C.Engine (the cpp backend's engine, without the Controller) over `model`'s weights."""
    from dt_fast import _C

    tensors = {k: v.detach().numpy() for k, v in hf_state_dict(model).items()}
    return _C.Engine(model.config.to_json_string(), tensors, 1, K, mode, threads)


def lock_latencies(policy: Policy, n: int, rng: np.random.Generator) -> dict[bool, np.ndarray]:
    """Seconds per engine step at batch 1, window sliding, keyed by lock_per_step: the lock taken by every step,
    or once around a round of steps; rounds of 50 steps of each alternate on the policy's engine."""
    engine = policy._backend.controller.engine
    states, rtg = rng.normal(size=(1, policy.state_dim)).astype(np.float32), np.full(1, 3.6, np.float32)
    ts = np.array([K + 30], np.int64)
    engine._step_latencies(states, rtg, ts, K + 30, True)  # warm-up, past the window's filling
    out: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for _ in range(n // 50):
        for lock_per_step in (True, False):
            out[lock_per_step].append(engine._step_latencies(states, rtg, ts, 50, lock_per_step))
    return {k: np.concatenate(v) for k, v in out.items()}


def stochastic_hopper() -> DecisionTransformer:
    """A seeded Hopper-sized stochastic model (hidden 128, 3 layers, ODT's log-std head)."""
    S, A = ENVS["Hopper"]
    torch.manual_seed(0)
    return DecisionTransformer(
        DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=128, n_layer=3, n_head=1, max_ep_len=1000),
        stochastic=True,
    ).eval()


def sampled_vs_mean(n: int, rng: np.random.Generator) -> None:
    """p50 / p99 of Policy.act with sampled and with mean actions, window sliding, rounds of each alternating."""
    model = stochastic_hopper()
    S = model.config.state_dim
    cores = os.cpu_count() or 1
    print(
        f"\n{'sampled vs mean action (Hopper, t>=K, Policy.act)':<52}{'B':>4}{'thr':>4}{'mean p50':>10}"
        f"{'p99':>8}{'sampled p50':>13}{'p99':>8}{'ratio p50':>10}"
    )
    for mode in ("exact", "rolling"):
        for B, threads in ((1, 1), (1, cores), (64, 1), (64, cores)):
            policies = {}
            for sampled in (False, True):
                policy = Policy(
                    model,
                    target_return=3600.0,
                    state_mean=np.zeros(S),
                    state_std=np.ones(S),
                    scale=SCALE,
                    context_len=K,
                    mode=mode,
                    backend="cpp",
                    num_envs=B,
                    n_threads=threads,
                )
                if sampled:
                    policy.set_sampling(1)
                obs = rng.normal(size=(B, S))
                policy.act(obs)
                for _ in range(K + 30):
                    policy.act(obs, np.ones(B))
                policies[sampled] = (policy, obs)
            per_round = 50 if B == 1 else 10
            steps = n if B == 1 else max(n // 5, 100)
            times: dict[bool, list[float]] = {False: [], True: []}
            while len(times[True]) < steps:
                for sampled, (policy, obs) in policies.items():
                    reward = np.ones(B)
                    for _ in range(per_round):
                        start = time.perf_counter()
                        policy.act(obs, reward)
                        times[sampled].append(time.perf_counter() - start)
            (m50, m99), (s50, s99) = (np.percentile(times[k], [50, 99]) * 1e6 for k in (False, True))
            print(
                f"{f'cpp {mode}':<52}{B:>4}{threads:>4}{m50:>10.1f}{m99:>8.1f}{s50:>13.1f}{s99:>8.1f}{s50 / m50:>10.3f}"
            )


def weight_refresh(repeats: int) -> None:
    """Seconds to load a training step's weights into an existing Policy / Engine against building a new one."""
    from dt_fast import _C

    model, other = stochastic_hopper(), stochastic_hopper()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    S = model.config.state_dim
    config = model.config.to_json_string()
    tensors = {k: v.detach().numpy() for k, v in hf_state_dict(other).items()}

    def median(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    print(f"\n{'weight refresh (Hopper, stochastic), median ms':<52}{'B':>4}{'update':>9}{'new':>9}{'new/update':>11}")
    for mode in ("exact", "rolling"):
        for B in (1, 64):
            args = dict(
                target_return=3600.0,
                state_mean=np.zeros(S),
                state_std=np.ones(S),
                scale=SCALE,
                context_len=K,
                mode=mode,
                backend="cpp",
                num_envs=B,
                n_threads=1,
            )
            policy = Policy(model, **args)
            update = median(lambda: policy.update_weights(other))
            build = median(lambda: Policy(other, **args))
            print(
                f"{f'Policy.update_weights vs Policy(...), {mode}':<52}{B:>4}{update * 1e3:>9.2f}"
                f"{build * 1e3:>9.2f}{build / update:>11.2f}"
            )
            engine = _C.Engine(config, tensors, B, K, mode, 1)
            load = median(lambda: engine.load_weights(config, tensors))
            new = median(lambda: _C.Engine(config, tensors, B, K, mode, 1))
            print(
                f"{f'Engine.load_weights vs Engine(...), {mode}':<52}{B:>4}{load * 1e3:>9.2f}{new * 1e3:>9.2f}"
                f"{new / load:>11.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 timed steps instead of 1,000 (smoke run)")
    parser.add_argument("--odt", action="store_true", help="only the online fine-tuning rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 200 if args.quick else 1000
    rng = np.random.default_rng(0)
    if args.odt:
        sampled_vs_mean(n, rng)
        weight_refresh(5 if args.quick else 20)
        return
    cores = os.cpu_count() or 1
    by_impl = {threads: matmul_rates(threads=threads) for threads in sorted({1, cores})}
    # N cores cannot beat N x one core, and the one-thread rate holds under load: the bounds use threads x it
    rates = {threads: threads * max(by_impl[1].values()) for threads in by_impl}
    for threads, r in by_impl.items():
        print(
            f"matmul rate (fastest 512^3 or 2048^3 fp32 call, {threads} thr): torch {r['torch'] / 1e9:.1f} "
            f"GFLOP/s, engine kernel {r['engine'] / 1e9:.1f}; the bounds use {rates[threads] / 1e9:.1f}"
        )
    print(f"K = {K}, {n} timed steps per case")
    print(
        f"\n{'case':<46}{'phase':>6}{'p50 us':>10}{'p99 us':>10}{'vs blog':>9}{'MFLOP':>8}{'KB':>7}"
        f"{'bound us':>10}{'of bound':>10}"
    )
    latency_rows, lock_rows, throughput_rows = [], [], []
    for env, (S, A) in ENVS.items():
        hf, ours = paired_models(S, A)
        common = dict(target_return=3600.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=SCALE, context_len=K)
        cases = [
            (f"cpp {mode} ({what}, {threads} thr)", "cpp", mode, threads, what == "Engine.step")
            for mode in ("exact", "rolling")
            for what, threads in (("Policy.act", cores), ("Policy.act", 1), ("Engine.step", 1))
        ]
        cases += [(f"torch {mode} (Policy.act, 1 thr)", "torch", mode, 1, False) for mode in ("exact", "rolling")]
        for phase in ("t<K", "t>=K"):
            blog_lat = blog_latencies(hf, n, phase, rng)
            blog = np.median(blog_lat)
            t_cost = K // 2 if phase == "t<K" else K + 30
            print(
                f"{env + ' blog get_action (1 thr)':<46}{phase:>6}{blog * 1e6:>10.0f}"
                f"{np.percentile(blog_lat, 99) * 1e6:>10.0f}{1.0:>9.2f}"
            )
            latency_rows.append(
                dict(
                    env=env,
                    case="blog get_action (1 thr)",
                    phase=phase,
                    p50_us=blog * 1e6,
                    p99_us=np.percentile(blog_lat, 99) * 1e6,
                    x_blog=1.0,
                )
            )
            for name, backend, mode, threads, engine_only in cases:
                policy = Policy(ours, mode=mode, backend=backend, n_threads=threads, **common)
                engine = batch1_engine(ours, mode, threads) if engine_only else None
                lat = policy_latencies(policy, n, phase, rng, engine)
                flops, nbytes = step_cost(ours.config, mode, t_cost)
                bound = step_cost(ours.config, mode, t_cost, absorbed=True)[0] / rates[threads]
                p50, p99 = np.median(lat), np.percentile(lat, 99)
                print(
                    f"{env + ' ' + name:<46}{phase:>6}{p50 * 1e6:>10.0f}{p99 * 1e6:>10.0f}"
                    f"{blog / p50:>9.2f}{flops / 1e6:>8.1f}{nbytes / 1024:>7.0f}{bound * 1e6:>10.0f}"
                    f"{bound / p50:>10.2f}"
                )
                latency_rows.append(
                    dict(
                        env=env,
                        case=name,
                        phase=phase,
                        p50_us=p50 * 1e6,
                        p99_us=p99 * 1e6,
                        x_blog=blog / p50,
                        plan_mflop=flops / 1e6,
                        kbytes=nbytes / 1024,
                        bound_us=bound * 1e6,
                        of_bound=bound / p50,
                    )
                )
    print(
        f"\n{'lock cost (Hopper, batch 1, t>=K, Engine.step)':<48}{'p50 us':>9}{'p99 us':>9}{'p50 no lock':>12}"
        f"{'p99 no lock':>12}{'p50 diff ns':>12}"
    )
    S, A = ENVS["Hopper"]
    _, ours = paired_models(S, A)
    common = dict(target_return=3600.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=SCALE, context_len=K)
    for mode in ("exact", "rolling"):
        for threads in sorted({1, cores}):
            lat = lock_latencies(Policy(ours, mode=mode, backend="cpp", n_threads=threads, **common), n, rng)
            locked, free = (np.percentile(lat[k], [50, 99]) * 1e6 for k in (True, False))
            print(
                f"{f'cpp {mode} ({threads} thr), lock per step vs none':<48}{locked[0]:>9.1f}{locked[1]:>9.1f}"
                f"{free[0]:>12.1f}{free[1]:>12.1f}{(locked[0] - free[0]) * 1e3:>12.0f}"
            )
            lock_rows.append(
                dict(
                    mode=mode,
                    threads=threads,
                    p50_us=locked[0],
                    p99_us=locked[1],
                    p50_no_lock_us=free[0],
                    p99_no_lock_us=free[1],
                )
            )
    print(
        f"\n{'throughput (Hopper, window sliding)':<40}{'B':>5}{'threads':>8}{'actions/s':>11}{'bound a/s':>11}"
        f"{'of bound':>9}{'GFLOP/s':>9}"
    )
    S, A = ENVS["Hopper"]
    ours = DecisionTransformer(
        DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=128, n_layer=3, n_head=1, max_ep_len=1000)
    ).eval()
    common = dict(target_return=3600.0, state_mean=np.zeros(S), state_std=np.ones(S), scale=SCALE, context_len=K)
    for mode in ("exact", "rolling"):
        done, _ = step_cost(ours.config, mode, K + 30, absorbed=True)
        for B in (64, 256):
            for threads in sorted(rates):
                policy = Policy(ours, mode=mode, backend="cpp", num_envs=B, n_threads=threads, **common)
                steps = (4 if mode == "exact" else 40) * (256 // B)
                aps = throughput(policy, steps, rng)
                bound = rates[threads] / done
                print(
                    f"{'cpp ' + mode:<40}{B:>5}{threads:>8}{aps:>11.0f}{bound:>11.0f}{aps / bound:>9.2f}"
                    f"{aps * done / 1e9:>9.1f}"
                )
                throughput_rows.append(
                    dict(
                        mode=mode,
                        batch=B,
                        threads=threads,
                        actions_per_s=aps,
                        bound_actions_per_s=bound,
                        of_bound=aps / bound,
                        gflop_per_s=aps * done / 1e9,
                    )
                )
    path = save_results(
        "bench_policy",
        latency_rows,
        {
            "lock": lock_rows,
            "throughput": throughput_rows,
            "matmul_flops_per_s": rates,
            "matmul_rates": by_impl,
            "context_len": K,
            "timed_steps": n,
            "cores": cores,
        },
        directory=RESULTS_DIR,
    )
    print(f"saved {path}")
    sampled_vs_mean(n, rng)
    weight_refresh(5 if args.quick else 20)


if __name__ == "__main__":
    main()
