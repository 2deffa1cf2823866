"""Where the benchmark writes: the services' addresses, and one namespace per part of the run
(its own Postgres schema, Redis key prefixes, Elasticsearch indices and DuckDB file), so
parts never share a read model and everything is removed at the end."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from elasticsearch import AsyncElasticsearch
from redis.asyncio import Redis

__all__ = ("AnotherRun", "Services", "Where", "clear", "one_run_at_a_time")


@dataclass(frozen=True)
class Services:
    """The addresses of the stores, from the ``PROJECTIONIST_*`` variables, and the one store
    setting a run may change (``--duckdb-memory-limit``)."""

    dsn: str
    redis_url: str
    elasticsearch_url: str
    duckdb_memory_limit: str | None = None
    """The DuckDB sink's ``memory_limit`` for every DuckDB lane of the run (``None``: its
    default)."""

    @classmethod
    def from_environment(cls) -> Services:
        names = ("POSTGRES_DSN", "REDIS_URL", "ELASTICSEARCH_URL")
        values = [os.environ.get(f"PROJECTIONIST_{n}", "") for n in names]
        missing = [f"PROJECTIONIST_{n}" for n, v in zip(names, values, strict=True) if not v]
        if missing:
            raise SystemExit(
                f"set {', '.join(missing)} (`make bench` loads them through "
                "scripts/with-services-env; start the services with `scripts/services up`)"
            )
        return cls(*values)


@dataclass(frozen=True)
class Where:
    """A part's namespace ``ns``: schema ``<ns>_rm`` in Postgres, key prefixes
    ``<ns>_<projection>`` in Redis, indices ``<ns>_*`` in Elasticsearch, files in ``folder``."""

    namespace: str
    folder: Path

    @property
    def read_models(self) -> str:
        return f"{self.namespace}_rm"

    @property
    def index_prefix(self) -> str:
        return f"{self.namespace}_"

    def key_prefix(self, projection: str) -> str:
        return f"{self.namespace}_{projection}"

    @property
    def duckdb_path(self) -> Path:
        return self.folder / f"{self.namespace}.duckdb"

    def log_file(self, what: str) -> Path:
        """Where a runner's stderr goes (beside ``folder``: kept after :func:`clear`)."""
        return self.folder.parent / f"{self.namespace}-{what}.log"


async def clear(where: Where, services: Services) -> None:
    """Remove everything written under ``where`` in every store."""
    conn = await asyncpg.connect(services.dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{where.read_models}" CASCADE')
    finally:
        await conn.close()
    redis = Redis.from_url(services.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{{{where.namespace}_*", count=1_000)]
        for start in range(0, len(keys), 1_000):
            await redis.unlink(*keys[start : start + 1_000])
    finally:
        await redis.aclose()
    es = AsyncElasticsearch(services.elasticsearch_url, request_timeout=120)
    try:
        found = await es.indices.get(index=f"{where.index_prefix}*", expand_wildcards="all")
        if found:
            await es.indices.delete(index=",".join(sorted(found)))
    finally:
        await es.close()
    if where.folder.exists():
        shutil.rmtree(where.folder, ignore_errors=True)


RUN_LOCK = "projectionist-bench"
"""The Postgres advisory lock a run holds: its namespaces (``bench_all``, ``bench_log``, ...)
are fixed, so two runs on one set of services would drop each other's read models."""


class AnotherRun(SystemExit):
    """Another run holds :data:`RUN_LOCK` on these services."""


@asynccontextmanager
async def one_run_at_a_time(dsn: str) -> AsyncIterator[None]:
    """Hold :data:`RUN_LOCK` for the whole run, on a connection of its own (a session-level
    advisory lock, released when the run ends or its process dies); raise
    :class:`AnotherRun` at once if another run holds it."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", RUN_LOCK):
            holder = await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND (classid::bigint << 32 | objid::bigint) = hashtext($1)",
                RUN_LOCK,
            )
            raise AnotherRun(
                f"another bench/run.py is running on these services (the Postgres backend of "
                f"pid {holder} holds the advisory lock {RUN_LOCK!r}); both write under the same "
                "names, so wait for it to finish or stop it"
            )
        yield
    finally:
        await conn.close()  # releases the lock
