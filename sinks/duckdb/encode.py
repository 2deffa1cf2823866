"""Operations to Arrow tables: the Python side of the set-based write.

A batch becomes one Arrow table of documents (``key``, ``version``, ``deleted``, ``document``
and one column per schema field) and one per child table (the parent key and the child
fields). Values are converted here, column by column (pyarrow casts plain values in bulk;
anything else goes value by value), so one that cannot be stored is refused with
:class:`~core.errors.DocumentRejected` naming the key and the field before its chunk's SQL
runs. Tombstones carry ``NULL`` fields and no child rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from core import jsontext
from core.errors import ConfigurationError, DocumentRejected
from core.operations import DeleteDocument, Operation, PutDocument
from core.schema import ChildTable, Field, FieldType, decimal_from_text, integer_from_text
from sinks.duckdb.schema import DECIMAL_SCALE, TableSet

__all__ = ("Encoded", "chunks", "dedupe", "json_text")

_BIGINT = 1 << 63
_MAX_DECIMAL = Decimal(10) ** (38 - DECIMAL_SCALE)
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)


class _Refused(ValueError):
    """A value the column cannot hold; becomes DocumentRejected with the key and the field."""


def json_text(value: Any) -> str:
    """Compact JSON text (:func:`core.jsontext.dumps`); raises as :func:`json.dumps` does."""
    return jsontext.dumps(value).decode()


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    raise _Refused(f"expected text, got {type(v).__name__}")


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise _Refused(f"expected an integer, got {type(v).__name__}")
    try:
        out = integer_from_text(v) if isinstance(v, str) else int(v)
    except ValueError:
        raise _Refused(f"{v!r} is not an integer") from None
    if not -_BIGINT <= out < _BIGINT:
        raise _Refused(f"{out} is out of the 64-bit range")
    return out


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, int | str | float | Decimal):
        raise _Refused(f"expected a decimal, got {type(v).__name__}")
    try:
        if isinstance(v, str):
            out = decimal_from_text(v)
        else:
            out = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    except (InvalidOperation, ValueError):
        raise _Refused(f"{v!r} is not a decimal number") from None
    if not out.is_finite() or abs(out) >= _MAX_DECIMAL:
        raise _Refused(f"{v!r} does not fit DECIMAL(38,{DECIMAL_SCALE})")
    if out != out.quantize(_QUANTUM):
        raise _Refused(f"{v!r} has more than {DECIMAL_SCALE} decimal places")
    return out


def _timestamp(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise _Refused(f"{v!r} is not an ISO-8601 timestamp") from None
    if not isinstance(v, datetime):
        raise _Refused(f"expected a timestamp, got {type(v).__name__}")
    try:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the year 1 in UTC
        raise _Refused(f"{v.isoformat()!r} is out of the timestamp range in UTC") from None


def _date(v: Any) -> date:
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise _Refused(f"{v!r} is not an ISO-8601 date") from None
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    raise _Refused(f"expected a date, got {type(v).__name__}")


def _boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise _Refused(f"expected true or false, got {type(v).__name__}")


def _json(v: Any) -> str:
    try:
        return json_text(v)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Refused(f"not JSON: {exc}") from None


_CONVERT: dict[FieldType, tuple[Callable[[Any], Any], pa.DataType]] = {
    FieldType.TEXT: (_text, pa.string()),
    FieldType.KEYWORD: (_text, pa.string()),
    FieldType.INTEGER: (_integer, pa.int64()),
    FieldType.DECIMAL: (_decimal, pa.decimal128(38, DECIMAL_SCALE)),
    FieldType.TIMESTAMP: (_timestamp, pa.timestamp("us", tz="UTC")),
    FieldType.DATE: (_date, pa.date32()),
    FieldType.BOOLEAN: (_boolean, pa.bool_()),
    FieldType.JSON: (_json, pa.string()),
}


_FAST_CAST = {FieldType.DECIMAL, FieldType.TIMESTAMP, FieldType.DATE}
"""Types whose text values pyarrow casts in bulk (refusing what would lose data)."""


def _fast(values: list[Any], f: Field) -> pa.Array:
    """The column in bulk: plain values only; anything unusual raises and goes the slow way."""
    if not f.nullable and None in values:
        raise ValueError("missing required value")
    arrow_type = _CONVERT[f.type][1]
    if f.type in _FAST_CAST:
        if not all(v is None or type(v) is str for v in values):
            raise ValueError("not all text")
        return pa.array(values, type=pa.string()).cast(arrow_type)
    if f.type is FieldType.INTEGER and not all(v is None or type(v) is int for v in values):
        raise ValueError("not all integers")
    if f.type is FieldType.JSON:
        return pa.array([None if v is None else _json(v) for v in values], type=arrow_type)
    return pa.array(values, type=arrow_type)


def column(
    keys: list[str], values: list[Any], f: Field, where: tuple[str, list[int]] | None = None
) -> pa.Array:
    """Field ``f`` of every row as an Arrow array, or :class:`DocumentRejected` for the first
    row (named by its document key; ``where`` = (list field, index per row) for child rows)
    whose value cannot be stored."""
    try:
        return _fast(values, f)
    except (pa.ArrowException, ValueError, TypeError, OverflowError, _Refused):
        pass
    convert = _CONVERT[f.type][0]
    out: list[Any] = []
    for n, (key, raw) in enumerate(zip(keys, values, strict=True)):
        at = f"{where[0]}[{where[1][n]}]: " if where else ""
        if raw is None:
            if not f.nullable:
                raise DocumentRejected(key, f"{at}field {f.name!r} is required but missing")
            out.append(None)
            continue
        try:
            out.append(convert(raw))
        except _Refused as exc:
            raise DocumentRejected(key, f"{at}field {f.name!r}: {exc}") from None
    return pa.array(out, type=_CONVERT[f.type][1])


def dedupe(operations: Sequence[Operation]) -> list[PutDocument | DeleteDocument]:
    """Document operations, one per key (the highest version); row operations are refused."""
    latest: dict[str, PutDocument | DeleteDocument] = {}
    for op in operations:
        if not isinstance(op, PutDocument | DeleteDocument):
            raise ConfigurationError(
                "operation",
                type(op).__name__,
                "the DuckDB sink stores documents; row projections are not supported",
            )
        found = latest.get(op.key)
        if found is None or found.version < op.version:
            latest[op.key] = op
    return list(latest.values())


@dataclass(frozen=True, slots=True)
class Encoded:
    """One chunk of a batch as Arrow tables: documents, and child rows per child table."""

    documents: pa.Table
    children: dict[str, pa.Table]

    @classmethod
    def of(cls, tables: TableSet, ops: Sequence[PutDocument | DeleteDocument]) -> Encoded:
        keys = [op.key for op in ops]
        docs = [op.document if isinstance(op, PutDocument) else None for op in ops]
        texts: list[str | None] = []
        for key, doc in zip(keys, docs, strict=True):
            try:
                texts.append(None if doc is None else json_text(doc))
            except (TypeError, ValueError, RecursionError) as exc:
                raise DocumentRejected(key, f"the document is not JSON: {exc}") from None
        arrays: dict[str, pa.Array] = {
            "key": pa.array(keys, type=pa.string()),
            "version": pa.array([op.version for op in ops], type=pa.int64()),
            "deleted": pa.array([doc is None for doc in docs], type=pa.bool_()),
            "document": pa.array(texts, type=pa.string()),
        }
        live_keys = [k for k, d in zip(keys, docs, strict=True) if d is not None]
        live = [d for d in docs if d is not None]
        deleted = [d is None for d in docs]
        for f in tables.fields:
            values = column(live_keys, [d.get(f.name) for d in live], f)
            arrays[f.name] = _with_nulls(values, deleted) if len(live) < len(docs) else values
        children = {
            c.table: _children(c.child, c.parent_key, live_keys, live) for c in tables.children
        }
        return cls(pa.table(arrays), children)


def _with_nulls(values: pa.Array, deleted: list[bool]) -> pa.Array:
    """``values`` of the live documents spread over all rows, ``NULL`` at the tombstones."""
    live = iter(range(len(values)))
    return values.take(pa.array([None if d else next(live) for d in deleted], type=pa.int64()))


def _children(
    child: ChildTable, parent_key: str, keys: list[str], docs: list[dict[str, Any]]
) -> pa.Table:
    owners: list[str] = []
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    for key, doc in zip(keys, docs, strict=True):
        found = doc.get(child.source)
        if found is None:
            continue
        if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
            raise DocumentRejected(key, f"field {child.source!r} must be a list of objects")
        try:
            identities = {tuple(r.get(k) for k in child.key_fields) for r in found}
        except TypeError:  # a key field holding a list or an object
            raise DocumentRejected(
                key,
                f"{child.source}: a key field ({', '.join(child.key_fields)}) holds a list or "
                "an object; key fields take text, numbers, booleans or dates",
            ) from None
        if child.key_fields and len(identities) != len(found):
            raise DocumentRejected(
                key, f"{child.source}: two rows have the same {', '.join(child.key_fields)}"
            )
        owners.extend([key] * len(found))
        rows.extend(found)
        positions.extend(range(len(found)))
    arrays = {parent_key: pa.array(owners, type=pa.string())}
    for f in child.fields:
        arrays[f.name] = column(owners, [r.get(f.name) for r in rows], f, (child.source, positions))
    return pa.table(arrays)


def chunks(
    ops: Sequence[PutDocument | DeleteDocument], size: int
) -> Iterator[Sequence[PutDocument | DeleteDocument]]:
    for start in range(0, len(ops), size):
        yield ops[start : start + size]
