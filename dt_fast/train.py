"""Trainer: one command from a dataset file to a checkpoint directory.

The loop of the paper (kzl/decision-transformer, CORL dt.py): windows from the C++ sampler, masked MSE on the
predicted actions, AdamW with linear warm-up, gradient clipping. Checkpoints are the directory format of
DESIGN.md (config.json + model.safetensors + dt_fast.json) plus train_state.pt, the self-contained resume state
(model, optimiser, scheduler, sampler, RNG), written last and atomically so that a killed run resumes exactly.
Data parallel with torch.distributed (`torchrun --nproc_per_node=N -m dt_fast.train ...`): each rank samples
its own seed stream, rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dt_fast import train_ops
from dt_fast.config import DecisionTransformerConfig
from dt_fast.model import DecisionTransformer, _replace

TRAIN_STATE_NAME = "train_state.pt"
TRAIN_CONFIG_NAME = "train_config.json"
LOG_NAME = "log.csv"


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are the paper's (Chen et al. 2021, gym experiments)."""

    dataset: str = ""
    """Dataset file or directory (any format of dt_fast.load_dataset); empty = the embedded Hopper dataset."""
    env: str = ""
    """Environment id the policy is for; empty = the one recorded in the dataset."""
    out: str = "runs/dt"
    """Run directory: checkpoint, train_state.pt, train_config.json, log.csv, tensorboard/."""
    steps: int = 100_000
    """Optimizer steps."""
    batch_size: int = 64
    """Windows per optimizer step (per rank when data-parallel)."""
    context_len: int = 20
    """K: steps per window."""
    lr: float = 1e-4
    """AdamW learning rate after warm-up."""
    weight_decay: float = 1e-4
    """AdamW weight decay, applied to every parameter as in the paper's code."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up from lr / warmup_steps to lr."""
    grad_clip: float = 0.25
    """Global gradient-norm clip."""
    dropout: float = 0.1
    """Residual, embedding and attention dropout."""
    hidden_size: int = 128
    """Embedding width."""
    n_layer: int = 3
    """GPT-2 blocks."""
    n_head: int = 1
    """Attention heads."""
    activation_function: str = "relu"
    """MLP activation."""
    max_ep_len: int = 1000
    """Rows of the timestep embedding; longer timesteps are clipped."""
    scale: float = 1000.0
    """Returns-to-go are divided by this."""
    gamma: float = 1.0
    """Discount of the returns-to-go."""
    seed: int = 0
    """Seed of the model initialisation, dropout and the sampler."""
    sampler_threads: int = 1
    """Background threads that prepare batches."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, ..."""
    precision: str = "fp32"
    """fp32, or bf16 (autocast)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    save_every: int = 10_000
    """Write a checkpoint every this many steps (and at the end)."""
    log_every: int = 100
    """Write a log row every this many steps."""
    eval_every: int = 0
    """Evaluate the policy every this many steps (0 = only when asked by the caller)."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""
    target_return: float = 0.0
    """Return to condition on at evaluation (env units); 0 = the best return in the dataset."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "context_len", "warmup_steps", "hidden_size", "n_layer", "n_head",
                     "max_ep_len", "sampler_threads", "save_every", "log_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.scale <= 0 or self.grad_clip <= 0:
            raise ValueError("lr, scale and grad_clip must be > 0")

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """Read a YAML or JSON config file into field overrides; unknown keys are an error naming them."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise FileNotFoundError(f"{path}: cannot read config file ({err.strerror})") from None
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
        return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (`--batch-size`, ...), plus --config, --resume and --nproc."""
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields (flags override it)")
    parser.add_argument("--resume", help="run directory to continue from (its train_state.pt)")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel processes (torchrun)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_doc(f.name))
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=None, help=_doc(f.name))


def _doc(name: str) -> str:
    """The docstring under a TrainConfig field, for --help."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(TrainConfig)).body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and node.target.id == name and isinstance(nxt, ast.Expr):
            return nxt.value.value
    return ""


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the resumed run's config, then --config, then flags."""
    values: dict[str, Any] = {}
    if args.resume:
        values.update(read_run_config(Path(args.resume)))
    if args.config:
        values.update(TrainConfig.from_file(args.config))
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    if args.resume and args.out is None:
        values["out"] = args.resume
    return TrainConfig(**values)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of an earlier run, or a clear error if `run_dir` is not a dt_fast run."""
    if not (run_dir / TRAIN_STATE_NAME).is_file() or not (run_dir / TRAIN_CONFIG_NAME).is_file():
        raise ValueError(f"{run_dir}: not a dt_fast run directory (expected {TRAIN_STATE_NAME} and "
                         f"{TRAIN_CONFIG_NAME})")
    return json.loads((run_dir / TRAIN_CONFIG_NAME).read_text())


def action_loss(action_preds: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the actions of real (unpadded) steps, as in the blog's TrainableDT."""
    weight = mask.to(action_preds.dtype).unsqueeze(-1)  # (B, T, 1)
    err = F.mse_loss(action_preds, actions.to(action_preds.dtype), reduction="none") * weight  # (B, T, act_dim)
    return err.sum() / (weight.sum() * action_preds.shape[-1])


