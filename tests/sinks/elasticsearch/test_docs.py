"""docs/sinks/elasticsearch.md matches the code: its examples compile and their imports exist,
the lane options it lists are the sink's, and its names are the ones the sink builds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sinks.elasticsearch import DELETED_FIELD, DOCUMENT_FIELD, ElasticsearchSinkSettings
from sinks.elasticsearch.mapping import _OPTIONS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "sinks" / "elasticsearch.md"


def test_the_examples_compile_and_their_imports_exist() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "elasticsearch.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        imports = [line for line in block.splitlines() if line.startswith("from ")]
        exec("\n".join(imports), {})


def test_documented_options_and_names_are_the_sinks() -> None:
    text = PAGE.read_text()
    for option in _OPTIONS:
        assert f"`{option}`" in text, option
    for name in ElasticsearchSinkSettings.model_fields:
        assert f"`{name}`" in text, name
    assert f"`{DOCUMENT_FIELD}`" in text and f"`{DELETED_FIELD}`" in text
    default = ElasticsearchSinkSettings()
    assert f"`{default.checkpoint_index}`" in text
