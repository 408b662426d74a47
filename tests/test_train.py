"""Trainer: loss, checkpoints, exact resume after SIGKILL, data parallel, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dt_fast.train import TrainConfig, Trainer, action_loss

SMALL = [
    "--hidden-size",
    "32",
    "--n-layer",
    "1",
    "--batch-size",
    "16",
    "--context-len",
    "10",
    "--warmup-steps",
    "10",
    "--log-every",
    "5",
]


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dt_fast.train", *SMALL, *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_action_loss_equals_the_blogs_masked_mean() -> None:
    g = torch.Generator().manual_seed(0)
    preds, targets = torch.randn(5, 7, 3, generator=g), torch.randn(5, 7, 3, generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    keep = mask.reshape(-1) > 0
    blog = torch.mean((preds.reshape(-1, 3)[keep] - targets.reshape(-1, 3)[keep]) ** 2)
    torch.testing.assert_close(action_loss(preds, targets, mask), blog)


def test_training_reduces_loss_and_writes_a_checkpoint_both_libraries_load(hopper_file: Path, tmp_path) -> None:
    from transformers import DecisionTransformerModel

    from dt_fast import DecisionTransformer
    from dt_fast.checkpoint import read_metadata

    cfg = TrainConfig(
        dataset=str(hopper_file),
        out=str(tmp_path / "run"),
        steps=60,
        hidden_size=32,
        n_layer=1,
        batch_size=16,
        context_len=10,
        warmup_steps=10,
        lr=1e-3,
        log_every=10,
        save_every=30,
    )
    trainer = Trainer(cfg)
    first = trainer.train_step(trainer.sampler.sample())
    trainer.run()
    losses = [float(r[2]) for r in _log_rows(tmp_path / "run") if r[1] == "loss"]
    assert losses[-1] < 0.8 * first, (first, losses)
    ours = DecisionTransformer.from_pretrained(tmp_path / "run")
    hf = DecisionTransformerModel.from_pretrained(tmp_path / "run").eval()
    batch = trainer.sampler.sample()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch)[1], hf(**batch, return_dict=False)[1], atol=1e-5, rtol=0)
    meta = read_metadata(tmp_path / "run")
    assert meta.env_id == "Hopper-v4" and meta.context_len == 10 and meta.scale == 1000.0
    np.testing.assert_allclose(meta.state_mean, trainer.data.state_mean)
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["steps"] == 60 and saved["lr"] == 1e-3


def test_stochastic_training_learns_and_its_checkpoint_acts_with_the_mean(hopper_file: Path, tmp_path) -> None:
    from transformers import DecisionTransformerModel

    from dt_fast import DecisionTransformer, Policy
    from dt_fast.checkpoint import read_metadata

    run = tmp_path / "run"
    cfg = TrainConfig(
        dataset=str(hopper_file),
        out=str(run),
        steps=60,
        hidden_size=32,
        n_layer=1,
        batch_size=16,
        context_len=10,
        warmup_steps=10,
        lr=1e-3,
        log_every=10,
        save_every=30,
        policy="stochastic",
    )
    trainer = Trainer(cfg)
    assert trainer.model.stochastic and trainer.temperature.target_entropy == -3.0
    trainer.run()
    rows = _log_rows(run)
    nll = [float(r[2]) for r in rows if r[1] == "nll"]
    temperature = [float(r[2]) for r in rows if r[1] == "temperature"]
    entropy = [float(r[2]) for r in rows if r[1] == "entropy"]
    assert len(nll) == len(entropy) == 6 and nll[-1] < 0.5 * nll[0], nll
    # the entropy starts above the target (-act_dim = -3): the temperature first falls from ODT's 0.1
    assert entropy[0] > -3.0 and temperature[0] < 0.1 and len(set(temperature)) == 6, (entropy, temperature)
    assert read_metadata(run).action_head == "stochastic"
    ours = DecisionTransformer.from_pretrained(run)
    assert ours.stochastic
    hf = DecisionTransformerModel.from_pretrained(run).eval()  # ignores the log-std head: the mean action
    batch = trainer.sampler.sample()
    with torch.no_grad():
        mean = ours.action_distribution(
            batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["attention_mask"]
        ).mean
        torch.testing.assert_close(hf(**batch, return_dict=False)[1], mean, atol=1e-5, rtol=0)
    policy = Policy.from_pretrained(run)  # backend auto: the engine, which acts with the mean unless sampling is set
    assert policy.backend == "cpp" and policy.stochastic
    obs = np.random.default_rng(0).normal(size=11).astype(np.float32)
    meta = read_metadata(run)
    state = torch.from_numpy((obs - np.array(meta.state_mean)) / np.array(meta.state_std)).float().reshape(1, 1, 11)
    with torch.no_grad():
        first = ours.action_distribution(
            state,
            torch.zeros(1, 1, 3),
            torch.full((1, 1, 1), meta.target_return / meta.scale),
            torch.zeros(1, 1, dtype=torch.long),
        ).mean[0, 0]
    np.testing.assert_allclose(policy.act(obs), first.numpy(), rtol=1e-5, atol=1e-6)


def test_a_run_resumes_only_with_its_own_policy(hopper_file: Path, tmp_path) -> None:
    run = tmp_path / "run"
    Trainer(small_config(hopper_file, run, steps=2)).run()
    with pytest.raises(
        ValueError, match="trained with --policy deterministic; it cannot resume with --policy stochastic"
    ):
        Trainer(small_config(hopper_file, run, steps=4, policy="stochastic"), resume=run)


def _log_rows(run: Path) -> list[list[str]]:
    return [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("policy", ["deterministic", "stochastic"])
def test_sigkill_then_resume_ends_with_the_same_weights(hopper_file: Path, tmp_path, policy: str) -> None:
    # long enough that a poll delayed by a loaded machine still finds the run between its first saves and its end
    common = ["--dataset", str(hopper_file), "--steps", "400", "--save-every", "10", "--policy", policy]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(train_cmd(*common, "--out", str(straight)), check=True, env=env(), capture_output=True)
    proc = subprocess.Popen(
        train_cmd(*common, "--out", str(killed)), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "train_state.pt").exists():
            state = torch.load(killed / "train_state.pt", weights_only=True)
            if 20 <= state["step"] < 350:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(killed / "train_state.pt", weights_only=True)["step"]
    assert killed_at < 400
    subprocess.run(train_cmd("--resume", str(killed)), check=True, env=env(), capture_output=True)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming from step {killed_at}"
    if policy == "stochastic":  # the temperature and its optimizer resume exactly too
        assert "predict_action_log_std.weight" in a
        a, b = (torch.load(run / "train_state.pt", weights_only=True)["temperature"] for run in (straight, killed))
        assert torch.equal(a["log_temperature"], b["log_temperature"])
        assert a["log_temperature"] != torch.tensor(0.1).log()
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a["optimizer"]["state"][0][key], b["optimizer"]["state"][0][key])


@pytest.mark.parametrize("policy", ["deterministic", "stochastic"])
def test_two_process_data_parallel_keeps_replicas_identical(hopper_file: Path, tmp_path, policy: str) -> None:
    """Every parameter, and a stochastic policy's temperature (its entropy averaged over the ranks), stays equal."""
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dt_fast.cli",
            "train",
            "--nproc",
            "2",
            *SMALL,
            "--dataset",
            str(hopper_file),
            "--steps",
            "40",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            "--policy",
            policy,
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _log_rows(out)
    assert [float(r[2]) for r in rows if r[1] == "ddp_replica_max_diff"] == [0.0]
    losses = [float(r[2]) for r in rows if r[1] == "loss"]
    assert losses[-1] < losses[0], losses
    assert "world_size           2" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "Hoper-v4"], "unknown env id 'Hoper-v4'; closest known ids: Hopper-v4"),
        (["--env", "HalfCheetah-v4"], "state_dim=11, act_dim=3 but HalfCheetah-v4 has state_dim=17, act_dim=6"),
        (["--out", "{tmp}/bad.yaml/run"], "cannot write into .*bad.yaml"),
        (["--resume", "{tmp}"], "not a dt_fast run directory"),
        (["--config", "{tmp}/bad.yaml"], r"unknown keys \['learning_rate'\]"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--precision", "fp8"], "precision must be one of fp32, bf16"),
    ],
)
def test_bad_input_fails_before_training(hopper_file: Path, tmp_path, capsys, args: list[str], message: str) -> None:
    from dt_fast.cli import main

    (tmp_path / "bad.yaml").write_text("learning_rate: 0.1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", "--dataset", str(hopper_file), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err[-2000:]
    assert not (tmp_path / "run" / "train_state.pt").exists()
    assert not (tmp_path / "run" / "log.csv").exists()


def test_config_file_then_flags_override(hopper_file: Path, tmp_path) -> None:
    import argparse

    from dt_fast.train import add_arguments, resolve_config

    (tmp_path / "c.yaml").write_text("lr: 0.003\nbatch_size: 8\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = resolve_config(parser.parse_args(["--config", str(tmp_path / "c.yaml"), "--batch-size", "4"]))
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay) == (0.003, 4, 1e-4)


# --- one validation layer: the command line, YAML/JSON files and TrainConfig(...) ---------------------------------


def parse_flags(*argv: str):
    import argparse

    from dt_fast.train import add_arguments, resolve_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve_config(parser.parse_args(list(argv)))


@pytest.mark.parametrize(
    "text, suffix",
    [
        ("lr: 1e-3\nsteps: 1e3\ndropout: 0\ncompile: true\n", ".yaml"),  # YAML 1.1 reads 1e-3 and 1e3 as strings
        ('{"lr": "1e-3", "steps": 1000.0, "dropout": 0, "compile": true}', ".json"),
    ],
)
def test_config_files_parse_values_as_the_command_line_does(tmp_path, text: str, suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    cfg = parse_flags("--config", str(path))
    assert (cfg.lr, cfg.steps, cfg.dropout, cfg.compile) == (1e-3, 1000, 0.0, True)
    assert type(cfg.steps) is int and type(cfg.lr) is float and type(cfg.dropout) is float
    flags = parse_flags("--lr", "1e-3", "--steps", "1e3", "--dropout", "0", "--compile")
    assert flags == cfg
    assert TrainConfig(lr="1e-3", steps="1e3", dropout=0, compile=True) == cfg


BAD_VALUES = [  # (key, YAML value, message after "<where> ")
    ("steps", "3.7", "must be an integer, got 3.7"),
    ("steps", "five", "must be an integer, got 'five'"),
    ("steps", "0", "must be >= 1, got 0"),
    ("steps", "true", "must be an integer, got True"),
    ("lr", "-1", "must be > 0, got -1"),
    ("lr", ".nan", "must be a finite number, got nan"),
    ("lr", "[0.1]", r"must be a number, got \[0.1\]"),
    ("dropout", "1.0", r"must be >= 0 and < 1, got 1.0"),
    ("gamma", "1.5", r"must be >= 0 and <= 1, got 1.5"),
    ("device", "tpu", "must be cpu, cuda or cuda:N, got 'tpu'"),
    ("device", "cuda:x", "must be cpu, cuda or cuda:N, got 'cuda:x'"),
    ("precision", "fp8", "must be one of fp32, bf16, got 'fp8'"),
    ("activation_function", "swishy", "must be one of relu, .*, got 'swishy'"),
    ("env", "5", "must be a string, got 5"),
    ("out", "''", "must be a non-empty path, got ''"),
    ("compile", "maybe", "must be true or false, got 'maybe'"),
    ("seed", "-1", "must be >= 0 and <= 18446744073709551615, got -1"),
    ("save_minutes", "-1", "must be >= 0, got -1"),
    ("warmup_steps", "0", "must be >= 1, got 0"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_a_bad_value_names_its_file_key_flag_and_value(tmp_path, key: str, value: str, message: str) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: {value}\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {key} {message}$"):
        parse_flags("--config", str(path))
    if key not in ("env", "out", "compile"):  # any text is a string flag; --compile takes no value
        flag = "--" + key.replace("_", "-")
        with pytest.raises(ValueError, match=rf"^{flag} must .*, got '{re.escape(value)}'$"):
            parse_flags(flag, value)
    with pytest.raises(ValueError, match=rf"^TrainConfig.{key} must"):
        TrainConfig(**{key: yaml.safe_load(path.read_text())[key]})


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.yaml", "steps: [1\n  x: :\n", r"bad.yaml: not valid YAML: line 2, column 4: "),
        ("bad.yaml", "- steps\n- 10\n", "bad.yaml: expected a mapping of TrainConfig fields, got list"),
        ("empty.yml", "", "empty.yml: the file is empty"),
        ("bad.json", '{"steps": ', "bad.json: not valid JSON: line 1, column 11: Expecting value"),
        ("run.toml", "steps = 10\n", r"run.toml: a config file must be .yaml, .yml or .json"),
        ("binary.yaml", b"\xff\xfe\x00steps", "binary.yaml: not a text file"),
        ("keys.yaml", "learning_rate: 0.1\nsteps: 10\n", r"keys.yaml: unknown keys \['learning_rate'\]"),
    ],
)
def test_malformed_config_files_are_one_error_naming_the_file(tmp_path, name: str, content, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_file(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml: no such config file"):
        TrainConfig.from_file(tmp_path / "missing.yaml")


def test_cross_field_check_and_unknown_keyword() -> None:
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be a multiple of n_head \(4\)"):
        TrainConfig(hidden_size=30, n_head=4)
    with pytest.raises(TypeError, match="learning_rate"):
        TrainConfig(learning_rate=0.1)


# --- defaults that learn at any --steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, derived", [(1, 1), (9, 1), (10, 1), (2000, 200), (100_000, 10_000), (1_000_000, 10_000)]
)
def test_warmup_and_save_interval_scale_with_the_run_unless_given(steps: int, derived: int) -> None:
    cfg = TrainConfig(steps=steps)
    assert (cfg.warmup_steps, cfg.save_every) == (derived, derived)
    assert (
        TrainConfig(steps=steps, warmup_steps=7, save_every=3).warmup_steps,
        TrainConfig(steps=steps, warmup_steps=7, save_every=3).save_every,
    ) == (7, 3)


def test_the_readme_step_count_leaves_the_warmup(hopper_file: Path, tmp_path) -> None:
    """`dt-fast train --steps 2000`: the paper's 10,000-step warm-up left lr at 3e-6 after 300 steps."""
    cfg = parse_flags("--steps", "2000", "--dataset", str(hopper_file), "--out", str(tmp_path / "run"))
    trainer = Trainer(cfg)
    lr_factor = trainer.scheduler.lr_lambdas[0]
    assert lr_factor(299) == 1.0 and lr_factor(99) == pytest.approx(0.5)
    assert cfg.save_every == 200
    trainer.close()


def test_help_shows_every_default(capsys) -> None:
    import dataclasses

    from dt_fast.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split("options:")[1].split())
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        entry = text[re.search(rf"{flag}[ ,]", text).start() :]
        entry = re.split(r" --(?!no-)[a-z-]+ [A-Z_]+ | --[a-z-]+, ", entry[3:])[0]
        assert "(default: " in entry, entry
    assert "(default: steps // 10, within [1, 10000]; valid: >= 1)" in text
    assert "(default: 10.0 minutes; valid: >= 0)" in text
    assert "(default: 100000 optimizer steps; valid: >= 1)" in text


# --- outputs: never overwrite a run unless asked -------------------------------------------------------------------


def small_config(hopper_file: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(
        dataset=str(hopper_file),
        out=str(out),
        steps=4,
        hidden_size=32,
        n_layer=1,
        batch_size=16,
        context_len=10,
        log_every=2,
    )
    return TrainConfig(**(values | overrides))


def tree_hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_an_existing_run_is_refused_resumed_or_overwritten(hopper_file: Path, tmp_path, capsys) -> None:
    from dt_fast.cli import main

    run = tmp_path / "run"
    Trainer(small_config(hopper_file, run)).run()
    (run / "notes.txt").write_text("mine")
    before = tree_hashes(run)
    with pytest.raises(FileExistsError, match=r"run already holds a dt_fast run \(train_state.pt, .*\): pass --resume"):
        Trainer(small_config(hopper_file, run))
    assert main(["train", *SMALL, "--dataset", str(hopper_file), "--out", str(run), "--steps", "4"]) == 2
    assert "already holds a dt_fast run" in capsys.readouterr().err
    assert tree_hashes(run) == before
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        Trainer(small_config(hopper_file, run), resume=run, overwrite=True)
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        Trainer(small_config(hopper_file, run / "notes.txt"))

    trainer = Trainer(small_config(hopper_file, run, steps=2, seed=1), overwrite=True)
    assert tree_hashes(run) == before, "--overwrite deleted files before training started"
    trainer.run()
    assert (run / "notes.txt").read_text() == "mine"
    assert [r[0] for r in _log_rows(run) if r[1] == "loss"] == ["2"], "the old log was appended to"
    assert json.loads((run / "train_config.json").read_text())["seed"] == 1
    assert torch.load(run / "train_state.pt", weights_only=True)["step"] == 2


def test_a_full_disk_during_a_save_is_one_line_and_leaves_no_temporary_file(hopper_file: Path, tmp_path) -> None:
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails with ENOSPC."""
    import resource

    def limit(size: int):
        def set_limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        return set_limit

    # The SMALL model's files: model.safetensors 317 kB, train_state.pt 982 kB.
    for size, failing in ((600_000, "train_state.pt"), (200_000, "model.safetensors")):
        out = tmp_path / f"run{size}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dt_fast.cli",
                "train",
                *SMALL,
                "--dataset",
                str(hopper_file),
                "--steps",
                "3",
                "--out",
                str(out),
            ],
            env=env(),
            capture_output=True,
            text=True,
            preexec_fn=limit(size),
        )
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert re.search(
            rf"training stopped at step 1: .*{failing}: could not write the file \(.*\); nothing was "
            rf"written; no checkpoint of this run was saved",
            last,
        ), last
        assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_a_failed_save_after_a_good_one_says_where_resume_starts(hopper_file: Path, tmp_path, monkeypatch) -> None:
    trainer = Trainer(small_config(hopper_file, tmp_path / "run", steps=6, save_every=2))

    def full_disk(path, state) -> None:
        if state["step"] >= 4:
            with checkpoint.atomic_write(path) as tmp:
                tmp.write_bytes(b"half a file")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing")
        real_write(path, state)

    from dt_fast import checkpoint

    real_write = checkpoint.write_train_state
    monkeypatch.setattr(checkpoint, "write_train_state", full_disk)
    message = (
        r"training stopped at step 4: .*train_state.pt: could not write the file .*; "
        r"the previous train_state.pt is unchanged; --resume .*run continues from step 2"
    )
    with pytest.raises(OSError, match=message):
        trainer.run()
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if ".tmp" in p.name) == []


# --- resume and the log; time-based checkpoints --------------------------------------------------------------------


def test_resume_drops_the_log_rows_after_the_checkpoint(hopper_file: Path, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    trainer = Trainer(small_config(hopper_file, run, steps=12, save_every=4, log_every=2))
    real_save = Trainer.save

    def killed_at_step_12(self) -> None:  # the kill: the log has rows up to step 12, the last checkpoint is step 8
        if self.step == 12:
            raise KeyboardInterrupt
        real_save(self)

    monkeypatch.setattr(Trainer, "save", killed_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    trainer.close()
    assert [int(r[0]) for r in _log_rows(run) if r[1] == "loss"] == [2, 4, 6, 8, 10, 12]
    monkeypatch.setattr(Trainer, "save", real_save)
    resumed = Trainer(TrainConfig(**json.loads((run / "train_config.json").read_text())), resume=run)
    assert resumed.step == 8
    resumed.run()
    assert [int(r[0]) for r in _log_rows(run) if r[1] == "loss"] == [2, 4, 6, 8, 10, 12]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6, 8, 10, 12]


def test_a_checkpoint_every_save_minutes(hopper_file: Path, tmp_path, monkeypatch) -> None:
    trainer = Trainer(small_config(hopper_file, tmp_path / "run", steps=10, save_every=100, save_minutes=0.5))
    saved = []
    real_save = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self: (saved.append(self.step), real_save(self)))
    monkeypatch.setattr(time, "monotonic", lambda: 10.0 * trainer.step)  # each step takes 10 s
    trainer.run()
    assert saved == [3, 6, 9, 10]
    saved.clear()
    trainer = Trainer(
        small_config(hopper_file, tmp_path / "run", steps=14, save_every=100, save_minutes=0), resume=tmp_path / "run"
    )
    trainer.run()
    assert saved == [14]


# --- data that cannot train the policy it claims to -----------------------------------------------------------------


def test_context_longer_than_every_episode_is_an_error(hopper_file: Path, tmp_path) -> None:
    longest = int(np.diff(np.flatnonzero(h5py.File(hopper_file)["terminals"][()]), prepend=-1).max())
    with pytest.raises(
        ValueError,
        match=rf"--context-len 5000 is longer than the longest episode of .*hopper_small"
        rf".hdf5 \({longest} steps\)",
    ):
        Trainer(small_config(hopper_file, tmp_path / "run", context_len=5000))
    assert not (tmp_path / "run").exists()


def test_episodes_longer_than_the_env_time_limit_warn(tmp_path) -> None:
    path = tmp_path / "merged.hdf5"
    n = 1500
    terminals = np.zeros(n, bool)
    terminals[-1] = True
    with h5py.File(path, "w") as f:
        f.attrs["env_id"] = "Hopper-v4"
        f["observations"] = np.random.default_rng(0).normal(size=(n, 11)).astype(np.float32)
        f["actions"] = np.zeros((n, 3), np.float32)
        f["rewards"] = np.ones(n, np.float32)
        f["terminals"] = terminals
        f["timeouts"] = np.zeros(n, bool)
    with pytest.warns(UserWarning, match="the longest episode has 1500 steps but Hopper-v4 ends episodes after 1000"):
        Trainer(small_config(path, tmp_path / "run")).close()
