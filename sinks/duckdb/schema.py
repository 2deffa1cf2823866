"""Tables, views and statements derived from a target's :class:`~core.schema.DocumentSchema`.

Per (projection, generation): a table ``<projection>_g<generation>`` with ``key`` (one row per
key; see :meth:`TableSet.ddl` for why it has no index), ``version``, ``deleted`` (a
tombstone), ``document`` (the whole document as JSON text) and one column per schema field;
per child table a table ``<child>_g<generation>`` with the parent key (named like the schema's
key field) and the child fields. Views ``<projection>`` and ``<child>`` show the live
generation (``projectionist_live``) without tombstones.
Checkpoints live in ``projectionist_checkpoints`` of the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigurationError
from core.naming import quote_ident, validate_name
from core.schema import ChildTable, DocumentSchema, Field, FieldType
from core.sink import Target

__all__ = (
    "DECIMAL_SCALE",
    "RESERVED_COLUMNS",
    "SQL_TYPES",
    "SYSTEM_DDL",
    "ChildLayout",
    "TableSet",
    "table_set",
)

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 9
"""Decimal fields are ``DECIMAL(38, 9)``: exact, 29 digits before the point, 9 after."""

SQL_TYPES: dict[FieldType, str] = {
    FieldType.TEXT: "VARCHAR",
    FieldType.KEYWORD: "VARCHAR",
    FieldType.INTEGER: "BIGINT",
    FieldType.DECIMAL: f"DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})",
    FieldType.TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
    FieldType.DATE: "DATE",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.JSON: "JSON",
}

RESERVED_COLUMNS = ("key", "version", "deleted", "document")
WINNER_KEYS = "SELECT key FROM projectionist_winners"

SYSTEM_DDL = """
CREATE TABLE IF NOT EXISTS projectionist_checkpoints (
    lane VARCHAR NOT NULL,
    generation INTEGER NOT NULL,
    transaction_id BIGINT NOT NULL,
    global_position BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (lane, generation)
);
CREATE TABLE IF NOT EXISTS projectionist_live (
    projection VARCHAR PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projectionist_names (
    name VARCHAR PRIMARY KEY,
    projection VARCHAR NOT NULL
);
"""
"""``projectionist_names``: which projection owns each name of the file's tables and views
(its own, and its children's), so two projections never share a child table."""


def _replace_winners(
    table: str, key: str, columns: tuple[str, ...], source: str
) -> tuple[str, str]:
    """``DELETE`` the rows of ``table`` whose ``key`` is a winner, and ``INSERT`` the winners'
    rows from ``source``: run in this order, in one transaction."""
    t, k = quote_ident(table), quote_ident(key)
    cols = ", ".join(quote_ident(c) for c in columns)
    return (
        f"DELETE FROM {t} WHERE {k} IN ({WINNER_KEYS})",
        f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {source} WHERE {k} IN ({WINNER_KEYS})",
    )


def _column(f: Field) -> str:
    return f"{quote_ident(f.name)} {SQL_TYPES[f.type]}"


@dataclass(frozen=True, slots=True)
class ChildLayout:
    """One child table of a target: its declaration, table, view and column names."""

    child: ChildTable
    table: str
    view: str
    parent_key: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.parent_key, *(f.name for f in self.child.fields))

    def ddl(self) -> str:
        cols = [f"{quote_ident(self.parent_key)} VARCHAR NOT NULL"]
        cols += [_column(f) for f in self.child.fields]
        return f"CREATE TABLE IF NOT EXISTS {quote_ident(self.table)} ({', '.join(cols)})"

    def view_sql(self) -> str:
        return f"CREATE OR REPLACE VIEW {quote_ident(self.view)} AS SELECT * FROM " + quote_ident(
            self.table
        )

    def replace_sql(self, source: str) -> tuple[str, str]:
        """Delete the winners' child rows, then insert theirs from ``source``."""
        return _replace_winners(self.table, self.parent_key, self.columns, source)


@dataclass(frozen=True, slots=True)
class TableSet:
    """Everything the sink needs to know about one target's tables (pure, no I/O)."""

    projection: str
    generation: int
    table: str
    key_field: str
    fields: tuple[Field, ...]
    children: tuple[ChildLayout, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*RESERVED_COLUMNS, *(f.name for f in self.fields))

    def ddl(self) -> list[str]:
        """``CREATE TABLE IF NOT EXISTS`` for the documents and each child table.

        ``key`` is not a ``PRIMARY KEY``: DuckDB keeps a primary key's index (an ART) in memory
        and updates it row by row. A flush of 1,200 documents into 200,000 took 315-329 ms as
        an upsert on it and 70-85 ms as a delete and an insert without it
        (``python -m bench.duckdb_flush``, decision 0010).
        One row per key holds all the same: a flush deletes its winners' rows and inserts
        theirs in one transaction (:meth:`replace_sql`), each key once per batch
        (``encode.dedupe``), and one process writes the file (its ``flock``). Tables made
        before this (with the primary key) take the same statements.
        """
        cols = [
            "key VARCHAR NOT NULL",
            "version BIGINT NOT NULL",
            "deleted BOOLEAN NOT NULL",
            "document JSON",
            *(_column(f) for f in self.fields),
        ]
        out = [f"CREATE TABLE IF NOT EXISTS {quote_ident(self.table)} ({', '.join(cols)})"]
        return out + [c.ddl() for c in self.children]

    def expected_columns(self) -> dict[str, dict[str, str]]:
        """Table name -> column name -> SQL type, as this schema declares them."""
        parent = {"key": "VARCHAR", "version": "BIGINT", "deleted": "BOOLEAN", "document": "JSON"}
        parent |= {f.name: SQL_TYPES[f.type] for f in self.fields}
        out = {self.table: parent}
        for c in self.children:
            child = {c.parent_key: "VARCHAR"} | {f.name: SQL_TYPES[f.type] for f in c.child.fields}
            out[c.table] = child
        return out

    def view_sql(self) -> list[str]:
        names = [f.name for f in self.fields]
        shown = [quote_ident(n) for n in names]
        if self.key_field not in names:
            shown.insert(0, f"key AS {quote_ident(self.key_field)}")
        select = ", ".join([*shown, "document"])
        own = (
            f"CREATE OR REPLACE VIEW {quote_ident(self.projection)} AS SELECT {select} "
            f"FROM {quote_ident(self.table)} WHERE NOT deleted"
        )
        return [own, *(c.view_sql() for c in self.children)]

    def winners_sql(self, source: str) -> str:
        """The keys of ``source`` whose stored version is older (or absent): they are written."""
        return (
            "CREATE OR REPLACE TEMP TABLE projectionist_winners AS SELECT b.key FROM "
            f"{source} b LEFT JOIN {quote_ident(self.table)} s ON s.key = b.key "
            "WHERE s.key IS NULL OR s.version < b.version"
        )

    def replace_sql(self, source: str) -> tuple[str, str]:
        """Delete the winners' stored rows, then insert theirs from ``source``: the winners
        (:meth:`winners_sql`) are exactly the keys whose stored version is older or absent."""
        return _replace_winners(self.table, "key", self.columns, source)


def table_set(target: Target) -> TableSet:
    """The tables of ``target``, or a :class:`ConfigurationError` naming what collides."""
    schema = target.schema or DocumentSchema(fields=())
    gen = target.generation
    table = validate_name("duckdb.table", f"{target.projection}_g{gen}")
    key_field = validate_name("schema.key_field", schema.key_field)
    seen: set[str] = set()
    for f in schema.fields:
        if f.name in RESERVED_COLUMNS:
            raise ConfigurationError(
                f"{target.projection}.fields",
                f.name,
                f"rename it: {RESERVED_COLUMNS} are the sink's own columns",
            )
        if f.name in seen:
            raise ConfigurationError(f"{target.projection}.fields", f.name, "declared twice")
        seen.add(f.name)
    children: list[ChildLayout] = []
    for child in schema.children:
        names = [f.name for f in child.fields]
        if key_field in names or len(set(names)) != len(names):
            raise ConfigurationError(
                f"{target.projection}.children.{child.name}",
                names,
                f"child fields must be unique and must not be named {key_field!r} (the column "
                "that holds the parent key)",
            )
        missing = set(child.key_fields) - set(names)
        if missing:
            raise ConfigurationError(
                f"{target.projection}.children.{child.name}.key_fields",
                sorted(missing),
                "key fields must be fields of the child table",
            )
        if child.name == target.projection:
            raise ConfigurationError(
                f"{target.projection}.children", child.name, "a child may not share the name"
            )
        child_table = validate_name("duckdb.table", f"{child.name}_g{gen}")
        children.append(ChildLayout(child, child_table, child.name, key_field))
    return TableSet(target.projection, gen, table, key_field, schema.fields, tuple(children))
