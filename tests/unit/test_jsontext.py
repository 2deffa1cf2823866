"""core.jsontext.dumps: the bytes json.dumps would give (as the same JSON value), the same
refusals, whichever encoder ran."""

from __future__ import annotations

import enum
import json
import math
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import jsontext


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)


@given(json_values)
def test_loads_gives_what_the_standard_library_gives(value: Any) -> None:
    """Integers past 64 bits included: orjson alone reads them as floats, silently."""
    try:
        text = _stdlib(value)
    except (ValueError, TypeError):
        return
    expected = json.loads(text)
    for form in (text, text.decode()):
        got = jsontext.loads(form)
        assert got == expected
        assert _types(got) == _types(expected)


@pytest.mark.parametrize(
    "number", [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40, -(10**19)]
)
def test_integers_at_and_past_64_bits_stay_integers(number: int) -> None:
    for text in (str(number), f'{{"n":[{number}]}}'):
        got = jsontext.loads(text)
        assert got == json.loads(text) and _types(got) == _types(json.loads(text))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


@given(json_values)
def test_dumps_gives_the_same_value_or_the_same_refusal_as_the_standard_library(
    value: Any,
) -> None:
    try:
        expected = _stdlib(value)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            jsontext.dumps(value)
        return
    got = jsontext.dumps(value)
    assert json.loads(got) == json.loads(expected)
    if not _has_float(value):
        assert got == expected  # only a float's spelling may differ (1e16 against 1e+16)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_float(v) for v in value)
    return False


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_float_anywhere_is_refused_not_written_as_null(bad: float) -> None:
    document = {"id": "o-1", "completed_at": None, "items": [{"price": 1.5}, {"price": bad}]}
    with pytest.raises(ValueError, match="Out of range float"):
        jsontext.dumps(document)


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 1, 1, tzinfo=UTC), uuid.UUID(int=1), Colour.RED, {1, 2}, b"bytes"],
    ids=["datetime", "uuid", "enum", "set", "bytes"],
)
def test_types_the_standard_library_refuses_are_refused_though_orjson_would_encode_them(
    value: Any,
) -> None:
    with pytest.raises(TypeError):
        jsontext.dumps({"at": [value]})


def test_what_orjson_refuses_the_standard_library_encodes() -> None:
    assert jsontext.dumps({"n": 2**80}) == b'{"n":1208925819614629174706176}'
    assert jsontext.dumps({1: "a", None: "b"}) == b'{"1":"a","null":"b"}'
    nested: Any = "leaf"
    for _ in range(300):  # past orjson's depth limit, within the interpreter's
        nested = [nested]
    assert json.loads(jsontext.dumps(nested)) == nested


def test_subclasses_are_encoded_as_the_standard_library_encodes_them() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    assert jsontext.dumps({"level": Level.HIGH, "flag": True}) == b'{"level":3,"flag":true}'


def test_a_lone_surrogate_and_a_cycle_raise_value_errors() -> None:
    with pytest.raises(UnicodeEncodeError):
        jsontext.dumps({"name": "\ud800"})
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="Circular"):
        jsontext.dumps(cycle)


def test_text_is_utf8_not_escaped() -> None:
    assert jsontext.dumps({"name": "Zoë 東京"}) == '{"name":"Zoë 東京"}'.encode()


HOLD_MANY = """
from core import jsontext

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

documents = [
    {"id": f"order-{i}", "items": [{"sku": f"p-{j}", "qty": 2} for j in range(3)], "at": None,
     "note": "x" * 300}
    for i in range(10_000)
]
before = rss_mb()
held = [jsontext.dumps(d) for d in documents]
print(rss_mb() - before, sum(map(len, held)) / 2**20)
"""


def test_a_batch_of_encoded_documents_takes_about_its_size_in_memory() -> None:
    """orjson's own result keeps about 4 KB of heap each: a sink holding a batch of them
    (the Redis sink holds every document of a flush): here, 39 MB for 4 MB of text."""
    done = subprocess.run(
        [sys.executable, "-c", HOLD_MANY],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    grown_mb, text_mb = map(float, done.stdout.split())
    assert text_mb > 3
    assert grown_mb < 3 * text_mb, f"{grown_mb:.1f} MB held for {text_mb:.1f} MB of text"
