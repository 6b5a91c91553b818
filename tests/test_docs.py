"""Every ``python`` code block of docs/*.md runs as pasted, in a fresh interpreter.

A block that cannot run here says so in the doc, right above it, with
``<!-- not run in tests: <reason> -->`` (e.g. it downloads weights, or needs a GPU); the test
checks that such a reason is given and skips the block with it.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(
    r"(?:<!-- not run in tests: (?P<why>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", flags=re.S
)
CASES = [(doc.name, i, m.group("code"), m.group("why"))
         for doc in sorted(DOCS.glob("*.md"))
         for i, m in enumerate(BLOCK.finditer(doc.read_text()))]


def test_docs_have_code():
    assert {"graph.md", "training.md", "pretrained.md", "export.md"} <= {c[0] for c in CASES}


@pytest.mark.parametrize("doc, index, code, why", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_doc_block_runs(doc, index, code, why, tmp_path):
    if why is not None:
        assert why.strip(), f"{doc} block {index}: say why it is not run"
        pytest.skip(f"{doc} block {index}: {why.strip()}")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{doc} block {index}:\n{result.stderr[-3000:]}"
