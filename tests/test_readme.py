"""Every Python example in the README runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes on 2 cores: not in CI's second pass (generic CPU kernels)

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(?:<!-- file: (?P<file>[\w.]+) -->\n)?```python\n(?P<code>.*?)```", re.S)


def readme_blocks() -> tuple[dict[str, str], list[str]]:
    files, snippets = {}, []
    for match in BLOCK.finditer(README.read_text()):
        if match["file"]:
            files[match["file"]] = match["code"]
        else:
            snippets.append(match["code"])
    return files, snippets


FILES, SNIPPETS = readme_blocks()


def test_readme_has_examples():
    assert "my_methods.py" in FILES
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_example_runs(index, tmp_path):
    for name, code in FILES.items():
        (tmp_path / name).write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", SNIPPETS[index]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README example {index} failed:\n{SNIPPETS[index]}\n{result.stderr}"


def test_readme_embeds_the_current_quickstart_leaderboard():
    """The README's quickstart block is what the committed records give (regenerate it with
    `namex-bench report quickstart --readme README.md`)."""
    from namex_bench.report.write import readme_block

    root = README.parent / "results"
    assert readme_block(root, "quickstart") in README.read_text()
