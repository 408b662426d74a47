"""The `dt-fast` command under bad input: every subcommand, a table of bad arguments, files and outputs.

Each case must exit non-zero with exactly one line on stderr, no traceback, and leave every file that existed
before it unchanged. A case is `python -m dt_fast.cli ARGS` in a process of its own: forked from one server
process that has imported dt_fast's modules once (a fresh interpreter per case spends seconds importing torch),
running the module as `python -m` does (runpy, `__main__`); two cases also run in a fresh interpreter to show
that the two agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

SERVER = r"""
import json, os, runpy, sys, traceback
import argparse
import dt_fast, dt_fast.bench, dt_fast.collect, dt_fast.demo, dt_fast.envs, dt_fast.train  # what dt_fast.cli imports
import dt_fast.finetune
dt_fast.train.add_arguments(argparse.ArgumentParser())  # reads the fields' help once
dt_fast.envs.close_env_ids("Hopper-v4")  # imports envpool and gymnasium once
for line in sys.stdin:
    case = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(case["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["dt_fast.cli", *case["argv"]]
        code = 0
        try:
            runpy.run_module("dt_fast.cli", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (exit.code is not None)
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""

# Train cases start from a valid tiny run (two steps of a small model), so a case that wrongly passes ends in
# seconds with exit 0 instead of training for hours.
TRAIN = [
    "train",
    "--dataset",
    "{tmp}/data.hdf5",
    "--steps",
    "2",
    "--hidden-size",
    "16",
    "--n-layer",
    "1",
    "--out",
    "{tmp}/new_run",
]
EVAL = ["eval", "{tmp}/run"]
COLLECT = ["collect", "--env", "Hopper-v4", "--policy", "random", "--episodes", "2", "--out", "{tmp}/new.hdf5"]
# Fine-tuning cases start from a valid tiny run too (one iteration of one env, 2 evaluation episodes).
FINETUNE = [
    "finetune",
    "--from",
    "{tmp}/run",
    "--dataset",
    "{tmp}/data.hdf5",
    "--online-steps",
    "1",
    "--envs-per-iteration",
    "1",
    "--eval-episodes",
    "2",
    "--batch-size",
    "4",
    "--out",
    "{tmp}/new_ft",
]

CASES = {
    # train: values of the wrong type or range, as flags
    "train steps word": [*TRAIN, "--steps", "five"],
    "train steps fraction": [*TRAIN, "--steps", "3.7"],
    "train steps zero": [*TRAIN, "--steps", "0"],
    "train steps overflow": [*TRAIN, "--steps", "1e400"],
    "train lr word": [*TRAIN, "--lr", "abc"],
    "train lr negative": [*TRAIN, "--lr", "-1"],
    "train lr nan": [*TRAIN, "--lr", "nan"],
    "train batch zero": [*TRAIN, "--batch-size", "0"],
    "train dropout one": [*TRAIN, "--dropout", "1.5"],
    "train gamma": [*TRAIN, "--gamma", "2"],
    "train device tpu": [*TRAIN, "--device", "tpu"],
    "train device cuda without one": [*TRAIN, "--device", "cuda"],
    "train precision": [*TRAIN, "--precision", "fp8"],
    "train activation": [*TRAIN, "--activation-function", "swishy"],
    "train policy": [*TRAIN, "--policy", "gaussian"],
    "train seed negative": [*TRAIN, "--seed", "-1"],
    "train sampler threads": [*TRAIN, "--sampler-threads", "1000"],
    "train save minutes": [*TRAIN, "--save-minutes", "-1"],
    "train heads": [*TRAIN, "--hidden-size", "30", "--n-head", "4"],
    "train nproc zero": [*TRAIN, "--nproc", "0"],
    "train nproc word": [*TRAIN, "--nproc", "x"],
    "train unknown flag": [*TRAIN, "--learning-rate", "0.1"],
    "train context longer than episodes": [*TRAIN, "--context-len", "5000"],
    # train: config files
    "train config missing": [*TRAIN, "--config", "{tmp}/missing.yaml"],
    "train config directory": [*TRAIN, "--config", "{tmp}/folder.yaml"],
    "train config malformed yaml": [*TRAIN, "--config", "{tmp}/malformed.yaml"],
    "train config malformed json": [*TRAIN, "--config", "{tmp}/malformed.json"],
    "train config fraction": [*TRAIN, "--config", "{tmp}/fraction.yaml"],
    "train config word": [*TRAIN, "--config", "{tmp}/word.yaml"],
    "train config unknown key": [*TRAIN, "--config", "{tmp}/unknown.yaml"],
    "train config list": [*TRAIN, "--config", "{tmp}/list.yaml"],
    "train config empty": [*TRAIN, "--config", "{tmp}/empty.yaml"],
    "train config binary": [*TRAIN, "--config", "{tmp}/binary.yaml"],
    "train config toml": [*TRAIN, "--config", "{tmp}/run.toml"],
    # train: datasets
    "train dataset missing": [*TRAIN, "--dataset", "{tmp}/missing.hdf5"],
    "train dataset junk": [*TRAIN, "--dataset", "{tmp}/junk.hdf5"],
    "train dataset text": [*TRAIN, "--dataset", "{tmp}/notes.txt"],
    "train dataset empty folder": [*TRAIN, "--dataset", "{tmp}/empty_dir"],
    "train dataset strings": [*TRAIN, "--dataset", "{tmp}/strings.hdf5"],
    "train dataset complex": [*TRAIN, "--dataset", "{tmp}/complex.npz"],
    "train dataset half terminal": [*TRAIN, "--dataset", "{tmp}/half_terminal.npz"],
    "train dataset nan": [*TRAIN, "--dataset", "{tmp}/nan.npz"],
    "train dataset no env id": [*TRAIN, "--dataset", "{tmp}/no_env.npz"],
    "train unknown env": [*TRAIN, "--env", "Hoper-v4"],
    "train env of other sizes": [*TRAIN, "--env", "HalfCheetah-v4"],
    # train: outputs and resume
    "train out existing run": [*TRAIN, "--out", "{tmp}/run"],
    "train out is a file": [*TRAIN, "--out", "{tmp}/notes.txt"],
    "train out under a file": [*TRAIN, "--out", "{tmp}/notes.txt/run"],
    "train resume not a run": [*TRAIN, "--resume", "{tmp}/empty_dir"],
    "train resume missing": [*TRAIN, "--resume", "{tmp}/missing_run"],
    "train resume and overwrite": [*TRAIN, "--resume", "{tmp}/run", "--overwrite"],
    # finetune
    "finetune no from": ["finetune", "--out", "{tmp}/new_ft"],
    "finetune from missing": [*FINETUNE, "--from", "{tmp}/missing_run"],
    "finetune from not a checkpoint": [*FINETUNE, "--from", "{tmp}/empty_dir"],
    "finetune from a file": [*FINETUNE, "--from", "{tmp}/notes.txt"],
    "finetune no dataset named": [a for a in FINETUNE if a not in ("--dataset", "{tmp}/data.hdf5")],
    "finetune dataset missing": [*FINETUNE, "--dataset", "{tmp}/missing.hdf5"],
    "finetune env of other sizes": [*FINETUNE, "--env", "HalfCheetah-v4"],
    "finetune unknown env": [*FINETUNE, "--env", "Hoper-v4"],
    "finetune online steps zero": [*FINETUNE, "--online-steps", "0"],
    "finetune online steps word": [*FINETUNE, "--online-steps", "many"],
    "finetune capacity zero": [*FINETUNE, "--capacity", "0"],
    "finetune mode": [*FINETUNE, "--mode", "fast"],
    "finetune updates per step zero": [*FINETUNE, "--updates-per-step", "0"],
    "finetune out existing run": [*FINETUNE, "--out", "{tmp}/run"],
    "finetune resume a training run": [*FINETUNE, "--resume", "{tmp}/run"],
    "finetune resume and overwrite": [*FINETUNE, "--resume", "{tmp}/run", "--overwrite"],
    # demo
    "demo online steps zero": ["demo", "--online", "--online-steps", "0"],
    "demo online from missing": ["demo", "--online", "--from", "{tmp}/missing_run"],
    "demo from without online": ["demo", "--from", "{tmp}/run"],
    "demo steps zero": ["demo", "--steps", "0"],
    "demo steps word": ["demo", "--steps", "abc"],
    "demo episodes zero": ["demo", "--episodes", "0"],
    "demo seed negative": ["demo", "--seed", "-1"],
    "demo out existing run": ["demo", "--out", "{tmp}/run"],
    "demo out is a file": ["demo", "--out", "{tmp}/notes.txt"],
    "demo unknown flag": ["demo", "--fast"],
    # eval
    "eval no checkpoint argument": ["eval"],
    "eval missing checkpoint": ["eval", "{tmp}/missing_run"],
    "eval checkpoint is a file": ["eval", "{tmp}/notes.txt"],
    "eval checkpoint is not one": ["eval", "{tmp}/empty_dir", "--env", "Hopper-v4"],
    "eval episodes zero": [*EVAL, "--episodes", "0"],
    "eval episodes word": [*EVAL, "--episodes", "many"],
    "eval num envs zero": [*EVAL, "--num-envs", "0"],
    "eval mode": [*EVAL, "--mode", "fast"],
    "eval target word": [*EVAL, "--target-return", "high"],
    "eval plot suffix": [*EVAL, "--plot", "{tmp}/plot.txt"],
    "eval video suffix": [*EVAL, "--video", "{tmp}/video.txt"],
    "eval unknown env": [*EVAL, "--env", "Hoper-v4"],
    "eval env of other sizes": [*EVAL, "--env", "HalfCheetah-v4"],
    "eval backend": [*EVAL, "--backend", "gpu"],
    # collect
    "collect no arguments": ["collect"],
    "collect episodes zero": [*COLLECT, "--episodes", "0"],
    "collect episodes word": [*COLLECT, "--episodes", "two"],
    "collect unknown env": [*COLLECT, "--env", "Hoper-v4"],
    "collect missing policy file": [*COLLECT, "--policy", "{tmp}/missing.npz"],
    "collect noise negative": [*COLLECT, "--noise", "-1"],
    "collect save policy of random": [*COLLECT, "--save-policy", "{tmp}/p.npz"],
    # bench
    "bench unknown flag": ["bench", "--quick"],
    "bench argument": ["bench", "all"],
    # no subcommand
    "no command": [],
    "unknown command": ["serve"],
    # outputs and environments
    "eval video into a missing folder": [*EVAL, "--episodes", "1", "--video", "{tmp}/no_dir/v.mp4"],
    "collect existing output": [*COLLECT, "--out", "{tmp}/existing.hdf5"],
    "collect output in a missing folder": [*COLLECT, "--out", "{tmp}/no_dir/sub/d.hdf5"],
    "collect discrete env": [*COLLECT, "--env", "CartPole-v1"],
    "train discrete env": [*TRAIN, "--env", "CartPole-v1"],
    "eval discrete env": [*EVAL, "--env", "CartPole-v1"],
}


def write_inputs(tmp: Path) -> None:
    """The files the cases point at: a valid dataset and run, and bad ones of every kind."""
    from dt_fast import DecisionTransformer, DecisionTransformerConfig, checkpoint
    from dt_fast.train import TrainConfig

    rng = np.random.default_rng(0)
    n = 200
    terminals = np.zeros(n, bool)
    terminals[49::50] = True
    good = {
        "observations": rng.normal(size=(n, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": np.zeros(n, bool),
    }
    with h5py.File(tmp / "data.hdf5", "w") as f:
        f.attrs["env_id"] = "Hopper-v4"
        for k, v in good.items():
            f[k] = v
    with h5py.File(tmp / "strings.hdf5", "w") as f:
        f.attrs["env_id"] = "Hopper-v4"
        for k, v in (good | {"observations": np.full((n, 11), b"x")}).items():
            f[k] = v
    np.savez(tmp / "complex.npz", **good | {"actions": good["actions"] * 1j}, env_id="Hopper-v4")
    np.savez(tmp / "half_terminal.npz", **good | {"terminals": terminals * 0.5}, env_id="Hopper-v4")
    np.savez(tmp / "nan.npz", **good | {"rewards": np.full(n, np.nan, np.float32)}, env_id="Hopper-v4")
    np.savez(tmp / "no_env.npz", **good)
    (tmp / "existing.hdf5").write_bytes((tmp / "data.hdf5").read_bytes())  # an output that must not be replaced
    (tmp / "junk.hdf5").write_bytes(b"\x00garbage" * 64)
    (tmp / "notes.txt").write_text("not a dataset\n")
    (tmp / "empty_dir").mkdir()
    (tmp / "folder.yaml").mkdir()
    for name, text in (
        ("malformed.yaml", "steps: [1\n  x: :\n"),
        ("malformed.json", '{"steps": '),
        ("fraction.yaml", "steps: 3.7\n"),
        ("word.yaml", "steps: five\n"),
        ("unknown.yaml", "learning_rate: 0.1\n"),
        ("list.yaml", "- 1\n"),
        ("empty.yaml", ""),
        ("run.toml", "steps = 2\n"),
    ):
        (tmp / name).write_text(text)
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01")
    run = tmp / "run"
    model = DecisionTransformer(
        DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=16, n_layer=1, max_ep_len=1000)
    )
    model.save_pretrained(run)
    checkpoint.write_metadata(
        run,
        checkpoint.Metadata(
            state_mean=[0.0] * 11,
            state_std=[1.0] * 11,
            scale=1000.0,
            context_len=20,
            target_return=3600.0,
            env_id="Hopper-v4",
        ),
    )
    torch.save({"step": 2}, run / checkpoint.TRAIN_STATE_NAME)
    import dataclasses

    checkpoint.write_train_config(run, dataclasses.asdict(TrainConfig(out=str(run), steps=2)))
    (run / checkpoint.LOG_NAME).write_text("step,key,value\n2,loss,0.5\n")


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """Run `python -m dt_fast.cli ARGV` in a forked process in `tmp`; returns (exit code, stdout, stderr)."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[1],
    )
    logs = tmp_path_factory.mktemp("logs")

    def run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
        out, err = logs / "stdout", logs / "stderr"
        server.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}) + "\n")
        server.stdin.flush()
        code = json.loads(server.stdout.readline())
        return code, out.read_text(), err.read_text()

    yield run
    server.stdin.close()
    server.wait(timeout=60)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("inputs")
    write_inputs(tmp)
    return tmp


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_changes_nothing(runner, inputs: Path, name: str) -> None:
    argv = [a.replace("{tmp}", str(inputs)) for a in CASES[name]]
    before = hashes(inputs)
    code, _, err = runner(argv, inputs)
    assert code != 0, f"{name}: exit 0\n{err[-2000:]}"
    assert "Traceback" not in err, f"{name}:\n{err[-3000:]}"
    assert len(err.splitlines()) == 1, f"{name}: {len(err.splitlines())} lines on stderr:\n{err[-3000:]}"
    assert err.startswith("dt-fast"), err
    assert hashes(inputs) == before, f"{name} changed files"


@pytest.mark.parametrize("name", ["train config fraction", "eval episodes word"])
def test_a_fresh_interpreter_agrees_with_the_forked_one(runner, inputs: Path, name: str) -> None:
    argv = [a.replace("{tmp}", str(inputs)) for a in CASES[name]]
    fresh = subprocess.run(
        [sys.executable, "-m", "dt_fast.cli", *argv],
        capture_output=True,
        text=True,
        cwd=inputs,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == runner(argv, inputs)


# --- the one error path of dt_fast.cli.main ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, line",
    [
        (ValueError("bad value\n  on two lines"), "dt-fast bench: error: bad value; on two lines"),
        (FileNotFoundError("x.hdf5: no such file"), "dt-fast bench: error: x.hdf5: no such file"),
        (PermissionError(13, "Permission denied", "x"), "dt-fast bench: error: [Errno 13] Permission denied: 'x'"),
        (
            ModuleNotFoundError("No module named 'envpool'", name="envpool"),
            "dt-fast bench: error: No module named 'envpool': a dependency is missing",
        ),
        (FloatingPointError("loss is nan at step 3; lower --lr"), "dt-fast bench: error: loss is nan at step 3"),
    ],
)
def test_known_errors_are_one_line_and_exit_2(monkeypatch, capsys, error: Exception, line: str) -> None:
    from dt_fast import bench, cli

    def fail(args) -> int:
        raise error

    monkeypatch.setattr(bench, "run", fail)
    assert cli.main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err


def test_unknown_errors_keep_their_traceback_and_ctrl_c_exits_130(monkeypatch, capsys) -> None:
    from dt_fast import bench, cli

    def bug(args) -> int:
        raise TypeError("a bug in dt_fast")

    monkeypatch.setattr(bench, "run", bug)
    with pytest.raises(TypeError, match="a bug in dt_fast"):
        cli.main(["bench"])

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run", interrupted)
    assert cli.main(["bench"]) == 130
    assert capsys.readouterr().err == ""


def test_help_of_every_subcommand_shows_its_defaults(capsys) -> None:
    """Options with a default say it in --help (train's flags default to None and write theirs into the text)."""
    import argparse

    from dt_fast.cli import build_parser, main

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"collect", "demo", "train", "finetune", "eval", "bench"}
    for name, parser in commands.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for action in parser._actions:
            if action.option_strings and action.default not in (None, argparse.SUPPRESS):
                help_text = " ".join(parser._get_formatter()._get_help_string(action).split())
                assert "%(default)s" in help_text or "(default: " in help_text, (name, action.option_strings)
                rendered = (help_text % {"default": action.default}) if "%(default)" in help_text else help_text
                assert rendered in text, (name, rendered)


def test_demo_trains_into_a_free_run_directory(tmp_path: Path, monkeypatch) -> None:
    """`make demo` twice: the second run goes to runs/demo-2 instead of replacing the first (or failing)."""
    from dt_fast.checkpoint import LOG_NAME
    from dt_fast.demo import free_run_dir

    monkeypatch.chdir(tmp_path)
    assert free_run_dir("runs/demo") == Path("runs/demo")
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    assert free_run_dir("runs/demo") == Path("runs/demo")  # an empty directory holds no run
    (tmp_path / "runs" / "demo" / LOG_NAME).write_text("step,key,value\n")
    assert free_run_dir("runs/demo") == Path("runs/demo-2")
    (tmp_path / "runs" / "demo-2").mkdir()
    (tmp_path / "runs" / "demo-2" / LOG_NAME).write_text("step,key,value\n")
    assert free_run_dir("runs/demo") == Path("runs/demo-3")