class Trainer:
    """Trains a DecisionTransformer on a dataset; `run()` loops to `config.steps`, checkpointing as it goes."""

    def __init__(self, config: TrainConfig, resume: str | Path | None = None) -> None:
        from dt_fast.data import TrajectorySampler, load_dataset
        from dt_fast.envs import check_env_matches

        self.config = cfg = config
        self.rank, self.world = _dist_rank_world()
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
        self.out = Path(cfg.out)
        _check_writable(self.out)
        self.dataset_path = cfg.dataset or str(default_dataset())
        self.data = load_dataset(self.dataset_path)
        self.env_id = cfg.env or self.data.env_id or ""
        if not self.env_id:
            raise ValueError(f"{self.dataset_path}: the dataset records no env id; pass --env")
        state_dim, act_dim = self.data.observations.shape[1], self.data.actions.shape[1]
        check_env_matches(self.env_id, state_dim, act_dim, source=self.dataset_path)

        torch.manual_seed(cfg.seed)
        self.model_config = DecisionTransformerConfig(
            state_dim=state_dim, act_dim=act_dim, hidden_size=cfg.hidden_size, n_layer=cfg.n_layer,
            n_head=cfg.n_head, activation_function=cfg.activation_function, max_ep_len=cfg.max_ep_len,
            n_positions=1024, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout)
        self.model = DecisionTransformer(self.model_config).to(self.device)
        # CPU float32 eager training runs on dt_fast's C++ ops (train_ops), the optimizer too: AdamW and the
        # gradient clip in one call. Elsewhere torch's AdamW: on CPU its fused kernel (one pass over every
        # parameter) measured 2-3% of a step faster than the per-tensor loop, which beat the foreach kernels 2x.
        self.fused = (cfg.precision == "fp32" and not cfg.compile
                      and train_ops.fused_cpu(next(self.model.parameters())))
        if self.fused:
            self.optimizer = train_ops.FusedAdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                  max_grad_norm=cfg.grad_clip)
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               **({"foreach": True} if self.device.type == "cuda" else {"fused": True}))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / cfg.warmup_steps, 1.0))
        self.sampler = TrajectorySampler(self.data, context_len=cfg.context_len, batch_size=cfg.batch_size,
                                         scale=cfg.scale, gamma=cfg.gamma, max_ep_len=cfg.max_ep_len,
                                         seed=cfg.seed, rank=self.rank, num_threads=cfg.sampler_threads)
        self.step = 0
        if resume is not None:
            self.load_state(Path(resume))
        self.forward = self.model
        if self.world > 1:
            # The state and return heads get no gradient from the action loss: DDP must look for unused ones.
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        if cfg.compile:
            self.forward = torch.compile(self.forward)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step on one batch; returns the loss."""
        cfg = self.config
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with train_ops.team_threads() if self.fused else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                _, action_preds, _ = self.forward(states=batch["states"], actions=batch["actions"],
                                                  returns_to_go=batch["returns_to_go"], timesteps=batch["timesteps"],
                                                  attention_mask=batch["attention_mask"], action_only=True)
                loss = action_loss(action_preds.float(), batch["actions"], batch["attention_mask"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not self.fused:  # FusedAdamW clips by itself
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def run(self) -> Path:
        """Train to config.steps, logging and checkpointing; returns the run directory."""
        from tqdm import tqdm

        cfg, main = self.config, self.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / TRAIN_CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
            print_config(cfg, self.world)
        log = RunLog(self.out, enabled=main)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not main, unit="step", dynamic_ncols=True)
        window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
        self.model.train()
        batches = iter(self.sampler)
        while self.step < cfg.steps:
            loss = self.train_step(next(batches))
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {self.step}; lower --lr or check the dataset")
            window_loss, window_steps = window_loss + loss, window_steps + 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = window_steps / (time.perf_counter() - window_start)
                row = {"step": self.step, "loss": window_loss / window_steps, "lr": self.scheduler.get_last_lr()[0],
                       "steps_per_s": rate}
                bar.set_postfix(loss=f"{row['loss']:.4f}", steps_s=f"{rate:.1f}")
                log.write(row)
                window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.save()
                if main:
                    log.write({"step": self.step, **self.evaluate(cfg.eval_episodes)})
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        bar.close()
        if self.world > 1:
            log.write({"step": self.step, "ddp_replica_max_diff": self.replica_max_diff()})
        log.close()
        return self.out

    def close(self) -> None:
        """Join the sampler's threads and, under torchrun, leave the process group once every rank is done."""
        self.sampler.close()
        if self.world > 1:
            import torch.distributed as dist

            self.forward = self.model  # drop the DDP wrapper (and its reducer) before its process group
            dist.barrier()
            dist.destroy_process_group()

    def replica_max_diff(self) -> float:
        """Largest parameter difference between this rank and every other (0.0 when DDP kept them in sync)."""
        import torch.distributed as dist

        flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in self.model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return max(float((g - flat).abs().max()) for g in gathered)

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Return statistics of the current checkpoint over `episodes` episodes (rank 0 only)."""
        from dt_fast.evaluate import evaluate

        result = evaluate(str(self.out), env=self.env_id, episodes=episodes, seed=self.config.seed)
        return {"eval_return_mean": result.mean, "eval_return_std": result.std,
                "eval_normalized_score": result.normalized_score}

    def save(self) -> None:
        """Write the checkpoint directory and then train_state.pt (rank 0; every file atomically)."""
        if self.rank != 0:
            return
        from dt_fast.checkpoint import write_metadata

        self.model.save_pretrained(self.out)
        write_metadata(self.out, state_mean=self.sampler.state_mean, state_std=self.sampler.state_std,
                       scale=self.config.scale, env_id=self.env_id, context_len=self.config.context_len,
                       target_return=self.config.target_return or float(self.data.episode_returns.max()),
                       dataset={"path": self.dataset_path, "summary": repr(self.data),
                                "best_return": float(self.data.episode_returns.max()),
                                "mean_return": float(self.data.episode_returns.mean())})
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "config": dataclasses.asdict(self.config)}
        tmp = self.out / (TRAIN_STATE_NAME + ".tmp")
        torch.save(state, tmp)
        _replace(tmp, self.out / TRAIN_STATE_NAME)

    def load_state(self, run_dir: Path) -> None:
        """Continue from run_dir/train_state.pt: model, optimizer, scheduler, sampler, RNG and step."""
        read_run_config(run_dir)
        try:
            state = torch.load(run_dir / TRAIN_STATE_NAME, map_location=self.device, weights_only=True)
        except Exception as err:  # torch raises several types for corrupt files
            raise ValueError(f"{run_dir / TRAIN_STATE_NAME}: unreadable ({err})") from None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step = int(state["step"])


class RunLog:
    """log.csv and TensorBoard scalars of a run (no-ops off rank 0)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled, self.path, self.fields = enabled, out / LOG_NAME, None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to log.csv only", stacklevel=2)

    def write(self, row: dict[str, float]) -> None:
        """Append a row to log.csv (keys union over rows) and to TensorBoard."""
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "key", "value"])
            for key, value in row.items():
                if key != "step":
                    writer.writerow([row["step"], key, f"{value:.6g}"])
        if self.tb is not None:
            for key, value in row.items():
                if key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def default_dataset() -> Path:
    """The Hopper dataset shipped inside the package (see dt_fast/datasets/README.md)."""
    return Path(__file__).parent / "datasets" / "hopper_medium_v4.hdf5"


def print_config(cfg: TrainConfig, world: int) -> None:
    """The resolved config as a two-column table."""
    rows = dataclasses.asdict(cfg) | {"world_size": world}
    width = max(map(len, rows))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows.items()), flush=True)


def _check_writable(out: Path) -> None:
    """Fail before training if the run directory cannot be created or written."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: cannot write into {probe}")


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run(args: argparse.Namespace) -> int:
    """`dt-fast train`: resolve the config, then train in this process or in --nproc processes (torchrun)."""
    cfg = resolve_config(args)
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc == 1:
        trainer = Trainer(cfg, resume=args.resume)
        trainer.run()
        trainer.close()
        return 0
    import subprocess

    _check_writable(Path(cfg.out))
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    launch = Path(cfg.out) / "launch_config.json"
    launch.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "dt_fast.train", "--config", str(launch), *(["--resume", args.resume] if args.resume else [])]
    return subprocess.run(cmd, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dt_fast.train ...` (what torchrun launches on every rank)."""
    parser = argparse.ArgumentParser(prog="dt_fast.train", description="Train a Decision Transformer.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
