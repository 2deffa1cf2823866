"""Helpers of the Redis sink tests: the order log in Postgres, the oracle at a checkpoint, an
atomic snapshot of a lane's keys, and a lane factory."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
from redis.asyncio import Redis

from core.events import EventEnvelope
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START, Position
from core.retry import Backoff
from core.sink import Sink
from core.strategy import Strategy
from projections.orders import OrderCache
from sinks.redis import KeyLayout
from tests.support.orders import Catalog, expected_orders, make_catalog, order_history

SINK_ACL = (
    "+evalsha +script|load +get +set +del +exists +unlink +hget +hset +hdel +hkeys +hmget "
    "+mget +scan +multi +exec +info +config|get +client|setname +ping"
)
"""What the sink and the reader need (ACL test; docs/sinks/redis.md lists the same)."""

ORDERS = 2_000
"""Orders in the shared log (about 10,000 events)."""


@dataclass(frozen=True)
class OrderLog:
    """A static order history in its own Postgres schema, with what the oracle needs."""

    dsn: str
    schema: str
    catalog: Catalog
    envelopes: list[EventEnvelope]

    @property
    def head(self) -> Position:
        return self.envelopes[-1].position

    def expected(self, upto: Position | None = None) -> dict[str, dict[str, Any]]:
        """The oracle's documents after every event at or before ``upto`` (all if None)."""
        events = [e for e in self.envelopes if upto is None or e.position <= upto]
        return expected_orders(events, self.catalog)

    def versions(self, upto: Position | None = None) -> dict[str, int]:
        """Each order's stream version after every event at or before ``upto``."""
        out: dict[str, int] = defaultdict(int)
        for e in self.envelopes:
            if (upto is None or e.position <= upto) and e.stream_id.startswith("order-"):
                out[e.stream_id] = max(out[e.stream_id], e.stream_version)
        return dict(out)

    async def store(self) -> PostgresEventStore:
        return await PostgresEventStore.connect(self.dsn, schema=self.schema, migrate=False)


async def append_history(
    store: PostgresEventStore, history: list[tuple[str, list[Any]]], per_transaction: int = 250
) -> None:
    for start in range(0, len(history), per_transaction):
        async with store.transaction() as tx:
            for stream, events in history[start : start + per_transaction]:
                await tx.append(stream, events)


async def read_all(store: PostgresEventStore, expected: int, timeout: float = 60.0) -> list[Any]:
    """Every event, once all ``expected`` are behind the visibility fence."""
    with anyio.fail_after(timeout):
        while True:
            events = [e async for e in store.iterate(START)]
            if len(events) >= expected:
                return events
            await anyio.sleep(0.2)  # another session's open transaction holds the fence


async def build_log(dsn: str, schema: str, orders: int = ORDERS) -> OrderLog:
    catalog = make_catalog()
    history = order_history(orders, catalog)
    store = await PostgresEventStore.connect(dsn, schema=schema)
    try:
        await append_history(store, history)
        envelopes = await read_all(store, sum(len(events) for _, events in history))
    finally:
        await store.close()
    return OrderLog(dsn, schema, catalog, envelopes)


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def order_lane(
    sink: Sink,
    store: PostgresEventStore,
    catalog: Catalog,
    prefix: str,
    *,
    max_batch: int = 100,
    options: dict[str, Any] | None = None,
    generation: int = 1,
) -> Lane:
    return Lane(
        OrderCache(),
        sink,
        store,
        lookups=StaticLookups(catalog.lookups()),
        strategy=Strategy.immediate(max_batch=max_batch, catch_up_batch=max_batch),
        options={"key_prefix": prefix, **(options or {})},
        generation=generation,
        backoff=Backoff(base=0.02, cap=0.5),
    )


SNAPSHOT = """
local cp = redis.call('HGETALL', KEYS[1])
local versions = redis.call('HGETALL', KEYS[2])
local docs = {}
for i = 1, #versions, 2 do
  docs[#docs + 1] = versions[i]
  docs[#docs + 1] = redis.call('GET', ARGV[1] .. versions[i]) or ''
end
return {cp, versions, docs}
"""


@dataclass(frozen=True)
class Snapshot:
    """What Redis holds for one generation, read in one atomic script call."""

    checkpoints: dict[str, Position]
    versions: dict[str, int]
    documents: dict[str, dict[str, Any]]

    def checkpoint(self, lane: str = "order_cache@redis", generation: int = 1) -> Position | None:
        return self.checkpoints.get(f"{lane}:g{generation}")


async def snapshot(client: Redis, layout: KeyLayout) -> Snapshot:
    reply = await client.eval(
        SNAPSHOT, 2, layout.checkpoint, layout.versions, layout.documents_prefix
    )
    cps, versions, docs = reply

    def pairs(flat: list[bytes]) -> list[tuple[str, bytes]]:
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    return Snapshot(
        checkpoints={k: Position.parse(v.decode()) for k, v in pairs(cps)},
        versions={k: int(v) for k, v in pairs(versions)},
        documents={k: json.loads(v) for k, v in pairs(docs) if v},
    )


async def document_keys(client: Redis, layout: KeyLayout) -> set[str]:
    """Every document key of the generation, found by SCAN (orphans included)."""
    found = set()
    async for key in client.scan_iter(match=layout.documents_pattern, count=1000):
        found.add(key.decode().removeprefix(layout.documents_prefix))
    return found


async def assert_exactly_at_checkpoint(
    client: Redis, layout: KeyLayout, log: OrderLog
) -> Position | None:
    """No half batch: what Redis holds is exactly the oracle at its own checkpoint."""
    snap = await snapshot(client, layout)
    checkpoint = snap.checkpoint()
    if checkpoint is None:
        assert snap.versions == {} and snap.documents == {}
        return None
    assert snap.versions == log.versions(checkpoint), "versions differ from the checkpoint's"
    assert snap.documents == log.expected(checkpoint), "documents differ from the checkpoint's"
    assert await document_keys(client, layout) == set(snap.documents), "stray document keys"
    return checkpoint


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Remove every key of one test prefix (never FLUSHALL: the server is shared)."""
    keys = [k async for k in client.scan_iter(match="{" + prefix + "}*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.unlink(*keys[start : start + 500])
