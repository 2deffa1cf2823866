"""The Postgres sink's contract against the real Postgres: round trips, the version guard,
tombstones, the checkpoint compare-and-set, refused documents and error mapping."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from core.errors import (
    CheckpointConflict,
    ConfigurationError,
    DocumentRejected,
    ProjectionistError,
    StoreUnavailable,
)
from core.operations import Batch, DeleteDocument, Operation, PutDocument, UpsertRow
from core.position import Position
from core.sink import StoredDocument, Target
from projections.orders import OrderDetail
from sinks.postgres import PostgresSink, PostgresSinkSettings
from tests.sinks.postgres.conftest import PgEnv
from tests.sinks.postgres.support import snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

TARGET = Target(lane="order_detail@postgres", projection="order_detail", schema=OrderDetail.schema)


def order(key: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": key,
        "customer_id": "c1",
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "status": "pending",
        "items": [{"product_id": "p1", "quantity": 2, "unit_price": "1.25", "subtotal": "2.50"}],
        "total_amount": "2.50",
        "item_count": 2,
        "shipping_address": {"city": "Oslo", "zip": "0150"},
        "created_at": "2025-03-01T10:00:00.123456+00:00",
        "updated_at": "2025-03-01T10:05:00+00:00",
        "completed_at": None,
        "cancelled_at": None,
        "cancel_reason": None,
    }
    doc.update(changes)
    return doc


def batch(
    ops: list[Operation], expected: Position | None, to: Position, lane: str = TARGET.lane
) -> Batch:
    return Batch(lane=lane, operations=tuple(ops), expected_checkpoint=expected, checkpoint=to)


async def opened(pg: PgEnv, **settings: Any) -> PostgresSink:
    sink = pg.sink(**settings)
    await sink.open()
    await sink.prepare(TARGET)
    return sink


async def test_round_trip_returns_the_document_exactly(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        docs = {
            "order-1": order("order-1"),
            "order-2": order("order-2", note='naïve ☃ "quoted" \\ back', nested={"a": [1, 2.5]}),
        }
        ops: list[Operation] = [PutDocument(k, 3, d) for k, d in docs.items()]
        await sink.write(TARGET, batch(ops, None, Position(10, 1)))
        loaded = await sink.load(TARGET, ["order-1", "order-2", "order-missing"])
        assert loaded == {k: StoredDocument(3, d) for k, d in docs.items()}
        assert await sink.read_checkpoint(TARGET) == Position(10, 1)
        row = await sink.pool.fetchrow(
            f'SELECT * FROM "{pg.schema}".order_detail WHERE key = $1', "order-1"
        )
        assert row is not None
        assert str(row["total_amount"]) == "2.50" and row["item_count"] == 2
        assert row["created_at"].isoformat() == "2025-03-01T10:00:00.123456+00:00"
        assert row["completed_at"] is None and row["version"] == 3
    finally:
        await sink.close()


async def test_version_guard_and_tombstones_never_resurrect(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        await sink.write(TARGET, batch([PutDocument("k", 5, order("k"))], None, Position(1, 1)))
        older = PutDocument("k", 4, order("k", status="cancelled"))
        same = PutDocument("k", 5, order("k", status="cancelled"))
        await sink.write(TARGET, batch([older, same], Position(1, 1), Position(1, 2)))
        assert (await sink.load(TARGET, ["k"]))["k"].document == order("k")

        await sink.write(TARGET, batch([DeleteDocument("k", 7)], Position(1, 2), Position(1, 3)))
        late = PutDocument("k", 6, order("k", status="completed"))
        await sink.write(TARGET, batch([late], Position(1, 3), Position(1, 4)))
        assert await sink.load(TARGET, ["k"]) == {"k": StoredDocument(7, None)}
        view = await sink.pool.fetch(f'SELECT key FROM "{pg.schema}".order_detail')
        assert view == []  # the view hides tombstones

        await sink.write(
            TARGET, batch([PutDocument("k", 8, order("k"))], Position(1, 4), Position(1, 5))
        )
        assert (await sink.load(TARGET, ["k"]))["k"] == StoredDocument(8, order("k"))
    finally:
        await sink.close()


async def test_newest_operation_per_key_wins_within_a_batch(pg: PgEnv) -> None:
    sink = await opened(pg, chunk_rows=3)
    try:
        ops: list[Operation] = [PutDocument(f"k{i}", 1, order(f"k{i}")) for i in range(10)]
        ops += [PutDocument("k1", 3, order("k1", status="completed")), DeleteDocument("k2", 2)]
        await sink.write(TARGET, batch(ops, None, Position(1, 1)))
        loaded = await sink.load(TARGET, [f"k{i}" for i in range(10)])
        assert len(loaded) == 10
        assert loaded["k1"] == StoredDocument(3, order("k1", status="completed"))
        assert loaded["k2"] == StoredDocument(2, None)
    finally:
        await sink.close()


async def test_checkpoint_conflict_rolls_the_data_back(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        await sink.write(TARGET, batch([PutDocument("a", 1, order("a"))], None, Position(5, 5)))
        stale = batch([PutDocument("b", 1, order("b"))], Position(4, 4), Position(6, 6))
        with pytest.raises(CheckpointConflict, match="found at 5/5"):
            await sink.write(TARGET, stale)
        first_again = batch([PutDocument("c", 1, order("c"))], None, Position(6, 6))
        with pytest.raises(CheckpointConflict, match="expected at None"):
            await sink.write(TARGET, first_again)
        assert set(await sink.load(TARGET, ["a", "b", "c"])) == {"a"}
        assert await sink.read_checkpoint(TARGET) == Position(5, 5)
    finally:
        await sink.close()


async def test_two_writers_from_one_checkpoint_exactly_one_wins(pg: PgEnv) -> None:
    sinks = [await opened(pg), await opened(pg)]
    outcomes: dict[str, str] = {}

    async def write(i: int) -> None:
        ops: list[Operation] = [PutDocument(f"w{i}-{n}", 1, order(f"w{i}-{n}")) for n in range(300)]
        try:
            await sinks[i].write(TARGET, batch(ops, None, Position(9, i)))
            outcomes[f"w{i}"] = "won"
        except CheckpointConflict:
            outcomes[f"w{i}"] = "conflict"

    try:
        for _ in range(3):
            outcomes.clear()
            async with anyio.create_task_group() as group:
                group.start_soon(write, 0)
                group.start_soon(write, 1)
            assert sorted(outcomes.values()) == ["conflict", "won"]
            winner = 0 if outcomes["w0"] == "won" else 1
            keys = [f"w{i}-{n}" for i in (0, 1) for n in range(300)]
            stored = await sinks[0].load(TARGET, keys)
            assert {k.split("-")[0] for k in stored} == {f"w{winner}"}
            assert len(stored) == 300
            assert await sinks[0].read_checkpoint(TARGET) == Position(9, winner)
            await sinks[0].reset(TARGET)
    finally:
        for s in sinks:
            await s.close()


async def test_reset_empties_the_generation_and_its_checkpoint(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        await sink.write(TARGET, batch([PutDocument("a", 1, order("a"))], None, Position(1, 1)))
        await sink.reset(TARGET)
        assert await sink.read_checkpoint(TARGET) is None
        assert await sink.load(TARGET, ["a"]) == {}
        await sink.write(TARGET, batch([PutDocument("a", 1, order("a"))], None, Position(1, 1)))
        assert await sink.read_checkpoint(TARGET) == Position(1, 1)
    finally:
        await sink.close()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"total_amount": "twelve"}, "field 'total_amount': 'twelve' is not a decimal"),
        ({"total_amount": "1_000"}, "field 'total_amount': '1_000' is not a decimal"),
        ({"total_amount": " 12.50"}, "field 'total_amount': ' 12.50' is not a decimal"),
        ({"total_amount": "\uff11\uff12"}, "field 'total_amount': .* is not a decimal"),
        ({"created_at": "2025-03-01T10:00:00"}, "field 'created_at': .* has no UTC offset"),
        ({"item_count": "2"}, "field 'item_count': expected an integer"),
        ({"status": None}, "field 'status' is required"),
        ({"shipping_address": {"x": float("nan")}}, "not JSON"),
    ],
)
async def test_a_value_the_column_cannot_hold_is_rejected_by_key(
    pg: PgEnv, changes: dict[str, Any], reason: str
) -> None:
    sink = await opened(pg)
    try:
        ops: list[Operation] = [PutDocument("good", 1, order("good"))]
        ops.append(PutDocument("bad", 1, order("bad", **changes)))
        with pytest.raises(DocumentRejected, match=reason) as caught:
            await sink.write(TARGET, batch(ops, None, Position(1, 1)))
        assert caught.value.key == "bad"
        assert await sink.read_checkpoint(TARGET) is None
        assert await sink.load(TARGET, ["good"]) == {}
    finally:
        await sink.close()


@pytest.mark.parametrize("chunk_rows", [2_000, 10], ids=["one statement", "transaction"])
async def test_a_document_the_database_refuses_is_located_by_key(
    pg: PgEnv, chunk_rows: int
) -> None:
    sink = await opened(pg, pool_size=1, chunk_rows=chunk_rows)  # locating needs no 2nd one
    try:
        ops: list[Operation] = [PutDocument(f"k{i}", 1, order(f"k{i}")) for i in range(50)]
        ops.append(PutDocument("k-nul", 1, order("k-nul", customer_name="nul\x00here")))
        with pytest.raises(DocumentRejected) as caught:
            await sink.write(TARGET, batch(ops, None, Position(1, 1)))
        assert caught.value.key == "k-nul"
        assert await sink.read_checkpoint(TARGET) is None
        assert await sink.load(TARGET, ["k1"]) == {}
    finally:
        await sink.close()


async def test_row_operations_are_refused(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        op = UpsertRow(table="order_lines", key=("o", "p"), version=1, row={})
        with pytest.raises(ConfigurationError, match="stores documents"):
            await sink.write(TARGET, batch([op], None, Position(1, 1)))
    finally:
        await sink.close()


async def test_unreachable_database_is_transient_and_leaks_no_password(pg: PgEnv) -> None:
    with anyio.fail_after(20):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # a port nobody listens on
        settings = PostgresSinkSettings(
            dsn=f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/db", schema=pg.schema
        )
        async with PostgresSink(settings) as sink:
            with pytest.raises(StoreUnavailable) as caught:
                await sink.prepare(TARGET)
            assert "s3cret-pw" not in str(caught.value)
            facts = await sink.describe()
            assert "s3cret-pw" not in repr(facts) and "error" in facts


async def refused_login(pg: PgEnv, password: str) -> tuple[str, str | None]:
    """A DSN the server refuses for its password: the test user's own if the server checks
    passwords for it, else a new role's (where the test user may create roles)."""
    parts = urlsplit(pg.dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    wrong = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{host}"))
    try:
        conn = await asyncpg.connect(wrong)
    except asyncpg.InvalidAuthorizationSpecificationError:
        return wrong, None
    try:
        role = f"{pg.schema}_role"
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-pw-123'")
    finally:
        await conn.close()
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}")), role


