"""Event log benchmark: append and read rates of the Postgres event store.

    .venv/bin/python bench/eventlog.py --events 100000

Append: ``--events`` events in batches of 10 per append (each append its own transaction,
with an expected version), by 1 writer, then by 8 concurrent writers. Read: the whole log
(2 x ``--events`` rows) page by page, three ways in the same run:

* ``store.read``: rows decoded to :class:`~core.events.EventEnvelope` (what lanes get);
* raw fetch: the same query text through the same pool, JSON decoded, no envelopes built;
* raw text: the same query on a plain asyncpg connection, jsonb left as text (no decoding).

It works in a fresh schema (dropped at the end) of ``--dsn`` (default
``$PROJECTIONIST_POSTGRES_DSN``), prints a table and writes JSON to
``bench/results/eventlog.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import anyio
import asyncpg

from core.events import NewEvent
from core.eventstore import NO_STREAM
from core.eventstore.postgres import PostgresEventStore
from core.position import START, Position

BATCH = 10
APPENDS_PER_STREAM = 10
RESULTS = Path(__file__).resolve().parent / "results" / "eventlog.json"


def order_events(count: int, prefix: str) -> list[tuple[str, list[NewEvent]]]:
    """``count`` order-like events (about 250 bytes of JSON each), in batches of ``BATCH``,
    ``APPENDS_PER_STREAM`` batches per stream."""
    batches = []
    for b in range(count // BATCH):
        stream = f"{prefix}-order-{b // APPENDS_PER_STREAM}"
        batch = [
            NewEvent(
                event_type="ItemAdded",
                data={
                    "order_id": stream,
                    "line": b * BATCH + i,
                    "sku": f"SKU-{(b * 7 + i) % 500:04d}",
                    "product": "Stainless steel water bottle, 750 ml",
                    "quantity": 1 + i % 3,
                    "unit_price": "12.50",
                    "customer": {"id": f"c-{b % 997}", "tier": "gold"},
                },
                metadata={"correlation_id": str(uuid.uuid4()), "source": "bench"},
            )
            for i in range(BATCH)
        ]
        batches.append((stream, batch))
    return batches


async def append_rate(store: PostgresEventStore, events: int, writers: int) -> dict[str, Any]:
    work = order_events(events, f"w{writers}")
    shares: list[list[tuple[str, list[NewEvent]]]] = [[] for _ in range(writers)]
    for n, (stream, batch) in enumerate(work):  # a stream belongs to one writer
        shares[n // APPENDS_PER_STREAM % writers].append((stream, batch))

    async def writer(share: list[tuple[str, list[NewEvent]]]) -> None:
        versions: dict[str, int] = {}
        for stream, batch in share:
            result = await store.append(stream, batch, versions.get(stream, NO_STREAM))
            versions[stream] = result.next_expected_version

    started = perf_counter()
    async with anyio.create_task_group() as tg:
        for share in shares:
            tg.start_soon(writer, share)
    seconds = perf_counter() - started
    return {
        "writers": writers,
        "batch": BATCH,
        "events": len(work) * BATCH,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(work) * BATCH / seconds),
    }


async def read_envelopes(store: PostgresEventStore, page: int) -> tuple[int, float]:
    after, rows, started = START, 0, perf_counter()
    while True:
        got = await store.read(after, page)
        rows += len(got)
        if len(got) < page:
            return rows, perf_counter() - started
        after = got[-1].position


async def read_raw(fetch: Any, query: str, page: int) -> tuple[int, float]:
    after, rows, started = START, 0, perf_counter()
    while True:
        got = await fetch(query, str(after[0]), after[1], page)
        rows += len(got)
        if len(got) < page:
            return rows, perf_counter() - started
        after = Position(got[-1]["txid"], got[-1]["global_position"])


async def read_rates(store: PostgresEventStore, dsn: str, total: int) -> list[dict[str, Any]]:
    query = store._sql.read  # the store's own statement text: same plan, same rows
    plain = await asyncpg.connect(dsn)
    try:
        await read_raw(store.pool.fetch, query, 10_000)  # warm the cache once
        out = []
        for page in (1_000, 10_000):
            row: dict[str, Any] = {"page": page}
            for name, run in (
                ("store_read", read_envelopes(store, page)),
                ("raw_fetch", read_raw(store.pool.fetch, query, page)),
                ("raw_text", read_raw(plain.fetch, query, page)),
            ):
                rows, seconds = await run
                if rows != total:
                    print(f"warning: {name} read {rows} rows of {total} (fence held?)")
                row[name] = {"rows": rows, "seconds": round(seconds, 3)}
                row[name]["events_per_s"] = round(rows / seconds)
            out.append(row)
        return out
    finally:
        await plain.close()


def table(result: dict[str, Any]) -> str:
    lines = [
        f"event log benchmark: {result['events']:,} events per append run, {result['server']}",
        "",
        f"{'append':<8}{'writers':>8}{'batch':>7}{'events':>10}{'seconds':>10}{'events/s':>11}",
    ]
    for a in result["append"]:
        lines.append(
            f"{'':<8}{a['writers']:>8}{a['batch']:>7}{a['events']:>10,}{a['seconds']:>10.2f}"
            f"{a['events_per_s']:>11,}"
        )
    lines += [
        "",
        f"{'read':<8}{'page':>8}{'rows':>10}{'store.read (envelopes)':>25}"
        f"{'raw fetch (json)':>19}{'raw fetch (text)':>19}",
    ]
    for r in result["read"]:
        lines.append(
            f"{'':<8}{r['page']:>8,}{r['store_read']['rows']:>10,}"
            f"{r['store_read']['events_per_s']:>19,} ev/s"
            f"{r['raw_fetch']['events_per_s']:>14,} ev/s{r['raw_text']['events_per_s']:>14,} ev/s"
        )
    return "\n".join(lines)


async def main(events: int, dsn: str) -> dict[str, Any]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    store = await PostgresEventStore.connect(dsn, schema=schema, pool_size=12)
    try:
        server = await store.pool.fetchval("SHOW server_version")
        append = [await append_rate(store, events, 1), await append_rate(store, events, 8)]
        total = sum(a["events"] for a in append)
        result = {
            "benchmark": "eventlog",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": events,
            "server": f"PostgreSQL {server}",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "append": append,
            "read": await read_rates(store, dsn, total),
        }
    finally:
        await store.pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await store.close()
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per append run")
    parser.add_argument("--dsn", default=os.environ.get("PROJECTIONIST_POSTGRES_DSN"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.dsn:
        sys.exit("set PROJECTIONIST_POSTGRES_DSN (or pass --dsn): `scripts/services up`")
    if args.events < BATCH * 8:
        sys.exit(f"--events must be at least {BATCH * 8}")
    result = anyio.run(main, args.events, args.dsn)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    cli()
