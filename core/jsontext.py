"""JSON text on the hot paths: orjson, with the standard library deciding every case where the
two would differ.

:func:`loads` returns what :func:`json.loads` returns for every text. Where orjson refuses a
text the standard library accepts (a lone surrogate escape, nesting past orjson's limit), the
standard library decides. orjson also reads an integer past 64 bits as a *float* without a
word (``18446744073709551616`` becomes ``1.8446744073709552e+19``): so a text with a run of 19
digits or more (any integer outside the 64-bit range has one) goes to the standard library,
and the result never depends on which parser ran. With that check, it takes 2.3 us on a
108-byte payload and 10.4 us on 1.1 KB, against the standard library's 3.8 and 16.9 (orjson
alone 1.2 and 7.1).

:func:`dumps` is ``json.dumps(value, ensure_ascii=False, allow_nan=False,
separators=(",", ":")).encode()``, about three times faster on a read model's documents
(decision 0014). orjson alone would differ in what it accepts: it writes NaN and the
infinities as ``null`` where the standard library refuses them, and it encodes datetimes,
UUIDs, enums and dataclasses that the standard library refuses. So orjson only encodes a value
made of nothing but dicts, lists, tuples, strings, integers, booleans, ``None`` and finite
floats, the exact types (one pass over the value checks it); anything else, and anything
orjson refuses (an integer past 64 bits, a non-string key, a lone surrogate, nesting past
orjson's limit), goes to the standard library, which encodes it or raises as it always did.
The one visible difference is the spelling of some floats (``1e16`` against ``1e+16``): the
same number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ("dumps", "loads")

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
"""A run of digits that may be an integer past 64 bits (every one has 19 digits or more)."""


def _has_long_digit_run(text: str | bytes) -> bool:
    """Whether ``text`` holds 19 digits in a row: every digit made ``0`` by one C-level
    translate, then one substring search (a regular expression took longer than the parse
    it guards: 24 us on a 1 KB payload)."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return _LONG_RUN in raw.translate(_DIGITS_TO_ZERO)


_STDLIB = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_LEAVES = frozenset((str, int, bool, type(None)))
_isfinite = math.isfinite


def loads(text: str | bytes) -> Any:
    """Decode one JSON text; raises :class:`ValueError` (as :func:`json.loads`) when invalid."""
    if not _has_long_digit_run(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``; raises :class:`TypeError` for a type JSON has no
    spelling for, :class:`ValueError` for NaN or an infinity or a circular reference, and
    :class:`RecursionError` for nesting deeper than the interpreter follows, as
    :func:`json.dumps` does."""
    try:
        plain = _all_plain((value,))
    except RecursionError:
        plain = False
    if plain:
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
        else:
            # A copy of just the text: orjson's own result keeps about 4 KB of the process's
            # heap each (measured: 10,000 documents of 627 bytes held 39 MB against 6.5 MB),
            # and a sink holds a whole batch of them.
            return bytes(memoryview(encoded))
    return _STDLIB.encode(value).encode()


def _all_plain(values: Iterable[Any]) -> bool:
    """Whether ``values`` hold only the exact types orjson and the standard library encode
    alike (finite floats only), at any depth."""
    for item in values:
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is dict:
            if not _all_plain(item.values()):
                return False
        elif kind is list or kind is tuple:
            if not _all_plain(item):
                return False
        elif kind is float:
            if not _isfinite(item):
                return False
        else:
            return False
    return True
