"""The inference peer a user would otherwise pick: transformers' DecisionTransformerModel exported to ONNX and run by
ONNX Runtime, on the blog's get_action window (the last K steps, left-padded; batch 1, or B rows of full windows).

The training peer, d3rlpy's Decision Transformer, is timed by dt_fast/bench/train.py (d3rlpy_rate). Used by the suite
(dt_fast/bench/suite.py) and tests/test_bench_peers.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import DecisionTransformerModel

from dt_fast.bench.harness import fastest_rate
from dt_fast.bench.reference import get_action

INPUTS = ("states", "actions", "returns_to_go", "timesteps", "attention_mask")


class ActionHead(torch.nn.Module):
    """transformers' model returning only the action predictions: what get_action reads."""

    def __init__(self, model: DecisionTransformerModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, K, A) action predictions for (B, K, S) states, (B, K, A) actions, (B, K, 1) returns-to-go, (B, K)
        timesteps and (B, K) attention mask."""
        return self.model(
            states=states,
            actions=actions,
            returns_to_go=returns_to_go,
            timesteps=timesteps,
            attention_mask=attention_mask,
            return_dict=False,
        )[1]


def export_onnx(model: DecisionTransformerModel, path: Path, K: int) -> Path:
    """Write `model` (eval mode) to `path` as ONNX with torch.onnx.export (the TorchScript exporter), windows of K
    steps and a dynamic batch; returns `path`."""
    S, A = model.config.state_dim, model.config.act_dim
    example = (
        torch.zeros(1, K, S),
        torch.zeros(1, K, A),
        torch.zeros(1, K, 1),
        torch.zeros(1, K, dtype=torch.long),
        torch.ones(1, K, dtype=torch.long),
    )
    # The wrapper in eval mode: the exporter restores the mode of the module it is given, recursively.
    torch.onnx.export(
        ActionHead(model).eval(),
        example,
        str(path),
        input_names=list(INPUTS),
        output_names=["action_preds"],
        dynamic_axes={name: {0: "batch"} for name in INPUTS},
        opset_version=17,
        dynamo=False,
    )
    return path


def ort_session(path: Path, threads: int) -> object:
    """An onnxruntime.InferenceSession on the CPU: `threads` intra-op threads, sequential execution, every graph
    optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_get_action(
    session: object, states: np.ndarray, actions: np.ndarray, returns_to_go: np.ndarray, timesteps: np.ndarray, K: int
) -> np.ndarray:
    """get_action on ONNX Runtime: the (A,) action of the last step from the last K of the (T, S) states, (T, A)
    actions, (T,) returns-to-go and (T,) timesteps, left-padded to K steps as the blog pads them."""
    T, S = states.shape
    n, pad = min(T, K), K - min(T, K)
    window = {
        "states": np.zeros((1, K, S), np.float32),
        "actions": np.zeros((1, K, actions.shape[1]), np.float32),
        "returns_to_go": np.zeros((1, K, 1), np.float32),
        "timesteps": np.zeros((1, K), np.int64),
        "attention_mask": np.zeros((1, K), np.int64),
    }
    window["states"][0, pad:] = states[T - n :]
    window["actions"][0, pad:] = actions[T - n :]
    window["returns_to_go"][0, pad:, 0] = returns_to_go[T - n :]
    window["timesteps"][0, pad:] = timesteps[T - n :]
    window["attention_mask"][0, pad:] = 1
    return session.run(None, window)[0][0, -1]


def ort_latencies(
    session: object, model: DecisionTransformerModel, n: int, K: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Seconds per ort_get_action call over n steps of one episode with the window sliding (after K + 30 steps),
    and the largest |ONNX Runtime - transformers get_action| over those steps' actions (computed untimed)."""
    S, A = model.config.state_dim, model.config.act_dim
    T = K + 30 + n
    states = rng.normal(size=(T, S)).astype(np.float32)
    actions = np.zeros((T, A), np.float32)
    returns_to_go, timesteps = np.full(T, 3.6, np.float32), np.minimum(np.arange(T), 999)
    out, worst = [], 0.0
    for t in range(T):
        start = time.perf_counter()
        action = ort_get_action(
            session, states[: t + 1], actions[: t + 1], returns_to_go[: t + 1], timesteps[: t + 1], K
        )
        elapsed = time.perf_counter() - start
        if t >= K + 30:
            out.append(elapsed)
            with torch.no_grad():
                expected = get_action(
                    model,
                    torch.from_numpy(states[: t + 1]),
                    torch.from_numpy(actions[: t + 1]),
                    None,
                    torch.from_numpy(returns_to_go[: t + 1]),
                    torch.from_numpy(timesteps[: t + 1]),
                    max_length=K,
                )
            worst = max(worst, float(np.abs(action - expected.numpy()).max()))
        actions[t] = action
    return np.array(out), worst


def ort_throughput(
    session: object, S: int, A: int, batch: int, K: int, rng: np.random.Generator, min_time: float = 1.5
) -> float:
    """Actions per second of ONNX Runtime over `batch` rows of full K-step windows (one action per row per run):
    the fastest run over at least `min_time` seconds."""
    window = {
        "states": rng.normal(size=(batch, K, S)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(batch, K, A)).astype(np.float32),
        "returns_to_go": np.full((batch, K, 1), 3.6, np.float32),
        "timesteps": np.tile(np.arange(100, 100 + K), (batch, 1)),
        "attention_mask": np.ones((batch, K), np.int64),
    }
    return batch * fastest_rate(lambda: session.run(None, window), min_time=min_time)
