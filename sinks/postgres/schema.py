"""Tables, views and indexes derived from a projection's :class:`~core.schema.DocumentSchema`.

For projection ``p`` at generation ``g`` in schema ``s``:

* table ``s.p_g<g>``: ``key text PRIMARY KEY``, ``version bigint``, ``deleted boolean``
  (tombstones), ``document jsonb`` (the whole document, ``NULL`` for a tombstone), then one
  column per schema field (types in :data:`SQL_TYPES`);
* view ``s.p``: the live generation's rows without tombstones. Readers query the view; a
  blue/green swap replaces it in one transaction;
* partial indexes (``WHERE NOT deleted``) derived from the ``indexed=True`` fields, or exactly
  those listed in ``target.options["indexes"]`` (see :func:`_indexes`);
* ``s.projectionist_checkpoints``: one row per (lane, generation).

Every name is validated (:func:`core.naming.validate_name`) and quoted; values are always
bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigurationError
from core.naming import quote_ident, validate_name
from core.schema import Field, FieldType
from core.sink import Target

__all__ = (
    "CHECKPOINTS",
    "FIXED_COLUMNS",
    "SQL_TYPES",
    "Index",
    "Layout",
    "generation_of",
    "layout_for",
)

CHECKPOINTS = "projectionist_checkpoints"

FIXED_COLUMNS = {
    "key": "text",
    "version": "bigint",
    "deleted": "boolean",
    "document": "jsonb",
}
"""Columns every read-model table has, with their ``format_type`` names."""

SQL_TYPES: dict[FieldType, str] = {
    FieldType.TEXT: "text",
    FieldType.KEYWORD: "text",
    FieldType.INTEGER: "bigint",
    FieldType.DECIMAL: "numeric",
    FieldType.TIMESTAMP: "timestamp with time zone",
    FieldType.DATE: "date",
    FieldType.BOOLEAN: "boolean",
    FieldType.JSON: "jsonb",
}
"""Column type per field type, spelled as ``format_type()`` prints it (compared on prepare).
``decimal`` is unconstrained ``numeric``: it stores the document's value exactly, never
rounded to a scale the schema does not declare."""

_PARAM_TYPES: dict[FieldType, str] = {
    FieldType.TEXT: "text",
    FieldType.KEYWORD: "text",
    FieldType.INTEGER: "bigint",
    FieldType.DECIMAL: "numeric",
    FieldType.TIMESTAMP: "timestamptz",
    FieldType.DATE: "date",
    FieldType.BOOLEAN: "boolean",
    FieldType.JSON: "text",
}
"""Array element type of each ``unnest`` parameter (JSON travels as text, cast to jsonb)."""


_MAX_IDENT = 63
_OPTIONS = frozenset({"indexes"})


def q(name: str) -> str:
    return quote_ident(name)


@dataclass(frozen=True, slots=True)
class Index:
    """A partial btree index: ``(column, descending)`` pairs."""

    columns: tuple[tuple[str, bool], ...]

    def name(self, table: str) -> str:
        parts = "_".join(c + ("_desc" if d else "") for c, d in self.columns)
        name = f"{table}_{parts}_idx"
        if len(name) > _MAX_IDENT:
            digest = hashlib.sha1(parts.encode(), usedforsecurity=False).hexdigest()[:10]
            name = f"{table}_{digest}_idx"
        return name

    def sql(self) -> str:
        return ", ".join(q(c) + (" DESC" if d else "") for c, d in self.columns)


def _parse_index(spec: Any, known: set[str]) -> Index:
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list | tuple) or not items:
        raise ConfigurationError(
            "options.indexes", spec, 'give each index as a list like ["customer_id", "x desc"]'
        )
    columns: list[tuple[str, bool]] = []
    for item in items:
        words = item.split() if isinstance(item, str) else []
        direction = [w.lower() for w in words[1:]]
        if len(words) not in (1, 2) or direction not in ([], ["asc"], ["desc"]):
            raise ConfigurationError(
                "options.indexes", item, 'write a column as "name", "name asc" or "name desc"'
            )
        column = validate_name("options.indexes column", words[0])
        if column not in known:
            raise ConfigurationError(
                "options.indexes",
                column,
                f"index declared columns only: {', '.join(sorted(known))}",
            )
        columns.append((column, direction == ["desc"]))
    return Index(tuple(columns))


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything named and typed for one target; builds the SQL text (never values)."""

    schema: str
    projection: str
    generation: int
    fields: tuple[Field, ...]
    indexes: tuple[Index, ...]

    @property
    def table(self) -> str:
        return f"{self.projection}_g{self.generation}"

    @property
    def view(self) -> str:
        return self.projection

    def qualified(self, name: str) -> str:
        return f"{q(self.schema)}.{q(name)}"

    @property
    def checkpoints(self) -> str:
        return self.qualified(CHECKPOINTS)

    def create_table(self) -> str:
        cols = [
            "key text PRIMARY KEY",
            "version bigint NOT NULL",
            "deleted boolean NOT NULL DEFAULT false",
            "document jsonb",
            *(f"{q(f.name)} {SQL_TYPES[f.type]}" for f in self.fields),
            "CHECK ((document IS NULL) = deleted)",
        ]
        body = ",\n    ".join(cols)
        return f"CREATE TABLE {self.qualified(self.table)} (\n    {body}\n)"

    def create_indexes(self) -> list[str]:
        t = self.qualified(self.table)
        return [
            f"CREATE INDEX IF NOT EXISTS {q(i.name(self.table))} ON {t} ({i.sql()}) "
            "WHERE NOT deleted"
            for i in self.indexes
        ]

    def add_column(self, f: Field) -> str:
        """``ALTER TABLE ... ADD COLUMN`` (filled by :meth:`backfill_read` and
        :meth:`backfill_write`)."""
        return (
            f"ALTER TABLE {self.qualified(self.table)} ADD COLUMN {q(f.name)} {SQL_TYPES[f.type]}"
        )

    def backfill_read(self) -> str:
        """Stored documents' values of field $1, as JSON text, after key $2, $3 at a time."""
        return (
            f"SELECT key, (document -> $1)::text FROM {self.qualified(self.table)} "
            "WHERE NOT deleted AND key > $2 ORDER BY key LIMIT $3"
        )

    def backfill_write(self, f: Field) -> str:
        """Set field ``f``'s column of keys $1 to values $2 (converted as writes convert)."""
        value = "u.v::jsonb" if f.type is FieldType.JSON else "u.v"
        return (
            f"UPDATE {self.qualified(self.table)} AS t SET {q(f.name)} = {value} "
            f"FROM unnest($1::text[], $2::{_PARAM_TYPES[f.type]}[]) AS u(k, v) WHERE t.key = u.k"
        )

    def view_columns(self) -> tuple[str, ...]:
        return ("key", "version", "document", *(f.name for f in self.fields))

    def create_view(self) -> str:
        cols = ", ".join(q(c) for c in self.view_columns())
        return (
            f"CREATE VIEW {self.qualified(self.view)} AS SELECT {cols} "
            f"FROM {self.qualified(self.table)} WHERE NOT deleted"
        )

    def upsert(self, first: int = 1, only_if: str | None = None) -> str:
        """One set-based upsert of every column array; the version guard keeps newer rows.

        The arrays are parameters ``$first`` onwards; ``only_if`` (SQL text) makes the insert
        write nothing unless it holds (the one-statement write's checkpoint guard).
        """
        names = ["key", "version", "deleted", "document", *(f.name for f in self.fields)]
        params = ["text", "bigint", "boolean", "text", *(_PARAM_TYPES[f.type] for f in self.fields)]
        jsonb = {3} | {4 + i for i, f in enumerate(self.fields) if f.type is FieldType.JSON}
        aliases = [f"c{i}" for i in range(len(names))]
        select = ", ".join(
            f"u.{a}::jsonb" if i in jsonb else f"u.{a}" for i, a in enumerate(aliases)
        )
        unnest = ", ".join(f"${i + first}::{p}[]" for i, p in enumerate(params))
        updates = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in names[1:])
        where = f"WHERE {only_if} " if only_if else ""
        return (
            f"INSERT INTO {self.qualified(self.table)} AS t ({', '.join(q(n) for n in names)}) "
            f"SELECT {select} FROM unnest({unnest}) AS u({', '.join(aliases)}) {where}"
            f"ON CONFLICT (key) DO UPDATE SET {updates} WHERE t.version < excluded.version"
        )

    def load(self) -> str:
        return (
            f"SELECT key, version, document::text AS document FROM "
            f"{self.qualified(self.table)} WHERE key = ANY($1::text[])"
        )


