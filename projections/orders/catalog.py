"""The enrichment lookups of the orders domain: customers and products tables in Postgres."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import asyncpg

from core.errors import LookupUnavailable
from core.lookups import LookupProvider
from core.naming import quote_ident, validate_name
from core.redact import redact_text

__all__ = ("CATALOG_DDL", "PostgresCatalog")


def CATALOG_DDL(schema: str) -> str:  # noqa: N802 - reads as a constant
    s = quote_ident(validate_name("catalog.schema", schema))
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.customers (
    id text PRIMARY KEY, name text NOT NULL, email text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.products (
    id text PRIMARY KEY, name text NOT NULL, category text NOT NULL
);
"""


class PostgresCatalog(LookupProvider):
    """``customer`` -> ``{name, email}``; ``product`` -> ``{name, category}``; one query each."""

    _QUERIES = {
        "customer": "SELECT id, name, email FROM {s}.customers WHERE id = ANY($1::text[])",
        "product": "SELECT id, name, category FROM {s}.products WHERE id = ANY($1::text[])",
    }

    def __init__(self, pool: asyncpg.Pool, schema: str = "catalog") -> None:
        self.pool = pool
        s = quote_ident(validate_name("catalog.schema", schema))
        self._queries = {k: q.format(s=s) for k, q in self._QUERIES.items()}

    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]:
        query = self._queries.get(source)
        if query is None:
            return {}
        try:
            rows = await self.pool.fetch(query, list(ids))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LookupUnavailable(redact_text(f"{source} lookup: {exc}")) from None
        return {r["id"]: {k: v for k, v in dict(r).items() if k != "id"} for r in rows}


async def catalog_lookups(pool: asyncpg.Pool, settings: object) -> PostgresCatalog:
    """The lookups factory named in the default settings (``projections.orders:catalog_lookups``).

    Creates the catalog tables if missing, in the ``catalog`` schema of the event store's
    database.
    """
    await pool.execute(CATALOG_DDL("catalog"))
    return PostgresCatalog(pool, "catalog")
