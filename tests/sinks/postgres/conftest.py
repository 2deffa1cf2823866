"""Fixtures of the Postgres sink tests: one schema per test (``namespace``) holds the event
store, the catalog and the read models; it is dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from core.eventstore.postgres import PostgresEventStore
from sinks.postgres import PostgresSink, PostgresSinkSettings


@dataclass
class PgEnv:
    dsn: str
    schema: str
    store: PostgresEventStore
    settings: PostgresSinkSettings

    def sink(self, *, name: str | None = None, **settings: Any) -> PostgresSink:
        merged = PostgresSinkSettings.model_validate(
            {**self.settings.model_dump(by_alias=True), **settings}
        )
        return PostgresSink(merged, name=name)


@pytest.fixture
async def pg(postgres_dsn: str, namespace: str) -> AsyncIterator[PgEnv]:
    store = await PostgresEventStore.connect(
        postgres_dsn, schema=namespace, pool_size=3, poll_interval=0.2
    )
    settings = PostgresSinkSettings(dsn=postgres_dsn, schema=namespace, pool_size=3)
    try:
        yield PgEnv(postgres_dsn, namespace, store, settings)
    finally:
        await store.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        finally:
            await conn.close()
