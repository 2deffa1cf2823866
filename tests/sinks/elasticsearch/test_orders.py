"""The order_search read model in the real cluster: the index equals the independent oracle for
2,000 orders, replays (twice, shuffled) change nothing, and the query helpers answer what
the oracle says."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from core.lookups import StaticLookups
from core.operations import Batch
from core.position import Position
from core.sink import Target
from core.testing import InMemorySink
from sinks.elasticsearch import (
    DOCUMENT_FIELD,
    ElasticsearchSink,
    ElasticsearchSinkSettings,
    count,
    search,
    top_terms,
)
from tests.sinks.elasticsearch.support import (
    OrderLog,
    delete_prefix,
    fetch_all,
    order_log,
    search_lane,
)
from tests.support.orders import renamed

pytestmark = [pytest.mark.anyio, pytest.mark.elasticsearch]

ORDERS = 2_000


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class RecordingSink(InMemorySink):
    """Keeps every batch it is given, to replay them into Elasticsearch later."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.batches: list[Batch] = []

    async def write(self, target: Target, batch: Batch) -> None:
        self.batches.append(batch)
        await super().write(target, batch)


@dataclass
class Loaded:
    log: OrderLog
    settings: ElasticsearchSinkSettings
    sink: ElasticsearchSink
    raw: AsyncElasticsearch
    target: Target
    alias: str
    expected: dict[str, dict[str, Any]]
    versions: dict[str, int]
    recorded: list[Batch]


@pytest.fixture(scope="module")
async def loaded(elasticsearch_url: str, anyio_backend: str) -> AsyncIterator[Loaded]:
    prefix = "t" + uuid.uuid4().hex[:12] + "_"
    log = await order_log(ORDERS)
    recorder = RecordingSink()
    await search_lane(log, recorder, batch=250).run(until_caught_up=True)
    raw = AsyncElasticsearch(elasticsearch_url)
    settings = ElasticsearchSinkSettings(url=elasticsearch_url, index_prefix=prefix)
    try:
        async with ElasticsearchSink(settings) as sink:
            lane = search_lane(log, sink, batch=700)
            await lane.run(until_caught_up=True)
            assert lane.checkpoint == await log.store.head()
            await raw.indices.refresh(index=sink.index(lane.target))
            yield Loaded(
                log,
                settings,
                sink,
                raw,
                lane.target,
                sink.alias("order_search"),
                await log.expected(),
                await log.versions(),
                recorder.batches,
            )
    finally:
        await delete_prefix(raw, prefix)
        await raw.close()


async def test_index_equals_the_oracle(loaded: Loaded) -> None:
    stored = await fetch_all(loaded.raw, loaded.sink.index(loaded.target))
    assert len(loaded.expected) == ORDERS
    assert {k: v["source"][DOCUMENT_FIELD] for k, v in stored.items()} == loaded.expected
    assert {k: v["version"] for k, v in stored.items()} == loaded.versions
    some = stored[sorted(stored)[0]]["source"]
    assert some["status"] == loaded.expected[sorted(stored)[0]]["status"]
    loaded_back = await loaded.sink.load(loaded.target, sorted(loaded.expected)[:50])
    for key, doc in loaded_back.items():
        assert doc.document == loaded.expected[key]
        assert doc.version == loaded.versions[key]


async def snapshot(loaded: Loaded) -> dict[str, dict[str, Any]]:
    return await fetch_all(loaded.raw, loaded.sink.index(loaded.target))


async def replay(loaded: Loaded, batches: list[Batch], lane: str) -> None:
    """Write ``batches`` again under a lane of their own (its own checkpoint chain)."""
    expected: Position | None = None
    target = Target(
        lane=lane,
        projection="order_search",
        schema=loaded.target.schema,
        options=loaded.target.options,
    )
    for i, b in enumerate(batches):
        checkpoint = Position(1, i + 1)
        await loaded.sink.write(target, Batch(lane, b.operations, expected, checkpoint))
        expected = checkpoint


async def test_replaying_twice_and_shuffled_changes_nothing(loaded: Loaded) -> None:
    before = await snapshot(loaded)
    batches = loaded.recorded
    assert len(batches) > 20
    await replay(loaded, batches, "replay_again")
    rng = random.Random(5)
    shuffled = [
        Batch(b.lane, tuple(rng.sample(b.operations, len(b.operations))), None, b.checkpoint)
        for b in batches
    ]
    rng.shuffle(shuffled)
    await replay(loaded, shuffled, "replay_shuffled")
    after = await snapshot(loaded)
    assert after == before  # same sources, versions and sequence numbers: nothing rewritten
    assert loaded.sink.last_report.applied == 0


