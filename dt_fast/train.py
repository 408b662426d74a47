"""Trainer: one command from a dataset file to a checkpoint directory.

The loop of the paper (kzl/decision-transformer, CORL dt.py): windows from the C++ sampler, masked MSE on the
predicted actions, AdamW with linear warm-up, gradient clipping. `--policy stochastic` trains the Online Decision
Transformer's tanh-Gaussian head with its objective and entropy temperature instead (dt_fast/odt.py), with the
same optimizer, schedule and clipping. Checkpoints are the directory format of DESIGN.md (config.json +
model.safetensors + dt_fast.json) plus train_state.pt, the self-contained resume state (model, optimiser,
scheduler, sampler, temperature, RNG), written last and atomically so that a killed run resumes exactly.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dt_fast import checkpoint, odt, train_graph, train_ops
from dt_fast.config import ACTIVATIONS, DecisionTransformerConfig, describe_setting, field_docs, parse_setting, setting
from dt_fast.data import DEFAULT_DATASET, Trajectories
from dt_fast.distributions import TanhNormal
from dt_fast.model import DecisionTransformer

DERIVED_CAP = 10_000
"""The paper's warm-up (10,000 steps of a 100,000-step run): derived warm-up and save intervals never exceed it."""


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are the paper's (Chen et al. 2021, gym experiments), with warm-up
    and save interval scaled to the run length. Every field declares its valid values once (`setting`): the
    command line, YAML/JSON files and TrainConfig(...) all pass through `parse_setting`.

    Raises:
        ValueError: a field of the wrong type or out of its range (the message names the field and its valid
            values), hidden_size not a multiple of n_head, or cuda_graph with a stochastic policy, a CPU device or
            compile.
    """

    dataset: str = setting(DEFAULT_DATASET, pattern=r"(?s).+", means="a non-empty path or name")
    """Dataset file or directory (any format of dt_fast.load_dataset), or the name of a bundled dataset."""
    env: str = ""
    """Environment id the policy is for; empty = the one recorded in the dataset."""
    out: str = setting("runs/dt", pattern=r"(?s).+", means="a non-empty path")
    """Run directory: checkpoint, train_state.pt, train_config.json, log.csv, tensorboard/."""
    steps: int = setting(100_000, ge=1, units="optimizer steps")
    """Optimizer steps."""
    batch_size: int = setting(64, ge=1)
    """Windows per optimizer step (per rank when data-parallel)."""
    context_len: int = setting(20, ge=1, units="env steps")
    """K: steps per window; at most the longest episode of the dataset."""
    lr: float = setting(1e-4, gt=0)
    """AdamW learning rate after warm-up."""
    weight_decay: float = setting(1e-4, ge=0)
    """AdamW weight decay, applied to every parameter as in the paper's code."""
    warmup_steps: int | None = setting(
        None, ge=1, units="optimizer steps", derived=f"steps // 10, within [1, {DERIVED_CAP}]"
    )
    """Linear learning-rate warm-up from lr / warmup_steps to lr (1 = none); unset, a tenth of the run as in the
    paper (10,000 of 100,000 steps), capped at those 10,000: `--steps 2000` warms up over 200 steps."""
    grad_clip: float = setting(0.25, gt=0)
    """Global gradient-norm clip."""
    dropout: float = setting(0.1, ge=0, lt=1)
    """Residual, embedding and attention dropout."""
    hidden_size: int = setting(128, ge=1)
    """Embedding width; a multiple of n_head."""
    n_layer: int = setting(3, ge=1)
    """GPT-2 blocks."""
    n_head: int = setting(1, ge=1)
    """Attention heads."""
    activation_function: str = setting("relu", choices=ACTIVATIONS)
    """MLP activation."""
    policy: str = setting("deterministic", choices=checkpoint.ACTION_HEADS)
    """Action head and objective: deterministic (the paper's masked MSE), or stochastic (the Online Decision
    Transformer's tanh-Gaussian: negative log-likelihood minus a learned temperature times the entropy)."""
    max_ep_len: int = setting(1000, ge=1, units="env steps")
    """Rows of the timestep embedding; longer timesteps are clipped."""
    scale: float = setting(1000.0, gt=0)
    """Returns-to-go are divided by this."""
    gamma: float = setting(1.0, ge=0, le=1)
    """Discount of the returns-to-go."""
    seed: int = setting(0, ge=0, le=2**64 - 1)
    """Seed of the model initialisation, dropout and the sampler."""
    sampler_threads: int = setting(1, ge=1, le=64)
    """Background threads that prepare batches."""
    device: str = setting("cpu", pattern=r"cpu|cuda(:[0-9]+)?", means="cpu, cuda or cuda:N")
    """Torch device."""
    precision: str = setting("fp32", choices=("fp32", "bf16"))
    """fp32, or bf16 (autocast)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    cuda_graph: bool = False
    """Capture the whole training step (forward, backward, clip, AdamW) in a CUDA graph after 3 eager steps and
    replay it every step (dt_fast/train_graph.py): CUDA devices, one process, not with --compile. Opt-in while it
    has not run on a GPU here; GPU speed unmeasured."""
    save_every: int | None = setting(
        None, ge=1, units="optimizer steps", derived=f"steps // 10, within [1, {DERIVED_CAP}]"
    )
    """Write a checkpoint every this many steps (and at the end); unset, ten per run, at most 10,000 steps apart."""
    save_minutes: float = setting(10.0, ge=0, units="minutes")
    """Also write a checkpoint when this many minutes have passed since the last one (0 = by steps only), so a
    killed run always has a recent state to resume."""
    log_every: int = setting(100, ge=1, units="optimizer steps")
    """Write a log row every this many steps (and at the end)."""
    eval_every: int = setting(0, ge=0, units="optimizer steps")
    """Evaluate the policy every this many steps (0 = only when asked by the caller)."""
    eval_episodes: int = setting(10, ge=1)
    """Episodes per periodic evaluation."""
    target_return: float = 0.0
    """Return to condition on at evaluation (env units); 0 = the best return in the dataset."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, parse_setting(TrainConfig, f.name, getattr(self, f.name), f"TrainConfig.{f.name}"))
        if self.hidden_size % self.n_head:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of n_head ({self.n_head})")
        if self.cuda_graph and self.policy == "stochastic":
            raise ValueError(
                "cuda_graph captures the deterministic policy's step; --policy stochastic runs eagerly "
                "(ODT's temperature step reads the entropy between steps)"
            )
        if self.cuda_graph and not self.device.startswith("cuda"):
            raise ValueError(f"cuda_graph needs a CUDA device, got device {self.device!r}")
        if self.cuda_graph and self.compile:
            raise ValueError(
                "cuda_graph and compile are exclusive (torch.compile has its own CUDA graphs: mode='reduce-overhead')"
            )
        if self.warmup_steps is None:
            self.warmup_steps = derived_interval(self.steps)
        if self.save_every is None:
            self.save_every = derived_interval(self.steps)

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Field values from a mapping read from `source` (a file), each checked; errors name the file and key."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys are {sorted(known)}")
        return {k: parse_setting(cls, k, v, f"{source}: {k}") for k, v in data.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """Read a YAML (.yaml, .yml) or JSON (.json) config file into checked field values; unknown keys, values
        of the wrong type or range and malformed files are a ValueError naming the file (and the key)."""
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            raise ValueError(f"{path}: a config file must be .yaml, .yml or .json")
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file") from None
        except OSError as err:
            raise OSError(f"{path}: cannot read config file ({err.strerror})") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
                raise ValueError(f"{path}: not valid YAML: {where}{getattr(err, 'problem', None) or err}") from None
        if data is None:
            raise ValueError(f"{path}: the file is empty; expected a mapping of TrainConfig fields")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
        return cls.parse(data, str(path))


def derived_interval(steps: int) -> int:
    """Default warm-up and save interval of a run of `steps` optimizer steps: a tenth of it, within [1, 10,000]."""
    return max(1, min(DERIVED_CAP, steps // 10))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (`--batch-size`, ...), plus --config, --resume, --overwrite and --nproc.

    Flags default to None (not given), so that a config file and a resumed run's config are overridden only by
    the flags given; --help shows each field's default and valid values instead."""
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields (flags override it)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its train_state.pt (its config, then --config, then "
        "flags); log rows after its last checkpoint are dropped",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an --out that already holds a run: its run files (checkpoint, "
        "train_state.pt, train_config.json, log.csv, tensorboard/) are deleted when training "
        "starts, after the config, data and env are checked; other files are kept",
    )
    parser.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes (torchrun) (default: %(default)s)"
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"{_doc(f.name)} (default: {f.default})"
            )
        else:
            parser.add_argument(flag, default=None, metavar=f.name.upper(), help=_help(f))


def _help(f: dataclasses.Field) -> str:
    """--help text of a TrainConfig field: its docstring, default, valid values and units."""
    meta = f.metadata
    default = meta.get("derived") or (f"{f.default!r} {meta.get('units', '')}".strip())
    valid = f"; valid: {describe_setting(meta)}" if meta else ""
    return f"{_doc(f.name)} (default: {default}{valid})".replace("%", "%%")


def _doc(name: str) -> str:
    """The docstring under a TrainConfig field, for --help."""
    return field_docs(TrainConfig).get(name, "")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the resumed run's config, then --config, then flags; every value checked where it comes
    from (a flag, a file and key)."""
    values: dict[str, Any] = {}
    if args.resume:
        run_config = Path(args.resume) / checkpoint.TRAIN_CONFIG_NAME
        values.update(TrainConfig.parse(checkpoint.read_train_config(args.resume), str(run_config)))
    if args.config:
        values.update(TrainConfig.from_file(args.config))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = parse_setting(TrainConfig, f.name, value, "--" + f.name.replace("_", "-"))
    if args.resume and getattr(args, "out", None) is None:
        values["out"] = args.resume
    return TrainConfig(**values)


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The paper's schedule: the learning rate rises linearly over warmup_steps steps (lr / warmup_steps at the first
    step), then stays at lr; a tensor learning rate is filled in place."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup_steps, 1.0))


def action_loss(action_preds: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the actions of real (unpadded) steps, as in the blog's TrainableDT."""
    weight = mask.to(action_preds.dtype).unsqueeze(-1)  # (B, T, 1)
    err = F.mse_loss(action_preds, actions.to(action_preds.dtype), reduction="none") * weight  # (B, T, act_dim)
    return err.sum() / (weight.sum() * action_preds.shape[-1])


class Trainer:
    """Trains a DecisionTransformer on a dataset; `run()` loops to `config.steps`, checkpointing as it goes.

    Attributes after construction: `model` (the DecisionTransformer), `optimizer`, `scheduler`, `sampler` (the
    TrajectorySampler), `data` (the Trajectories), `step` (optimizer steps done), `out` (the run directory).
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, overwrite: bool = False) -> None:
        """Check everything (run directory, data, env) and build the model, optimizer and sampler; nothing is
        written before `run`.

        Args:
            config: the run's settings; `config.out` is the run directory.
            resume: a run directory whose train_state.pt to continue from (step, weights, optimizer, sampler, RNG).
            overwrite: allow a `config.out` that holds another run: its run files are deleted when `run` starts.

        Raises:
            FileExistsError: `config.out` holds a run and neither `resume` nor `overwrite` is given.
            FileNotFoundError: the dataset, or the run to resume, does not exist.
            ValueError: a dataset without an env id (and `config.env` empty), an env whose sizes differ from the
                data's, episodes shorter than the context, an unavailable device, or a resume state from another
                run; the message names the file or argument.
        """
        from dt_fast.data import TrajectorySampler, load_dataset
        from dt_fast.envs import check_env_matches

        self.config = cfg = config
        self.rank, self.world = _dist_rank_world()
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
        self.out, self.overwrite = Path(cfg.out), overwrite
        if self.rank == 0:  # the rank that writes; the others would see its first files
            checkpoint.check_run_dir(self.out, overwrite=overwrite, resume=resume)
        _check_writable(self.out)
        self.dataset_path = cfg.dataset
        self.data = load_dataset(self.dataset_path)
        self.env_id = cfg.env or self.data.env_id or ""
        if not self.env_id:
            raise ValueError(f"{self.dataset_path}: the dataset records no env id; pass --env")
        state_dim, act_dim = self.data.observations.shape[1], self.data.actions.shape[1]
        spec = check_env_matches(self.env_id, state_dim, act_dim, source=self.dataset_path)
        check_episodes(self.data, cfg.context_len, spec.max_episode_steps, self.env_id)

        torch.manual_seed(cfg.seed)
        self.model_config = DecisionTransformerConfig(
            state_dim=state_dim,
            act_dim=act_dim,
            hidden_size=cfg.hidden_size,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            activation_function=cfg.activation_function,
            max_ep_len=cfg.max_ep_len,
            n_positions=1024,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
        )
        self.model = DecisionTransformer(self.model_config, stochastic=cfg.policy == "stochastic").to(self.device)
        self.sampler = TrajectorySampler(
            self.data,
            context_len=cfg.context_len,
            batch_size=cfg.batch_size,
            scale=cfg.scale,
            gamma=cfg.gamma,
            max_ep_len=cfg.max_ep_len,
            seed=cfg.seed,
            rank=self.rank,
            num_threads=cfg.sampler_threads,
        )
        self.init_step()
        self.step = 0
        if resume is not None:
            self.load_state(Path(resume))
        self.saved_step = self.step if resume is not None else None

    @classmethod
    def stepping(cls, config: TrainConfig, model: DecisionTransformer, sampler: Any) -> Trainer:
        """A Trainer whose `train_step` optimises an existing `model` on batches of an existing `sampler`, in one
        process, with no dataset, run directory or checkpoint of its own: what online fine-tuning drives
        (dt_fast/finetune.py). `config` gives the optimizer, schedule, clip, precision and policy."""
        trainer = cls.__new__(cls)
        trainer.config, trainer.rank, trainer.world = config, 0, 1
        trainer.device = torch.device(config.device)
        trainer.model, trainer.sampler, trainer.step = model.to(trainer.device), sampler, 0
        trainer.init_step()
        return trainer

    def init_step(self) -> None:
        """What `train_step` needs beside the model: the optimizer, the warm-up schedule, ODT's temperature
        (stochastic policy) and the forward the loss calls (DDP-wrapped, compiled or graph-captured as asked)."""
        cfg = self.config
        # CPU float32 eager training runs on dt_fast's C++ ops (train_ops), the optimizer too: AdamW and the
        # gradient clip in one call. Elsewhere torch's AdamW: on CPU its fused kernel (one pass over every
        # parameter) measured 2-3% of a step faster than the per-tensor loop, which beat the foreach kernels 2x.
        self.fused = cfg.precision == "fp32" and not cfg.compile and train_ops.fused_cpu(next(self.model.parameters()))
        if self.fused:
            self.optimizer = train_ops.FusedAdamW(
                self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip
            )
        elif cfg.cuda_graph:
            self.optimizer = train_graph.capturable_adamw(
                self.model.parameters(), cfg.lr, cfg.weight_decay, self.device
            )
        else:
            self.optimizer = torch.optim.AdamW(
                self.model.parameters(),
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                **({"foreach": True} if self.device.type == "cuda" else {"fused": True}),
            )
        self.scheduler = warmup_schedule(self.optimizer, cfg.warmup_steps)
        # ODT's entropy temperature, with its own Adam (dt_fast/odt.py); None for the deterministic policy.
        act_dim = self.model.config.act_dim
        self.temperature = odt.Temperature(act_dim, device=self.device) if cfg.policy == "stochastic" else None
        self.forward = self.model if self.temperature is None else odt.ActionDistribution(self.model)
        if self.world > 1:
            # The state and return heads get no gradient from the action loss: DDP must look for unused ones.
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if cfg.compile:
            self.forward = torch.compile(self.forward)
        if cfg.cuda_graph and self.world > 1:
            raise ValueError("cuda_graph runs in one process: not with --nproc or torchrun")
        self.graphed = train_graph.GraphedTrainStep(self.device_step, self.device) if cfg.cuda_graph else None

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step on one batch (a dict shaped as `TrajectorySampler.sample`'s); returns the loss."""
        with train_ops.team_threads() if self.fused else contextlib.nullcontext():
            if self.graphed is not None:
                loss = self.graphed(batch)
            else:
                loss = self.device_step({k: batch[k].to(self.device, non_blocking=True) for k in train_graph.STEP_KEYS})
            self.update_temperature()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def device_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The device's work of one training step on a batch already there: the loss, its gradients, the clip and
        the optimizer step; returns the loss (0-dim). No host synchronisation, no branch on tensor values: the same
        function runs eagerly and as what train_graph.GraphedTrainStep captures."""
        loss = self.policy_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not self.fused:  # FusedAdamW clips by itself
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def policy_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of `config.policy` on a batch (0-dim): the masked MSE of the action predictions, or ODT's
        objective (dt_fast/odt.py; its nll and entropy are kept for `update_temperature` and the log). Timesteps
        are not range-checked (the sampler clips them), which would read them back."""
        # cache_enabled=False: a CUDA graph cannot capture autocast's weight cache (and each weight is cast once)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16", cache_enabled=False
        ):
            inputs = dict(
                states=batch["states"],
                actions=batch["actions"],
                returns_to_go=batch["returns_to_go"],
                timesteps=batch["timesteps"],
                attention_mask=batch["attention_mask"],
                check_timesteps=False,
            )
            if self.temperature is None:
                _, action_preds, _ = self.forward(**inputs, action_only=True)
                return action_loss(action_preds.float(), batch["actions"], batch["attention_mask"])
            loc, log_std = self.forward(**inputs)  # (B, T, act_dim) each
            loss, self.nll, self.entropy = odt.odt_loss(
                TanhNormal(loc.float(), log_std.float()),
                batch["actions"],
                batch["attention_mask"],
                self.temperature.value(),
            )
            return loss

    def update_temperature(self) -> None:
        """ODT's temperature step on the entropy of the last `policy_loss`, averaged over the data-parallel ranks
        so that every rank keeps the same temperature (nothing for the deterministic policy)."""
        if self.temperature is None:
            return
        entropy = self.entropy.detach().clone()  # ()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(entropy)
            entropy = entropy / self.world
        self.temperature.update(entropy)

    def policy_log(self) -> dict[str, float]:
        """The last step's nll, entropy and temperature, as ODT logs them (empty for the deterministic policy)."""
        if self.temperature is None:
            return {}
        return {"nll": self.nll.item(), "entropy": self.entropy.item(), "temperature": self.temperature.value().item()}

    def run(self) -> Path:
        """Train to config.steps, logging and checkpointing; returns the run directory.

        Raises:
            FloatingPointError: the loss diverged (NaN or inf); the message says what to change.
            OSError: a checkpoint could not be written; the message says which step `resume` continues from.
        """
        from tqdm import tqdm

        cfg, main = self.config, self.rank == 0
        if main:
            if self.overwrite:
                removed = checkpoint.clear_run_dir(self.out)
                if removed:
                    print(f"--overwrite: deleted {', '.join(removed)} from {self.out}", flush=True)
            self.out.mkdir(parents=True, exist_ok=True)
            checkpoint.write_train_config(self.out, dataclasses.asdict(cfg))
            print_config(cfg, self.world)
        log = RunLog(self.out, enabled=main, start_step=self.step)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not main, unit="step", dynamic_ncols=True)
        try:
            self.loop(log, bar)
        finally:  # an error message starts on a line of its own, and TensorBoard gets what was logged
            bar.close()
            log.close()
        return self.out

    def loop(self, log: RunLog, bar: Any) -> None:
        """The steps of `run`: train, log every log_every steps, save every save_every steps, every save_minutes
        minutes and at the end."""
        cfg, main = self.config, self.rank == 0
        window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
        last_save = time.monotonic()
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
                row = {
                    "step": self.step,
                    "loss": window_loss / window_steps,
                    "lr": float(self.scheduler.get_last_lr()[0]),
                    "steps_per_s": rate,
                }
                row.update(self.policy_log())
                bar.set_postfix(loss=f"{row['loss']:.4f}", steps_s=f"{rate:.1f}")
                log.write(row)
                window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.save()
                if main:
                    log.write({"step": self.step, **self.evaluate(cfg.eval_episodes)})
            overdue = cfg.save_minutes > 0 and time.monotonic() - last_save >= 60 * cfg.save_minutes
            if self.step % cfg.save_every == 0 or self.step == cfg.steps or overdue:
                self.save()
                last_save = time.monotonic()
        if self.world > 1:
            log.write({"step": self.step, "ddp_replica_max_diff": self.replica_max_diff()})

    def close(self) -> None:
        """Join the sampler's threads and, under torchrun, leave the process group once every rank is done."""
        self.sampler.close()
        if self.world > 1:
            import torch.distributed as dist

            self.forward = self.model  # drop the DDP wrapper (and its reducer) before its process group
            dist.barrier()
            dist.destroy_process_group()

    def replica_max_diff(self) -> float:
        """Largest difference of a parameter (or of a stochastic policy's log-temperature) between this rank and
        every other (0.0 when DDP kept them in sync)."""
        import torch.distributed as dist

        tensors = [*self.model.parameters(), *([] if self.temperature is None else [self.temperature.log_temperature])]
        flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in tensors])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return max(float((g - flat).abs().max()) for g in gathered)

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Return statistics of the last checkpoint written over `episodes` episodes (rank 0 only): keys
        eval_return_mean, eval_return_std, eval_normalized_score."""
        from dt_fast.evaluation import evaluate

        result = evaluate(str(self.out), env=self.env_id, episodes=episodes, seed=self.config.seed)
        return {
            "eval_return_mean": result.mean,
            "eval_return_std": result.std,
            "eval_normalized_score": result.normalized_score,
        }

    def save(self) -> None:
        """Write the checkpoint directory and then train_state.pt (rank 0; every file atomically); if a file cannot
        be written (a full disk), OSError saying which step --resume would continue from."""
        if self.rank != 0:
            return
        try:
            self.write_checkpoint()
        except OSError as err:
            kept = (
                f"--resume {self.out} continues from step {self.saved_step}"
                if self.saved_step is not None
                else "no checkpoint of this run was saved"
            )
            raise OSError(f"training stopped at step {self.step}: {err}; {kept}") from err
        self.saved_step = self.step

    def write_checkpoint(self) -> None:
        """The files of `save`: config.json, model.safetensors, dt_fast.json, then train_state.pt."""
        self.model.save_pretrained(self.out)
        returns = self.data.episode_returns
        checkpoint.write_metadata(
            self.out,
            checkpoint.Metadata(
                state_mean=tuple(self.sampler.state_mean),
                state_std=tuple(self.sampler.state_std),
                scale=self.config.scale,
                context_len=self.config.context_len,
                target_return=self.config.target_return or float(returns.max()),
                env_id=self.env_id,
                dataset={
                    "path": self.dataset_path,
                    "summary": repr(self.data),
                    "best_return": float(returns.max()),
                    "mean_return": float(returns.mean()),
                },
                action_head=self.config.policy,
            ),
        )
        checkpoint.write_train_state(
            self.out / checkpoint.TRAIN_STATE_NAME,
            {
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": dataclasses.asdict(self.config),
                **({} if self.temperature is None else {"temperature": self.temperature.state_dict()}),
            },
        )

    def load_state(self, run_dir: Path) -> None:
        """Continue from run_dir/train_state.pt: model, optimizer, scheduler, sampler, temperature (stochastic
        policy), RNG and step."""
        checkpoint.read_train_config(run_dir)
        state = checkpoint.read_train_state(run_dir / checkpoint.TRAIN_STATE_NAME, self.device)
        trained = state["config"].get("policy", "deterministic")
        if trained != self.config.policy:
            raise ValueError(
                f"{run_dir}: the run was trained with --policy {trained}; it cannot resume with "
                f"--policy {self.config.policy}"
            )
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        if self.temperature is not None:
            self.temperature.load_state_dict(state["temperature"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step = int(state["step"])


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """optimizer.load_state_dict(state) keeping this optimizer's implementation and the form of its learning rate.

    The saved run may have trained on another device or with(out) a CUDA graph: its foreach / fused / capturable
    flags would replace this optimizer's, and its learning rate may be a float or the device tensor a graph reads.
    The flags stay this optimizer's, the learning rate keeps its form (a tensor is filled in place), and the step
    counts go where this implementation keeps them (torch's rule: on the parameter's device when fused or
    capturable, else on the CPU)."""
    own = [{k: g[k] for k in ("foreach", "fused", "capturable", "lr") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, own):
        lr = float(group["lr"])
        group.update(kept)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            if "step" in st:
                st["step"] = st["step"].to(device=p.device if on_device else "cpu", dtype=torch.float32)


class RunLog:
    """log.csv and TensorBoard scalars of a run (no-ops off rank 0). A run resumed at `start_step` first drops the
    rows logged after it (the steps between its last checkpoint and the kill, which it trains again): log.csv is
    rewritten atomically, TensorBoard hides those events (SummaryWriter's purge_step)."""

    def __init__(self, out: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled, self.path = enabled, out / checkpoint.LOG_NAME
        self.tb = None
        if enabled:
            if start_step and self.path.exists():
                self.drop_after(start_step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(
                    str(out / checkpoint.TENSORBOARD_NAME), purge_step=start_step + 1 if start_step else None
                )
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to log.csv only", stacklevel=2)

    def drop_after(self, step: int) -> None:
        """Rewrite log.csv without the rows of steps after `step`."""
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
        if len(kept) < len(rows):
            with checkpoint.atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)

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


def print_config(cfg: TrainConfig, world: int) -> None:
    """The resolved config as a two-column table."""
    rows = dataclasses.asdict(cfg) | {"world_size": world}
    width = max(map(len, rows))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows.items()), flush=True)


