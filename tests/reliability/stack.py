"""The reliability tests' corner of the shared services: one test's namespaces, the runner's
settings for the order read models in the four stores (optionally through proxies), writers
appending orders at a steady rate, and reading a lane's documents back."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from core.events import NewEvent
from core.eventstore.postgres import PostgresEventStore
from core.settings import LaneSettings, Settings, SinkSettings
from core.sink import Sink, StoredDocument, Target
from core.strategy import Strategy
from projections.orders.demo import seed_catalog
from tests.sinks.elasticsearch.proxy import TcpProxy
from tests.support.orders import Catalog, make_catalog

__all__ = ("LANES", "RATE", "Stack", "append_orders", "load_all", "stack_fixture", "tcp_proxy")

RATE = 120.0
"""Events the writers append per second, throughout."""
LANES: tuple[tuple[str, str, Strategy], ...] = (
    ("OrderSummary", "postgres", Strategy.immediate(max_batch=200, catch_up_batch=400)),
    ("OrderDetail", "postgres", Strategy.immediate(max_batch=200, catch_up_batch=400)),
    ("OrderCache", "redis", Strategy.immediate(max_batch=200, catch_up_batch=400)),
    ("OrderSearch", "elasticsearch", Strategy.near_real_time(max_delay=0.2, max_batch=300)),
    ("OrderAnalytics", "duckdb", Strategy.batch(interval=0.3, max_batch=500)),
)


@dataclass
class Stack:
    """One test's corner of the shared services, and how to reach each store."""

    namespace: str
    postgres_dsn: str
    redis_url: str
    elasticsearch_url: str
    duckdb_file: Path
    catalog: Catalog = field(default_factory=make_catalog)

    @property
    def application_name(self) -> str:
        """The runner's read-model connections call themselves this (the kill switch's aim)."""
        return f"{self.namespace}_runner"

    def settings(
        self,
        lanes: list[LaneSettings],
        via: dict[str, str] | None = None,
        application_name: str | None = None,
    ) -> Settings:
        """The runner's settings; ``via`` maps a sink to a proxy's address (the event log is
        always reached directly)."""
        via, ns = via or {}, self.namespace
        options: dict[str, dict[str, Any]] = {
            "postgres": {
                "dsn": via.get("postgres", self.postgres_dsn),
                "application_name": application_name or self.application_name,
            },
            "redis": {"url": via.get("redis", self.redis_url)},
            "elasticsearch": {
                "url": via.get("elasticsearch", self.elasticsearch_url),
                "index_prefix": f"{ns}_",
                "request_timeout": 5.0,
            },
            "duckdb": {},
        }
        sinks = {
            name: SinkSettings(factory=f"sinks.factories:{name}", options=values)
            for name, values in options.items()
        }
        return Settings(
            postgres_dsn=self.postgres_dsn,
            redis_url=self.redis_url,
            elasticsearch_url=self.elasticsearch_url,
            duckdb_path=self.duckdb_file,
            event_store_schema=ns,
            read_model_schema=f"{ns}_rm",
            sinks=sinks,
            lanes=lanes,
            poll_interval=0.2,
        )

    def lanes(
        self, sinks: tuple[str, ...] = ("postgres", "redis", "elasticsearch", "duckdb")
    ) -> list[LaneSettings]:
        """The order read models' lanes (:data:`LANES`) on ``sinks``."""
        return [
            LaneSettings(
                projection=f"projections.orders:{cls}",
                sink=sink,
                strategy=strategy,
                options={"key_prefix": f"{self.namespace}order"} if sink == "redis" else {},
            )
            for cls, sink, strategy in LANES
            if sink in sinks
        ]

    def direct(self, lanes: list[LaneSettings]) -> Settings:
        """Settings that reach every store directly, for the test's own reads."""
        return self.settings(lanes, application_name=f"{self.namespace}_audit")

    async def open_store(self) -> PostgresEventStore:
        store = await PostgresEventStore.connect(
            self.postgres_dsn, schema=self.namespace, pool_size=4, poll_interval=0.2
        )
        await seed_catalog(store.pool, self.catalog)
        return store

    async def drop_schemas(self) -> None:
        conn = await asyncpg.connect(self.postgres_dsn)
        try:
            for schema in (self.namespace, f"{self.namespace}_rm"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
        for leftover in self.duckdb_file.parent.glob(f"{self.namespace}.*"):
            leftover.unlink()


@pytest.fixture(name="stack")
def stack_fixture(
    postgres_dsn: str,
    redis_url: str,
    elasticsearch_url: str,
    duckdb_dir: Path,
    namespace: str,
) -> Stack:
    return Stack(
        namespace, postgres_dsn, redis_url, elasticsearch_url, duckdb_dir / f"{namespace}.duckdb"
    )


async def append_orders(
    store: PostgresEventStore,
    steps: list[tuple[str, list[NewEvent]]],
    stop: anyio.Event,
    *,
    rate: float = RATE,
    writers: int = 2,
) -> None:
    """Append ``steps`` at ``rate`` events per second with ``writers`` concurrent writers (each
    owns a share of the streams, so per-stream order holds) until ``stop`` is set."""
    shares: list[list[tuple[str, list[NewEvent]]]] = [[] for _ in range(writers)]
    for stream, events in steps:
        shares[zlib.crc32(stream.encode()) % writers].append((stream, events))
    interval = writers / rate

    async def write(share: list[tuple[str, list[NewEvent]]]) -> None:
        started = monotonic()
        for n, (stream, events) in enumerate(share):
            if stop.is_set():
                return
            await store.append(stream, events)
            await anyio.sleep(max(0.0, started + (n + 1) * interval - monotonic()))

    async with anyio.create_task_group() as group:
        for share in shares:
            group.start_soon(write, share)


# -- reading back ----------------------------------------------------------------------------


async def load_all(sink: Sink, target: Target, keys: list[str]) -> dict[str, StoredDocument]:
    out: dict[str, StoredDocument] = {}
    for start in range(0, len(keys), 500):
        out.update(await sink.load(target, keys[start : start + 500]))
    return out


def tcp_proxy(url: str, default_port: int) -> TcpProxy:
    """A TCP proxy in front of the service at ``url`` (for cutting it off)."""
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
