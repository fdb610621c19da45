"""Every Python code block in README.md and docs/*.md runs.

The blocks of one file run in order in one namespace, like a reader would
paste them into one session; each is compiled with postponed annotations
(`from __future__ import annotations`), so `list[int]` works on Python 3.8.
A block whose first line is `# not run` is skipped (for fragments that need
a server or show a deliberate error).
"""

from __future__ import annotations
import __future__

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(path: Path) -> list[str]:
    return [b for b in BLOCK.findall(path.read_text()) if not b.startswith("# not run")]


def test_docs_have_code() -> None:
    assert [] == [p.name for p in DOCS if p.name != "README.md" and not blocks(p)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_code_blocks_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # files a block writes land in a scratch folder
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for number, source in enumerate(blocks(path), 1):
        name = f"{path.name}[block {number}]"
        code = compile(source, name, "exec", __future__.annotations.compiler_flag)
        exec(code, namespace)  # running the documentation is the point
