"""The sink contract against the real cluster: round trips, version guard, tombstones,
checkpoint compare-and-set, managed mappings, bounded requests, item retries, secrets."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from elasticsearch import AsyncElasticsearch

from core.errors import (
    AmbiguousCommit,
    CheckpointConflict,
    ConfigurationError,
    DocumentRejected,
    PermanentError,
    StoreUnavailable,
)
from core.operations import Batch, DeleteDocument, PutDocument, UpsertRow
from core.position import Position
from core.schema import DocumentSchema, Field, FieldType
from core.sink import StoredDocument, Target
from projections.orders import OrderSearch
from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings, count, search
from tests.sinks.elasticsearch.support import SEARCH_OPTIONS

pytestmark = [pytest.mark.anyio, pytest.mark.elasticsearch]

P = Position


def order(n: int, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"order-{n}",
        "customer_id": "c1",
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "status": "pending",
        "items": [
            {
                "product_id": "p1",
                "product_name": "red kettle 1",
                "category": "kitchen",
                "quantity": 2,
                "unit_price": "12.50",
                "subtotal": "25.00",
            }
        ],
        "total_amount": "25.00",
        "item_count": 2,
        "shipping_address": {"city": "Oslo", "zip": "0150"},
        "created_at": "2025-01-02T03:04:05.123456+00:00",
        "updated_at": "2025-01-02T03:04:05.123456+00:00",
        "completed_at": None,
        "cancelled_at": None,
        "cancel_reason": None,
    }
    doc.update(over)
    return doc


def target(lane: str = "search@es", generation: int = 1, **options: Any) -> Target:
    return Target(
        lane=lane,
        projection="order_search",
        schema=OrderSearch.schema,
        generation=generation,
        options={**SEARCH_OPTIONS, **options},
    )


def batch(
    ops: list[Any], expected: Position | None, checkpoint: Position, lane: str = "search@es"
) -> Batch:
    return Batch(lane, tuple(ops), expected, checkpoint, events=len(ops))


async def test_round_trip_keeps_the_document_exactly(sink: ElasticsearchSink) -> None:
    t = target()
    await sink.prepare(t)
    assert await sink.read_checkpoint(t) is None
    doc = order(1)
    await sink.write(t, batch([PutDocument("order-1", 3, doc)], None, P(10, 1)))
    loaded = await sink.load(t, ["order-1", "order-404"])
    assert loaded == {"order-1": StoredDocument(3, doc)}
    assert isinstance(loaded["order-1"].document["total_amount"], str)  # type: ignore[index]
    assert await sink.read_checkpoint(t) == P(10, 1)


async def test_version_guard_and_tombstones(sink: ElasticsearchSink) -> None:
    t = target()
    await sink.prepare(t)
    alias = sink.alias("order_search")
    await sink.write(t, batch([PutDocument("order-1", 2, order(1))], None, P(1, 1)))
    # an older version arrives late: nothing changes
    older = order(1, status="stale")
    await sink.write(t, batch([PutDocument("order-1", 1, older)], P(1, 1), P(1, 2)))
    assert (await sink.load(t, ["order-1"]))["order-1"] == StoredDocument(2, order(1))
    # delete at version 3 keeps a tombstone with that version
    await sink.write(t, batch([DeleteDocument("order-1", 3)], P(1, 2), P(1, 3)))
    assert (await sink.load(t, ["order-1"]))["order-1"] == StoredDocument(3, None)
    # a late replay of version 2 cannot resurrect it
    await sink.write(t, batch([PutDocument("order-1", 2, order(1))], P(1, 3), P(1, 4)))
    assert (await sink.load(t, ["order-1"]))["order-1"] == StoredDocument(3, None)
    await sink.cluster.client.indices.refresh(index=sink.index(t))
    assert await count(sink, alias) == 0
    assert (await search(sink, alias, text="ada", fields=["customer_name"])).total == 0
    raw = await sink.cluster.client.count(index=sink.index(t))
    assert raw["count"] == 1  # the tombstone is there, only hidden by the alias


async def test_checkpoint_compare_and_set(
    es_settings: ElasticsearchSinkSettings, sink: ElasticsearchSink
) -> None:
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([], None, P(5, 5)))
    async with ElasticsearchSink(es_settings) as other:
        assert await other.read_checkpoint(t) == P(5, 5)
        await other.write(t, batch([PutDocument("order-2", 1, order(2))], P(5, 5), P(6, 6)))
    # this sink last saw 5/5: the stale writer is refused, whatever it believes
    with pytest.raises(CheckpointConflict):
        await sink.write(t, batch([], P(5, 5), P(7, 7)))
    with pytest.raises(CheckpointConflict):
        await sink.write(t, batch([], None, P(7, 7)))
    assert await sink.read_checkpoint(t) == P(6, 6)
    # the very same batch from a writer that did not send it first is a second writer
    async with ElasticsearchSink(es_settings) as again:
        with pytest.raises(CheckpointConflict):
            await again.write(t, batch([PutDocument("order-2", 1, order(2))], P(5, 5), P(6, 6)))
    assert await sink.read_checkpoint(t) == P(6, 6)
    # generations have their own checkpoints
    g2 = target(generation=2)
    await sink.prepare(g2)
    assert await sink.read_checkpoint(g2) is None


async def test_a_lost_checkpoint_answer_is_ambiguous_and_the_resend_is_accepted(
    sink: ElasticsearchSink,
) -> None:
    """The checkpoint write lands but its answer is lost (the client raises after the real
    call): AmbiguousCommit; the resend of that very batch by this sink is accepted as landed,
    its data sent again harmlessly (answered 409)."""
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([], None, P(5, 5)))
    client: Any = sink.checkpoints.cluster.client
    real_index = client.index

    async def index_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        await real_index(*args, **kwargs)
        raise TimeoutError("the answer was lost")

    client.index = index_then_lose_the_answer
    resent = batch([PutDocument("order-2", 1, order(2))], P(5, 5), P(6, 6))
    try:
        with pytest.raises(AmbiguousCommit):
            await sink.write(t, resent)
    finally:
        del client.index
    assert await sink.read_checkpoint(t) == P(6, 6)
    await sink.write(t, resent)
    assert sink.last_report.already_applied == 1
    assert await sink.read_checkpoint(t) == P(6, 6)
    with pytest.raises(CheckpointConflict):  # once resolved, a third copy is a second writer
        await sink.write(t, resent)


async def test_rejected_document_after_its_neighbours(sink: ElasticsearchSink) -> None:
    t = target()
    await sink.prepare(t)
    ops = [
        PutDocument("order-1", 1, order(1)),
        PutDocument("order-2", 1, order(2, item_count="many")),
        PutDocument("order-3", 1, order(3)),
    ]
    with pytest.raises(DocumentRejected) as caught:
        await sink.write(t, batch(ops, None, P(1, 3)))
    assert caught.value.key == "order-2"
    assert "item_count" in caught.value.reason
    assert await sink.read_checkpoint(t) is None  # not moved
    loaded = await sink.load(t, ["order-1", "order-2", "order-3"])
    assert sorted(loaded) == ["order-1", "order-3"]
    # unknown fields are refused too (dynamic: strict), but only if the schema maps them
    extra = order(4)
    extra["items"][0]["colour"] = "red"  # not a mapped child field: kept in _doc only
    await sink.write(t, batch([PutDocument("order-4", 1, extra)], None, P(1, 4)))
    assert (await sink.load(t, ["order-4"]))["order-4"].document == extra


async def test_rows_are_refused(sink: ElasticsearchSink) -> None:
    t = target()
    await sink.prepare(t)
    with pytest.raises(Exception, match="rows"):
        await sink.write(t, batch([UpsertRow("x", ("a",), 1, {})], None, P(1, 1)))


async def test_requests_bounded_by_documents_and_bytes(
    es_settings: ElasticsearchSinkSettings, raw: AsyncElasticsearch
) -> None:
    settings = es_settings.model_copy(update={"bulk_max_docs": 7, "bulk_max_bytes": 4096})
    async with ElasticsearchSink(settings) as sink:
        t = target()
        await sink.prepare(t)
        ops = [PutDocument(f"order-{n}", 1, order(n)) for n in range(50)]
        await sink.write(t, batch(ops, None, P(1, 1)))
        report = sink.last_report
        assert report.applied == 50
        assert report.requests >= 50 * 900 // 4096  # about 900 bytes a document
        assert report.requests >= 8
        await sink.write(t, batch(ops, P(1, 1), P(1, 2)))
        assert sink.last_report.already_applied == 50


async def test_items_answered_429_are_retried(
    es_settings: ElasticsearchSinkSettings, raw: AsyncElasticsearch
) -> None:
    """A read-only-allow-delete block makes the index answer each item 429 (as at the disk
    flood stage); the sink retries the items and goes on once the block is lifted."""
    settings = es_settings.model_copy(update={"item_retries": 50, "item_backoff": 0.05})
    async with ElasticsearchSink(settings) as sink:
        t = target()
        await sink.prepare(t)
        index = sink.index(t)
        block = {"index.blocks.read_only_allow_delete": True}
        await raw.indices.put_settings(index=index, settings=block)
        ops = [PutDocument(f"order-{n}", 1, order(n)) for n in range(5)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.write, t, batch(ops, None, P(1, 1)))
            await anyio.sleep(0.6)
            assert await sink.read_checkpoint(t) is None
            unblock = {"index.blocks.read_only_allow_delete": None}
            await raw.indices.put_settings(index=index, settings=unblock)
        assert sink.last_report.retried >= 5
        assert sink.last_report.applied == 5
        assert await sink.read_checkpoint(t) == P(1, 1)
        # with few retries the write fails transiently and the checkpoint stays
        await raw.indices.put_settings(index=index, settings=block)
        impatient = settings.model_copy(update={"item_retries": 1})
        async with ElasticsearchSink(impatient) as short:
            more = [PutDocument("order-9", 1, order(9))]
            with pytest.raises(StoreUnavailable, match="429"):
                await short.write(t, batch(more, P(1, 1), P(1, 2)))
            assert await short.read_checkpoint(t) == P(1, 1)
        await raw.indices.put_settings(index=index, settings=unblock)


async def test_mapping_changes_additive_only(sink: ElasticsearchSink) -> None:
    base = DocumentSchema(fields=(Field(name="id", type=FieldType.KEYWORD),))
    t = Target(lane="m@es", projection="things", schema=base)
    await sink.prepare(t)
    added = DocumentSchema(
        fields=(*base.fields, Field(name="label", type=FieldType.TEXT)),
    )
    t2 = Target(lane="m@es2", projection="things", schema=added)
    await sink.prepare(t2)  # an added field is accepted
    await sink.write(t2, batch([PutDocument("a", 1, {"id": "a", "label": "x"})], None, P(1, 1)))
    changed = DocumentSchema(fields=(Field(name="id", type=FieldType.INTEGER),))
    t3 = Target(lane="m@es3", projection="things", schema=changed)
    with pytest.raises(ConfigurationError, match="generation 2"):
        await sink.prepare(t3)
    with pytest.raises(ConfigurationError, match="text_subfields"):
        await sink.prepare(
            Target(lane="m@es4", projection="x", schema=base, options={"text_subfields": ["nope"]})
        )


async def test_secrets_never_appear(elasticsearch_url: str) -> None:
    key, password = "k3y-s3cret-value", "pa55-s3cret"
    settings = ElasticsearchSinkSettings(
        url="http://127.0.0.1:1", username="elastic", password=password, request_timeout=2
    )
    assert password not in repr(settings) and password not in str(settings.model_dump())
    async with ElasticsearchSink(settings) as sink:
        with pytest.raises(StoreUnavailable) as caught:
            await sink.prepare(target())
        facts = await sink.describe()
    assert password not in str(caught.value) and password not in str(facts)
    with_key = ElasticsearchSinkSettings(url="http://127.0.0.1:1", api_key=key)
    assert key not in repr(with_key)
    in_url = ElasticsearchSinkSettings(url=f"http://elastic:{password}@127.0.0.1:1")
    assert in_url.basic_auth() == ("elastic", password)
    assert password not in in_url.address()
    with pytest.raises(ConfigurationError) as bad:
        ElasticsearchSinkSettings(url=f"ftp://elastic:{password}@host")
    assert password not in str(bad.value)
    with pytest.raises(ConfigurationError):
        ElasticsearchSinkSettings(url=elasticsearch_url, api_key=key, username="u", password="p")


async def test_describe(sink: ElasticsearchSink) -> None:
    facts = await sink.describe()
    assert facts["server_version"].startswith("9.")
    assert facts["cluster_status"] in ("green", "yellow")


async def test_a_reset_cut_halfway_never_leaves_a_checkpoint_past_lost_documents(
    sink: ElasticsearchSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever of its two deletes comes second fails (a stop, or the cluster going away):
    a checkpoint that survives must have its documents beside it."""
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("order-1", 1, order(1))], None, P(10, 1)))
    steps: list[str] = []
    call, delete = sink.cluster.call, sink.checkpoints.delete

    def step(name: str) -> None:
        steps.append(name)
        if len(steps) == 2:
            raise StoreUnavailable(f"cut before the second step ({name})")

    async def cut_call(what: str, fn: Any, **kwargs: Any) -> Any:
        if what.startswith("deleting"):
            step("index")
        return await call(what, fn, **kwargs)

    async def cut_delete(of: Target) -> None:
        step("checkpoint")
        await delete(of)

    monkeypatch.setattr(sink.cluster, "call", cut_call)
    monkeypatch.setattr(sink.checkpoints, "delete", cut_delete)
    with pytest.raises(StoreUnavailable):
        await sink.reset(t)
    monkeypatch.undo()
    await sink.prepare(t)
    if await sink.read_checkpoint(t) is not None:
        assert set(await sink.load(t, ["order-1"])) == {"order-1"}
    assert steps == ["checkpoint", "index"]


