"""Schema management on a connection inside an open transaction: create what is missing,
apply additive changes (a new field: ``ADD COLUMN`` filled from the stored documents), refuse
destructive ones (a removed field, a changed type) with a message that says to rebuild.

Callers hold :func:`lock` for the transaction, so concurrent runners never race on DDL.
"""

from __future__ import annotations

import asyncpg

from core import jsontext
from core.errors import ConfigurationError
from core.naming import quote_ident
from core.schema import Field
from sinks.postgres.encode import CONVERTERS
from sinks.postgres.schema import FIXED_COLUMNS, SQL_TYPES, Layout, q

__all__ = (
    "drop_generation",
    "ensure_base",
    "ensure_target",
    "ensure_view",
    "lock",
    "plan_changes",
    "view_reads",
)

_LOCK_CLASS = 0x70736E6B  # "psnk": first key of the sink's advisory locks

_REBUILD = (
    "rebuild the read model: reset the lane and replay it (Runner.rebuild), or fill a new "
    "generation and swap it in"
)

_RELKIND = """
SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_VIEW_READS = """
SELECT DISTINCT t.relname
FROM pg_class v
JOIN pg_namespace n ON n.oid = v.relnamespace
JOIN pg_rewrite r ON r.ev_class = v.oid
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_class'::regclass
JOIN pg_class t ON t.oid = d.refobjid
WHERE n.nspname = $1 AND v.relname = $2 AND t.oid <> v.oid AND t.relkind = 'r'
"""


async def lock(conn: asyncpg.Connection, schema: str) -> None:
    """Serialise DDL on ``schema`` across processes until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, schema)


async def ensure_base(conn: asyncpg.Connection, layout: Layout) -> None:
    """The sink's schema and its checkpoint table."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q(layout.schema)}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {layout.checkpoints} (
    lane            text        NOT NULL,
    generation      integer     NOT NULL,
    transaction_id  bigint      NOT NULL,
    global_position bigint      NOT NULL,
    epoch           bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, generation)
)"""
    )


async def _relkind(conn: asyncpg.Connection, layout: Layout, name: str) -> str | None:
    kind = await conn.fetchval(_RELKIND, layout.schema, name)
    return None if kind is None else str(kind)


async def _columns(conn: asyncpg.Connection, layout: Layout, name: str) -> dict[str, str]:
    rows = await conn.fetch(_COLUMNS, layout.schema, name)
    return {r["attname"]: r["type"] for r in rows}


async def view_reads(conn: asyncpg.Connection, layout: Layout) -> str | None:
    """The generation table the projection's view reads (``None``: no such view)."""
    rows = await conn.fetch(_VIEW_READS, layout.schema, layout.view)
    return str(rows[0]["relname"]) if len(rows) == 1 else None


def plan_changes(layout: Layout, existing: dict[str, str]) -> list[Field]:
    """The fields to add to a table that has ``existing`` columns; refuses destructive changes."""
    where = f"{layout.schema}.{layout.table}"
    for name, sql_type in FIXED_COLUMNS.items():
        if existing.get(name) != sql_type:
            raise ConfigurationError(
                f"{where}.{name}",
                existing.get(name),
                f"this is not a Projectionist read-model table (expected {name} {sql_type}); "
                "drop it or choose another schema",
            )
    declared = {f.name: f for f in layout.fields}
    for name, sql_type in existing.items():
        if name in FIXED_COLUMNS:
            continue
        wanted = declared.get(name)
        if wanted is None:
            raise ConfigurationError(
                f"{where}.{name}",
                sql_type,
                f"column {name!r} is no longer declared; removing a column is destructive: "
                + _REBUILD,
            )
        if SQL_TYPES[wanted.type] != sql_type:
            raise ConfigurationError(
                f"{where}.{name}",
                sql_type,
                f"column {name!r} is now declared {wanted.type.value} "
                f"({SQL_TYPES[wanted.type]}); changing a column's type is destructive: " + _REBUILD,
            )
    return [f for f in layout.fields if f.name not in existing]


BACKFILL_ROWS = 5_000
"""Rows read and updated per statement while a new column is filled."""


