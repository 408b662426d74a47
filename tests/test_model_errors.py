"""Bad input to DecisionTransformer: each a clear error naming what is wrong."""

import json

import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig


@pytest.fixture()
def model() -> DecisionTransformer:
    return DecisionTransformer(
        DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=1, max_ep_len=100)
    ).eval()


def inputs(B: int = 2, T: int = 5, **changes) -> dict:
    base = dict(
        states=torch.randn(B, T, 11),
        actions=torch.randn(B, T, 3),
        returns_to_go=torch.randn(B, T, 1),
        timesteps=torch.randint(0, 100, (B, T)),
        attention_mask=torch.ones(B, T),
    )
    return base | changes


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(states=torch.randn(2, 5, 12)), r"states must have shape \(2, 5, 11\)"),
        (dict(states=torch.randn(2, 5)), r"states must have shape .* got shape \(2, 5\)"),
        (dict(actions=torch.randn(2, 4, 3)), r"actions must have shape \(2, 5, 3\)"),
        (dict(returns_to_go=torch.randn(2, 5)), r"returns_to_go must have shape \(2, 5, 1\)"),
        (dict(states=torch.zeros(2, 5, 11, dtype=torch.long)), r"states must be a floating-point tensor"),
        (dict(timesteps=torch.zeros(2, 5)), r"timesteps must be an integer tensor"),
        (dict(timesteps=torch.zeros(10, dtype=torch.long)), r"timesteps must be a \(batch, steps\) tensor"),
        (dict(timesteps=torch.full((2, 5), 100)), r"timesteps must lie in \[0, max_ep_len=100\).*\[100, 100\]"),
        (dict(timesteps=torch.full((2, 5), -1)), r"timesteps must lie in"),
        (dict(attention_mask=torch.ones(2, 4)), r"attention_mask must have shape \(2, 5\)"),
        (dict(states=[[0.0]]), r"states must have shape .* got list"),
    ],
)
def test_bad_tensors(model: DecisionTransformer, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model(**inputs(**changes))


def test_directory_without_config(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json: no such config file"):
        DecisionTransformer.from_pretrained(tmp_path)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        DecisionTransformer.from_pretrained(tmp_path / "nope")


def test_directory_without_weights(model: DecisionTransformer, tmp_path) -> None:
    (tmp_path / "config.json").write_text(model.config.to_json_string())
    with pytest.raises(FileNotFoundError, match=r"no weights: expected model\.safetensors or pytorch_model\.bin"):
        DecisionTransformer.from_pretrained(tmp_path)


def test_wrong_model_type(model: DecisionTransformer, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text()) | {"model_type": "gpt2"}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"config\.json: model_type is 'gpt2', expected 'decision_transformer'"):
        DecisionTransformer.from_pretrained(tmp_path)


def test_invalid_json_and_bad_values(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DecisionTransformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "decision_transformer", "hidden_size": 30, "n_head": 4})
    )
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be divisible by n_head \(4\)"):
        DecisionTransformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"activation_function": "swiglu"}))
    with pytest.raises(ValueError, match="activation_function 'swiglu' is not supported"):
        DecisionTransformer.from_pretrained(tmp_path)


def test_weights_that_disagree_with_config(model: DecisionTransformer, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text()) | {"state_dim": 17}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=r"weight 'embed_state.weight' has shape \(32, 11\), the config implies "
        r"\(32, 17\)",
    ):
        DecisionTransformer.from_pretrained(tmp_path)
    cfg["state_dim"], cfg["n_layer"] = 11, 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing keys \['encoder\.h\.1\."):
        DecisionTransformer.from_pretrained(tmp_path)


def test_corrupt_weights(model: DecisionTransformer, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: unreadable safetensors file"):
        DecisionTransformer.from_pretrained(tmp_path)


def test_save_leaves_no_temporary_files(model: DecisionTransformer, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    torch.testing.assert_close(DecisionTransformer.from_pretrained(tmp_path).state_dict(), model.state_dict())