async def test_an_index_deleted_under_the_lane_is_rebuilt_not_recreated_empty(
    sink: ElasticsearchSink, raw: AsyncElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    """``_bulk`` would create the missing index (dynamic mapping, no alias, none of the
    documents written before) and the checkpoint would move on: the write refuses instead,
    and the next ``prepare`` deletes the checkpoint, so the lane replays from the start."""
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("order-1", 1, order(1))], None, P(10, 1)))
    await raw.indices.delete(index=sink.index(t))
    later = batch([PutDocument("order-2", 1, order(2))], P(10, 1), P(11, 1))
    with pytest.raises(PermanentError, match="was deleted while the lane ran"):
        await sink.write(t, later)
    assert not await raw.indices.exists(index=sink.index(t))
    with caplog.at_level("WARNING", logger="projectionist.sinks.elasticsearch"):
        await sink.prepare(t)
    assert "rebuilds the index from the start" in caplog.text
    assert await sink.read_checkpoint(t) is None
    assert list((await raw.indices.get_alias(name=sink.alias("order_search"))).keys()) == [
        sink.index(t)
    ]


async def test_a_generation_behind_the_served_one_is_not_promoted(
    sink: ElasticsearchSink, raw: AsyncElasticsearch
) -> None:
    """Searchers would see documents go back (or an empty index): the alias stays."""
    g1, g2, g3 = target(), target(generation=2), target(generation=3)
    await sink.prepare(g1)
    await sink.write(g1, batch([PutDocument("order-1", 2, order(1))], None, P(10, 1)))
    await sink.prepare(g2)
    await sink.write(g2, batch([PutDocument("order-1", 1, order(1))], None, P(5, 1)))
    with pytest.raises(ConfigurationError, match="up to 5/1, behind the live generation 1"):
        await sink.promote(g2)
    await sink.prepare(g3)
    with pytest.raises(ConfigurationError, match="has not written generation 3"):
        await sink.promote(g3)
    alias = sink.alias("order_search")
    assert list((await raw.indices.get_alias(name=alias)).keys()) == [sink.index(g1)]
    await sink.write(g2, batch([PutDocument("order-1", 2, order(1))], P(5, 1), P(10, 1)))
    assert await sink.promote(g2) == [sink.index(g1)]
    assert list((await raw.indices.get_alias(name=alias)).keys()) == [sink.index(g2)]