def generation_of(table: str, projection: str) -> int | None:
    """``7`` for ``<projection>_g7``; ``None`` for another name."""
    found = re.fullmatch(re.escape(projection) + r"_g(\d+)", table)
    return int(found.group(1)) if found else None


def layout_for(schema: str, target: Target) -> Layout:
    """The validated layout of ``target`` in ``schema``; refuses bad names and options."""
    validate_name("postgres.schema", schema)
    validate_name("projection", target.projection)
    table = f"{target.projection}_g{target.generation}"
    if len(table) > 55:
        raise ConfigurationError(
            "projection", target.projection, "with its generation suffix the table name is too long"
        )
    fields = target.schema.fields if target.schema is not None else ()
    if target.schema is not None and target.schema.children:
        raise ConfigurationError(
            f"{target.projection}.children",
            [c.name for c in target.schema.children],
            "the Postgres sink keeps lists inside the document; declare the list as a json "
            "field to have it as a column, or write child rows with a sink that has them",
        )
    seen: set[str] = set()
    for f in fields:
        validate_name("field.name", f.name)
        if f.name in FIXED_COLUMNS:
            raise ConfigurationError(
                "field.name", f.name, f"{', '.join(FIXED_COLUMNS)} are the sink's own columns"
            )
        if f.name in seen:
            raise ConfigurationError("field.name", f.name, "declare each field once")
        seen.add(f.name)
    unknown = set(target.options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            "options", sorted(unknown), f"the Postgres sink knows: {', '.join(sorted(_OPTIONS))}"
        )
    return Layout(schema, target.projection, target.generation, fields, _indexes(fields, target))


def _indexes(fields: Sequence[Field], target: Target) -> tuple[Index, ...]:
    """``options["indexes"]`` when given (exactly those); else the derived plan.

    Derived plan: with exactly one indexed timestamp field ``t``, every other indexed field
    ``f`` gets ``(f, t DESC)`` (the list query "by f, newest first") and ``t`` gets its own
    index; otherwise every indexed field gets a single-column index.
    """
    if "indexes" in target.options:
        declared = target.options["indexes"]
        if not isinstance(declared, list | tuple):
            raise ConfigurationError("options.indexes", declared, "give a list of indexes")
        known = {f.name for f in fields} | {"key", "version"}
        out: list[Index] = []
        for spec in declared:
            index = _parse_index(spec, known)
            if index not in out:
                out.append(index)
        return tuple(out)
    indexed = [f for f in fields if f.indexed]
    times = [f for f in indexed if f.type is FieldType.TIMESTAMP]
    if len(times) != 1:
        return tuple(Index(((f.name, False),)) for f in indexed)
    newest = (times[0].name, True)
    return tuple(
        Index(((f.name, False), newest)) if f is not times[0] else Index(((f.name, False),))
        for f in indexed
    )
