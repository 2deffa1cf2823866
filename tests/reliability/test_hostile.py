"""Hostile input. Rows the append path refuses are written straight into the event table (a
foreign writer's SQL, or raised :class:`~core.events.EventLimits`), and lanes in all four stores
run over them: no crash, bounded memory, bad events parked, their neighbours processed. Names
built to break a store are refused at start, naming the field, the value and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from redis.asyncio import Redis

from core.events import EventEnvelope
from core.eventstore.postgres import PostgresEventStore
from core.position import Position
from core.settings import Settings
from tests.cli.test_commands import cli, one_line_error
from tests.reliability.runs import LANES, Services, write_config
from tests.support.orders import expected_orders, make_catalog

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
    pytest.mark.usefixtures("leave_no_trace"),
]

BIN = Path(sys.executable).with_name("projectionist")
BIG = 20 * 1024 * 1024
"""Bytes of the largest payload: tens of MB, twenty times the append limit."""
DEEP = 10_000
"""Nesting of the deepest payload: beyond what Python's json decodes (about 1,000 levels), and
within what Postgres accepts with its default ``max_stack_depth`` of 2 MB (about 14,000)."""
RSS_CEILING = 1024 * 1024 * 1024
"""Peak RSS allowed to the runner over all of it: about 50 times the largest payload."""


def run_measured(env: dict[str, str], timeout: float) -> tuple[int, str, int]:
    """``projectionist run --until-caught-up``: exit code, stderr and peak RSS in bytes (from
    ``wait4``: the kernel's high-water mark of that one process)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [str(BIN), "run", "--until-caught-up"], env={**base, **env}, stderr=err
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(errors="replace"), usage.ru_maxrss * 1024


async def stored_documents(settings: Settings, keys: list[str]) -> dict[str, dict[str, Any]]:
    """``lane -> {key: document}`` for ``keys``, read through each sink's own ``load``."""
    from core.app import App

    out: dict[str, dict[str, Any]] = {}
    async with App(settings) as app:
        for lane in app.lanes:
            await lane.sink.prepare(lane.target)
            found: dict[str, Any] = {}
            for i in range(0, len(keys), 500):
                loaded = await lane.sink.load(lane.target, keys[i : i + 500])
                found.update({k: v.document for k, v in loaded.items() if v.document is not None})
            out[lane.name] = found
    return out


# -- what Postgres itself lets into a jsonb column ------------------------------------------


def nested(depth: int) -> str:
    """A JSON object ``depth`` levels deep, as text (``json.dumps`` would recurse too deep)."""
    return '{"a":' * depth + "1" + "}" * depth


REFUSED_BY_POSTGRES = {
    "nesting 100,000 deep": nested(100_000).encode(),
    "a lone surrogate escape": b'{"a": "\\ud800"}',
    "a NUL escape": b'{"a": "\\u0000"}',
    "invalid UTF-8 bytes": b'{"a": "\xff\xfe"}',
}


async def postgres_refusals(conn: asyncpg.Connection) -> dict[str, str]:
    """Why the server refuses each of :data:`REFUSED_BY_POSTGRES` as ``jsonb`` (a missing
    name: it was accepted, and could reach a lane)."""
    found: dict[str, str] = {}
    for name, raw in REFUSED_BY_POSTGRES.items():
        try:
            await conn.fetchval("SELECT convert_from($1::bytea, 'UTF8')::jsonb IS NOT NULL", raw)
        except asyncpg.PostgresError as exc:
            found[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return found


# -- the hostile rows -----------------------------------------------------------------------

Rows = dict[str, tuple[str, list[tuple[str, str]]]]


def hostile_rows() -> Rows:
    """``name -> (stream id, [(event type, data as JSON text)])``, each on a stream of its own."""
    created = '{"customer_id": "c1", "shipping_address": %s}'
    added = json.dumps({"product_id": "p1", "quantity": 2, "unit_price": "3.50"})
    odd = {
        "city": "\u202etoor\u202c Oslo \U0001f600",
        "line": "a\u2028b\u0085c\ufeff\uffff",
        "ctl": "\x01\x1b[31mred\x1b[0m",
    }
    extra = json.dumps({"customer_id": "c2", **{f"x{i}": i for i in range(5_000)}})
    return {
        "big": ("order-h-big", [("OrderCreated", created % json.dumps({"note": "x" * BIG}))]),
        "nested_900": ("order-h-d900", [("OrderCreated", created % nested(900))]),
        "wide": (
            "order-h-wide",
            [("OrderCreated", created % json.dumps({f"k{i}": i for i in range(5_000)}))],
        ),
        "extra_keys": ("order-h-extra", [("OrderCreated", extra), ("OrderItemAdded", added)]),
        "long_id": ("order-h-" + "x" * 600, [("OrderCreated", created % "{}")]),
        "glob_id": ("order-h-*?[ab]{c}\\", [("OrderCreated", created % "{}")]),
        "odd_text": ("order-h-odd", [("OrderCreated", created % json.dumps(odd))]),
        "odd_type": ("order-h-type", [("Order\nCreated\x1b[31m", created % "{}")]),
    }


def deep_rows() -> Rows:
    created = '{"customer_id": "c1", "shipping_address": %s}'
    added = json.dumps({"product_id": "p1", "quantity": 2, "unit_price": "3.50"})
    return {
        "deep": (
            "order-h-deep",
            [("OrderCreated", created % nested(DEEP)), ("OrderItemAdded", added)],
        ),
        "deep_unknown": ("order-h-deepx", [("SomethingElse", nested(DEEP))]),
    }


async def fill(dsn: str, namespace: str, rows: Rows, orders: int) -> dict[str, str]:
    """``orders`` orders, then ``rows`` as plain INSERTs, then ``orders`` more, all behind the
    fence on return; returns what Postgres refused."""
    from projections.orders.demo import append_history, seed_catalog

    store = await PostgresEventStore.connect(dsn, schema=namespace)
    try:
        catalog = make_catalog()
        await seed_catalog(store.pool, catalog)
        await append_history(store, orders, writers=2, seed=1, catalog=catalog)
        conn = await asyncpg.connect(dsn)
        try:
            refused = await postgres_refusals(conn)
            insert = (
                f'INSERT INTO "{namespace}".events '
                "(event_id, stream_id, stream_version, event_type, data) "
                "VALUES ($1, $2, $3, $4, $5::text::jsonb)"
            )
            for stream, events in rows.values():
                for version, (event_type, data) in enumerate(events, start=1):
                    await conn.execute(insert, uuid.uuid4(), stream, version, event_type, data)
        finally:
            await conn.close()
        await append_history(store, orders, writers=2, seed=2, catalog=catalog)
        # Another session's open transaction may hold the fence: a runner caught up "to the
        # head" must see every row written here.
        assert await store.settle(60), "the fence did not pass the rows written"
    finally:
        await store.close()
    return refused


async def committed_events(dsn: str, namespace: str, skip: set[str]) -> list[EventEnvelope]:
    """The committed log but for the streams in ``skip``, read with a plain connection (the
    store's own read is under test)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT event_id, stream_id, stream_version, event_type, schema_version, "
            "data::text AS data, recorded_at, transaction_id::text::bigint AS txid, "
            f'global_position FROM "{namespace}".events WHERE NOT stream_id = ANY($1) '
            "ORDER BY transaction_id, global_position",
            sorted(skip),
        )
    finally:
        await conn.close()
    return [
        EventEnvelope(
            **{k: r[k] for k in ("event_id", "stream_id", "stream_version", "event_type")},
            schema_version=r["schema_version"],
            data=json.loads(r["data"]),
            metadata={},
            recorded_at=r["recorded_at"],
            position=Position(r["txid"], r["global_position"]),
        )
        for r in rows
    ]


async def parked_by_lane(dsn: str, namespace: str) -> dict[str, set[tuple[str, int]]]:
    """``lane -> {(stream, version)}`` parked (payloads left undecoded)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT lane, stream_id, stream_version FROM "{namespace}".dead_letters'
        )
    finally:
        await conn.close()
    out: dict[str, set[tuple[str, int]]] = {}
    for row in rows:
        out.setdefault(row["lane"], set()).add((row["stream_id"], row["stream_version"]))
    return out


def check_lanes(
    rows: Rows,
    must_park: set[str],
    may_park: set[str],
    oracle: dict[str, dict[str, Any]],
    stores: dict[str, dict[str, Any]],
    parked: dict[str, set[tuple[str, int]]],
) -> dict[str, str]:
    """Every lane parked each event of ``must_park`` (a stream's later events held behind its
    first), parked nothing else but the first event of ``may_park`` streams (a store's own
    refusal), and holds exactly the oracle's document for every other key."""
    streams = {name: stream for name, (stream, _) in rows.items()}
    must = {(streams[n], v) for n in must_park for v in range(1, len(rows[n][1]) + 1)}
    may = {(streams[n], 1) for n in may_park}
    report: dict[str, str] = {}
    for lane, docs in stores.items():
        mine = parked.get(lane, set())
        assert must <= mine, (lane, sorted(must - mine))
        assert mine <= must | may, (lane, sorted(mine - must - may))
        wrong = [
            key[:40]
            for key, doc in oracle.items()
            if ((key, 1) in mine and key in docs) or ((key, 1) not in mine and docs.get(key) != doc)
        ]
        assert not wrong, (lane, wrong)
        assert set(docs) <= set(oracle), (lane, sorted(set(docs) - set(oracle)))
        neighbours = sum(1 for k in docs if k not in streams.values())
        refused = sorted(n for n in may_park if (streams[n], 1) in mine)
        report[lane] = f"{neighbours} neighbours applied; parked {len(mine)}, refused by the "
        report[lane] += f"store: {', '.join(refused) or 'none'}"
    return report


async def glob_key_stays_in_its_lane(settings: Settings, redis_url: str, stream: str) -> None:
    """Reset the Redis lane holding a document whose key is full of glob characters: it goes,
    and the same key under a neighbouring prefix, and a key the glob would match, stay."""
    from core.app import App

    async with App(settings) as app:
        lane = next(ln for ln in app.lanes if ln.sink.name == "redis")
        prefix = lane.target.options["key_prefix"]
        mine = f"{{{prefix}}}:g1:{stream}"
        others = [f"{{{prefix}2}}:g1:{stream}", f"{{{prefix}}}:g10:{stream}", f"{{{prefix}}}x:g1:o"]
        client = Redis.from_url(redis_url)
        try:
            assert await client.exists(mine) == 1
            for key in others:
                await client.set(key, "neighbour")
            await lane.sink.reset(lane.target)
            assert await client.exists(mine) == 0
            assert await client.exists(*others) == len(others)
            await client.delete(*others)
        finally:
            await client.aclose()


def test_hostile_rows_are_parked_or_applied_never_a_crash(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    rows = hostile_rows()
    refused = anyio.run(fill, services.dsn, namespace, rows, 100)
    assert set(refused) == set(REFUSED_BY_POSTGRES), refused
    config, duckdb_file = tmp_path / "projectionist.toml", duckdb_dir / f"{namespace}.duckdb"
    write_config(config, namespace, duckdb_file)
    started = time.monotonic()
    code, logged, peak = run_measured(services.env(config), timeout=600)
    seconds = time.monotonic() - started
    assert "Traceback" not in logged, logged[-3000:]
    assert code == 0, logged[-3000:]

    unapplied = {rows[n][0] for n in ("extra_keys", "odd_type")}
    events = anyio.run(committed_events, services.dsn, namespace, unapplied)
    oracle = expected_orders(events, make_catalog())
    settings = services.settings(config, namespace, duckdb_file)
    stores = anyio.run(stored_documents, settings, sorted(oracle))
    parked = anyio.run(parked_by_lane, services.dsn, namespace)
    report = check_lanes(rows, {"extra_keys"}, {"big", "long_id"}, oracle, stores, parked)
    assert len(report) == len(LANES)
    anyio.run(glob_key_stays_in_its_lane, settings, services.redis, rows["glob_id"][0])
    longest = max(len(line) for line in logged.splitlines())
    print(
        f"\nhostile input: {len(rows)} hostile streams among {len(oracle)} orders, 4 stores: "
        f"crashes 0; peak RSS {peak / 2**20:.0f} MiB with a {BIG / 2**20:.0f} MiB payload; "
        f"caught up in {seconds:.1f} s; longest log line {longest} characters"
    )
    for lane, line in report.items():
        print(f"  {lane}: {line}")
    print("  Postgres refuses: " + "; ".join(f"{k} ({v})" for k, v in refused.items()))
    assert peak < RSS_CEILING, peak


def test_a_row_too_deep_for_python_is_parked_not_a_crash(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    rows = deep_rows()
    anyio.run(fill, services.dsn, namespace, rows, 20)
    config, duckdb_file = tmp_path / "projectionist.toml", duckdb_dir / f"{namespace}.duckdb"
    write_config(config, namespace, duckdb_file)
    code, logged, peak = run_measured(services.env(config), timeout=300)
    assert "Traceback" not in logged and "RecursionError" not in logged, logged[-3000:]
    assert code == 0, logged[-3000:]
    skip = {stream for stream, _ in rows.values()}
    oracle = expected_orders(
        anyio.run(committed_events, services.dsn, namespace, skip), make_catalog()
    )
    settings = services.settings(config, namespace, duckdb_file)
    stores = anyio.run(stored_documents, settings, sorted(oracle))
    parked = anyio.run(parked_by_lane, services.dsn, namespace)
    report = check_lanes(rows, {"deep"}, set(), oracle, stores, parked)
    print(f"\nhostile input: a row {DEEP} deep parked in 4 lanes; peak RSS {peak / 2**20:.0f} MiB")
    for lane, line in report.items():
        print(f"  {lane}: {line}")


def test_an_event_with_thousands_of_bad_keys_logs_a_short_line(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    rows = {"extra_keys": hostile_rows()["extra_keys"]}
    anyio.run(fill, services.dsn, namespace, rows, 5)
    config = tmp_path / "projectionist.toml"
    write_config(config, namespace, duckdb_dir / f"{namespace}.duckdb", LANES[:1])
    code, logged, _ = run_measured(services.env(config), timeout=300)
    assert code == 0, logged[-3000:]
    assert "order-h-extra" in logged  # the event was parked and said so
    longest = max(len(line) for line in logged.splitlines())
    assert longest < 4096, longest


# -- names ----------------------------------------------------------------------------------

EVIL = '"; DROP TABLE x; --'


def _lane(projection: str, sink: str, options: str = "") -> str:
    extra = f"options = {{ {options} }}\n" if options else ""
    return f"[[lanes]]\nprojection = '{projection}'\nsink = {json.dumps(sink)}\n{extra}"


def _sink(name: str, factory: str, options: str = "") -> str:
    extra = f"options = {{ {options} }}\n" if options else ""
    return f"[sinks.{json.dumps(name)}]\nfactory = 'sinks.factories:{factory}'\n{extra}"


SUMMARY, SEARCH = "projections.orders:OrderSummary", "projections.orders:OrderSearch"
HOSTILE_NAMES: dict[str, tuple[str, str, str]] = {
    "event store schema": (
        f"event_store_schema = {json.dumps(EVIL)}\n",
        "event_store_schema",
        EVIL,
    ),
    "read model schema": ('read_model_schema = "Orders"\n', "read_model_schema", "Orders"),
    "sink name": (_sink(EVIL, "postgres") + _lane(SUMMARY, EVIL), "lanes.sink", EVIL),
    "projection name": (_lane("evil_projection:Evil", "postgres"), "Evil.name", EVIL),
    "Postgres schema option": (
        _sink("postgres", "postgres", f"schema = {json.dumps(EVIL)}") + _lane(SUMMARY, "postgres"),
        "postgres.schema",
        EVIL,
    ),
    **{
        f"Elasticsearch {option} {value}": (
            _sink("elasticsearch", "elasticsearch", f"{option} = '{value}'")
            + _lane(SEARCH, "elasticsearch"),
            f"elasticsearch.{option}",
            value,
        )
        for option, value in (
            ("index_prefix", "Orders_"),
            ("index_prefix", "_orders"),
            ("index_prefix", "orders*"),
            ("checkpoint_index", "_checkpoints"),
            ("checkpoint_index", "Checkpoints"),
        )
    },
    "Redis key prefix with glob characters": (
        _lane("projections.orders:OrderCache", "redis", "key_prefix = 'order*?['"),
        "key_prefix",
        "order*?[",
    ),
}
"""``case -> (configuration, the field and the value the error must name)``."""


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_a_hostile_name_is_refused_at_start_naming_field_value_and_fix(
    services: Services, namespace: str, tmp_path: Path, case: str
) -> None:
    body, field, value = HOSTILE_NAMES[case]
    names = [
        *([] if "event_store_schema" in body else [f'event_store_schema = "{namespace}"']),
        *([] if "read_model_schema" in body else [f'read_model_schema = "{namespace}_rm"']),
    ]
    config = tmp_path / "projectionist.toml"
    config.write_text("\n".join(names) + "\n" + body)
    (tmp_path / "evil_projection.py").write_text(
        f"from projections.orders import OrderSummary\n\n\nclass Evil(OrderSummary):\n"
        f"    name = {EVIL!r}\n"
    )
    env = {**services.env(config), "PYTHONPATH": str(tmp_path)}
    line = one_line_error(cli("run", "--until-caught-up", env=env, cwd=tmp_path))
    assert f"{field}={value!r}" in line, line
    assert "lower-case" in line, line  # the fix: what a name may hold
    print(f"\n  {case}: {line}")


def test_a_glob_key_prefix_is_refused_before_any_lane_starts_and_never_reaches_redis(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    anyio.run(fill, services.dsn, namespace, {}, 10)
    config, duckdb_file = tmp_path / "projectionist.toml", duckdb_dir / f"{namespace}.duckdb"
    write_config(config, namespace, duckdb_file, LANES[:1])
    with config.open("a") as toml:
        toml.write(_lane("projections.orders:OrderCache", "redis", "key_prefix = 'order*?['"))
    result = cli("run", "--until-caught-up", env=services.env(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "key_prefix='order*?['" in one_line_error(result)
    assert "Traceback" not in result.stderr

    async def untouched() -> int:
        client = Redis.from_url(services.redis)
        try:
            return int(await client.exists("{order*?[}:live", "{order*?[}:checkpoint"))
        finally:
            await client.aclose()

    assert anyio.run(untouched) == 0
