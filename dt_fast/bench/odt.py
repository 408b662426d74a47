"""Online fine-tuning, side by side: dt_fast's Finetuner against the official ODT loop (reference_odt.py).

Both sides start from one dt_fast stochastic checkpoint on Hopper-v4 with the same settings: ENVS envs, one whole
episode each, exploration return TARGET_EXPLORE (ODT's online_rtg for Hopper), the checkpoint's context, UPDATES
updates of batch BATCH per iteration (ODT runs 300 of batch 256: ~15 minutes per reference iteration on 2 shared
cores, so both sides run the scaled settings). The suite's `odt` rows and benchmarks/bench_odt.py run these.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH, CONTEXT, HIDDEN, LAYERS = 64, 20, 128, 3
ENVS, UPDATES, TARGET_EXPLORE, PRETRAIN_STEPS = 64, 30, 7200.0, 500
MODES = ("exact", "rolling")
REFERENCE = "reference"


def dataset_trajectories(path: str) -> list[dict]:
    """A dataset file (any format of dt_fast.load_dataset) as the trajectory dicts of ODT's pickles."""
    from dt_fast import load_dataset

    data = load_dataset(path)
    out = []
    for i in range(data.num_episodes):
        episode = data.episode(i)
        out.append(
            {
                key: np.asarray(episode[key], dtype=np.float64 if key != "terminals" else np.float32)
                for key in ("observations", "actions", "rewards", "terminals")
            }
        )
    return out


def make_checkpoint(path: Path, steps: int = PRETRAIN_STEPS, seed: int = 0) -> Path:
    """`dt-fast train --policy stochastic --steps STEPS` on the embedded Hopper dataset into `path`; returns it."""
    from dt_fast.data import DEFAULT_DATASET
    from dt_fast.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(dataset=DEFAULT_DATASET, out=str(path), steps=steps, policy="stochastic", seed=seed))
    try:
        trainer.run()
    finally:
        trainer.close()
    return path


class ReferenceSide:
    """The official ODT loop (reference_odt.Experiment) from a dt_fast stochastic checkpoint: the checkpoint's env,
    K and dataset (its state statistics and the replay buffer's offline trajectories)."""

    name = REFERENCE

    def __init__(
        self,
        checkpoint: Path,
        envs: int,
        batch: int,
        eval_context_length: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        import transformers

        from dt_fast.bench.reference_odt import Experiment
        from dt_fast.checkpoint import read_metadata

        transformers.logging.set_verbosity_error()
        meta = read_metadata(checkpoint)
        self.experiment = Experiment(
            dataset_trajectories(meta.dataset["path"]),
            meta.env_id or "Hopper-v4",
            num_envs=envs,
            K=meta.context_len,
            eval_context_length=eval_context_length or meta.context_len,
            batch_size=batch,
            checkpoint=checkpoint,
            num_workers=num_workers,
            seed=seed,
        )

    def iteration(self, updates: int) -> dict[str, float]:
        """One online iteration (reference_odt.time_online_iteration)."""
        from dt_fast.bench.reference_odt import time_online_iteration

        return time_online_iteration(self.experiment, updates, TARGET_EXPLORE)

    def close(self) -> None:
        self.experiment.close()


class DtFastSide:
    """dt_fast's online fine-tuning (dt_fast.finetune.Finetuner) from a checkpoint, collecting in one engine mode;
    nothing is written to `out`."""

    def __init__(self, checkpoint: Path, out: Path, mode: str, envs: int, batch: int, seed: int = 0) -> None:
        from dt_fast.finetune import FinetuneConfig, Finetuner

        self.name = f"dt_fast {mode}"
        self.finetuner = Finetuner(
            FinetuneConfig(
                checkpoint=str(checkpoint),
                out=str(out),
                envs_per_iteration=envs,
                batch_size=batch,
                mode=mode,
                online_target=TARGET_EXPLORE,
                seed=seed,
            )
        )

    def iteration(self, updates: int) -> dict[str, float]:
        """One online iteration as Finetuner.iterate runs it (collect, add the episodes to the replay buffer,
        update, hand the weights to the engine) but with exactly `updates` updates; the keys of
        reference_odt.time_online_iteration."""
        ft = self.finetuner
        start = time.perf_counter()
        episodes = ft.collect()
        collected = time.perf_counter()
        ft.sampler.add_episodes(episodes.observations, episodes.actions, episodes.rewards, episodes.lengths)
        ft.iteration += 1  # the next collection's env and noise seeds
        ft.update(updates)
        ft.explore.update_weights(ft.model)
        end = time.perf_counter()
        return {
            "collect_s": collected - start,
            "train_s": end - collected,
            "total_s": end - start,
            "transitions": float(episodes.transitions),
            "env_steps": float(episodes.env_steps),
        }

    def close(self) -> None:
        self.finetuner.close()


def online_rounds(
    checkpoint: Path,
    envs: int = ENVS,
    updates: int = UPDATES,
    batch: int = BATCH,
    rounds: int = 3,
    warmup_updates: int = 2,
) -> list[dict]:
    """One online iteration of the reference and of dt_fast in each engine mode per round, all from `checkpoint` in
    one process, after a warm-up iteration of each (`warmup_updates` updates); the order of the sides is reversed
    every other round. One row per side and round."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sides: list = []
        try:
            sides.append(ReferenceSide(checkpoint, envs, batch))
            sides += [DtFastSide(checkpoint, Path(tmp) / mode, mode, envs, batch) for mode in MODES]
            for side in sides:
                side.iteration(warmup_updates)
            for r in range(rounds):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    t = side.iteration(updates)
                    rows.append(
                        {
                            "round": r,
                            "side": side.name,
                            **t,
                            "env_steps_per_s": t["env_steps"] / t["collect_s"],
                            "transitions_per_s": t["transitions"] / t["collect_s"],
                            "updates_per_s": updates / t["train_s"],
                        }
                    )
                    print(rows[-1], flush=True)
        finally:
            for side in sides:
                side.close()
    return rows


def online_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per dt_fast mode, the medians over rounds of: the collection's env steps/s (and its ratio to the
    reference's in the same round), the iteration's wall time (and the reference's over it), the update phase's
    time (and the reference's over it); and the reference's own medians."""
    by_round: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["side"]] = r
    out = {}
    for side in (REFERENCE, *(f"dt_fast {mode}" for mode in MODES)):
        mine = [sides[side] for sides in by_round.values()]
        refs = [sides[REFERENCE] for sides in by_round.values()]
        out[side] = {
            "env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in mine),
            "transitions_per_s": statistics.median(r["transitions_per_s"] for r in mine),
            "collect_s": statistics.median(r["collect_s"] for r in mine),
            "train_s": statistics.median(r["train_s"] for r in mine),
            "total_s": statistics.median(r["total_s"] for r in mine),
            "collection_x_reference": statistics.median(
                r["env_steps_per_s"] / ref["env_steps_per_s"] for r, ref in zip(mine, refs)
            ),
            "iteration_x_reference": statistics.median(ref["total_s"] / r["total_s"] for r, ref in zip(mine, refs)),
            "updates_x_reference": statistics.median(ref["train_s"] / r["train_s"] for r, ref in zip(mine, refs)),
        }
    return out
