"""The suite's inference peer (not its speed): transformers' model exported to ONNX and run by ONNX Runtime gives
transformers' get_action actions, at batch 1 on the blog's window and at batch B on full windows."""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

from dt_fast.bench import peers  # noqa: E402
from dt_fast.bench.reference import get_action  # noqa: E402

S, A, K = 5, 2, 6


@pytest.fixture(scope="module")
def model_and_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    torch.manual_seed(0)
    config = transformers.DecisionTransformerConfig(
        state_dim=S, act_dim=A, hidden_size=32, n_layer=2, n_head=1, max_ep_len=100
    )
    model = transformers.DecisionTransformerModel(config).eval()
    path = peers.export_onnx(model, tmp_path_factory.mktemp("onnx") / "dt.onnx", K)
    assert not model.training  # the exporter restores its module's mode: dropout stays off in the reference
    return model, peers.ort_session(Path(path), threads=1)


@pytest.mark.parametrize("T", [1, K - 1, K, K + 7])
def test_ort_get_action_equals_transformers(model_and_session: tuple, T: int) -> None:
    """Window filling (left padding) and sliding: the last step's action within 1e-4."""
    model, session = model_and_session
    rng = np.random.default_rng(T)
    states = rng.normal(size=(T, S)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(T, A)).astype(np.float32)
    rtg, timesteps = rng.normal(size=T).astype(np.float32), np.arange(T)
    with torch.no_grad():
        expected = get_action(
            model,
            torch.from_numpy(states),
            torch.from_numpy(actions),
            None,
            torch.from_numpy(rtg),
            torch.from_numpy(timesteps),
            max_length=K,
        ).numpy()
    got = peers.ort_get_action(session, states, actions, rtg, timesteps, K)
    assert got.shape == (A,)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_ort_latencies_checks_every_timed_step(model_and_session: tuple) -> None:
    model, session = model_and_session
    latencies, worst = peers.ort_latencies(session, model, 8, K, np.random.default_rng(0))
    assert latencies.shape == (8,) and (latencies > 0).all()
    assert 0 <= worst < 1e-4


def test_ort_batch_equals_transformers(model_and_session: tuple) -> None:
    """The exported batch axis is dynamic: 3 full windows give transformers' 3 rows of action predictions."""
    model, session = model_and_session
    rng = np.random.default_rng(1)
    window = {
        "states": rng.normal(size=(3, K, S)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(3, K, A)).astype(np.float32),
        "returns_to_go": rng.normal(size=(3, K, 1)).astype(np.float32),
        "timesteps": np.tile(np.arange(10, 10 + K), (3, 1)),
        "attention_mask": np.ones((3, K), np.int64),
    }
    with torch.no_grad():
        expected = peers.ActionHead(model)(*(torch.from_numpy(window[name]) for name in peers.INPUTS)).numpy()
    got = session.run(None, window)[0]
    assert got.shape == (3, K, A)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
