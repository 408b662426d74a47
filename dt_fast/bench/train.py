"""Training workloads: a HalfCheetah-sized dataset, the rates of the blog's Trainer set-up, of d3rlpy and of
dt_fast's Trainer, and the model FLOPs of a training step.

Used by the suite (dt_fast/bench/suite.py) and by benchmarks/bench_train.py and bench_gpu.py.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

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
        for key, value in dict(
            observations=obs, actions=act, rewards=rew, terminals=np.zeros_like(timeouts), timeouts=timeouts
        ).items():
            f.create_dataset(key, data=value)
    return [
        dict(
            observations=obs[i : i + EP_LEN].tolist(),
            actions=act[i : i + EP_LEN].tolist(),
            rewards=rew[i : i + EP_LEN].tolist(),
            dones=[False] * EP_LEN,
        )
        for i in range(0, EPISODES * EP_LEN, EP_LEN)
    ]


def blog_trainer_rate(dataset: object, steps: int) -> tuple[float, float, float]:
    """(optimizer steps/s, data-loading share, process CPU seconds per step) of the blog's Trainer set-up over
    `dataset`."""
    import transformers
    from transformers import DecisionTransformerConfig, Trainer, TrainerCallback, TrainingArguments

    from dt_fast.bench.reference import DecisionTransformerGymDataCollator, TrainableDT

    transformers.logging.set_verbosity_error()
    collator = DecisionTransformerGymDataCollator(dataset)
    loading = [0.0]
    stamps: list[tuple[float, float, float]] = []

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
            stamps.append((time.perf_counter(), loading[0], time.process_time()))

    config = DecisionTransformerConfig(state_dim=collator.state_dim, act_dim=collator.act_dim)
    model = TrainableDT(config)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            remove_unused_columns=False,
            per_device_train_batch_size=BATCH,
            learning_rate=1e-4,
            weight_decay=1e-4,
            warmup_steps=0.1,
            optim="adamw_torch",
            max_grad_norm=0.25,
            max_steps=steps + 5,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=TimedRows(), data_collator=timed_collator, callbacks=[Stamp()]
        )
        trainer.train()
    (t0, load0, cpu0), (t1, load1, cpu1) = stamps[4], stamps[-1]  # skip warm-up steps
    return (len(stamps) - 5) / (t1 - t0), (load1 - load0) / (t1 - t0), (cpu1 - cpu0) / (len(stamps) - 5)


@contextlib.contextmanager
def torch_path() -> Iterator[None]:
    """Inside: dt_fast's model and Trainer on torch's ops (DT_FAST_BACKEND=torch), not its C++ training ops."""
    before = os.environ.get("DT_FAST_BACKEND")
    os.environ["DT_FAST_BACKEND"] = "torch"
    try:
        yield
    finally:
        if before is None:
            del os.environ["DT_FAST_BACKEND"]
        else:
            os.environ["DT_FAST_BACKEND"] = before


def d3rlpy_rate(
    obs: np.ndarray, act: np.ndarray, rew: np.ndarray, timeouts: np.ndarray, steps: int
) -> tuple[float, float, float] | str:
    """(optimizer steps/s, data-loading share, process CPU seconds per step) of d3rlpy's DecisionTransformer at the
    same sizes (hidden 128 from a one-layer encoder, 3 layers, 1 head, batch 64, context 20, dropout 0.1), sampling
    its own trajectory batches; or the reason it could not run."""
    try:
        import d3rlpy
    except ImportError as err:
        return f"d3rlpy does not import ({err}); `make bench` installs it (pip install --no-deps, see the Makefile)"
    dataset = d3rlpy.dataset.MDPDataset(obs, act, rew, np.zeros_like(timeouts), timeouts=timeouts)
    algo = d3rlpy.algos.DecisionTransformerConfig(
        batch_size=BATCH,
        context_size=CONTEXT,
        encoder_factory=d3rlpy.models.VectorEncoderFactory([128]),
        num_heads=1,
        num_layers=3,
        max_timestep=EP_LEN,
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    load = 0.0
    for i in range(steps + 5):
        if i == 5:  # warm-up steps done
            load, start, cpu = 0.0, time.perf_counter(), time.process_time()
        t0 = time.perf_counter()
        batch = dataset.sample_trajectory_batch(BATCH, length=CONTEXT)
        load += time.perf_counter() - t0
        algo.update(batch)
    total = time.perf_counter() - start
    return steps / total, load / total, (time.process_time() - cpu) / steps


def dt_fast_rate(path: Path, steps: int, fused: bool = True, **options: object) -> tuple[float, float]:
    """(optimizer steps/s, data-loading share) of dt_fast's Trainer on the HDF5 file, on its C++ training ops
    (fused) or on torch's."""
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
            **options,
        )
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
        trainer.close()
    return steps / total, load / total


# torch.profiler event names of each op family. The linear layers' C++ ops carry their fused epilogues (bias, ReLU,
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
