"""dt_fast/train_graph.py: the training step a CUDA graph captures, checked on the CPU; the capture itself on a GPU.

On the CPU, on the torch path (DT_FAST_BACKEND=torch: the ops a GPU runs, not the C++ training ops), with the
optimizer a graph needs (train_graph.capturable_adamw, the schedule filling its learning-rate tensor):
- Trainer.device_step, the function GraphedTrainStep captures, trains as the eager Trainer does: the same loss and
  gradients bit for bit on the same batches and seed, parameters within float tolerance over several steps;
- it reads no tensor value back to the host and runs the same ops on the same shapes at every step, whatever the
  batch and the learning rate (a TorchDispatchMode records every op of forward, backward, clip and AdamW): what a
  graph replays is what eager would run; its loss traces in torch.compile(fullgraph=True) without a graph break;
- the optimizer and the schedule update their tensors in place (the graph holds their addresses);
- a run resumes across the two optimizer forms.
torch refuses capturable=True for CPU tensors; these tests lift that device check (adam's
_get_capturable_supported_devices) to run the capturable code path on the CPU. The capture and replay need a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dt_fast import checkpoint, train_graph
from dt_fast.train import TrainConfig, Trainer, warmup_schedule

READ_BACKS = {
    "aten._local_scalar_dense",
    "aten.item",
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.equal",
    "aten.masked_select",
    "aten._unique2",
    "aten.unique_consecutive",
}
"""Ops that bring a tensor's values to the host (.item(), a branch on a tensor, data-dependent shapes): on a GPU each
is a host synchronisation, which a CUDA graph cannot capture."""


@pytest.fixture
def torch_path(monkeypatch) -> None:
    """The torch ops (as on a GPU) and capturable AdamW allowed on the CPU."""
    monkeypatch.setenv("DT_FAST_BACKEND", "torch")
    adam = importlib.import_module("torch.optim.adam")  # the module (torch.optim.adam is the function there)
    monkeypatch.setattr(adam, "_get_capturable_supported_devices", lambda supports_xla=True: ["cpu"])


def trainer(dataset: Path, out: Path, graph_form: bool, resume: Path | None = None, **overrides) -> Trainer:
    """A small CPU Trainer; graph_form: with the optimizer and schedule a CUDA graph captures."""
    cfg = TrainConfig(
        **(
            dict(
                dataset=str(dataset),
                out=str(out),
                steps=20,
                hidden_size=32,
                n_layer=2,
                n_head=2,
                batch_size=8,
                context_len=10,
                warmup_steps=10,
                lr=1e-3,
                log_every=10,
            )
            | overrides
        )
    )
    t = Trainer(cfg, resume=resume)
    t.model.train()
    if graph_form:
        t.optimizer = train_graph.capturable_adamw(t.model.parameters(), cfg.lr, cfg.weight_decay, t.device)
        t.scheduler = warmup_schedule(t.optimizer, cfg.warmup_steps)
    return t


def static_step(t: Trainer, inputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A step as a replay runs it: the batch copied into the same input tensors, then device_step on them."""
    for key, buffer in inputs.items():
        buffer.copy_(batch[key])
    return t.device_step(inputs)


def static_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.empty_like(batch[k]) for k in train_graph.STEP_KEYS}


class OpRecorder(TorchDispatchMode):
    """Records every aten op that runs inside it with the shapes and dtypes of its tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        flat = torch.utils._pytree.tree_leaves((args, kwargs or {}))
        self.ops.append((str(func), tuple((tuple(a.shape), a.dtype) for a in flat if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))

    def names(self) -> set[str]:
        """The ops' names without their overload: aten._local_scalar_dense, aten.mm, ..."""
        return {".".join(op.split(".")[:2]) for op, _ in self.ops}


