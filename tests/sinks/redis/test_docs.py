"""docs/sinks/redis.md matches the code: its example imports resolve, its key layout is the
one the sink uses, its ACL list is the one the ACL test grants, and the public API is pinned."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sinks.redis
from sinks.redis import KeyLayout
from tests.sinks.redis.support import SINK_ACL

PAGE = Path(__file__).resolve().parents[3] / "docs" / "sinks" / "redis.md"


def test_the_example_compiles_and_its_imports_exist() -> None:
    block = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert block is not None
    code = compile(block.group(1), "redis.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert code is not None
    imports = [line for line in block.group(1).splitlines() if line.startswith("from ")]
    exec("\n".join(imports), {})


def test_the_documented_key_layout_is_the_sinks() -> None:
    text = PAGE.read_text()
    layout = KeyLayout("order", 1)
    for key in (layout.live, layout.checkpoint, layout.versions, layout.document("<key>")):
        assert f"| `{key}` |" in text, key
    assert f"`{layout.documents_pattern}`" in text


def test_the_documented_acl_is_the_tested_one() -> None:
    block = re.search(r"### ACL.*?```text\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert block is not None
    assert block.group(1).split() == SINK_ACL.split()


def test_public_api() -> None:
    assert sinks.redis.__all__ == (
        "ORDER_CACHE_PREFIX",
        "KeyLayout",
        "OrderCacheReader",
        "RedisDocumentReader",
        "RedisSink",
        "RedisSinkSettings",
    )
