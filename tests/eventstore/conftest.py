"""Event store fixtures: each Postgres store lives in its own schema (the test's namespace),
dropped at the end of the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from core.eventstore import EventStore, InMemoryEventStore
from core.eventstore.postgres import PostgresEventStore
from tests.eventstore.support import LIMITS, PgStoreFactory


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_store_factory(postgres_dsn: str, namespace: str) -> AsyncIterator[PgStoreFactory]:
    """``await make(**connect_kwargs)``: a store on the test's schema (closed and dropped)."""
    opened: list[PostgresEventStore] = []

    async def make(**kwargs: Any) -> PostgresEventStore:
        kwargs.setdefault("schema", namespace)
        store = await PostgresEventStore.connect(postgres_dsn, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    await drop_schema(postgres_dsn, namespace)


@pytest.fixture
async def pg_conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection, for what the store does not expose (open transactions, raw rows)."""
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


@pytest.fixture(
    params=[pytest.param("memory"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def store(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[EventStore]:
    """Each store of the contract: the in-memory one and the real Postgres one."""
    if request.param == "memory":
        yield InMemoryEventStore(limits=LIMITS)
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    pg = await PostgresEventStore.connect(dsn, schema=namespace, limits=LIMITS, poll_interval=60)
    try:
        yield pg
    finally:
        await pg.close()
        await drop_schema(dsn, namespace)
