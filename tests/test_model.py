"""DecisionTransformer against transformers.DecisionTransformerModel: outputs, gradients, checkpoints."""

import itertools

import pytest
import torch
import transformers
from transformers import DecisionTransformerModel

from dt_fast import DecisionTransformer, DecisionTransformerConfig

transformers.logging.set_verbosity_error()

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
SIZES = [(11, 3), (17, 6), (17, 6), (5, 1), (23, 8)]  # Hopper, HalfCheetah, Walker2d, odd ones


def grid() -> list[dict]:
    """A covering grid: every value of every axis appears, paired with varied values of the others."""
    cases = []
    for i, (n_layer, n_head, hidden) in enumerate(itertools.product([1, 2, 3, 4], [1, 2, 4], [64, 128])):
        state_dim, act_dim = SIZES[i % len(SIZES)]
        cases.append(
            dict(
                n_layer=n_layer,
                n_head=n_head,
                hidden_size=hidden,
                state_dim=state_dim,
                act_dim=act_dim,
                action_tanh=i % 2 == 0,
                activation_function=("relu", "gelu_new")[(i // 2) % 2],
                max_ep_len=200,
            )
        )
    return cases


def batch(cfg: dict, B: int, T: int, seed: int) -> dict[str, torch.Tensor]:
    """Random inputs with left padding: row b has a random number of valid steps in 1..T."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] >= (T - lengths)[:, None]).long()  # (B, T), zeros on the left
    return dict(
        states=torch.randn(B, T, cfg["state_dim"], generator=g),
        actions=torch.randn(B, T, cfg["act_dim"], generator=g),
        returns_to_go=torch.randn(B, T, 1, generator=g),
        timesteps=torch.randint(0, cfg["max_ep_len"], (B, T), generator=g),
        attention_mask=mask,
    )


def hf_model(cfg: dict, **overrides) -> DecisionTransformerModel:
    torch.manual_seed(hash(tuple(sorted(cfg.items()))) % 2**31)
    model = DecisionTransformerModel(transformers.DecisionTransformerConfig(**{**cfg, **overrides}))
    with torch.no_grad():  # LayerNorms and biases start at 1 / 0: perturb them so that loading them is tested
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_outputs(model: DecisionTransformerModel, inputs: dict) -> tuple[torch.Tensor, ...]:
    return model(**inputs, return_dict=False)


@pytest.mark.parametrize(
    "cfg",
    grid(),
    ids=lambda c: (
        "L{n_layer}-H{n_head}-C{hidden_size}-s{state_dim}a{act_dim}-{activation_function}-tanh{action_tanh}".format(**c)
    ),
)
def test_eval_outputs_equal_in_both_directions(cfg: dict, tmp_path) -> None:
    hf = hf_model(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = DecisionTransformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    hf_back = DecisionTransformerModel.from_pretrained(tmp_path / "ours").eval()
    for B, T in [(1, 1), (1, 20), (7, 13), (7, 20)]:
        inputs = batch(cfg, B, T, seed=B * 100 + T)
        with torch.no_grad():
            expected = hf_outputs(hf, inputs)
            for got in (ours(**inputs), hf_outputs(hf_back, inputs)):
                for name, e, g in zip(("state_preds", "action_preds", "return_preds"), expected, got):
                    torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=lambda m: f"{name} B={B} T={T}: {m}")


@pytest.mark.parametrize("cfg", grid()[::5], ids=lambda c: f"L{c['n_layer']}-H{c['n_head']}-C{c['hidden_size']}")
def test_train_mode_outputs_and_gradients_equal(cfg: dict, tmp_path) -> None:
    hf = hf_model(cfg, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    hf.save_pretrained(tmp_path)
    ours = DecisionTransformer.from_pretrained(tmp_path).train()
    inputs = batch(cfg, 7, 20, seed=1)
    target = torch.randn(7, 20, cfg["act_dim"])
    hf_out, our_out = hf_outputs(hf, inputs), ours(**inputs)
    for name, e, g in zip(("state_preds", "action_preds", "return_preds"), hf_out, our_out):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=lambda m: f"train-mode {name}: {m}")
    mask = inputs["attention_mask"].bool()
    for model, out in ((hf, hf_out), (ours, our_out)):
        loss = ((out[1] - target) ** 2)[mask].mean() + out[0].square().mean() + out[2].square().mean()
        model.zero_grad()
        loss.backward()
    ours_params = dict(ours.named_parameters())
    for name, p in hf.named_parameters():
        if p.grad is None:  # GPT-2's token embedding is never used
            assert name == "encoder.wte.weight", name
            continue
        own = ours_params["encoder.wpe" if name == "encoder.wpe.weight" else name].grad
        own = own.t() if name.endswith(CONV1D) else own
        torch.testing.assert_close(own, p.grad, atol=1e-4, rtol=0, msg=lambda m: f"grad of {name}: {m}")


def test_config_json_round_trip(tmp_path) -> None:
    hf_cfg = transformers.DecisionTransformerConfig(
        state_dim=11, act_dim=3, n_layer=2, n_head=4, n_inner=96, activation_function="gelu_new", max_ep_len=1000
    )
    hf_cfg.save_pretrained(tmp_path)
    ours = DecisionTransformerConfig.from_json_file(tmp_path / "config.json")
    assert (ours.state_dim, ours.act_dim, ours.n_layer, ours.n_head, ours.inner_dim, ours.max_ep_len) == (
        11,
        3,
        2,
        4,
        96,
        1000,
    )
    (tmp_path / "config.json").write_text(ours.to_json_string())
    back = transformers.DecisionTransformerConfig.from_pretrained(tmp_path)
    for key in (
        "state_dim",
        "act_dim",
        "hidden_size",
        "max_ep_len",
        "action_tanh",
        "n_layer",
        "n_head",
        "n_inner",
        "activation_function",
        "n_positions",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "layer_norm_epsilon",
        "initializer_range",
    ):
        assert getattr(back, key) == getattr(hf_cfg, key), key


def test_defaults_equal_transformers() -> None:
    ours, theirs = DecisionTransformerConfig(), transformers.DecisionTransformerConfig()
    for key, value in ours.to_dict().items():
        if key not in ("architectures",):
            assert getattr(theirs, key) == value, key


def test_loads_pytorch_model_bin_without_pickle_code(tmp_path) -> None:
    cfg = grid()[3]
    hf = hf_model(cfg).eval()
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ours = DecisionTransformer.from_pretrained(tmp_path)
    inputs = batch(cfg, 3, 9, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs)[1], hf_outputs(hf, inputs)[1], atol=1e-5, rtol=0)