async def test_a_second_lane_replaying_the_log_changes_nothing(loaded: Loaded) -> None:
    """Another lane (its own checkpoint) into the same index replays the whole log."""
    before = await snapshot(loaded)
    async with ElasticsearchSink(loaded.settings, name="again") as again:
        lane = search_lane(loaded.log, again, batch=333)
        lane.lookups = StaticLookups(renamed(loaded.log.catalog).lookups())
        assert lane.name != "order_search@elasticsearch"
        await lane.run(until_caught_up=True)
        # Every stream starts in the log, so nothing is loaded: the renamed documents are sent
        # and refused by their external versions (the snapshot has versions and seq_no).
        assert lane.stats.duplicates == 0 and lane.stats.events > 0
        assert lane.checkpoint == await loaded.log.store.head()
    assert await snapshot(loaded) == before


def _statuses(expected: dict[str, dict[str, Any]]) -> Counter[str]:
    return Counter(d["status"] for d in expected.values())


async def test_filters_sorting_and_paging(loaded: Loaded) -> None:
    statuses = _statuses(loaded.expected)
    for status, n in statuses.items():
        assert await count(loaded.sink, loaded.alias, filters={"status": status}) == n
    completed = sorted(
        (d for d in loaded.expected.values() if d["status"] == "completed"),
        key=lambda d: (Decimal(d["total_amount"]), d["id"]),
        reverse=True,
    )
    first = await search(
        loaded.sink,
        loaded.alias,
        filters={"status": "completed"},
        sort=[("total_amount", "desc")],
        size=25,
    )
    assert first.total == len(completed)
    assert [Decimal(d["total_amount"]) for d in first.documents] == [
        Decimal(d["total_amount"]) for d in completed[:25]
    ]
    pages: list[str] = []
    after = None
    for _ in range(3):
        page = await search(
            loaded.sink,
            loaded.alias,
            filters={"status": ["pending", "cancelled"]},
            sort=[("created_at", "desc")],
            size=40,
            after=after,
        )
        pages.extend(page.keys)
        after = page.after
    by_date = sorted(
        (d for d in loaded.expected.values() if d["status"] in ("pending", "cancelled")),
        key=lambda d: (d["created_at"], d["id"]),
    )
    newest = sorted(by_date, key=lambda d: d["created_at"], reverse=True)[:120]
    assert len(pages) == 120 and len(set(pages)) == 120
    assert {loaded.expected[k]["created_at"] for k in pages} == {d["created_at"] for d in newest}
    numbered = await search(
        loaded.sink, loaded.alias, sort=[("created_at", "asc")], page=3, size=10
    )
    assert numbered.keys == [d["id"] for d in by_date_all(loaded)[20:30]]
    ranged = await count(loaded.sink, loaded.alias, ranges={"total_amount": ("100.00", "200.00")})
    assert ranged == sum(
        1 for d in loaded.expected.values() if 100 <= Decimal(d["total_amount"]) <= 200
    )


def by_date_all(loaded: Loaded) -> list[dict[str, Any]]:
    return sorted(loaded.expected.values(), key=lambda d: (d["created_at"], d["id"]))


async def test_text_search_by_product_and_customer(loaded: Loaded) -> None:
    product = loaded.log.catalog.products["p3"]["name"]  # e.g. "red kettle 3"
    fields = ["customer_name", "customer_email.text", "items.product_name", "items.category.text"]
    found = await search(
        loaded.sink, loaded.alias, text=product, fields=fields, nested=["items"], size=500
    )
    want = {
        k for k, d in loaded.expected.items() if any(i["product_id"] == "p3" for i in d["items"])
    }
    words = set(product.split())
    also = {
        k
        for k, d in loaded.expected.items()
        if any(words <= set(i["product_name"].split()) for i in d["items"])
    }
    assert want <= set(found.keys) == also
    assert found.total == len(also)
    customer = await search(
        loaded.sink,
        loaded.alias,
        text="customer 7",
        fields=fields,
        nested=["items"],
        filters={"status": "completed"},
        size=500,
    )
    assert set(customer.keys) == {
        k
        for k, d in loaded.expected.items()
        if d["customer_name"] == "Customer 7" and d["status"] == "completed"
    }
    category = await search(
        loaded.sink,
        loaded.alias,
        text="garden",
        fields=fields,
        nested=["items"],
        filters={"items.category": "garden"},
        size=1,
    )
    assert category.total == sum(
        1 for d in loaded.expected.values() if any(i["category"] == "garden" for i in d["items"])
    )


async def test_top_products_by_quantity(loaded: Loaded) -> None:
    quantities: Counter[str] = Counter()
    for d in loaded.expected.values():
        if d["status"] == "completed":
            for i in d["items"]:
                quantities[i["product_id"]] += i["quantity"]
    want = sorted(quantities.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    top = await top_terms(
        loaded.sink,
        loaded.alias,
        path="items",
        term="items.product_id",
        metric="items.quantity",
        label="items.product_name.keyword",
        filters={"status": "completed"},
        size=5,
    )
    assert [(t.term, int(t.total)) for t in top] == want
    assert top[0].label == loaded.log.catalog.products[want[0][0]]["name"]
