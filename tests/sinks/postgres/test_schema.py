"""Schema management against the real Postgres: tables, views, indexes and generations from
the declaration; additive changes applied, destructive ones refused; bad names refused."""

from __future__ import annotations

from typing import Any

import pytest

import sinks.postgres.migrate
from core.errors import ConfigurationError
from core.operations import Batch, PutDocument
from core.position import Position
from core.schema import DocumentSchema, Field, FieldType
from core.sink import StoredDocument, Target
from projections.orders import OrderAnalytics, OrderSummary
from sinks.postgres import PostgresSink
from tests.sinks.postgres.conftest import PgEnv

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T = FieldType
BASE = (
    Field(name="id", type=T.KEYWORD, nullable=False),
    Field(name="status", type=T.KEYWORD, indexed=True),
    Field(name="amount", type=T.DECIMAL),
)


def target(*fields: Field, generation: int = 1, **options: Any) -> Target:
    return Target(
        lane="things@postgres",
        projection="things",
        schema=DocumentSchema(fields=fields),
        generation=generation,
        options=options,
    )


async def columns(sink: PostgresSink, schema: str, table: str) -> dict[str, str]:
    rows = await sink.pool.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    return {r[0]: r[1] for r in rows}


async def view_reads(sink: PostgresSink, schema: str) -> list[str]:
    rows = await sink.pool.fetch(
        "SELECT table_name FROM information_schema.view_table_usage "
        "WHERE view_schema = $1 AND view_name = 'things'",
        schema,
    )
    return [r[0] for r in rows]


async def put(sink: PostgresSink, tgt: Target, key: str, version: int, doc: dict[str, Any]) -> None:
    expected = await sink.read_checkpoint(tgt)
    to = Position(version, version)
    await sink.write(tgt, Batch(tgt.lane, (PutDocument(key, version, doc),), expected, to))


async def test_tables_view_and_indexes_follow_the_declaration(pg: PgEnv) -> None:
    async with pg.sink() as sink:
        tgt = target(*BASE, Field(name="at", type=T.TIMESTAMP), indexes=[["status", "at desc"]])
        await sink.prepare(tgt)
        await sink.prepare(tgt)  # idempotent
        assert await columns(sink, pg.schema, "things_g1") == {
            "key": "text",
            "version": "bigint",
            "deleted": "boolean",
            "document": "jsonb",
            "id": "text",
            "status": "text",
            "amount": "numeric",
            "at": "timestamp with time zone",
        }
        assert list(await columns(sink, pg.schema, "things")) == [
            "key",
            "version",
            "document",
            "id",
            "status",
            "amount",
            "at",
        ]
        indexes = await sink.pool.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 "
            "AND tablename = 'things_g1' ORDER BY indexname",
            pg.schema,
        )
        defs = {r[0]: r[1] for r in indexes}
        assert "things_g1_status_at_desc_idx" in defs
        assert "(status, at DESC) WHERE (NOT deleted)" in defs["things_g1_status_at_desc_idx"]
        assert "things_g1_status_idx" not in defs  # status leads the composite index
        assert await columns(sink, pg.schema, "projectionist_checkpoints") == {
            "lane": "text",
            "generation": "integer",
            "transaction_id": "bigint",
            "global_position": "bigint",
            "epoch": "bigint",
            "updated_at": "timestamp with time zone",
        }


async def test_an_added_field_becomes_a_column_filled_from_stored_documents(pg: PgEnv) -> None:
    async with pg.sink() as sink:
        await sink.prepare(target(*BASE))
        doc = {"id": "a", "status": "new", "amount": "1.50", "colour": "teal", "n": 4}
        await put(sink, target(*BASE), "a", 1, doc)

        extended = target(
            *BASE, Field(name="colour", type=T.KEYWORD), Field(name="n", type=T.INTEGER)
        )
        await sink.prepare(extended)
        assert list(await columns(sink, pg.schema, "things_g1"))[-2:] == ["colour", "n"]
        row = await sink.pool.fetchrow(f'SELECT colour, n FROM "{pg.schema}".things')
        assert row is not None and tuple(row) == ("teal", 4)  # backfilled
        await put(sink, extended, "b", 2, {**doc, "id": "b", "colour": "red", "n": 5})
        rows = await sink.pool.fetch(f'SELECT key, colour, n FROM "{pg.schema}".things ORDER BY 1')
        assert [tuple(r) for r in rows] == [("a", "teal", 4), ("b", "red", 5)]
        assert (await sink.load(extended, ["a"]))["a"] == StoredDocument(1, doc)