async def test_wrong_password_is_permanent_and_not_echoed(pg: PgEnv) -> None:
    dsn, role = await refused_login(pg, "wrong-pw-456")
    try:
        async with PostgresSink(PostgresSinkSettings(dsn=dsn, schema=pg.schema)) as sink:
            with pytest.raises(ProjectionistError) as caught:
                await sink.prepare(TARGET)
        assert not isinstance(caught.value, StoreUnavailable)
        assert "wrong-pw-456" not in str(caught.value)
    finally:
        if role is not None:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await conn.execute(f"DROP ROLE IF EXISTS {role}")
            finally:
                await conn.close()


async def test_replayed_batch_rewrites_no_row(pg: PgEnv) -> None:
    sink = await opened(pg)
    try:
        ops: list[Operation] = [PutDocument(f"k{i}", 2, order(f"k{i}")) for i in range(20)]
        ops.append(DeleteDocument("gone", 4))
        await sink.write(TARGET, batch(ops, None, Position(1, 1)))
        before = await snapshot(sink.pool, pg.schema, "order_detail_g1")
        await sink.write(TARGET, batch(ops, Position(1, 1), Position(1, 1)))
        assert await snapshot(sink.pool, pg.schema, "order_detail_g1") == before
    finally:
        await sink.close()


