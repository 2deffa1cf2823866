"""Creating and evolving a target's tables and views, inside the caller's transaction.

``prepare`` creates what is missing and applies additive changes only: a new field or child
table becomes a new column or table (rows written before hold ``NULL`` until rewritten; a
rebuild into a new generation fills them). A removed field or a changed type is refused with a
:class:`~core.errors.ConfigurationError` that says to rebuild into a new generation.

Views: ``<projection>`` and ``<child>`` show the live generation. Extra views declared in the
target's options (``options={"views": {"name": "SELECT ..."}}``, e.g. the sales dashboard
views of docs/sinks/duckdb.md) are created after them, in order, so every snapshot has them.
"""

from __future__ import annotations

from typing import Any

import duckdb

from core.errors import ConfigurationError
from core.naming import quote_ident, validate_name
from core.sink import Target
from sinks.duckdb.schema import TableSet

__all__ = ("claim_names", "ensure_tables", "set_live", "user_views")

_COLUMNS = (
    "SELECT table_name, column_name, data_type FROM duckdb_columns() "
    "WHERE database_name = current_database() AND schema_name = 'main' "
    "AND table_name IN (SELECT unnest(?::VARCHAR[]))"
)


def user_views(target: Target) -> dict[str, str]:
    """The target's extra views (name -> SELECT), validated."""
    views: Any = target.options.get("views", {})
    if not isinstance(views, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in views.items()
    ):
        raise ConfigurationError(
            f"{target.lane}.options.views", views, "give a mapping of view name to SELECT text"
        )
    return {validate_name(f"{target.lane}.options.views", k): v for k, v in views.items()}


def claim_names(con: duckdb.DuckDBPyConnection, tables: TableSet) -> None:
    """Record that ``tables.projection`` owns its name and its children's (every generation's
    tables and the views); refuse a name another projection of this file owns. Without it,
    two projections declaring one child name (a subclass that inherits the schema) shared its
    table, and each flush deleted the other's rows of the same parent key."""
    names = [tables.projection, *(c.view for c in tables.children)]
    owners = dict(
        con.execute(
            "SELECT name, projection FROM projectionist_names WHERE name IN (SELECT unnest(?))",
            [names],
        ).fetchall()
    )
    for name in names:
        owner = owners.get(name)
        if owner is None:
            con.execute("INSERT INTO projectionist_names VALUES (?, ?)", [name, tables.projection])
        elif owner != tables.projection:
            what = "projection" if name == tables.projection else "child table"
            raise ConfigurationError(
                f"{tables.projection}.children" if what == "child table" else "projection",
                name,
                f"this file's {name} tables and view belong to projection {owner!r}; two "
                f"projections cannot share a {what} (each would overwrite the other's rows). "
                "Give the child another name (ChildTable(name=...)), or the lane its own file",
            )


def ensure_tables(con: duckdb.DuckDBPyConnection, tables: TableSet) -> None:
    """Claim the target's names (:func:`claim_names`); create missing tables; add new
    columns; refuse removed or retyped ones."""
    claim_names(con, tables)
    expected = tables.expected_columns()
    existing: dict[str, dict[str, str]] = {}
    for table, column, data_type in con.execute(_COLUMNS, [list(expected)]).fetchall():
        existing.setdefault(table, {})[column] = data_type
    for table, columns in expected.items():
        have = existing.get(table)
        if have is None:
            continue
        fix = (
            f"the table {table} was created with another schema; rebuild into a new generation "
            "(generation + 1) and promote it, or reset the lane"
        )
        for column, data_type in have.items():
            if column not in columns:
                raise ConfigurationError(f"{table}.{column}", data_type, f"removed field: {fix}")
            if columns[column] != data_type:
                raise ConfigurationError(
                    f"{table}.{column}", data_type, f"declared as {columns[column]} now: {fix}"
                )
        for column, data_type in columns.items():
            if column not in have:
                con.execute(
                    f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(column)} {data_type}"
                )
    for ddl in tables.ddl():
        con.execute(ddl)


def set_live(
    con: duckdb.DuckDBPyConnection, tables: TableSet, views: dict[str, str], *, promote: bool
) -> None:
    """Point the views at ``tables`` if it is (or, with ``promote``, becomes) the live one."""
    rows = con.execute(
        "SELECT generation FROM projectionist_live WHERE projection = ?", [tables.projection]
    ).fetchall()
    live = int(rows[0][0]) if rows else None
    if live is None or (promote and live != tables.generation):
        con.execute(
            "INSERT INTO projectionist_live VALUES (?, ?) ON CONFLICT (projection) "
            "DO UPDATE SET generation = excluded.generation",
            [tables.projection, tables.generation],
        )
        live = tables.generation
    if live != tables.generation:
        return
    for sql in tables.view_sql():
        con.execute(sql)
    for name, select in views.items():
        try:
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {select}")
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
            raise ConfigurationError(
                f"options.views.{name}", select[:60], f"DuckDB refused it: {exc}"
            ) from None
