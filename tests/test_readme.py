"""README.md: every ```python block runs as written from the repository root (in order, each in its own process),
and its layout table lists every module."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # per block; the blocks train a few steps and run a few short episodes


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, body) of every ```python fenced block of a Markdown text, in order."""
    pattern = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in pattern.finditer(text)]


def test_python_blocks_are_found():
    text = "text\n```python\nx = 1\n```\n```bash\nls\n```\n\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = 2\nz = 3\n")]


def test_readme_python_blocks_run():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no ```python block"
    for line, body in blocks:  # in order: a later block may use what an earlier one wrote (runs/quickstart)
        where = f"README.md block at line {line} ({body.splitlines()[0]!r})"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", body], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where} did not finish in {TIMEOUT_S} s")
        if proc.returncode != 0:
            pytest.fail(f"{where} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def layout_rows(text: str) -> list[tuple[str, str]]:
    """(path cell, description cell) of every row of the table under README's `## Layout` heading."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(path.strip(), what.strip()) for path, what in rows]


def test_layout_table_lists_every_module():
    rows = layout_rows((ROOT / "README.md").read_text())
    missing = []
    for module in sorted((ROOT / "dt_fast").rglob("*.py")):
        rel = module.relative_to(ROOT)
        if len(rel.parts) == 2:  # dt_fast/x.py: named in a path cell, as dt_fast/x.py or beside it as x.py
            found = any(
                f"`{rel.as_posix()}`" in path or (path.startswith("`dt_fast/") and f"`{rel.name}`" in path)
                for path, _ in rows
            )
        elif rel.name == "__init__.py":  # a subpackage: its row is named after its directory
            found = any(f"`{rel.parent.as_posix()}/`" in path for path, _ in rows)
        else:  # dt_fast/sub/x.py: x.py described in the row of dt_fast/sub/
            found = any(f"`{rel.parent.as_posix()}/`" in path and f"`{rel.name}`" in what for path, what in rows)
        if not found:
            missing.append(rel.as_posix())
    for directory in sorted(p for p in (ROOT / "csrc").iterdir() if p.is_dir()):
        if not any(f"`csrc/{directory.name}/`" in path for path, _ in rows):
            missing.append(f"csrc/{directory.name}/")
    for top in ("benchmarks", "examples", "tests"):
        if not any(f"`{top}/`" in path for path, _ in rows):
            missing.append(f"{top}/")
    assert not missing, f"README.md's layout table does not list {missing}"
