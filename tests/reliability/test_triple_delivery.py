"""Triple delivery: every event and every batch reaches the stores three times, and old ones
come back at random; the stores end identical to applying everything once.

Two seams carry the duplicates:

* the **log**: each lane reads through :class:`TripleSource`, which hands it every event three
  times and slips a few events from earlier chunks in front of each chunk (the lane's
  per-stream guard must drop them all, and counts them);
* the **sink**: each store is wrapped in :class:`Redeliver`, whose ``write`` forwards the batch,
  sends it again unchanged (every store's checkpoint compare-and-set refuses it: a copy of a
  batch whose answer the sink did not lose is a second writer), sends it a third time
  rewritten so that its compare-and-set passes (expected = new = the stored checkpoint), and
  at random re-sends an older batch rewritten the same way. The rewritten copies reach each
  store's data path, where only the version guard can stop them; they carry a marker in
  every document, so one that got through shows in the comparison with the oracle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.errors import CheckpointConflict
from core.events import EventEnvelope
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch, Operation, PutDocument
from core.position import START, Position
from core.projection import Projection
from core.sink import Sink, StoredDocument, Target
from core.strategy import Strategy
from projections.orders import (
    OrderAnalytics,
    OrderCache,
    OrderDetail,
    OrderSearch,
    OrderSummary,
)
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings
from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from sinks.postgres import PostgresSink, PostgresSinkSettings
from sinks.redis import RedisSink, RedisSinkSettings
from tests.reliability.canary import Canary, canary_divergence, canary_expected
from tests.support.orders import expected_orders, make_catalog, order_history

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

MARK = "redelivered"
"""Added to every document of a rewritten copy: a copy the version guard let through shows."""


class TripleSource:
    """Reads the store and returns each event three times, after up to three events of
    earlier chunks (never an empty chunk padded: the head stays the head)."""

    def __init__(self, store: InMemoryEventStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.seen: list[EventEnvelope] = []
        self.duplicates = 0

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        events = await self.store.read(after, limit)
        if not events:
            return events
        old = self.rng.sample(self.seen, min(len(self.seen), self.rng.randint(0, 3)))
        self.seen.extend(events)
        self.duplicates += len(old) + 2 * len(events)
        return [*old, *(e for e in events for _ in range(3))]

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


@dataclass
class Deliveries:
    """What a :class:`Redeliver` sent, per outcome."""

    batches: int = 0
    refused: int = 0
    """Exact copies refused by the checkpoint compare-and-set."""
    landed_before: int = 0
    """Exact copies a sink accepted as its own landed batch (must stay 0: none lost an answer)."""
    through_data: int = 0
    """Rewritten copies of the batch just written: equal versions, through the data path."""
    old: int = 0
    """Rewritten copies of older batches: older versions, through the data path."""
    operations: int = 0
    """Operations in the rewritten copies."""
    store_applied: int = 0
    """Items the store reports it applied from rewritten copies (Elasticsearch only)."""
    failures: list[str] = field(default_factory=list)


def _marked(op: Operation) -> Operation:
    if isinstance(op, PutDocument):
        return PutDocument(op.key, op.version, {**op.document, MARK: True})
    return op


class Redeliver(Sink):
    """Wraps a real sink; every batch is written three times, old batches again at random."""

    def __init__(self, inner: Sink, rng: random.Random, old_rate: float = 0.5) -> None:
        super().__init__(inner.name)
        self.kind = inner.kind
        self.capabilities = inner.capabilities
        self.inner = inner
        self.rng = rng
        self.old_rate = old_rate
        self.history: dict[str, list[Batch]] = {}
        self.sent = Deliveries()
        self._one_at_a_time = anyio.Lock()
        """Lanes sharing the store write in turn, so ``last_report`` is the copy's own."""

    async def prepare(self, target: Target) -> None:
        await self.inner.prepare(target)

    async def read_checkpoint(self, target: Target) -> Position | None:
        return await self.inner.read_checkpoint(target)

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        return await self.inner.load(target, keys)

    async def reset(self, target: Target) -> None:
        await self.inner.reset(target)

    async def write(self, target: Target, batch: Batch) -> None:
        async with self._one_at_a_time:
            await self._deliver(target, batch)

    async def _deliver(self, target: Target, batch: Batch) -> None:
        await self.inner.write(target, batch)
        sent = self.sent
        sent.batches += 1
        try:
            await self.inner.write(target, batch)
            sent.landed_before += 1
        except CheckpointConflict:
            sent.refused += 1
        except Exception as exc:
            sent.failures.append(f"exact copy: {type(exc).__name__}: {exc}")
        await self._rewritten(target, batch, batch.checkpoint)
        sent.through_data += 1
        past = self.history.setdefault(target.lane, [])
        if past and self.rng.random() < self.old_rate:
            await self._rewritten(target, self.rng.choice(past), batch.checkpoint)
            sent.old += 1
        past.append(batch)

    async def _rewritten(self, target: Target, batch: Batch, stored: Position) -> None:
        """``batch`` with a compare-and-set from ``stored`` to ``stored`` (it passes) and every
        document marked: only the version guard keeps it out."""
        copy = replace(
            batch,
            operations=tuple(_marked(op) for op in batch.operations),
            expected_checkpoint=stored,
            checkpoint=stored,
        )
        try:
            await self.inner.write(target, copy)
        except Exception as exc:
            self.sent.failures.append(f"rewritten copy: {type(exc).__name__}: {exc}")
            return
        self.sent.operations += len(copy.operations)
        report = getattr(self.inner, "last_report", None)
        if report is not None:
            self.sent.store_applied += report.applied


