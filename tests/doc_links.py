"""Check the API docs that pdoc wrote: every backticked reference to a dt_fast name became a link.

pdoc turns `name` in a docstring into a link when the name resolves to a documented object and leaves it as plain
code otherwise, without a warning. A reference here is a code span that is a dotted path starting with `dt_fast.`
or with a name of dt_fast.__all__ (`Policy`, `TrajectorySampler.sample`); a code span of other text (an argument,
a file name, a shell command) is not checked.

    python tests/doc_links.py build/docs     # exit 1, listing each unresolved reference and its page
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from pathlib import Path

PLAIN_CODE = re.compile(r"<code>([A-Za-z_][\w.]*)</code>")  # a code span of one identifier path, not a link


def unresolved(html: str, names: Collection[str]) -> list[str]:
    """The code spans of `html` that reference dt_fast (`dt_fast.x` or a path starting with one of `names`) and
    are not links, in order."""
    return [ref for ref in PLAIN_CODE.findall(html) if ref.split(".")[0] in names or ref.startswith("dt_fast.")]


def main(argv: list[str]) -> int:
    """Check every page under the directory argv[0]; print each unresolved reference; 1 if there is one."""
    import dt_fast

    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python tests/doc_links.py DOCS_DIR", file=sys.stderr)
        return 2
    pages = sorted(Path(argv[0]).rglob("*.html"))
    if not pages:
        print(f"{argv[0]}: no .html pages (run make docs)", file=sys.stderr)
        return 2
    broken = [(page, ref) for page in pages for ref in unresolved(page.read_text(), set(dt_fast.__all__))]
    for page, ref in broken:
        print(f"{page}: `{ref}` does not resolve to a documented object", file=sys.stderr)
    print(f"{len(pages)} pages, {len(broken)} unresolved references")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
