"""Every example in examples/ runs, and the main one prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120
    )
    assert 0 == done.returncode, done.stderr


def test_batch_example_prints_total_and_diagram() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES[0].parent / "batch.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "run():  total = 120" in done.stdout
    assert "arun(): total = 120" in done.stdout
    assert "flowchart TD" in done.stdout
    assert '["Parallel Workers"]' in done.stdout
