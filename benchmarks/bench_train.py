"""Training speed: dt_fast's Trainer against the blog's TrainableDT + collator + transformers.Trainer.

Side by side in one process, same model (hidden 128, 3 layers, 1 head), batch 64, context 20, HalfCheetah sizes:
  blog/datasets  the blog as it runs: the collator over a `datasets.Dataset`
  blog/lists     the same set-up fed Python lists
  eager/fixed    plain eager torch (our model, AdamW) on one fixed batch: no data loading at all
  dt_fast        dt_fast.train.Trainer (C++ sampler), fp32; then bf16 autocast and torch.compile
Reports optimizer steps/s, ratios to the blog, the data-loading share of step time, and model FLOPs per step
against this machine's matmul rate measured in the same run.

    python -m benchmarks.bench_train [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from benchmarks.harness import matmul_flops_per_s, print_table, save_results
from benchmarks.reference import ListDataset

STATE_DIM, ACT_DIM, EPISODES, EP_LEN = 17, 6, 100, 1000
BATCH, CONTEXT = 64, 20


def make_dataset(path: Path, seed: int = 0) -> list[dict]:
    """A HalfCheetah-sized synthetic dataset: written as D4RL HDF5 to `path`, returned as trajectory dicts."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(EPISODES * EP_LEN, STATE_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(EPISODES * EP_LEN, ACT_DIM)).astype(np.float32)
    rew = rng.normal(size=EPISODES * EP_LEN).astype(np.float32)
    timeouts = np.zeros(EPISODES * EP_LEN, dtype=bool)
    timeouts[EP_LEN - 1 :: EP_LEN] = True
    with h5py.File(path, "w") as f:
        f.attrs["env_id"] = "HalfCheetah-v4"
        for key, value in dict(observations=obs, actions=act, rewards=rew, terminals=np.zeros_like(timeouts),
                               timeouts=timeouts).items():
            f.create_dataset(key, data=value)
    return [dict(observations=obs[i:i + EP_LEN].tolist(), actions=act[i:i + EP_LEN].tolist(),
                 rewards=rew[i:i + EP_LEN].tolist(), dones=[False] * EP_LEN)
            for i in range(0, EPISODES * EP_LEN, EP_LEN)]


def blog_trainer_rate(dataset: object, steps: int) -> tuple[float, float]:
    """(optimizer steps/s, data-loading share) of the blog's Trainer set-up over `dataset`."""
    import transformers
    from transformers import DecisionTransformerConfig, Trainer, TrainerCallback, TrainingArguments

    from benchmarks.reference import DecisionTransformerGymDataCollator, TrainableDT

    transformers.logging.set_verbosity_error()
    collator = DecisionTransformerGymDataCollator(dataset)
    loading = [0.0]
    stamps: list[tuple[float, float]] = []

    def timed_collator(features: list) -> dict:
        start = time.perf_counter()
        out = collator(features)
        loading[0] += time.perf_counter() - start
        return out

    class TimedRows:
        """The Trainer's DataLoader fetches `batch_size` rows per step (the collator then ignores them)."""

        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> object:
            start = time.perf_counter()
            row = dataset[i]
            loading[0] += time.perf_counter() - start
            return row

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            stamps.append((time.perf_counter(), loading[0]))

    config = DecisionTransformerConfig(state_dim=collator.state_dim, act_dim=collator.act_dim)
    model = TrainableDT(config)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, remove_unused_columns=False, per_device_train_batch_size=BATCH,
                                 learning_rate=1e-4, weight_decay=1e-4, warmup_steps=0.1, optim="adamw_torch",
                                 max_grad_norm=0.25, max_steps=steps + 5, report_to="none", save_strategy="no",
                                 logging_strategy="no", use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=TimedRows(), data_collator=timed_collator,
                          callbacks=[Stamp()])
        trainer.train()
    (t0, load0), (t1, load1) = stamps[4], stamps[-1]  # skip warm-up steps
    return (len(stamps) - 5) / (t1 - t0), (load1 - load0) / (t1 - t0)