def check_episodes(data: Trajectories, context_len: int, max_episode_steps: int, env_id: str) -> None:
    """ValueError if the window is longer than every episode (every window would be mostly padding); a warning if
    an episode is longer than the env's time limit (episodes merged: a missing `timeouts` key?)."""
    longest = int(data.episode_lengths.max())
    if context_len > longest:
        raise ValueError(
            f"--context-len {context_len} is longer than the longest episode of {data.source} "
            f"({longest} steps): every window would be padded; use at most {longest}"
        )
    if longest > max_episode_steps:
        warnings.warn(
            f"{data.source}: the longest episode has {longest} steps but {env_id} ends episodes after "
            f"{max_episode_steps}: episodes may be merged (wrong or missing `timeouts`?)",
            stacklevel=3,
        )


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
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        trainer.run()
        trainer.close()
        return 0
    import subprocess

    checkpoint.check_run_dir(cfg.out, overwrite=args.overwrite, resume=args.resume)
    _check_writable(Path(cfg.out))
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    launch = Path(cfg.out) / "launch_config.json"
    checkpoint.write_text(launch, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        "-m",
        "dt_fast.train",
        "--config",
        str(launch),
        *(["--resume", args.resume] if args.resume else []),
        *(["--overwrite"] if args.overwrite else []),
    ]
    return subprocess.run(cmd, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dt_fast.train ...` (what torchrun launches on every rank)."""
    parser = argparse.ArgumentParser(prog="dt_fast.train", description="Train a Decision Transformer.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
