"""JSON text on the hot paths: orjson, with the standard library deciding every case where the
two would differ.

:func:`loads` returns what :func:`json.loads` returns for every text; orjson is about four
times faster on event payloads. Where orjson refuses a text the standard library accepts (a
lone surrogate escape, nesting past orjson's limit), the standard library decides. orjson
also reads an integer past 64 bits as a *float* without a word (``18446744073709551616``
becomes ``1.8446744073709552e+19``): so a text with a run of 19 digits or more (any integer
outside the 64-bit range has one) goes to the standard library, and the result never depends
on which parser ran.

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
import re
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ("dumps", "loads")

_LONG_DIGITS = re.compile("[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(b"[0-9]{19}")
"""A run of digits that may be an integer past 64 bits (every one has 19 digits or more)."""
_STDLIB = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_LEAVES = frozenset((str, int, bool, type(None)))
_isfinite = math.isfinite


def loads(text: str | bytes) -> Any:
    """Decode one JSON text; raises :class:`ValueError` (as :func:`json.loads`) when invalid."""
    long_digits = _LONG_DIGITS_BYTES if isinstance(text, bytes) else _LONG_DIGITS
    if long_digits.search(text) is None:  # type: ignore[arg-type]
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
