"""dt_fast/bench/odt.py (the suite's odt rows, benchmarks/bench_odt.py online) runs both sides (the official ODT
loop and dt_fast's Finetuner) from one checkpoint at tiny settings and reports positive rates and ratios for every
side (not its speed)."""

from __future__ import annotations

import pytest
import torch

from dt_fast import DecisionTransformer, DecisionTransformerConfig
from dt_fast.checkpoint import Metadata, write_metadata
from dt_fast.data import DEFAULT_DATASET, bundled_path, load_dataset

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")
pytest.importorskip("envpool")


def tiny_hopper_checkpoint(path) -> None:
    """A small stochastic Hopper checkpoint naming the embedded dataset (its statistics), context 5."""
    data = load_dataset(DEFAULT_DATASET)
    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=16, n_layer=1, n_head=2, max_ep_len=1000)
    DecisionTransformer(cfg, stochastic=True).save_pretrained(path)
    write_metadata(
        path,
        Metadata(
            state_mean=data.state_mean,
            state_std=data.state_std,
            scale=1000.0,
            context_len=5,
            target_return=3600.0,
            env_id="Hopper-v4",
            action_head="stochastic",
            dataset={"path": str(bundled_path(DEFAULT_DATASET))},
        ),
    )


def test_the_online_bench_runs_every_side_and_reports_positive_rates(tmp_path, one_torch_thread) -> None:
    from dt_fast.bench.odt import MODES, REFERENCE, online_rounds, online_summary

    tiny_hopper_checkpoint(tmp_path)
    rows = online_rounds(tmp_path, envs=2, updates=2, batch=4, rounds=2, warmup_updates=1)
    sides = [REFERENCE, *(f"dt_fast {mode}" for mode in MODES)]
    assert [r["side"] for r in rows] == sides + sides[::-1]  # the order alternates between rounds
    for r in rows:
        assert r["transitions"] >= 2 and r["env_steps"] >= r["transitions"], r  # one whole episode per env
        assert r["collect_s"] > 0 and r["train_s"] > 0 and r["total_s"] >= r["collect_s"] + r["train_s"] - 1e-6
        assert r["env_steps_per_s"] > 0 and r["updates_per_s"] > 0
    summary = online_summary(rows)
    assert set(summary) == set(sides)
    for side in sides:
        assert all(v > 0 for v in summary[side].values()), summary[side]
    assert summary[REFERENCE]["collection_x_reference"] == pytest.approx(1.0)