async def test_the_sinks_pool_goes_back_without_a_reset_round_trip(pg: PgEnv) -> None:
    """core.pgpool, as for the event store: a flush is one statement, and the reset query on
    release was a second round trip. A session setting survives the release."""
    settings = PostgresSinkSettings(dsn=pg.dsn, schema=pg.schema, pool_size=1)
    async with PostgresSink(settings) as sink:
        async with sink.pool.acquire() as conn:
            await conn.execute("SET application_name = 'left-behind'")
        assert await sink.pool.fetchval("SHOW application_name") == "left-behind"


async def test_a_read_only_server_and_a_lock_timeout_are_transient(pg: PgEnv) -> None:
    """A standby (or a pooler still on the old primary) refuses writes with 25006, and a
    ``lock_timeout`` behind another session's lock gives up with 55P03: both pass, so the lane
    retries instead of halting."""
    sink = await opened(pg)
    first = batch([PutDocument("a", 1, order("a"))], None, Position(5, 5))
    await sink.write(TARGET, first)
    await sink.close()
    second = batch([PutDocument("b", 1, order("b"))], Position(5, 5), Position(6, 6))
    standby = pg.sink(dsn=f"{pg.dsn}?default_transaction_read_only=on")
    await standby.open()
    try:
        with pytest.raises(StoreUnavailable, match="read-only transaction"):
            await standby.write(TARGET, second)
    finally:
        await standby.close()
    waiting = pg.sink(dsn=f"{pg.dsn}?lock_timeout=200")
    await waiting.open()
    holder = await asyncpg.connect(pg.dsn)
    try:
        async with holder.transaction():
            table = f'"{pg.schema}".order_detail_g1'
            await holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable, match="lock"):
                await waiting.write(TARGET, second)
        await waiting.write(TARGET, second)  # the lock gone, the same batch lands
        assert await waiting.read_checkpoint(TARGET) == Position(6, 6)
    finally:
        await holder.close()
        await waiting.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [({"indexs": []}, "knows: indexes"), ({"indexes": [["nope"]]}, "nope")],
)
async def test_bad_lane_options_are_refused_at_start(
    pg: PgEnv, options: dict[str, Any], match: str
) -> None:
    """Refused before any lane starts (``check_target``), not when the lane prepares."""
    bad = Target(
        lane="order_detail@postgres",
        projection="order_detail",
        schema=OrderDetail.schema,
        options=options,
    )
    with pytest.raises(ConfigurationError, match=match):
        pg.sink().check_target(bad)
