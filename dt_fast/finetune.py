"""`dt-fast finetune`: online fine-tuning of a checkpoint, the Online Decision Transformer (Zheng, Zhang and Grover,
ICML 2022; facebookresearch/online-dt main.py `online_tuning`).

One iteration of the loop:
1. collect: `envs_per_iteration` envpool environments, recreated and seeded from (seed, iteration), each run for
   one whole episode by the C++ engine (`Policy`) sampling tanh(loc + std z) with counter-based noise seeded from
   (seed, iteration), conditioned on the exploration return `online_target` (ODT's online_rtg: twice the
   evaluation target, 7200 for Hopper against 3600);
2. the episodes go into the replay buffer, the C++ TrajectorySampler with a capacity in trajectories: oldest
   evicted first, returns-to-go relabelled from the achieved rewards, states normalised with the offline data's
   mean and std (dt_fast/data/sampler.py);
3. update: `updates_per_step` optimizer steps per collected transition (the total after T transitions is
   floor(T * updates_per_step)), each the Trainer's step (dt_fast/train.py `Trainer.stepping`) with ODT's
   objective and entropy temperature (dt_fast/odt.py);
4. the engine takes the new weights (`Policy.update_weights`); every `eval_every` iterations the mean action is
   evaluated (`dt_fast.evaluation.evaluate`, exact mode, the same env seeds each time).

Differences from ODT, and why:
- AdamW (the Trainer's, fused with the clip on the CPU) instead of LAMB: LAMB's per-layer trust ratio matters
  for ODT's batch 256 at scale; at the batch a 2-core machine affords (64) AdamW is what the offline stage used,
  and one optimizer keeps one training step to maintain. Its weight decay (5e-4) and lr (1e-4) are ODT's.
- A short warm-up (`warmup_steps`, 200) instead of ODT's 10,000: ODT's warm-up runs during its offline
  pretraining with the same optimizer; here a fresh optimizer starts on already trained weights.
- Collection uses the model's own context length (the checkpoint's, 20 for ODT's K) rather than ODT's
  eval_context_length 5: the engine runs one window length, the one the model was trained with.
- Collection runs the engine's rolling mode by default (O(1) per step, approximate after K steps; `mode`);
  evaluation always runs exact mode, the policy as trained.
Starting points: a stochastic dt_fast checkpoint as is; a deterministic one gains a log-std head, freshly
initialised from `seed`; a plain transformers checkpoint (no dt_fast.json) needs `dataset` for its statistics.
The run directory is that of `dt-fast train` (config.json, model.safetensors, dt_fast.json with action_head
stochastic, train_state.pt, train_config.json, log.csv, tensorboard/), each file written atomically; `--resume`
continues from the last checkpoint and ends at the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dt_fast import checkpoint
from dt_fast.config import describe_setting, field_docs, parse_setting, setting
from dt_fast.data import Trajectories, TrajectorySampler, load_dataset
from dt_fast.decode import MODES
from dt_fast.envs import EnvSpec, check_env_matches, make_vector_env, reference_scores, run_episodes
from dt_fast.model import DecisionTransformer
from dt_fast.policy import Policy
from dt_fast.train import RunLog, TrainConfig, Trainer, load_optimizer_state

STAGE = "finetune"  # train_state.pt's "stage": a fine-tuning run resumes only as one


@dataclass
class FinetuneConfig:
    """Everything an online fine-tuning run needs; defaults are ODT's where a 2-core machine affords them (see the
    module docstring). Every field declares its valid values once (`setting`), checked by `parse_setting`."""

    checkpoint: str = setting("", pattern=r"(?s).+", means="a non-empty path")
    """Checkpoint directory to start from (`--from`): dt_fast (stochastic or deterministic) or plain transformers."""
    out: str = setting("runs/odt", pattern=r"(?s).+", means="a non-empty path")
    """Run directory: checkpoint, train_state.pt, train_config.json, log.csv, tensorboard/."""
    online_steps: int = setting(20_000, ge=1, units="transitions")
    """Stop after the iteration that brings the transitions collected (the replay buffer's, ODT's count) here."""
    dataset: str = ""
    """Offline data of the replay buffer and the state statistics; empty = the one the checkpoint names."""
    env: str = ""
    """Environment id; empty = the checkpoint's (else the dataset's)."""
    seed: int = setting(0, ge=0, le=2**31 - 1)
    """Seed of the log-std head's initialisation, the sampler, dropout, the env seeds and the exploration noise."""
    envs_per_iteration: int = setting(16, ge=1, le=1024)
    """Environments per collection, one episode each (ODT's num_online_rollouts)."""
    updates_per_step: float = setting(0.1, gt=0)
    """Optimizer steps per collected transition (ODT: 300 per ~1000-step episode at batch 256)."""
    batch_size: int = setting(64, ge=1)
    """Windows per optimizer step (ODT: 256)."""
    capacity: int = setting(1000, ge=1, units="trajectories")
    """Replay buffer size in trajectories (ODT's replay_size)."""
    online_target: float = 0.0
    """Exploration return-to-go (env units); 0 = twice the evaluation target (ODT's online_rtg)."""
    eval_target: float = 0.0
    """Evaluation return-to-go (env units); 0 = the checkpoint's target_return."""
    mode: str = setting("rolling", choices=MODES)
    """Engine mode of the collection (evaluation is always exact)."""
    lr: float = setting(1e-4, gt=0)
    """AdamW learning rate after warm-up (ODT's)."""
    weight_decay: float = setting(5e-4, ge=0)
    """AdamW weight decay (ODT's)."""
    warmup_steps: int = setting(200, ge=1, units="optimizer steps")
    """Linear learning-rate warm-up of the fresh optimizer."""
    grad_clip: float = setting(0.25, gt=0)
    """Global gradient-norm clip (ODT's)."""
    eval_every: int = setting(5, ge=0, units="iterations")
    """Evaluate the mean action every this many iterations, before the first and at the end (0 = before and end)."""
    eval_episodes: int = setting(50, ge=1)
    """Episodes per evaluation (64 environments at most)."""
    save_every: int = setting(5, ge=1, units="iterations")
    """Write a checkpoint every this many iterations (and at the end)."""
    context_len: int = setting(20, ge=1, units="env steps")
    """K for a plain transformers checkpoint (a dt_fast checkpoint's dt_fast.json gives its own)."""
    device: str = setting("cpu", pattern=r"cpu|cuda(:[0-9]+)?", means="cpu, cuda or cuda:N")
    """Torch device of the updates (the engine collects on the CPU)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            name = "--from" if f.name == "checkpoint" else f"FinetuneConfig.{f.name}"
            setattr(self, f.name, parse_setting(FinetuneConfig, f.name, getattr(self, f.name), name))


@dataclass
class Episodes:
    """Whole episodes one after another, as TrajectorySampler.add_episodes takes them."""

    observations: np.ndarray  # (N, state_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    lengths: np.ndarray  # (E,) int64, summing to N
    returns: np.ndarray  # (E,) float64, undiscounted
    env_steps: int  # env steps taken, the steps of envs waiting for the last episode to end included

    @property
    def transitions(self) -> int:
        """Steps kept (N)."""
        return int(self.lengths.sum())


def collect_episodes(
    policy: Policy, env: Any, obs: np.ndarray, num_episodes: int, progress: Callable[[int], None] | None = None
) -> Episodes:
    """Run `num_episodes` whole episodes with `policy` over the vector env `env` (continuous batching,
    dt_fast.envs.run_episodes) and return them, each in step order, episodes in id order.

    `obs` (B, state_dim) are the env's first observations (make_vector_env); the Policy has B rows and acts as set
    (set_sampling for exploration, its target return); its rows are reset as their episodes start.
    """
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    handed = iter(range(num_episodes))

    def next_episode(_env: int) -> int:
        return next(handed, -1)

    def act(obs: np.ndarray, reward: np.ndarray | None, _episode: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        if reward is None:
            policy.reset()
        elif fresh.any():
            policy.reset(np.flatnonzero(fresh))
        return policy.act(obs, reward)  # (B, act_dim)

    def record(
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        _next_obs: np.ndarray,
        _terminated: np.ndarray,
        _truncated: np.ndarray,
        episode: np.ndarray,
    ) -> None:
        steps.append((obs.copy(), np.array(action, np.float32), np.array(reward, np.float32), episode))

    returns, lengths = run_episodes(env, obs, num_episodes, next_episode, act, record, progress)
    episode = np.concatenate([s[3] for s in steps])  # (calls * B,) -1 = not counted
    order = np.argsort(episode, kind="stable")[np.sum(episode < 0) :]  # by episode, each in step order
    return Episodes(
        observations=np.concatenate([s[0] for s in steps])[order].astype(np.float32),
        actions=np.concatenate([s[1] for s in steps])[order],
        rewards=np.concatenate([s[2] for s in steps])[order],
        lengths=lengths,
        returns=returns,
        env_steps=len(steps) * len(obs),
    )


def derived_seed(seed: int, *stream: Any, bits: int = 64) -> int:
    """A seed of `bits` bits for one stream of the run (the iteration's envs, its exploration noise, evaluation),
    a hash of (seed, stream): the same on every run and after a resume."""
    digest = hashlib.blake2b(repr((seed, *stream)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - bits)


class Finetuner:
    """Fine-tunes a checkpoint online (the Online Decision Transformer); `run()` loops until `online_steps`
    transitions are collected, logging, evaluating and checkpointing as it goes."""

    def __init__(self, config: FinetuneConfig, resume: str | Path | None = None, overwrite: bool = False) -> None:
        """Check everything (starting checkpoint, run directory, data, env) and build the model, replay buffer,
        optimizer and policies; `resume` is the run directory to continue, `overwrite` allows an --out that holds
        another run (its run files are deleted when `run` starts)."""
        self.config = cfg = config
        self.out, self.overwrite = Path(cfg.out), overwrite
        checkpoint.check_run_dir(self.out, overwrite=overwrite, resume=resume)
        if resume is None and self.out.resolve() == Path(cfg.checkpoint).resolve():
            raise ValueError(
                f"--out {self.out} is the checkpoint to start from (--from): fine-tune into another directory"
            )
        start = Path(resume) if resume is not None else Path(cfg.checkpoint)
        meta = read_start(start, "--resume" if resume is not None else "--from")
        self.data, self.dataset_path = load_offline_data(cfg.dataset, meta, start)
        model_config = checkpoint.read_config(start)
        if (self.data.state_dim, self.data.act_dim) != (model_config.state_dim, model_config.act_dim):
            raise ValueError(
                f"{self.dataset_path} has state_dim={self.data.state_dim}, act_dim={self.data.act_dim} "
                f"but the checkpoint {start} has state_dim={model_config.state_dim}, "
                f"act_dim={model_config.act_dim}"
            )
        self.env_id = cfg.env or (meta.env_id if meta is not None else None) or self.data.env_id or ""
        if not self.env_id:
            raise ValueError(
                f"neither the checkpoint {start} nor the dataset {self.dataset_path} names an env: pass --env"
            )
        self.spec: EnvSpec = check_env_matches(
            self.env_id, model_config.state_dim, model_config.act_dim, source=f"checkpoint {start}"
        )
        if meta is not None and not (
            np.allclose(meta.state_mean, self.data.state_mean, rtol=1e-5, atol=1e-6)
            and np.allclose(meta.state_std, self.data.state_std, rtol=1e-5, atol=1e-6)
        ):
            warnings.warn(
                f"{self.dataset_path}: its state mean and std differ from those in {start}'s "
                f"{checkpoint.METADATA_NAME} (trained on other data?); fine-tuning normalises with the "
                f"dataset's, as the replay buffer does",
                stacklevel=2,
            )
        context_len = meta.context_len if meta is not None else cfg.context_len
        scale = meta.scale if meta is not None else 1000.0
        self.eval_target = cfg.eval_target or (
            meta.target_return if meta is not None else float(self.data.episode_returns.max())
        )
        self.online_target = cfg.online_target or 2.0 * self.eval_target
        self.reference = reference_scores(self.env_id)

        self.model = stochastic_model(start, meta, cfg.seed)
        self.sampler = TrajectorySampler(
            self.data,
            context_len=context_len,
            batch_size=cfg.batch_size,
            scale=scale,
            max_ep_len=model_config.max_ep_len,
            seed=cfg.seed,
            capacity=cfg.capacity,
        )
        step_config = TrainConfig(
            out=cfg.out,
            batch_size=cfg.batch_size,
            context_len=context_len,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps,
            grad_clip=cfg.grad_clip,
            policy="stochastic",
            seed=cfg.seed,
            device=cfg.device,
        )
        self.trainer = Trainer.stepping(step_config, self.model, self.sampler)
        torch.manual_seed(cfg.seed)  # dropout and the entropy's noise
        self.iteration, self.transitions, self.env_steps = 0, 0, 0
        self.evaluations: list[tuple[int, Any]] = []  # (transitions, EvalResult) of this process's evaluations
        self.resumed = resume is not None
        if self.resumed:
            self.load_state(Path(resume))
        statistics = dict(
            state_mean=self.sampler.state_mean, state_std=self.sampler.state_std, scale=scale, context_len=context_len
        )
        self.explore = Policy(
            self.model,
            target_return=self.online_target,
            mode=cfg.mode,
            backend="cpp",
            num_envs=cfg.envs_per_iteration,
            **statistics,
        )
        self.evaluator = Policy(
            self.model,
            target_return=self.eval_target,
            mode="exact",
            backend="cpp",
            num_envs=min(64, cfg.eval_episodes),
            **statistics,
        )
        self.model.train()

    def run(self) -> Path:
        """Fine-tune until `online_steps` transitions are collected; returns the run directory."""
        from tqdm import tqdm

        cfg = self.config
        if self.overwrite:
            removed = checkpoint.clear_run_dir(self.out)
            if removed:
                print(f"--overwrite: deleted {', '.join(removed)} from {self.out}", flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_train_config(self.out, {"stage": STAGE, **dataclasses.asdict(cfg)})
        log = RunLog(self.out, enabled=True, start_step=self.transitions if self.resumed else 0)
        bar = tqdm(
            total=cfg.online_steps,
            initial=min(self.transitions, cfg.online_steps),
            unit="step",
            dynamic_ncols=True,
            desc="finetune",
        )
        try:
            if self.iteration == 0:
                log.write({"step": 0, **self.evaluate()})
            while self.transitions < cfg.online_steps:
                before = self.transitions
                row = self.iterate()
                bar.update(min(self.transitions, cfg.online_steps) - min(before, cfg.online_steps))
                done = self.transitions >= cfg.online_steps
                if done or (cfg.eval_every and self.iteration % cfg.eval_every == 0):
                    row.update(self.evaluate())
                    bar.set_postfix(score=f"{row.get('eval_normalized_score', row['eval_return_mean']):.1f}")
                log.write(row)
                if done or self.iteration % cfg.save_every == 0:
                    self.save()
        finally:
            bar.close()
            log.close()
        return self.out

    def iterate(self) -> dict[str, float]:
        """One iteration: collect, add to the buffer, update, hand the weights to the engine; its log row."""
        cfg = self.config
        start = time.perf_counter()
        episodes = self.collect()
        collect_s = time.perf_counter() - start
        self.sampler.add_episodes(episodes.observations, episodes.actions, episodes.rewards, episodes.lengths)
        self.transitions += episodes.transitions
        self.env_steps += episodes.env_steps
        self.iteration += 1
        updates = math.floor(self.transitions * cfg.updates_per_step) - self.trainer.step
        start = time.perf_counter()
        losses = self.update(updates)
        update_s = time.perf_counter() - start
        self.explore.update_weights(self.model)
        self.model.train()
        return {
            "step": self.transitions,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "rollout_return_mean": float(episodes.returns.mean()),
            "rollout_return_max": float(episodes.returns.max()),
            "rollout_length_mean": float(episodes.lengths.mean()),
            "updates": self.trainer.step,
            "collect_env_steps_per_s": episodes.env_steps / collect_s,
            "collect_s": collect_s,
            "update_s": update_s,
            **losses,
        }

    def collect(self) -> Episodes:
        """One episode in each of `envs_per_iteration` envs, seeded from (seed, iteration), sampled actions."""
        cfg = self.config
        env, obs = make_vector_env(
            self.spec, cfg.envs_per_iteration, derived_seed(cfg.seed, "envs", self.iteration, bits=30)
        )
        try:
            self.explore.set_sampling(derived_seed(cfg.seed, "noise", self.iteration))
            return collect_episodes(self.explore, env, obs, cfg.envs_per_iteration)
        finally:
            env.close()

    def update(self, updates: int) -> dict[str, float]:
        """`updates` Trainer steps on the replay buffer; the mean loss, nll and entropy, the last temperature."""
        if updates <= 0:
            return {}
        self.model.train()
        loss = nll = entropy = 0.0
        for _ in range(updates):
            loss += self.trainer.train_step(self.sampler.sample())
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at update {self.trainer.step}; lower --lr")
            nll += self.trainer.nll.item()
            entropy += self.trainer.entropy.item()
        return {
            "loss": loss / updates,
            "nll": nll / updates,
            "entropy": entropy / updates,
            "temperature": self.trainer.temperature.value().item(),
            "lr": float(self.trainer.scheduler.get_last_lr()[0]),
        }

    def evaluate(self) -> dict[str, float]:
        """The mean action over `eval_episodes` episodes, exact mode, the same env seeds every time."""
        from dt_fast.evaluation import evaluate

        self.evaluator.update_weights(self.model)
        self.model.train()
        result = evaluate(
            self.evaluator,
            env=self.env_id,
            episodes=self.config.eval_episodes,
            seed=derived_seed(self.config.seed, "eval", bits=30),
            progress=False,
        )
        self.evaluations.append((self.transitions, result))
        row = {"eval_return_mean": result.mean, "eval_return_ci95": result.ci95}
        if self.reference is not None:
            row["eval_normalized_score"] = result.normalized_score
            row["eval_normalized_ci95"] = 100.0 * result.ci95 / (self.reference[1] - self.reference[0])
        return row

    def save(self) -> None:
        """The checkpoint directory, then train_state.pt (each file atomically)."""
        cfg = self.config
        self.model.save_pretrained(self.out)
        returns = self.data.episode_returns
        checkpoint.write_metadata(
            self.out,
            checkpoint.Metadata(
                state_mean=tuple(self.sampler.state_mean),
                state_std=tuple(self.sampler.state_std),
                scale=self.sampler.scale,
                context_len=self.sampler.context_len,
                target_return=self.eval_target,
                env_id=self.env_id,
                action_head="stochastic",
                dataset={
                    "path": self.dataset_path,
                    "summary": repr(self.data),
                    "best_return": float(returns.max()),
                    "mean_return": float(returns.mean()),
                    "online_transitions": self.transitions,
                },
            ),
        )
        checkpoint.write_train_state(
            self.out / checkpoint.TRAIN_STATE_NAME,
            {
                "stage": STAGE,
                "iteration": self.iteration,
                "transitions": self.transitions,
                "env_steps": self.env_steps,
                "updates": self.trainer.step,
                "model": self.model.state_dict(),
                "optimizer": self.trainer.optimizer.state_dict(),
                "scheduler": self.trainer.scheduler.state_dict(),
                "temperature": self.trainer.temperature.state_dict(),
                "sampler": self.sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": dataclasses.asdict(cfg),
            },
        )

    def load_state(self, run_dir: Path) -> None:
        """Continue from run_dir/train_state.pt: model, optimizer, schedule, temperature, replay buffer, RNG and
        counters."""
        state = checkpoint.read_train_state(run_dir / checkpoint.TRAIN_STATE_NAME)
        if state.get("stage") != STAGE:
            raise ValueError(
                f"{run_dir}: not a fine-tuning run (its {checkpoint.TRAIN_STATE_NAME} is from "
                f"`dt-fast train`): resume it with `dt-fast train --resume`"
            )
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.trainer.optimizer, state["optimizer"])
        self.trainer.scheduler.load_state_dict(state["scheduler"])
        self.trainer.temperature.load_state_dict(state["temperature"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.trainer.step = int(state["updates"])
        self.iteration, self.transitions = int(state["iteration"]), int(state["transitions"])
        self.env_steps = int(state["env_steps"])

    def close(self) -> None:
        """Stop the sampler's threads."""
        self.sampler.close()


def read_start(path: Path, flag: str) -> checkpoint.Metadata | None:
    """The dt_fast.json of the checkpoint to start from (None: a plain transformers checkpoint); ValueError if
    `path` is not a checkpoint directory."""
    if not path.is_dir() or not (path / checkpoint.CONFIG_NAME).is_file():
        raise ValueError(
            f"{flag} {path}: not a checkpoint directory (expected {checkpoint.CONFIG_NAME} and "
            f"{checkpoint.SAFE_WEIGHTS_NAME})"
        )
    return checkpoint.read_metadata(path)


def load_offline_data(dataset: str, meta: checkpoint.Metadata | None, start: Path) -> tuple[Trajectories, str]:
    """The offline dataset (`dataset`, else the one the checkpoint's dt_fast.json names) and its path."""
    named = ((meta.dataset or {}).get("path") if meta is not None else None) or ""
    path = dataset or named
    if not path:
        why = "is a plain transformers checkpoint (no dt_fast.json)" if meta is None else "names no dataset"
        raise ValueError(
            f"--from {start} {why}: pass --dataset, the offline data of the replay buffer and the state statistics"
        )
    return load_dataset(path), str(path)


def stochastic_model(path: Path, meta: checkpoint.Metadata | None, seed: int) -> DecisionTransformer:
    """The checkpoint's model with a log-std head: a stochastic checkpoint's own, else one initialised from `seed`
    (every other weight the checkpoint's)."""
    loaded = DecisionTransformer.from_pretrained(path)
    if loaded.stochastic:
        return loaded
    torch.manual_seed(seed)
    model = DecisionTransformer(loaded.config, stochastic=True)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("predict_action_log_std.") for k in missing), (missing, unexpected)
    return model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per FinetuneConfig field (`--from` for checkpoint), plus --resume and --overwrite."""
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the fine-tuning run in RUN_DIR from its train_state.pt (its config, then "
        "flags); log rows after its last checkpoint are dropped",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="fine-tune into an --out that already holds a run: its run files are deleted when the "
        "run starts, after the checkpoint, data and env are checked",
    )
    docs = field_docs(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--from" if f.name == "checkpoint" else "--" + f.name.replace("_", "-")
        valid = f"; valid: {describe_setting(f.metadata)}" if f.metadata else ""
        default = "required" if f.name == "checkpoint" else f"{f.default!r} {f.metadata.get('units', '')}".strip()
        metavar = "RUN_DIR" if f.name == "checkpoint" else f.name.upper()
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=metavar,
            help=f"{docs.get(f.name, '')} (default: {default}{valid})".replace("%", "%%"),
        )


def resolve_config(args: argparse.Namespace) -> FinetuneConfig:
    """Defaults, then the resumed run's config, then flags; every value checked where it comes from."""
    values: dict[str, Any] = {}
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume and --overwrite exclude each other: resume continues the run, overwrite starts it over"
        )
    if args.resume:
        saved = checkpoint.read_train_config(args.resume)
        if saved.pop("stage", None) != STAGE:
            raise ValueError(
                f"--resume {args.resume}: not a fine-tuning run (resume a training run with `dt-fast train --resume`)"
            )
        values.update(parse_saved(saved, str(Path(args.resume) / checkpoint.TRAIN_CONFIG_NAME)))
    for f in dataclasses.fields(FinetuneConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            flag = "--from" if f.name == "checkpoint" else "--" + f.name.replace("_", "-")
            values[f.name] = parse_setting(FinetuneConfig, f.name, value, flag)
    if args.resume and getattr(args, "out", None) is None:
        values["out"] = args.resume
    if not values.get("checkpoint"):
        raise ValueError("--from is required: the checkpoint directory to fine-tune")
    return FinetuneConfig(**values)


def parse_saved(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Field values from a saved train_config.json, each checked; errors name the file and key."""
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}")
    return {k: parse_setting(FinetuneConfig, k, v, f"{source}: {k}") for k, v in data.items()}


def run(args: argparse.Namespace) -> int:
    """`dt-fast finetune`: resolve the config, fine-tune, print where the checkpoint is."""
    finetuner = Finetuner(resolve_config(args), resume=args.resume, overwrite=args.overwrite)
    try:
        out = finetuner.run()
    finally:
        finetuner.close()
    print(f"checkpoint: {out}")
    return 0


def learning_curve_figure(run_dir: str | Path) -> Any:
    """Figure of the evaluation score (D4RL-normalised when the env has a reference, else the return) with its 95%
    interval against the transitions collected, from a run's log.csv."""
    import csv

    from dt_fast.extras import require

    require("matplotlib", "the learning curve")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, dict[int, float]] = {}
    with open(Path(run_dir) / checkpoint.LOG_NAME, newline="") as f:
        for step, key, value in list(csv.reader(f))[1:]:
            series.setdefault(key, {})[int(step)] = float(value)
    normalised = "eval_normalized_score" in series
    score = series["eval_normalized_score" if normalised else "eval_return_mean"]
    ci = series["eval_normalized_ci95" if normalised else "eval_return_ci95"]
    steps = sorted(score)
    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(
        steps,
        [score[s] for s in steps],
        yerr=[ci[s] for s in steps],
        fmt="o-",
        capsize=3,
        label="evaluation, mean action (95% interval)",
    )
    ax.set_xlabel("online transitions collected")
    ax.set_ylabel("D4RL-normalised score" if normalised else "return")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learning_curve(run_dir: str | Path, path: str | Path) -> None:
    """Write `learning_curve_figure(run_dir)` to a PNG, atomically."""
    fig = learning_curve_figure(run_dir)
    with checkpoint.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
