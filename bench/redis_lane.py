"""Catch-up rate of the order cache lane (Postgres log -> fold -> Redis sink) next to a raw
pipelined write of the same final documents through the same Redis client, in the same run.

    .venv/bin/python bench/redis_lane.py --events 200000

Addresses come from PROJECTIONIST_POSTGRES_DSN and PROJECTIONIST_REDIS_URL (or --dsn,
--redis-url). The run creates a Postgres schema and keys under two bench prefixes and removes
them at the end (``--keep`` keeps the filled log; ``--schema NAME`` reuses one). Results go to
bench/results/redis_lane.json. Each measurement runs ``--repeat`` times and the median is
reported: the machine may be shared (the load average is recorded).

What is measured:

* ``lane``: a fresh order_cache lane from an empty generation to the head of the log, with
  the immediate strategy's defaults (1,000 events per batch at the head, 20,000 while
  catching up): reading the log behind the fence, loading the touched documents, folding,
  one script call per batch (``script_ms_per_batch_on_server``: how long Redis ran it).
  ``sink_seconds`` is the part spent inside the sink's ``load`` and ``write`` (Redis round
  trips, JSON, packing), and
  ``documents_written`` counts every document version the batches carried (an order touched
  by several batches is written several times).
* ``raw_pipelined_set``: SET of every final document (the same JSON text) with pipelines of
  1,000 commands, no version guard, no checkpoint: the floor for writing the final bytes
  through this client.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.eventstore.postgres import PostgresEventStore  # noqa: E402
from core.lane import Lane  # noqa: E402
from core.lookups import StaticLookups  # noqa: E402
from core.operations import Batch  # noqa: E402
from core.sink import StoredDocument, Target  # noqa: E402
from core.strategy import Strategy  # noqa: E402
from projections.orders import OrderCache  # noqa: E402
from sinks.redis import RedisSink, RedisSinkSettings  # noqa: E402
from tests.sinks.redis.support import delete_prefix, drop_schema  # noqa: E402
from tests.support.orders import make_catalog, order_history  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "redis_lane.json"


def history_of(events: int) -> list[tuple[str, list[Any]]]:
    """Order appends totalling exactly ``events`` events (the last orders may be open)."""
    steps = order_history(events // 4 + 100, make_catalog())
    out, count = [], 0
    for stream, new in steps:
        if count >= events:
            break
        out.append((stream, new))
        count += len(new)
    return out


async def fill(store: PostgresEventStore, history: list[tuple[str, list[Any]]]) -> None:
    for start in range(0, len(history), 1_000):
        async with store.transaction() as tx:
            for stream, new in history[start : start + 1_000]:
                await tx.append(stream, new)


def lane(sink: Any, store: PostgresEventStore, prefix: str) -> Lane:
    return Lane(
        OrderCache(),
        sink,
        store,
        lookups=StaticLookups(make_catalog().lookups()),
        strategy=Strategy.immediate(),
        options={"key_prefix": prefix},
    )


async def raw_write(sink: RedisSink, prefix: str, documents: dict[str, Any]) -> float:
    encoded = [
        (f"{{{prefix}}}:{key}", json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        for key, doc in documents.items()
    ]
    started = time.perf_counter()
    for start in range(0, len(encoded), 1_000):
        async with sink.client.pipeline(transaction=False) as pipe:
            for key, value in encoded[start : start + 1_000]:
                pipe.set(key, value)
            await pipe.execute()
    return time.perf_counter() - started


class TimedSink(RedisSink):
    """The real sink, timing its ``load`` and ``write`` calls."""

    seconds = 0.0
    documents = 0
    largest = 0

    async def load(self, target: Target, keys: Any) -> dict[str, StoredDocument]:
        started = time.perf_counter()
        try:
            return await super().load(target, keys)
        finally:
            self.seconds += time.perf_counter() - started

    async def write(self, target: Target, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            await super().write(target, batch)
        finally:
            self.seconds += time.perf_counter() - started
            self.documents += len(batch.operations)
            self.largest = max(self.largest, len(batch.operations))


async def script_stats(sink: RedisSink) -> tuple[int, int]:
    """``(calls, microseconds)`` of EVALSHA on the server so far (shared with any other user
    of the server during the run)."""
    stats = await sink.client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return int(evalsha.get("calls", 0)), int(evalsha.get("usec", 0))


async def existing_or_filled(args: argparse.Namespace, history: list[Any]) -> tuple[Any, float]:
    schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
    store = await PostgresEventStore.connect(args.dsn, schema=schema)
    started = time.perf_counter()
    if await store.head() is None:
        await fill(store, history)
    return store, time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    prefix, raw_prefix = f"bench_{tag}", f"bench_raw_{tag}"
    history = history_of(args.events)
    store, append_seconds = await existing_or_filled(args, history)
    lane_runs: list[float] = []
    sink_runs: list[float] = []
    raw_runs: list[float] = []
    written: list[int] = []
    script_ms: list[float] = []
    try:
        head = await store.head()
        keys = sorted({stream for stream, _ in history})
        for _ in range(args.repeat):
            async with TimedSink(RedisSinkSettings(url=args.redis_url)) as sink:
                run = lane(sink, store, prefix)
                before = await script_stats(sink)
                started = time.perf_counter()
                await run.run(until_caught_up=True)
                lane_runs.append(time.perf_counter() - started)
                after = await script_stats(sink)
                calls = max(1, after[0] - before[0])
                script_ms.append((after[1] - before[1]) / calls / 1000)
                sink_runs.append(sink.seconds)
                written.append(sink.documents)
                assert run.checkpoint == head, "the lane did not reach the head"
                stored = await sink.load(run.target, keys)
                documents = {k: v.document for k, v in stored.items() if v.document is not None}
                assert len(documents) == len(keys)
                raw_runs.append(await raw_write(sink, raw_prefix, documents))
                describe = await sink.describe()
                await sink.reset(run.target)
                await delete_prefix(sink.client, raw_prefix)
                await delete_prefix(sink.client, prefix)
    finally:
        await store.close()
        if not args.keep:
            await drop_schema(args.dsn, store.schema)
    events = sum(len(new) for _, new in history)
    doc_bytes = sum(len(json.dumps(d, separators=(",", ":"))) for d in documents.values())
    lane_s, sink_s, raw_s = (statistics.median(r) for r in (lane_runs, sink_runs, raw_runs))
    return {
        "events": events,
        "orders": len(documents),
        "document_bytes_avg": round(doc_bytes / len(documents)),
        "append_seconds": round(append_seconds, 2),
        "log_schema_kept": store.schema if args.keep else None,
        "repeat": args.repeat,
        "lane": {
            "seconds_median": round(lane_s, 3),
            "seconds_runs": [round(r, 3) for r in lane_runs],
            "events_per_second": round(events / lane_s),
            "orders_per_second": round(len(documents) / lane_s),
            "batches": run.stats.batches,
            "batch_size_events_at_head": Strategy.immediate().max_batch,
            "batch_size_events_catching_up": Strategy.immediate().catch_up_batch,
            "sink_seconds_median": round(sink_s, 3),
            "sink_seconds_runs": [round(r, 3) for r in sink_runs],
            "documents_written": written[-1],
            "sink_documents_per_second": round(written[-1] / sink_s),
            "largest_batch_documents": sink.largest,
            "script_ms_per_batch_on_server": round(statistics.median(script_ms), 2),
        },
        "raw_pipelined_set": {
            "seconds_median": round(raw_s, 3),
            "seconds_runs": [round(r, 3) for r in raw_runs],
            "documents_per_second": round(len(documents) / raw_s),
            "pipeline": 1_000,
        },
        "ratio_lane_to_raw_seconds": round(lane_s / raw_s, 1),
        "ratio_sink_to_raw_seconds": round(sink_s / raw_s, 1),
        "environment": {
            "redis": describe["server_version"],
            "parser": describe["parser"],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dsn", default=os.environ.get("PROJECTIONIST_POSTGRES_DSN"))
    parser.add_argument("--redis-url", default=os.environ.get("PROJECTIONIST_REDIS_URL"))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    parser.add_argument("--schema", help="reuse this Postgres schema's log (filled if empty)")
    parser.add_argument("--keep", action="store_true", help="keep the log's schema")
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    if not options.dsn or not options.redis_url:
        parser.error("set PROJECTIONIST_POSTGRES_DSN and PROJECTIONIST_REDIS_URL (or pass them)")
    result = anyio.run(main, options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
