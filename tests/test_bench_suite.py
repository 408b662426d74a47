"""The benchmark suite's plumbing (not its speed): rows, the table, `--rows`, `--out`, errors of `dt-fast bench`."""

import json
import sys
from pathlib import Path

import pytest

from dt_fast.bench import GROUPS, parse_rows, suite
from dt_fast.bench.policy import step_cost
from dt_fast.bench.suite import COLUMNS, HEADERS, markdown_table, row
from dt_fast.cli import main
from dt_fast.config import DecisionTransformerConfig

HARDWARE = {
    "matmul_flops_per_s_1_thread": 1e11,
    "matmul_flops_per_s_all_threads": 2e11,
    "memcpy_bytes_per_s": 3e10,
    "torch_threads": 2,
}


def test_row_ratios_are_oriented_higher_is_better() -> None:
    rate = row("rate", 300.0, 100.0, 600.0, "ref")
    assert (rate["x_reference"], rate["of_bound"]) == (3.0, 0.5)
    latency = row("latency", 50.0, 200.0, 25.0, "ref", lower_is_better=True)
    assert (latency["x_reference"], latency["of_bound"]) == (4.0, 0.5)
    assert row("no reference", 1.0, None, None, "")["x_reference"] is None


def test_markdown_table_has_one_cell_per_column() -> None:
    table = markdown_table([row("a", 1234.5, None, 2.0, "ref", "bound")]).splitlines()
    assert table[0] == "| " + " | ".join(HEADERS) + " |"
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)
    assert table[2] == "| a | 1,234 |  |  | 2 | 617 | ref | bound |"


def test_groups_of_the_cli_are_the_suites() -> None:
    assert tuple(suite.ROWS) == GROUPS


def test_parse_rows_keeps_the_suites_order() -> None:
    assert parse_rows("policy, sampler") == ["sampler", "policy"]
    assert parse_rows(",".join(GROUPS)) == list(GROUPS)
    with pytest.raises(ValueError, match=r"--rows 'sampler,micro': unknown group micro; choose from sampler"):
        parse_rows("sampler,micro")
    with pytest.raises(ValueError, match=r"unknown group \(none given\)"):
        parse_rows(" , ")


def test_bounds_count_the_engines_flops_at_most_the_plans() -> None:
    """The policy rows' bound uses the engine's FLOPs: never more than the pruned plan's, so it is not beatable by
    the plan the engine runs."""
    cfg = DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000)
    for mode in ("exact", "rolling"):
        for t in (5, 50):
            engine, _ = step_cost(cfg, mode, t, absorbed=True)
            plan, _ = step_cost(cfg, mode, t)
            assert 0 < engine <= plan


def fake_suite(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the machine measurement and the row groups by instant fakes; returns the list of calls."""
    calls = []
    monkeypatch.setattr(suite, "hardware", lambda: HARDWARE)
    fakes = {
        name: (lambda hw, name=name: calls.append(name) or [row(f"{name} rate", 2.0, 1.0, 4.0, "ref")])
        for name in GROUPS
    }
    monkeypatch.setattr(suite, "ROWS", fakes)
    return calls


def test_bench_writes_only_into_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = fake_suite(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("untouched\n")
    assert main(["bench", "--rows", "eval,sampler", "--out", "results"]) == 0
    assert calls == ["sampler", "eval"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "results"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["suite.json", "suite.md"]
    assert (tmp_path / "README.md").read_text() == "untouched\n"
    doc = json.loads((tmp_path / "results" / "suite.json").read_text())
    assert doc["groups"] == ["sampler", "eval"] and doc["hardware"] == HARDWARE
    assert doc["command"] == "dt-fast bench --rows sampler,eval --out results"
    assert {"date", "cpu", "torch_threads", "dt_fast", "load_average"} <= set(doc)
    assert [r["measure"] for r in doc["rows"]] == ["sampler rate", "eval rate"]
    md = (tmp_path / "results" / "suite.md").read_text()
    assert md.startswith("`dt-fast bench --rows sampler,eval --out results`") and "| sampler rate | 2 | 1 |" in md
    assert "sampler rate" in capsys.readouterr().out


def test_bench_default_out_is_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_suite(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--rows", "sampler"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.json", "suite.md"]


def test_bench_refuses_to_overwrite_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = fake_suite(monkeypatch)
    (tmp_path / "suite.json").write_text("old\n")
    assert main(["bench", "--rows", "sampler", "--out", str(tmp_path)]) == 2
    assert calls == [] and (tmp_path / "suite.json").read_text() == "old\n"
    assert "suite.json exists: pass --overwrite" in capsys.readouterr().err
    assert main(["bench", "--rows", "sampler", "--out", str(tmp_path), "--overwrite"]) == 0
    assert calls == ["sampler"] and json.loads((tmp_path / "suite.json").read_text())["groups"] == ["sampler"]


def test_bench_out_that_is_a_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = fake_suite(monkeypatch)
    (tmp_path / "f").write_text("x")
    assert main(["bench", "--rows", "sampler", "--out", str(tmp_path / "f")]) == 2
    assert calls == [] and f"--out {tmp_path / 'f'}: not a directory" in capsys.readouterr().err


def test_bench_unknown_rows_is_one_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--rows", "nope"]) == 2
    assert "dt-fast bench: error: --rows 'nope': unknown group nope" in capsys.readouterr().err


def test_bench_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["bench", "--rows", "sampler"]) == 2
    assert "dt-fast bench needs transformers: pip install 'dt-fast[bench]'" in capsys.readouterr().err
