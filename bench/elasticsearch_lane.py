"""The order search lane on Elasticsearch: catch-up rate against a raw ``_bulk`` loader of the
same final documents, and freshness (append -> searchable) at a steady append rate.

    .venv/bin/python bench/elasticsearch_lane.py --events 200000 [--batch 20000] [--bulk 1000]

1. Generates an order history of about ``--events`` events (tests/support/orders) and appends
   it to the Postgres event store, many streams per transaction, with the catalog beside it.
2. Catch-up: runs the ``order_search`` lane (PostgresEventStore, PostgresCatalog lookups,
   ElasticsearchSink with ``bulk_max_docs=--bulk``, immediate strategy with
   ``catch_up_batch=--batch`` events per flush while behind, the core's default 20,000) from
   an empty index to the head, timed, with the time spent reading the
   log, loading documents (``_mget``), looking up, and writing (``_bulk`` + checkpoint).
3. Raw loader, same run: the lane's final documents (read back from its index) encoded with
   the same action lines and sent to a fresh index of the same mapping and settings with plain
   ``client.bulk`` calls of ``--bulk`` documents each, one request at a time, no runner.
   Bodies are encoded before timing; the lane's time includes its own encoding.
4. Freshness, twice: with the lane running (near-real-time strategy, ``max_delay`` =
   ``--delay`` s and index refresh ``1s``, the defaults; then 0.2 s and ``500ms``), appends
   one new order per event at ``--rate`` events/s for ``--seconds`` s and polls the read alias
   every 20 ms; each order's latency is from its append's commit to the first search that
   finds it, and to the return of the sink write that carried it. Prints p50/p99/max.

Prints docs/s and ratios; JSON to bench/results/elasticsearch_lane.json. The DSN comes from
``--dsn`` or PROJECTIONIST_POSTGRES_DSN, the cluster from ``--url`` or
PROJECTIONIST_ELASTICSEARCH_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from elasticsearch import AsyncElasticsearch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import Clock, Timed, TimedLookups, TimedSource, append_steps  # noqa: E402
from core.events import NewEvent  # noqa: E402
from core.eventstore.postgres import PostgresEventStore  # noqa: E402
from core.lane import Lane  # noqa: E402
from core.operations import Batch, PutDocument  # noqa: E402
from core.sink import Target  # noqa: E402
from core.strategy import Strategy  # noqa: E402
from projections.orders import OrderSearch, PostgresCatalog  # noqa: E402
from projections.orders.demo import seed_catalog  # noqa: E402
from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings  # noqa: E402
from sinks.elasticsearch.bulk import BulkItem, encode, requests  # noqa: E402
from sinks.elasticsearch.mapping import DOCUMENT_FIELD  # noqa: E402
from tests.support.orders import make_catalog, order_history  # noqa: E402

SCHEMA = "bench_es_lane"
PREFIX = "bench_es_"
EVENTS_PER_ORDER = 4.95
RESULTS = ROOT / "bench" / "results" / "elasticsearch_lane.json"
OPTIONS: dict[str, Any] = {"text_subfields": ["customer_email", "items.category"]}


class TimedSink(Timed, ElasticsearchSink):
    pass


class StampingSink(ElasticsearchSink):
    """Records when each document's write (bulk and checkpoint) returned."""

    def __init__(self, settings: ElasticsearchSinkSettings) -> None:
        super().__init__(settings)
        self.written: dict[str, float] = {}

    async def write(self, target: Target, batch: Batch) -> None:
        await super().write(target, batch)
        now = time.perf_counter()
        for op in batch.operations:
            self.written.setdefault(getattr(op, "key", ""), now)


