"""Every ```python block of README.md runs as written from the repository root, in order, each in its own process."""

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
            proc = subprocess.run([sys.executable, "-c", body], cwd=ROOT, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where} did not finish in {TIMEOUT_S} s")
        if proc.returncode != 0:
            pytest.fail(f"{where} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
