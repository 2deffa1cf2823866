"""Fixtures of the DuckDB sink tests: a working-file path per test (in ``duckdb_dir``, under the
test's namespace), a sink factory that closes what it opened, and a Postgres event store in
the test's own schema, dropped afterwards."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.eventstore.postgres import PostgresEventStore
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings
from tests.support.orders import Catalog, make_catalog

SinkFactory = Callable[..., DuckDBSink]


@pytest.fixture
def db_path(duckdb_dir: Path, namespace: str) -> Iterator[Path]:
    """``<duckdb_dir>/<namespace>/analytics.duckdb``; the folder is removed afterwards."""
    folder = duckdb_dir / namespace
    folder.mkdir(parents=True, exist_ok=True)
    yield folder / "analytics.duckdb"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def make_sink(db_path: Path) -> AsyncIterator[SinkFactory]:
    """``make_sink(**settings)``: a sink on the test's file; every one is closed at the end."""
    made: list[DuckDBSink] = []

    def make(name: str | None = None, **settings: Any) -> DuckDBSink:
        settings.setdefault("path", db_path)
        sink = DuckDBSink(DuckDBSinkSettings(**settings), name=name)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture
async def pg_store(postgres_dsn: str, namespace: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(
        postgres_dsn, schema=namespace, pool_size=3, poll_interval=0.2
    )
    try:
        yield store
    finally:
        await store.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        finally:
            await conn.close()
