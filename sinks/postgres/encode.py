"""Operations to column arrays: the Python side of the set-based write.

Each batch becomes one array per column (``key``, ``version``, ``deleted``, ``document`` and
one per schema field), ready for ``INSERT ... SELECT FROM unnest($1::text[], ...)``. Field
values are taken from the document and converted here, so a value that cannot be stored is
refused with :class:`~core.errors.DocumentRejected` naming the key and the field, before any
SQL runs. Tombstones carry ``NULL`` in every field column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core import jsontext
from core.errors import ConfigurationError, DocumentRejected
from core.operations import DeleteDocument, Operation, PutDocument
from core.schema import Field, FieldType, decimal_from_text

__all__ = ("CONVERTERS", "Rows", "encode_operations", "json_text")

_BIGINT = 1 << 63


class _Refused(ValueError):
    """A value the column cannot hold; becomes DocumentRejected with key and field."""


def json_text(value: Any) -> str:
    """Compact JSON text (:func:`core.jsontext.dumps`); refuses NaN, infinities, non-JSON
    types and nesting deeper than the interpreter follows."""
    try:
        return jsontext.dumps(value).decode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Refused(f"not JSON: {exc}") from None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise _Refused(f"expected a string, got {type(value).__name__}")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"expected an integer, got {type(value).__name__}")
    if not -_BIGINT <= value < _BIGINT:
        raise _Refused(f"{value} is out of the bigint range")
    return value


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _Refused(f"expected a decimal (string or number), got {type(value).__name__}")
    try:
        if isinstance(value, str):
            number = decimal_from_text(value)
        else:
            number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise _Refused(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise _Refused(f"{value!r} is not a finite number")
    return number


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _Refused(f"{value!r} is not an ISO-8601 timestamp") from None
    if not isinstance(value, datetime):
        raise _Refused(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise _Refused(f"{value.isoformat()!r} has no UTC offset")
    return value


def _date(value: Any) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise _Refused(f"{value!r} is not an ISO-8601 date") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise _Refused(f"expected an ISO-8601 date, got {type(value).__name__}")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused(f"expected true or false, got {type(value).__name__}")
    return value


_TEXT = frozenset({FieldType.TEXT, FieldType.KEYWORD})

CONVERTERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.TEXT: _text,
    FieldType.KEYWORD: _text,
    FieldType.INTEGER: _integer,
    FieldType.DECIMAL: _decimal,
    FieldType.TIMESTAMP: _timestamp,
    FieldType.DATE: _date,
    FieldType.BOOLEAN: _boolean,
    FieldType.JSON: json_text,
}


@dataclass(slots=True)
class Rows:
    """Column-major rows of one batch, one row per key (the newest operation wins)."""

    keys: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    deleted: list[bool] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)
    fields: list[list[Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self, start: int, stop: int) -> list[list[Any]]:
        """The arguments of one statement: every column sliced to ``[start, stop)``."""
        cols: list[list[Any]] = [self.keys, self.versions, self.deleted, self.documents]
        return [c[start:stop] for c in (*cols, *self.fields)]


def _newest(lane: str, operations: Sequence[Operation]) -> dict[str, PutDocument | DeleteDocument]:
    newest: dict[str, PutDocument | DeleteDocument] = {}
    for op in operations:
        if not isinstance(op, PutDocument | DeleteDocument):
            raise ConfigurationError(
                f"lane {lane} operation",
                type(op).__name__,
                "the Postgres sink stores documents; write row projections to a sink that "
                "supports rows (capabilities.supports_rows)",
            )
        seen = newest.get(op.key)
        if seen is None or seen.version < op.version:
            newest[op.key] = op
    return newest


def encode_operations(lane: str, fields: Sequence[Field], operations: Sequence[Operation]) -> Rows:
    """Rows for ``operations``, sorted by key (a stable lock order for concurrent writers).

    Raises :class:`DocumentRejected` for a value that cannot be stored (naming the key, the
    field and why) and :class:`ConfigurationError` for row operations.
    """
    newest = _newest(lane, operations)
    rows = Rows(fields=[[] for _ in fields])
    plan = [
        (column, f.name, f.nullable, f.type in _TEXT, CONVERTERS[f.type])
        for column, f in zip(rows.fields, fields, strict=True)
    ]
    for key in sorted(newest):
        op = newest[key]
        rows.keys.append(key)
        rows.versions.append(op.version)
        if isinstance(op, DeleteDocument):
            rows.deleted.append(True)
            rows.documents.append(None)
            for column in rows.fields:
                column.append(None)
            continue
        doc = op.document
        if not isinstance(doc, dict):
            raise DocumentRejected(key, f"the document is a {type(doc).__name__}, not an object")
        rows.deleted.append(False)
        try:
            rows.documents.append(json_text(doc))
        except _Refused as exc:
            raise DocumentRejected(key, str(exc)) from None
        for column, name, nullable, text, convert in plan:
            value = doc.get(name)
            if value is None:
                if not nullable:
                    raise DocumentRejected(key, f"field {name!r} is required but missing or null")
                column.append(None)
            elif text and type(value) is str:
                column.append(value)  # the common case, without a call
            else:
                try:
                    column.append(convert(value))
                except _Refused as exc:
                    raise DocumentRejected(key, f"field {name!r}: {exc}") from None
    return rows