async def setup(dsn: str, events: int) -> tuple[PostgresEventStore, int, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    finally:
        await conn.close()
    store = await PostgresEventStore.connect(dsn, schema=SCHEMA, pool_size=4, poll_interval=0.5)
    catalog = make_catalog()
    await seed_catalog(store.pool, catalog, SCHEMA)
    steps = order_history(round(events / EVENTS_PER_ORDER), catalog)
    started = time.perf_counter()
    await append_steps(store, steps)
    seconds = time.perf_counter() - started
    count = sum(len(new) for _, new in steps)
    print(f"  appended {count:,} events in {seconds:.1f} s ({count / seconds:,.0f}/s)")
    return store, count, count / seconds


async def delete_prefix(client: AsyncElasticsearch) -> None:
    found = await client.indices.get(index=f"{PREFIX}*", expand_wildcards="all")
    if found:
        await client.indices.delete(index=",".join(sorted(found)))


async def catch_up(
    store: PostgresEventStore, settings: ElasticsearchSinkSettings, batch: int
) -> dict[str, Any]:
    clock = Clock()
    async with TimedSink(settings, clock) as sink:
        lane = Lane(
            OrderSearch(),
            sink,
            store,
            source=TimedSource(store, clock),
            lookups=TimedLookups(PostgresCatalog(store.pool, SCHEMA), clock),
            strategy=Strategy.immediate(catch_up_batch=batch),
            options=OPTIONS,
        )
        started = time.perf_counter()
        await lane.run(until_caught_up=True)
        seconds = time.perf_counter() - started
        spent = sum(clock.spent.values())
        return {
            "seconds": seconds,
            "batches": lane.stats.batches,
            "doc_writes": sink.operations_written,
            "breakdown_s": {**clock.spent, "fold and the rest": seconds - spent},
            "index": sink.index(lane.target),
            "target": lane.target,
        }


async def final_documents(client: AsyncElasticsearch, index: str) -> list[PutDocument]:
    await client.indices.refresh(index=index)
    out: list[PutDocument] = []
    after: list[Any] | None = None
    while True:
        extra: dict[str, Any] = {"search_after": after} if after else {}
        answer = await client.search(
            index=index, size=5_000, sort=[{"id": "asc"}], version=True, **extra
        )
        hits = answer["hits"]["hits"]
        out += [PutDocument(h["_id"], h["_version"], h["_source"][DOCUMENT_FIELD]) for h in hits]
        if len(hits) < 5_000:
            return out
        after = hits[-1]["sort"]


async def raw_loader(
    client: AsyncElasticsearch,
    sink: ElasticsearchSink,
    target: Target,
    docs: list[PutDocument],
    bulk: int,
) -> float:
    """Seconds to send the final documents with plain ``_bulk`` requests of ``bulk`` docs into
    a fresh index with the lane's mapping and settings (bodies encoded beforehand)."""
    raw_target = Target(
        lane="raw", projection="order_search_raw", schema=target.schema, options=target.options
    )
    await sink.prepare(raw_target)
    index = sink.index(raw_target)
    items = [encode(index, target.schema, op) for op in docs]
    encoded = [i for i in items if isinstance(i, BulkItem)]
    assert len(encoded) == len(items)
    bodies = [[i.lines for i in group] for group in requests(encoded, bulk, 100 * 1024 * 1024)]
    started = time.perf_counter()
    for body in bodies:
        answer = await client.bulk(operations=body, filter_path="errors")  # type: ignore[arg-type]
        assert not answer["errors"]
    seconds = time.perf_counter() - started
    await client.indices.refresh(index=index)
    stored = (await client.count(index=index))["count"]
    assert stored == len(docs), (stored, len(docs))
    return seconds


async def freshness(
    store: PostgresEventStore,
    settings: ElasticsearchSinkSettings,
    client: AsyncElasticsearch,
    rate: float,
    seconds: float,
    delay: float,
    refresh: str,
    tag: str,
) -> dict[str, Any]:
    """Latency from append to searchable, for new orders appended at a steady rate, with the
    lane's ``max_delay`` = ``delay`` and the index's refresh interval = ``refresh``."""
    catalog = make_catalog()
    customers = sorted(catalog.customers)
    appended: dict[str, float] = {}
    seen: dict[str, float] = {}
    async with StampingSink(settings) as sink:
        lane = Lane(
            OrderSearch(),
            sink,
            store,
            lookups=PostgresCatalog(store.pool, SCHEMA),
            strategy=Strategy.near_real_time(max_delay=delay),
            options=OPTIONS,
            idle_poll=1.0,
        )
        alias = sink.alias("order_search")
        await client.indices.put_settings(
            index=sink.index(lane.target), settings={"refresh_interval": refresh}
        )

        async def append_steadily() -> None:
            interval = 1.0 / rate
            start = time.perf_counter()
            for n in range(int(rate * seconds)):
                due = start + n * interval
                await anyio.sleep(max(0.0, due - time.perf_counter()))
                stream = f"order-fresh-{tag}-{n:07d}"
                event = NewEvent(
                    event_type="OrderCreated", data={"customer_id": customers[n % len(customers)]}
                )
                await store.append(stream, [event])
                appended[stream] = time.perf_counter()

        async def poll() -> None:
            while True:
                waiting = [k for k in appended if k not in seen]
                if waiting:
                    answer = await client.search(
                        index=alias,
                        query={"ids": {"values": waiting}},
                        size=len(waiting),
                        source=False,
                    )
                    now = time.perf_counter()
                    for hit in answer["hits"]["hits"]:
                        seen.setdefault(hit["_id"], now)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as group:
            group.start_soon(lane.run)
            with anyio.fail_after(60):
                while lane.checkpoint != await store.head():  # noqa: ASYNC110 - polls state
                    await anyio.sleep(0.1)
            group.start_soon(poll)
            await append_steadily()
            with anyio.move_on_after(30):
                while len(seen) < len(appended):  # noqa: ASYNC110 - polls state
                    await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    latencies = sorted(seen[k] - appended[k] for k in seen)
    q = statistics.quantiles(latencies, n=100)
    to_write = statistics.quantiles(
        sorted(sink.written[k] - appended[k] for k in seen if k in sink.written), n=100
    )
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "orders": len(appended),
        "found": len(seen),
        "lane_max_delay_s": delay,
        "refresh_interval": refresh,
        "p50_s": round(q[49], 3),
        "p99_s": round(q[98], 3),
        "max_s": round(latencies[-1], 3),
        "mean_s": round(statistics.fmean(latencies), 3),
        "append_to_written_p50_s": round(to_write[49], 3),
        "append_to_written_p99_s": round(to_write[98], 3),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"elasticsearch lane bench: ~{args.events:,} events, batch {args.batch}, bulk {args.bulk}"
    )
    store, events, append_rate = await setup(args.dsn, args.events)
    settings = ElasticsearchSinkSettings(
        url=args.url, index_prefix=PREFIX, bulk_max_docs=args.bulk, request_timeout=120
    )
    client = AsyncElasticsearch(args.url, request_timeout=120)
    try:
        await delete_prefix(client)
        lane = await catch_up(store, settings, args.batch)
        docs = await final_documents(client, lane["index"])
        lane_docs_s = len(docs) / lane["seconds"]
        print(
            f"  lane catch-up: {lane['seconds']:.1f} s, {events / lane['seconds']:,.0f} events/s, "
            f"{lane_docs_s:,.0f} final docs/s, {lane['batches']} batches, "
            f"{lane['doc_writes']:,} document writes for {len(docs):,} documents"
        )
        for what, spent in sorted(lane["breakdown_s"].items(), key=lambda kv: -kv[1]):
            print(f"    {what:<18} {spent:7.2f} s  {100 * spent / lane['seconds']:5.1f} %")
        async with ElasticsearchSink(settings) as sink:
            raw_seconds = await raw_loader(client, sink, lane["target"], docs, args.bulk)
        raw_docs_s = len(docs) / raw_seconds
        ratio = lane_docs_s / raw_docs_s
        writes_s = lane["doc_writes"] / lane["seconds"]
        print(
            f"  raw _bulk loader: {raw_seconds:.1f} s, {raw_docs_s:,.0f} docs/s; "
            f"lane/raw = {ratio:.3f} (final documents), "
            f"{writes_s / raw_docs_s:.3f} (document writes, {writes_s:,.0f}/s)"
        )
        fresh = []
        for tag, delay, refresh in (("a", args.delay, "1s"), ("b", 0.2, "500ms")):
            found = await freshness(
                store, settings, client, args.rate, args.seconds, delay, refresh, tag
            )
            fresh.append(found)
            print(
                f"  freshness at {args.rate:g} events/s, lane delay {delay:g} s, refresh "
                f"{refresh}: p50 {found['p50_s']:.3f} s, p99 {found['p99_s']:.3f} s, "
                f"max {found['max_s']:.3f} s ({found['found']}/{found['orders']} found); "
                f"append->written p50 {found['append_to_written_p50_s']:.3f} s, "
                f"p99 {found['append_to_written_p99_s']:.3f} s"
            )
        nodes = await client.nodes.info(node_id="_local", filter_path="nodes.*.version")
        return {
            "events": events,
            "documents": len(docs),
            "batch_events": args.batch,
            "bulk_docs": args.bulk,
            "append_events_per_s": round(append_rate),
            "lane": {
                "seconds": round(lane["seconds"], 3),
                "events_per_s": round(events / lane["seconds"]),
                "final_docs_per_s": round(lane_docs_s),
                "batches": lane["batches"],
                "doc_writes": lane["doc_writes"],
                "write_amplification": round(lane["doc_writes"] / len(docs), 3),
                "doc_writes_per_s": round(writes_s),
                "breakdown_s": {k: round(v, 3) for k, v in lane["breakdown_s"].items()},
            },
            "raw_bulk": {"seconds": round(raw_seconds, 3), "docs_per_s": round(raw_docs_s)},
            "lane_to_raw_ratio": round(ratio, 4),
            "lane_doc_writes_to_raw_ratio": round(writes_s / raw_docs_s, 4),
            "freshness": fresh,
            "environment": {
                "python": platform.python_version(),
                "elasticsearch": [n["version"] for n in nodes["nodes"].values()],
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
            },
        }
    finally:
        if not args.keep:
            await delete_prefix(client)
            async with store.pool.acquire() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        await client.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--batch", type=int, default=20_000, help="lane catch_up_batch: events per flush"
    )
    parser.add_argument("--bulk", type=int, default=1_000, help="documents per _bulk request")
    parser.add_argument("--rate", type=float, default=100.0, help="freshness: events/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="freshness: duration")
    parser.add_argument("--delay", type=float, default=0.5, help="freshness: lane max_delay")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PROJECTIONIST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:55499/dev"
        ),
    )
    parser.add_argument(
        "--url", default=os.environ.get("PROJECTIONIST_ELASTICSEARCH_URL", "http://127.0.0.1:59200")
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema and indices")
    outcome = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"  results: {RESULTS.relative_to(ROOT)}")
