"""The checks of `make docs`: pdoc fails on its warnings, and tests/doc_links.py finds references pdoc left unlinked."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.doc_links import unresolved

PDOC = [
    sys.executable,
    "-W",
    "error::UserWarning",
    "-W",
    "error::RuntimeWarning",
    "-m",
    "pdoc",
    "--docformat",
    "google",
    "--output-directory",
]  # as the Makefile's docs target runs it


def write_package(root: Path, body: str) -> None:
    """A package `docpkg` under root whose __init__.py is `body`."""
    (root / "docpkg").mkdir()
    (root / "docpkg" / "__init__.py").write_text(textwrap.dedent(body))


def pdoc(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PDOC, str(out), "docpkg"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
    )


def test_unresolved_finds_plain_code_references_only():
    html = (
        '<code>Policy.act</code> <code><a href="#Policy">Policy</a></code> <code>obs</code> '
        "<code>dt_fast.envs</code> <code>config.out</code> <code>--steps 20</code>"
    )
    assert unresolved(html, {"Policy", "Trainer"}) == ["Policy.act", "dt_fast.envs"]


def test_a_broken_reference_is_left_unlinked_by_pdoc_and_found(tmp_path):
    write_package(
        tmp_path,
        '''
        """A package."""
        __all__ = ["Widget"]

        class Widget:
            """See `Widget.spin` and `Widget.turn`."""

            def spin(self) -> None:
                """Spin."""
        ''',
    )
    proc = pdoc(tmp_path, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert unresolved((tmp_path / "out" / "docpkg.html").read_text(), {"Widget"}) == ["Widget.turn"]


def test_pdoc_fails_on_a_name_in_all_that_does_not_resolve(tmp_path):
    write_package(
        tmp_path,
        '''
        """A package."""
        __all__ = ["missing"]
        ''',
    )
    proc = pdoc(tmp_path, tmp_path / "out")
    assert proc.returncode != 0
    assert "missing" in proc.stderr