async def test_a_live_later_generation_reset_in_place_keeps_serving(
    sink: ElasticsearchSink, raw: AsyncElasticsearch
) -> None:
    """Generation 2 is live and the old one dropped; a rebuild in place (reset) deletes its
    index, and the alias with it. Recreated without the alias and with refresh off, it was
    never searched again."""
    g1, g2 = target(), target(generation=2)
    await sink.prepare(g1)
    await sink.write(g1, batch([PutDocument("order-1", 1, order(1))], None, P(10, 1)))
    await sink.prepare(g2)
    await sink.write(g2, batch([PutDocument("order-1", 1, order(1))], None, P(10, 1)))
    await sink.promote(g2)
    await sink.drop(g1)
    await sink.reset(g2)
    await sink.prepare(g2)
    alias = sink.alias("order_search")
    assert list((await raw.indices.get_alias(name=alias)).keys()) == [sink.index(g2)]
    settings = await raw.indices.get_settings(index=sink.index(g2))
    assert settings[sink.index(g2)]["settings"]["index"].get("refresh_interval") != "-1"


def test_an_option_of_the_wrong_type_is_a_configuration_error(
    es_settings: ElasticsearchSinkSettings,
) -> None:
    """``replicas = "one"`` was a raw ValueError (a traceback at start)."""
    sink = ElasticsearchSink(es_settings)
    with pytest.raises(ConfigurationError, match="replicas"):
        sink.check_target(target(replicas="one"))