def test_the_captured_step_trains_as_the_eager_step(hopper_file: Path, tmp_path, torch_path) -> None:
    eager, graph = trainer(hopper_file, tmp_path / "eager", False), trainer(hopper_file, tmp_path / "graph", True)
    for p, q in zip(eager.model.parameters(), graph.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    batches = [eager.sampler.sample() for _ in range(6)]
    inputs = static_inputs(batches[0])
    for i, batch in enumerate(batches):
        rng = torch.get_rng_state()  # the same dropout masks for both
        want = eager.train_step(batch)
        torch.set_rng_state(rng)
        got = float(static_step(graph, inputs, batch))
        graph.scheduler.step()
        if i == 0:  # one forward and backward from the same weights: the same bits
            assert got == want
            for (name, p), q in zip(eager.model.named_parameters(), graph.model.parameters(), strict=True):
                assert (p.grad is None) == (q.grad is None), name
                if p.grad is not None:
                    torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
        else:  # AdamW's capturable and fused kernels round differently
            assert got == pytest.approx(want, rel=1e-5), i
    for (name, p), q in zip(eager.model.named_parameters(), graph.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert float(graph.optimizer.param_groups[0]["lr"]) == pytest.approx(eager.scheduler.get_last_lr()[0])
    eager.close()
    graph.close()


def test_the_step_reads_nothing_back_and_runs_the_same_ops_every_step(hopper_file: Path, tmp_path, torch_path) -> None:
    t = trainer(hopper_file, tmp_path / "run", True)
    batches = [t.sampler.sample() for _ in range(4)]
    inputs = static_inputs(batches[0])
    static_step(t, inputs, batches[0])  # warm-up: AdamW's state is created (as before a capture)
    t.scheduler.step()
    steps = []
    for batch in batches[1:]:  # new windows, new padding, a new learning rate every step
        with OpRecorder() as recorder:
            static_step(t, inputs, batch)
        t.scheduler.step()
        assert recorder.names() & READ_BACKS == set()
        steps.append(recorder.ops)
    assert {"aten.mm", "aten._foreach_norm", "aten._foreach_addcdiv_"} <= recorder.names()  # fwd/bwd, clip, AdamW
    assert steps[0] == steps[1] == steps[2]
    t.close()


def test_the_recorder_finds_what_a_graph_could_not_hold(hopper_file: Path, tmp_path, torch_path) -> None:
    """The check above can fail: the model's timestep range check, and AdamW as the Trainer builds it for an eager
    CUDA run (foreach, not capturable: the step counts live on the host), both read values back."""
    t = trainer(hopper_file, tmp_path / "run", False)
    batch = {k: v for k, v in t.sampler.sample().items() if k in train_graph.STEP_KEYS}
    with OpRecorder() as recorder:
        t.model(**batch, action_only=True)
    assert "aten._local_scalar_dense" in recorder.names()
    t.optimizer = torch.optim.AdamW(t.model.parameters(), lr=1e-3, foreach=True)
    t.device_step(batch)
    with OpRecorder() as recorder:
        t.device_step(batch)
    assert "aten._local_scalar_dense" in recorder.names()
    t.close()


def test_the_loss_traces_as_one_graph(hopper_file: Path, tmp_path, torch_path) -> None:
    """fullgraph=True raises on any graph break: a .item(), a branch on a tensor, boolean-mask indexing."""
    t = trainer(hopper_file, tmp_path / "run", True, dropout=0.0)
    batch = {k: v for k, v in t.sampler.sample().items() if k in train_graph.STEP_KEYS}
    traced = torch.compile(t.policy_loss, backend="eager", fullgraph=True)
    torch.testing.assert_close(traced(batch), t.policy_loss(batch))
    t.close()


def test_optimizer_and_schedule_update_their_tensors_in_place(hopper_file: Path, tmp_path, torch_path) -> None:
    t = trainer(hopper_file, tmp_path / "run", True)
    batches = [t.sampler.sample() for _ in range(4)]
    inputs = static_inputs(batches[0])
    static_step(t, inputs, batches[0])
    t.scheduler.step()

    def tensors() -> list[torch.Tensor]:
        group = t.optimizer.param_groups[0]
        state = [
            t.optimizer.state[p][k]
            for p in group["params"]
            if p.grad is not None
            for k in ("exp_avg", "exp_avg_sq", "step")
        ]
        return [group["lr"], *group["params"], *state]

    before = tensors()
    values = [x.clone() for x in before]
    for step, batch in enumerate(batches[1:], start=2):
        static_step(t, inputs, batch)
        t.scheduler.step()
        assert float(t.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-3 * min((step + 1) / 10, 1.0))
    after = tensors()
    assert [x.data_ptr() for x in after] == [x.data_ptr() for x in before]
    assert all(x is y for x, y in zip(after, before))
    assert not torch.equal(after[0], values[0])  # the learning rate
    assert not any(torch.equal(x, v) for x, v in zip(after[-3:], values[-3:]))  # a parameter's moments and step
    t.close()


def test_a_run_resumes_across_the_two_optimizer_forms(hopper_file: Path, tmp_path, torch_path) -> None:
    graph = trainer(hopper_file, tmp_path / "graph", True)
    inputs = static_inputs(graph.sampler.sample())
    for _ in range(3):
        static_step(graph, inputs, graph.sampler.sample())
        graph.scheduler.step()
        graph.step += 1
    graph.out.mkdir()
    checkpoint.write_train_config(graph.out, dataclasses.asdict(graph.config))  # what run() writes first
    graph.save()
    lr = float(graph.optimizer.param_groups[0]["lr"])
    # a graph run resumed without one: a float lr, fused AdamW
    eager = trainer(hopper_file, tmp_path / "graph", False, resume=tmp_path / "graph")
    group = eager.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(lr) and not isinstance(group["lr"], torch.Tensor)
    assert (group["fused"], group["capturable"]) == (True, False)
    eager.train_step(eager.sampler.sample())
    eager.save()
    back = trainer(hopper_file, tmp_path / "back", True)
    lr_tensor = back.optimizer.param_groups[0]["lr"]
    back.load_state(tmp_path / "graph")  # and back: the same lr tensor, filled; capturable AdamW
    group = back.optimizer.param_groups[0]
    assert group["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(eager.optimizer.param_groups[0]["lr"])
    assert (group["capturable"], group["foreach"]) == (True, True)
    static_step(back, inputs, back.sampler.sample())
    for t in (graph, eager, back):
        t.close()


def test_cuda_graph_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device, got device 'cpu'"):
        TrainConfig(cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph and compile are exclusive"):
        TrainConfig(device="cuda", cuda_graph=True, compile=True)
    with pytest.raises(ValueError, match="--policy stochastic runs eagerly"):
        TrainConfig(device="cuda", cuda_graph=True, policy="stochastic")
    with pytest.raises(ValueError, match="GraphedTrainStep needs a CUDA device, got cpu"):
        train_graph.GraphedTrainStep(lambda batch: batch["states"].sum(), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graphs are GPU-only")
def test_the_graphed_trainer_trains_as_the_eager_one_on_gpu(hopper_file: Path, tmp_path) -> None:
    kw = dict(
        dataset=str(hopper_file),
        steps=12,
        hidden_size=32,
        n_layer=2,
        n_head=2,
        batch_size=8,
        context_len=10,
        warmup_steps=5,
        lr=1e-3,
        dropout=0.0,
        device="cuda",
        log_every=100,
    )
    eager = Trainer(TrainConfig(out=str(tmp_path / "eager"), **kw))
    graphed = Trainer(TrainConfig(out=str(tmp_path / "graphed"), cuda_graph=True, **kw))
    for t in (eager, graphed):
        t.model.train()
    for i in range(12):  # 3 warm-up steps, the capture, then replays
        batch = eager.sampler.sample()
        assert graphed.train_step(batch) == pytest.approx(eager.train_step(batch), rel=1e-4, abs=1e-6), i
    assert graphed.graphed.graph is not None
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    eager.close()
    graphed.close()