async def test_an_added_field_is_filled_as_a_write_converts_it(
    pg: PgEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not by a SQL cast: one read a timestamp without an offset in the server's time zone
    (here New York), so old rows held 15:00Z where the write path refuses the value; the
    new column is refused instead, naming the document, as its next write would be."""
    monkeypatch.setattr(sinks.postgres.migrate, "BACKFILL_ROWS", 3)
    async with pg.sink(dsn=f"{pg.dsn}?timezone=America/New_York") as sink:
        await sink.prepare(target(*BASE))
        good = {"id": "a", "status": "new", "amount": "1", "paid_at": "2024-03-01T10:00:00Z"}
        await put(sink, target(*BASE), "a", 1, good)
        for n in range(2, 8):  # more rows than one backfill statement takes (3)
            await put(sink, target(*BASE), f"k{n}", 1, {**good, "id": f"k{n}"})
        paid = target(*BASE, Field(name="paid_at", type=T.TIMESTAMP))
        await sink.prepare(paid)
        stamps = await sink.pool.fetch(f'SELECT paid_at FROM "{pg.schema}".things')
        assert {r[0].isoformat() for r in stamps} == {"2024-03-01T10:00:00+00:00"}
        naive = {**good, "id": "z", "at_local": "2024-03-01T10:00:00"}
        await put(sink, paid, "z", 1, naive)
        local = target(
            *BASE, Field(name="paid_at", type=T.TIMESTAMP), Field(name="at_local", type=T.TIMESTAMP)
        )
        with pytest.raises(ConfigurationError, match=r"'z' holds .*no UTC offset.*rebuild"):
            await sink.prepare(local)
        assert "at_local" not in await columns(sink, pg.schema, "things_g1")  # rolled back


async def test_a_removed_field_is_refused_naming_the_column_and_rebuild(pg: PgEnv) -> None:
    async with pg.sink() as sink:
        await sink.prepare(target(*BASE))
        with pytest.raises(ConfigurationError, match=r"column 'amount' .*destructive.*rebuild"):
            await sink.prepare(target(*BASE[:2]))
        assert "amount" in await columns(sink, pg.schema, "things_g1")


async def test_a_changed_type_is_refused_and_a_reset_applies_it(pg: PgEnv) -> None:
    async with pg.sink() as sink:
        await sink.prepare(target(*BASE))
        await put(sink, target(*BASE), "a", 1, {"id": "a", "status": "x", "amount": "2"})
        changed = target(*BASE[:2], Field(name="amount", type=T.INTEGER))
        with pytest.raises(ConfigurationError, match=r"column 'amount' is now declared integer"):
            await sink.prepare(changed)
        with pytest.raises(ConfigurationError, match="rebuild"):
            await sink.prepare(changed)
        await sink.reset(changed)  # a rebuild in place starts from the new declaration
        assert (await columns(sink, pg.schema, "things_g1"))["amount"] == "bigint"
        assert await view_reads(sink, pg.schema) == ["things_g1"]
        assert await sink.read_checkpoint(changed) is None


async def test_a_new_generation_is_filled_beside_the_live_one_then_swapped(pg: PgEnv) -> None:
    async with pg.sink() as sink:
        g1, g2 = target(*BASE), target(*BASE, Field(name="n", type=T.INTEGER), generation=2)
        await sink.prepare(g1)
        await put(sink, g1, "old", 1, {"id": "old", "status": "x"})
        await sink.prepare(g2)
        assert await view_reads(sink, pg.schema) == ["things_g1"]
        await put(sink, g2, "new", 1, {"id": "new", "status": "y", "n": 1})
        with pytest.raises(ConfigurationError, match="it is live"):
            await sink.drop(g1)
        await put(sink, g1, "old", 2, {"id": "old", "status": "x2"})  # g1 at 2/2, g2 at 1/1
        with pytest.raises(ConfigurationError, match=r"up to 1/1, behind the live generation 1"):
            await sink.swap(g2)
        g3 = target(*BASE, generation=3)
        with pytest.raises(ConfigurationError, match="has not written generation 3"):
            await sink.swap(g3)
        assert await columns(sink, pg.schema, "things_g3") == {}  # refused before creating it
        await put(sink, g2, "new", 2, {"id": "new", "status": "y", "n": 1})
        await sink.pool.execute(f'GRANT SELECT ON "{pg.schema}".things TO PUBLIC')  # readers
        await sink.swap(g2)
        grants = await sink.pool.fetch(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema = $1 AND table_name = 'things' AND grantee = 'PUBLIC'",
            pg.schema,
        )
        assert [tuple(g) for g in grants] == [("PUBLIC", "SELECT")]  # kept through the swap
        assert await view_reads(sink, pg.schema) == ["things_g2"]
        keys = await sink.pool.fetch(f'SELECT key, n FROM "{pg.schema}".things')
        assert [tuple(r) for r in keys] == [("new", 1)]
        await sink.drop(g1)
        assert await columns(sink, pg.schema, "things_g1") == {}
        assert await sink.read_checkpoint(g1) is None
        assert await sink.read_checkpoint(g2) == Position(2, 2)


@pytest.mark.parametrize(
    ("tgt", "match"),
    [
        (target(*BASE, Field(name="document", type=T.JSON)), "sink's own columns"),
        (target(*BASE, Field(name="status", type=T.TEXT)), "declare each field once"),
        (target(*BASE, indexes=[["status; DROP TABLE x"]]), "options.indexes"),
        (target(*BASE, indexes=[["status", "amount sideways"]]), "options.indexes"),
        (target(*BASE, indexes=[["nope"]]), "index declared columns only"),
        (target(*BASE, indexes=[["Status DESC"]]), "options.indexes column"),
        (target(*BASE, indexes="status"), "give a list of indexes"),
        (target(*BASE, ttl=5), "the Postgres sink knows"),
        (
            Target(lane="l", projection="things", schema=OrderAnalytics.schema),
            "keeps lists inside the document",
        ),
    ],
)
async def test_bad_declarations_are_refused_before_any_sql(
    pg: PgEnv, tgt: Target, match: str
) -> None:
    async with pg.sink() as sink:
        with pytest.raises(ConfigurationError, match=match):
            await sink.prepare(tgt)
        tables = await sink.pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'things%'",
            pg.schema,
        )
        assert tables == 0


async def test_the_longest_projection_name_fits_with_its_generation(pg: PgEnv) -> None:
    longest = Target(
        lane="l", projection="p" * 48, schema=DocumentSchema(fields=BASE), generation=12345
    )
    async with pg.sink() as sink:
        await sink.prepare(longest)
        assert "key" in await columns(sink, pg.schema, "p" * 48 + "_g12345")


async def test_list_view_indexes_are_derived_for_the_order_summary(pg: PgEnv) -> None:
    summary = Target(lane="s", projection="order_summary", schema=OrderSummary.schema)
    async with pg.sink() as sink:
        await sink.prepare(summary)
        rows = await sink.pool.fetch(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 "
            "AND tablename = 'order_summary_g1' ORDER BY indexname",
            pg.schema,
        )
        defs = sorted(r[0].split(" USING btree ")[1] for r in rows)
        assert defs == [
            "(created_at) WHERE (NOT deleted)",
            "(customer_id, created_at DESC) WHERE (NOT deleted)",
            "(key)",
            "(status, created_at DESC) WHERE (NOT deleted)",
        ]
        none = Target(lane="n", projection="order_detail", options={"indexes": []})
        await sink.prepare(none)
        count = await sink.pool.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 "
            "AND tablename = 'order_detail_g1'",
            pg.schema,
        )
        assert count == 1  # the primary key only