async def _backfill(conn: asyncpg.Connection, layout: Layout, f: Field) -> None:
    """Fill the new column of field ``f`` from the stored documents, each value converted as
    a write converts it (:data:`~sinks.postgres.encode.CONVERTERS`): a SQL cast would be
    looser (a timestamp without an offset read in the server's time zone, ``'yes'`` as a
    boolean), so old rows would hold values the next write of the same document refuses."""
    convert = CONVERTERS[f.type]
    after = ""
    while True:
        rows = await conn.fetch(layout.backfill_read(), f.name, after, BACKFILL_ROWS)
        if not rows:
            return
        keys, values = [], []
        for key, text in rows:
            value = None if text is None else jsontext.loads(text)
            if value is None:
                continue  # absent or null: NULL, as the column starts
            try:
                values.append(convert(value))
            except ValueError as exc:
                raise ConfigurationError(
                    f"{layout.schema}.{layout.table}.{f.name}",
                    f.type.value,
                    f"the stored document {key!r} holds a value the new column cannot take "
                    f"({exc}); " + _REBUILD,
                ) from None
            keys.append(key)
        if keys:
            await conn.execute(layout.backfill_write(f), keys, values)
        after = rows[-1][0]


async def ensure_target(conn: asyncpg.Connection, layout: Layout) -> list[str]:
    """Create or evolve the generation table, its indexes and (if absent) the view.

    Returns the names of the columns added. Raises :class:`ConfigurationError` for a
    destructive change or for another kind of relation in the way.
    """
    await ensure_base(conn, layout)
    kind = await _relkind(conn, layout, layout.table)
    added: list[str] = []
    if kind is None:
        await conn.execute(layout.create_table())
    elif kind != "r":
        raise ConfigurationError(
            f"{layout.schema}.{layout.table}", kind, "a relation that is not a table has the name"
        )
    else:
        for f in plan_changes(layout, await _columns(conn, layout, layout.table)):
            await conn.execute(layout.add_column(f))
            await _backfill(conn, layout, f)
            added.append(f.name)
    for statement in layout.create_indexes():
        await conn.execute(statement)
    await ensure_view(conn, layout, swap=False)
    return added


_VIEW_GRANTS = (
    "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
    "WHERE table_schema = $1 AND table_name = $2 AND grantee <> current_user"
)
"""Privileges others hold on the view (a swap drops and creates it: they are granted again)."""


async def ensure_view(conn: asyncpg.Connection, layout: Layout, *, swap: bool) -> None:
    """Create the view if absent; refresh its columns when it reads this generation; with
    ``swap``, point it at this generation (drop and create in the caller's transaction)."""
    kind = await _relkind(conn, layout, layout.view)
    if kind is None:
        await conn.execute(layout.create_view())
        return
    if kind != "v":
        raise ConfigurationError(
            f"{layout.schema}.{layout.view}",
            kind,
            "the projection's view name is taken by a relation that is not a view; drop or "
            "rename it",
        )
    reads = await view_reads(conn, layout)
    if reads != layout.table and not swap:
        return
    columns = tuple(await _columns(conn, layout, layout.view))
    if reads == layout.table and columns == layout.view_columns():
        return
    grants = await conn.fetch(_VIEW_GRANTS, layout.schema, layout.view)
    await conn.execute(f"DROP VIEW {layout.qualified(layout.view)}")
    await conn.execute(layout.create_view())
    for grantee, privilege in grants:  # readers keep what they were granted on the view
        who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
        await conn.execute(f"GRANT {privilege} ON {layout.qualified(layout.view)} TO {who}")


async def drop_generation(conn: asyncpg.Connection, layout: Layout, lane: str) -> None:
    """Drop the generation's table (and the view if it reads it) and the lane's checkpoint."""
    await ensure_base(conn, layout)
    if await view_reads(conn, layout) == layout.table:
        await conn.execute(f"DROP VIEW {layout.qualified(layout.view)}")
    await conn.execute(f"DROP TABLE IF EXISTS {layout.qualified(layout.table)}")
    await conn.execute(
        f"DELETE FROM {layout.checkpoints} WHERE lane = $1 AND generation = $2",
        lane,
        layout.generation,
    )