def eager_fixed_batch_rate(steps: int) -> float:
    """Steps/s of plain eager torch on one fixed batch: our model, AdamW, masked MSE, clipping."""
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

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def dt_fast_rate(path: Path, steps: int, **options: object) -> tuple[float, float]:
    """(optimizer steps/s, data-loading share) of dt_fast's Trainer on the HDF5 file."""
    from dt_fast.train import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset=str(path), out=out, steps=steps + 5, batch_size=BATCH, context_len=CONTEXT,
                          save_every=10**9, log_every=10**9, **options)
        trainer = Trainer(cfg)
        trainer.model.train()
        batches = iter(trainer.sampler)
        for _ in range(5):  # warm-up (and compilation)
            trainer.train_step(next(batches))
        load = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(batches)
            load += time.perf_counter() - t0
            trainer.train_step(batch)
        total = time.perf_counter() - start
    return steps / total, load / total


def train_flops_per_step(action_only: bool = False) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward), matmuls and attention.

    action_only: as dt_fast's Trainer computes it (DecisionTransformer.forward(action_only=True)): the last block
    runs queries, projections and MLP on the s_t tokens only, and only the action head runs.
    """
    H, L, T = 128, 3, 3 * CONTEXT
    tokens = BATCH * T
    last = 1 / 3 if action_only else 1.0  # share of the last block's rows that are queries
    # c_attn: queries H^2, keys and values 2H^2; then c_proj (H^2) + MLP (8H^2) per query row
    linear = 2 * tokens * ((L - 1) * 12 + 2 + last * 10) * H * H
    heads = ACT_DIM if action_only else STATE_DIM + ACT_DIM + 1
    embed_heads = 2 * BATCH * CONTEXT * H * (STATE_DIM + ACT_DIM + 1 + heads)  # embeddings in, predictions out
    attention = 2 * 2 * BATCH * (L - 1 + last) * T * T * H // 2  # QK^T and AV, causal half
    return 3.0 * (linear + embed_heads + attention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per configuration")
    parser.add_argument("--quick", action="store_true", help="skip the compile and datasets.Dataset runs")
    args = parser.parse_args()
    steps = args.steps

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "halfcheetah_synthetic.hdf5"
        rows_py = make_dataset(path)
        flops, flops_ours = train_flops_per_step(), train_flops_per_step(action_only=True)
        peak = matmul_flops_per_s(threads=torch.get_num_threads())
        rows = []
        blog_lists, blog_lists_load = blog_trainer_rate(ListDataset(rows_py), steps)
        rows.append(dict(setup="blog/lists", steps_per_s=blog_lists, data_share=blog_lists_load))
        if not args.quick:
            from datasets import Dataset

            hf = Dataset.from_list(rows_py)
            blog_ds, blog_ds_load = blog_trainer_rate(hf, max(steps // 4, 8))
            rows.append(dict(setup="blog/datasets", steps_per_s=blog_ds, data_share=blog_ds_load))
        rows.append(dict(setup="eager/fixed-batch", steps_per_s=eager_fixed_batch_rate(steps), data_share=0.0))
        for name, options in [("dt_fast fp32", {}), ("dt_fast bf16", {"precision": "bf16"}),
                              *([] if args.quick else [("dt_fast compile", {"compile": True})])]:
            r, load = dt_fast_rate(path, steps, **options)
            rows.append(dict(setup=name, steps_per_s=r, data_share=load))
    by = {r["setup"]: r["steps_per_s"] for r in rows}
    for r in rows:
        r["x_blog_lists"] = r["steps_per_s"] / by["blog/lists"]
        if "blog/datasets" in by:
            r["x_blog_datasets"] = r["steps_per_s"] / by["blog/datasets"]
        r["utilisation"] = r["steps_per_s"] * (flops_ours if r["setup"].startswith("dt_fast") else flops) / peak
    print(f"model FLOPs per step {flops / 1e9:.2f} GFLOP ({flops_ours / 1e9:.2f} as dt_fast computes only the "
          f"action loss's inputs); matmul rate {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads, "
          f"2048^3 fp32) -> bound {peak / flops:.1f} steps/s ({peak / flops_ours:.1f})")
    print_table(rows, ["setup", "steps_per_s", "x_blog_datasets", "x_blog_lists", "data_share", "utilisation"])
    print("results:", save_results("train", rows, {"flops_per_step": flops, "flops_per_step_dt_fast": flops_ours,
                                                   "matmul_flops_per_s": peak}))


if __name__ == "__main__":
    main()
