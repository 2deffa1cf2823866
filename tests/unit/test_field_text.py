"""Decimal and integer fields written as text: what every sink accepts (core.schema)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.schema import decimal_from_text, integer_from_text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12.50", "12.50"),
        ("-3", "-3"),
        ("+0.5", "0.5"),
        (".5", "0.5"),
        ("1.", "1"),
        ("1e3", "1E+3"),
    ],
)
def test_plain_decimal_text_is_read(text: str, value: str) -> None:
    assert decimal_from_text(text) == Decimal(value)


@pytest.mark.parametrize(
    "text", ["1_000", " 1", "1 ", "\uff11", "NaN", "Infinity", "", "1.2.3", "0x10"]
)
def test_decimal_text_that_python_would_bend_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a decimal"):
        decimal_from_text(text)


def test_integer_text() -> None:
    assert integer_from_text("-42") == -42
    for text in ("1_000", " 7", "\u0661", "1.0", ""):
        with pytest.raises(ValueError, match="not an integer"):
            integer_from_text(text)