def test_canary_divergence_sees_loss_duplicates_and_reordering() -> None:
    """The canary comparison itself: each kind of damage to one stream counts once."""
    catalog = make_catalog()
    store = InMemoryEventStore()

    async def fill() -> list[EventEnvelope]:
        for stream, events in order_history(20, catalog):
            await store.append(stream, events)
        return [e async for e in store.iterate(START)]

    events = anyio.run(fill)
    good: dict[str, dict[str, Any]] = {
        k: {"id": k, "events": ids} for k, ids in canary_expected(events).items()
    }
    assert canary_divergence(events, good) == 0
    a, b, c, d, e = sorted(good)[:5]
    damaged = dict(good)
    ids = {k: list(v["events"]) for k, v in good.items()}
    damaged[a] = {"id": a, "events": ids[a][:-1]}  # lost
    damaged[b] = {"id": b, "events": [*ids[b], ids[b][0]]}  # doubled
    damaged[c] = {"id": c, "events": ids[c][::-1]}  # reordered
    del damaged[d]  # never written
    damaged[e] = {**good[e], MARK: True}  # changed otherwise
    damaged["order-x"] = {"id": "order-x", "events": []}  # a stream the log does not have
    assert canary_divergence(events, damaged) == 6


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.elasticsearch
@pytest.mark.duckdb
async def test_triple_delivery_changes_nothing(
    postgres_dsn: str,
    redis_url: str,
    elasticsearch_url: str,
    duckdb_dir: Path,
    namespace: str,
    request: pytest.FixtureRequest,
    leave_no_trace_async: None,
) -> None:
    orders = 2_000 if request.config.getoption("--long") else 250
    rng = random.Random(namespace)
    catalog = make_catalog()
    store = InMemoryEventStore()
    for stream, appended in order_history(orders, catalog, seed=31, active=60):
        await store.append(stream, appended)
    events = [e async for e in store.iterate(START)]

    postgres = PostgresSink(PostgresSinkSettings(dsn=postgres_dsn, schema=f"{namespace}_rm"))
    redis = RedisSink(RedisSinkSettings(url=redis_url))
    elasticsearch = ElasticsearchSink(
        ElasticsearchSinkSettings(url=elasticsearch_url, index_prefix=f"{namespace}_")
    )
    duckdb = DuckDBSink(
        DuckDBSinkSettings(path=duckdb_dir / f"{namespace}.duckdb", publish_snapshots=False)
    )
    wrapped = {s.kind: Redeliver(s, rng) for s in (postgres, redis, elasticsearch, duckdb)}
    plan: list[tuple[Projection, str, dict[str, Any]]] = [
        (OrderSummary(), "postgres", {}),
        (OrderDetail(), "postgres", {}),
        (OrderCache(), "redis", {"key_prefix": f"{namespace}order"}),
        (OrderSearch(), "elasticsearch", {}),
        (OrderAnalytics(), "duckdb", {}),
        *((Canary(), kind, {}) for kind in ("postgres", "elasticsearch", "duckdb")),
        (Canary(), "redis", {"key_prefix": f"{namespace}canary"}),
    ]
    lookups = StaticLookups(catalog.lookups())
    sources: list[TripleSource] = []
    lanes: list[Lane] = []
    for projection, kind, options in plan:
        sources.append(TripleSource(store, rng))
        lanes.append(
            Lane(
                projection,
                wrapped[kind],
                store,
                source=sources[-1],
                lookups=lookups,
                strategy=Strategy.immediate(max_batch=60, catch_up_batch=60),
                options=options,
            )
        )

    async with postgres, redis, elasticsearch, duckdb:
        async with anyio.create_task_group() as group:
            for lane in lanes:
                group.start_soon(partial(lane.run, until_caught_up=True))
        oracle = expected_orders(events, catalog)
        keys = sorted(canary_expected(events))
        divergent: dict[str, int] = {}
        canaries: dict[str, int] = {}
        for lane in lanes:
            loaded = await lane.sink.load(lane.target, keys)
            docs = {k: v.document for k, v in loaded.items() if v.document is not None}
            if isinstance(lane.projection, Canary):
                canaries[lane.name] = canary_divergence(events, docs)
            else:
                divergent[lane.name] = sum(1 for k in oracle if docs.get(k) != oracle[k]) + len(
                    set(docs) - set(oracle)
                )

    sent = {kind: w.sent for kind, w in wrapped.items()}
    batches = sum(s.batches for s in sent.values())
    refused = sum(s.refused for s in sent.values())
    landed = sum(s.landed_before for s in sent.values())
    through = sum(s.through_data for s in sent.values())
    old = sum(s.old for s in sent.values())
    ops = sum(s.operations for s in sent.values())
    source_dups = sum(s.duplicates for s in sources)
    print(
        f"\ntriple delivery: {len(events)} events x3 to {len(lanes)} lanes in 4 stores "
        f"(+{source_dups - 2 * len(events) * len(lanes)} old events re-read), all "
        f"{source_dups} dropped by the lanes; {batches} batches written 3 times "
        f"({refused} exact copies refused by the checkpoint, {landed} recognised as landed, "
        f"{through} copies through the data path) + {old} old batches re-sent, {ops} "
        f"operations refused by version; divergent documents {sum(divergent.values())}; "
        f"canaries exact in {sum(1 for v in canaries.values() if v == 0)} stores"
        f"\n  per store: "
        + ", ".join(
            f"{k}: {s.batches} batches, {s.refused} refused, {s.landed_before} landed, {s.old} old"
            for k, s in sent.items()
        )
    )
    assert [f for s in sent.values() for f in s.failures] == []
    assert divergent == dict.fromkeys(divergent, 0)
    assert canaries == dict.fromkeys(canaries, 0)
    assert len(divergent) == 5 and len(canaries) == 4
    for kind, s in sent.items():
        assert s.batches >= 30, kind
        assert s.refused == s.batches and s.landed_before == 0, kind
        assert s.through_data == s.batches and s.old >= s.batches // 4, kind
    assert sent["elasticsearch"].store_applied == 0
    for lane, source in zip(lanes, sources, strict=True):
        assert lane.stats.duplicates == source.duplicates, lane.name
