"""The benchmark suite's plumbing (not its speed): README block rewriting, table rows, `dt-fast bench` errors."""

from pathlib import Path

import pytest

import dt_fast
from benchmarks.suite import COLUMNS, END, HEADERS, START, markdown_table, replace_block, row
from dt_fast.cli import main


def test_replace_block_rewrites_only_between_markers() -> None:
    text = f"# title\nnumbers 1.23 by hand\n{START}\nold table\n{END}\ntail\n"
    out = replace_block(text, "| new |")
    assert out == f"# title\nnumbers 1.23 by hand\n{START}\n| new |\n{END}\ntail\n"
    assert replace_block(out, "| new |") == out  # idempotent


@pytest.mark.parametrize("text", ["no markers", f"{END}\n{START}", f"{START} only"])
def test_replace_block_without_markers_names_the_file(text: str) -> None:
    with pytest.raises(ValueError, match=r"README\.md: needs the markers"):
        replace_block(text, "x", "README.md")


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


def test_cli_bench_outside_a_checkout_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dt_fast, "__file__", str(tmp_path / "site-packages" / "dt_fast" / "__init__.py"))
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "dt-fast bench: error: the benchmarks are not importable" in err
    assert "source checkout" in err and str(tmp_path / "benchmarks" / "suite.py") in err
