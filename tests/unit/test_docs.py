"""The code blocks of the guides run, in order, and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", ["first-projection.md"])
def test_guide_code_blocks_run(page: str) -> None:
    text = (DOCS / page).read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": f"docs_{page.replace('-', '_')[:-3]}"}
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), namespace)
