"""The order cache read model end to end: the Postgres event log, a real lane, the real Redis,
compared with the independent oracle of tests/support/orders.py."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from core.errors import CheckpointConflict, ConfigurationError
from core.eventstore.postgres import PostgresEventStore
from core.operations import Batch
from core.position import Position
from core.sink import Target
from core.strategy import LaneState
from sinks.redis import KeyLayout, OrderCacheReader, RedisSink
from tests.sinks.redis.support import (
    OrderLog,
    append_history,
    drop_schema,
    order_lane,
    read_all,
    snapshot,
)
from tests.support.orders import expected_orders, make_catalog, order_history

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.postgres]


class RecordingSink(RedisSink):
    """The real sink, keeping each batch it wrote (to replay them)."""

    written: list[Batch]

    async def write(self, target: Target, batch: Batch) -> None:
        await super().write(target, batch)
        self.written = [*getattr(self, "written", []), batch]


async def test_cache_equals_the_oracle(
    sink: RedisSink, raw: Redis, namespace: str, order_log: OrderLog
) -> None:
    store = await order_log.store()
    try:
        lane = order_lane(sink, store, order_log.catalog, namespace, max_batch=250)
        await lane.run(until_caught_up=True)
    finally:
        await store.close()
    expected = order_log.expected()
    assert len(expected) == 2_000
    snap = await snapshot(raw, KeyLayout(namespace))
    assert snap.checkpoint() == order_log.head
    assert snap.documents == expected
    assert snap.versions == order_log.versions()
    async with OrderCacheReader(sink.settings, prefix=namespace) as orders:
        assert await orders.get_orders([*expected, "order-missing"]) == expected
        some = next(iter(expected))
        assert await orders.get_order(some) == expected[some]
        assert await orders.get_order("order-missing") is None


async def test_replayed_batches_change_nothing(
    redis_settings: Any, raw: Redis, namespace: str, order_log: OrderLog
) -> None:
    rng = random.Random(5)
    async with RecordingSink(redis_settings) as sink:
        store = await order_log.store()
        try:
            lane = order_lane(sink, store, order_log.catalog, namespace, max_batch=400)
            await lane.run(until_caught_up=True)
        finally:
            await store.close()
        batches = sink.written
        assert len(batches) > 10
        before = await snapshot(raw, KeyLayout(namespace))
        head = order_log.head

        # the same generation: every batch again, twice, in random order
        for _ in range(2):
            for old in rng.sample(batches, len(batches)):
                await sink.write(lane.target, Batch(old.lane, old.operations, head, head))
        assert await snapshot(raw, KeyLayout(namespace)) == before

        # a new generation filled by the batches out of order, twice: same documents
        fresh = order_lane(sink, store, order_log.catalog, namespace, generation=2).target
        await sink.prepare(fresh)
        at: Position | None = None
        for n, old in enumerate(rng.sample(batches, len(batches)) * 2, start=1):
            await sink.write(fresh, Batch(old.lane, old.operations, at, Position(1, n)))
            at = Position(1, n)
        second = await snapshot(raw, KeyLayout(namespace, 2))
        assert second.documents == order_log.expected()
        assert second.versions == order_log.versions()
        with pytest.raises(ConfigurationError, match="behind the live generation 1"):
            await sink.promote(fresh)  # its checkpoint (1/n here) is behind generation 1's
        await sink.write(fresh, Batch(lane.name, (), at, head))
        assert await sink.promote(fresh) == 1
        async with OrderCacheReader(sink.settings, prefix=namespace) as orders:
            assert await orders.get_orders(order_log.expected()) == order_log.expected()


class HeldSource:
    """The real store, but the first read waits for a signal: a runner paused mid-run."""

    def __init__(self, store: PostgresEventStore, release: anyio.Event) -> None:
        self.store = store
        self.release = release

    async def read(self, after: Position, limit: int) -> list[Any]:
        await self.release.wait()
        return await self.store.read(after, limit)

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


async def test_a_stale_runner_gets_a_checkpoint_conflict(
    sink: RedisSink, raw: Redis, namespace: str, order_log: OrderLog
) -> None:
    store = await order_log.store()
    try:
        paused = order_lane(sink, store, order_log.catalog, namespace, max_batch=300)
        release = anyio.Event()
        paused.source = HeldSource(store, release)
        owner = order_lane(sink, store, order_log.catalog, namespace, max_batch=300)
        errors: list[BaseException] = []

        async def run_paused() -> None:
            try:
                await paused.run(until_caught_up=True)
            except CheckpointConflict as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(run_paused)
            await anyio.sleep(0.2)  # the paused lane has read the (empty) checkpoint
            await owner.run(until_caught_up=True)
            release.set()
    finally:
        await store.close()
    assert len(errors) == 1 and "checkpoint expected at None" in str(errors[0])
    assert owner.state is LaneState.IDLE
    snap = await snapshot(raw, KeyLayout(namespace))
    assert snap.checkpoint() == order_log.head
    assert snap.documents == order_log.expected()


async def test_expired_entries_are_refolded_by_the_next_event(
    sink: RedisSink, raw: Redis, namespace: str, postgres_dsn: str
) -> None:
    """TTL: after every entry expired, the next event of an order rewrites its whole, correct
    document (the lane refolds the stream from the log); untouched orders stay misses."""
    catalog = make_catalog()
    history = order_history(300, catalog, seed=3)
    half = len(history) // 2
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    try:
        await append_history(store, history[:half])
        await read_all(store, sum(len(e) for _, e in history[:half]))  # behind the fence
        lane = order_lane(sink, store, catalog, namespace, options={"ttl_seconds": 1})
        await lane.run(until_caught_up=True)
        first = await snapshot(raw, KeyLayout(namespace))
        assert len(first.documents) > 100
        await anyio.sleep(1.3)
        assert (await snapshot(raw, KeyLayout(namespace))).documents == {}
        await append_history(store, history[half:])
        events = await read_all(store, sum(len(e) for _, e in history))
        restarted = order_lane(sink, store, catalog, namespace, options={"ttl_seconds": 60})
        await restarted.run(until_caught_up=True)
    finally:
        await store.close()
        await drop_schema(postgres_dsn, namespace)
    expected = expected_orders(events, catalog)
    touched = {e.stream_id for e in events[sum(len(e) for _, e in history[:half]) :]}
    snap = await snapshot(raw, KeyLayout(namespace))
    assert snap.documents == {k: v for k, v in expected.items() if k in touched}
    assert len(snap.documents) > 50
    assert snap.versions == {
        k: max(e.stream_version for e in events if e.stream_id == k) for k in expected
    }
    assert restarted.stats.gaps_repaired > 0
