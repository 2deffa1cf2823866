"""Faults injected for real: a poison document the mapping refuses, an outage in the middle of a
run (a proxy in front of the cluster, cut and restored) while another lane keeps going, and a
rebuild into a new generation while searchers read the alias."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

import anyio
import pytest
from elasticsearch import AsyncElasticsearch

from core.deadletters import InMemoryDeadLetters
from core.errors import ConfigurationError, DocumentRejected
from core.projection import Context, handles
from core.runner import Runner
from core.strategy import ErrorPolicy, LaneState
from core.testing import InMemorySink
from projections.orders import OrderCompleted, OrderSearch
from sinks.elasticsearch import (
    DOCUMENT_FIELD,
    ElasticsearchSink,
    ElasticsearchSinkSettings,
    count,
    rebuild,
)
from tests.sinks.elasticsearch.proxy import TcpProxy
from tests.sinks.elasticsearch.support import (
    fetch_all,
    order_log,
    search_lane,
    wait_until,
)
from tests.support.orders import expected_orders

pytestmark = [pytest.mark.anyio, pytest.mark.elasticsearch, pytest.mark.reliability]


class PoisonedSearch(OrderSearch):
    """The search model, except that completing a chosen order puts text into ``item_count``
    (a long in the mapping): the cluster refuses that document."""

    poisoned: ClassVar[frozenset[str]] = frozenset()

    @handles(OrderCompleted)
    def completed(
        self, doc: dict[str, Any] | None, event: OrderCompleted, ctx: Context
    ) -> dict[str, Any]:
        out = super().completed(doc, event, ctx)
        if ctx.envelope.stream_id in self.poisoned:
            out = {**out, "item_count": "many"}
        return out


async def test_poison_document_is_parked_while_neighbours_are_indexed(
    sink: ElasticsearchSink, raw: AsyncElasticsearch
) -> None:
    log = await order_log(1_200, seed=21)
    expected = await log.expected()
    completed = sorted(k for k, d in expected.items() if d["status"] == "completed")
    poisoned = frozenset(completed[::40])
    PoisonedSearch.poisoned = poisoned
    letters = InMemoryDeadLetters()
    lane = search_lane(
        log,
        sink,
        projection=PoisonedSearch(),
        batch=150,
        policy=ErrorPolicy.PARK,
        dead_letters=letters,
    )
    await lane.run(until_caught_up=True)
    assert lane.state is not LaneState.HALTED
    assert lane.checkpoint == await log.store.head()
    assert await sink.read_checkpoint(lane.target) == lane.checkpoint

    stored = await fetch_all(raw, sink.index(lane.target))
    healthy = {k: v["source"][DOCUMENT_FIELD] for k, v in stored.items() if k not in poisoned}
    assert healthy == {k: d for k, d in expected.items() if k not in poisoned}

    parked = await letters.find(lane.name)
    assert {d.stream_id for d in parked} == poisoned
    assert lane.stats.parked == len(parked)
    envelopes = await log.envelopes()
    partly_stored = 0
    for key in poisoned:
        mine = [d for d in parked if d.stream_id == key]
        first = min(mine, key=lambda d: d.stream_version)
        assert first.blocked_by is None and "item_count" in first.error
        assert all(d.blocked_by == first.event_id for d in mine if d is not first)
        assert max(d.stream_version for d in mine) == max(
            e.stream_version for e in envelopes if e.stream_id == key
        )
        # what is stored is the fold of the events before the parked ones, nothing more
        if key in stored:
            partly_stored += 1
            version = stored[key]["version"]
            assert version == first.stream_version - 1
            before = [e for e in envelopes if e.stream_id == key and e.stream_version <= version]
            assert (
                stored[key]["source"][DOCUMENT_FIELD] == expected_orders(before, log.catalog)[key]
            )
    assert partly_stored > 0  # some poisoned orders had earlier batches indexed
    assert await count(sink, sink.alias("order_search")) == len(stored)


async def test_poison_document_halts_a_halt_lane_before_its_batch(
    sink: ElasticsearchSink,
) -> None:
    log = await order_log(300, seed=22)
    expected = await log.expected()
    PoisonedSearch.poisoned = frozenset(
        sorted(k for k, d in expected.items() if d["status"] == "completed")[50:51]
    )
    lane = search_lane(log, sink, projection=PoisonedSearch(), batch=100)
    with pytest.raises(DocumentRejected, match="item_count"):
        await lane.run(until_caught_up=True)
    head = await log.store.head()
    assert lane.checkpoint is None or (head is not None and lane.checkpoint < head)
    assert await sink.read_checkpoint(lane.target) == lane.checkpoint


async def test_outage_mid_run_retries_and_converges_while_another_lane_goes_on(
    es_settings: ElasticsearchSinkSettings, raw: AsyncElasticsearch, elasticsearch_url: str
) -> None:
    upstream = urlsplit(elasticsearch_url)
    proxy = TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 9200)
    settings = ElasticsearchSinkSettings(
        url=proxy.url, index_prefix=es_settings.index_prefix, request_timeout=5.0
    )
    log = await order_log(800, seed=31)
    first_head = await log.store.head()
    async with anyio.create_task_group() as group:
        await proxy.start(group)
        sink = ElasticsearchSink(settings)
        await sink.open()
        es_lane = search_lane(log, sink, batch=100)
        memory = InMemorySink("memory")
        other = search_lane(log, memory, batch=100)
        runner = Runner(log.store, [es_lane, other])
        async with anyio.create_task_group() as lanes:
            lanes.start_soon(runner.run)
            try:
                await wait_until(lambda: es_lane.checkpoint is not None)
                proxy.cut()
                cut_at = es_lane.checkpoint
                assert cut_at is not None and first_head is not None and cut_at < first_head
                # more orders arrive during the outage: the in-memory lane takes them all
                more = await order_log(200, seed=32, store=log.store)
                head = await more.store.head()
                await wait_until(lambda: other.checkpoint == head, what="memory lane")
                await wait_until(lambda: es_lane.state is LaneState.RETRYING, what="retrying")
                await anyio.sleep(1.0)
                assert es_lane.state is LaneState.RETRYING
                assert es_lane.checkpoint is not None
                assert head is not None and es_lane.checkpoint < head
                assert es_lane.stats.retries >= 2
                await proxy.start(group)
                await wait_until(lambda: es_lane.checkpoint == head, timeout=60, what="converge")
            finally:
                # closing the sink first ends a lane stuck retrying in its shielded flush
                await sink.close()
                lanes.cancel_scope.cancel()
        proxy.cut()
    assert es_lane.stats.last_error is not None
    stored = await fetch_all(raw, f"{es_settings.index_prefix}order_search-g1")
    expected = await log.expected()
    assert {k: v["source"][DOCUMENT_FIELD] for k, v in stored.items()} == expected
    assert memory.state(other.target).live_documents() == expected


async def test_rebuild_never_shows_a_half_built_index(
    sink: ElasticsearchSink, raw: AsyncElasticsearch
) -> None:
    log = await order_log(800, seed=41)
    expected = await log.expected()
    alias = sink.alias("order_search")
    live = search_lane(log, sink, batch=500)
    await live.run(until_caught_up=True)
    g1 = sink.index(live.target)
    await raw.indices.refresh(index=g1)  # generation 1 has settled before the rebuild starts
    assert await sink.live_generation("order_search") == 1
    rebuild_lane = search_lane(log, sink, batch=60, generation=2)
    head = await log.store.head()
    g2 = sink.index(rebuild_lane.target)
    seen: list[tuple[tuple[str, ...], int]] = []
    refresh_while_loading: set[str] = set()
    done = anyio.Event()

    async def searcher() -> None:
        while not done.is_set():
            holders = tuple(sorted(await raw.indices.get_alias(name=alias)))
            seen.append((holders, await count(sink, alias)))
            if await raw.indices.exists(index=g2):
                found = await raw.indices.get_settings(index=g2, name="index.refresh_interval")
                if rebuild_lane.checkpoint != head:  # still filling: promote has not begun
                    refresh_while_loading.add(found[g2]["settings"]["index"]["refresh_interval"])
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(searcher)
        before = await rebuild(rebuild_lane, sink)
        assert before == [g1]
        await anyio.sleep(0.1)
        done.set()
    assert len(seen) > 10
    assert refresh_while_loading == {"-1"}
    switched = [i for i, (holders, _) in enumerate(seen) if holders != (g1,)]
    assert switched and all(seen[i][0] == (g2,) for i in range(switched[0], len(seen)))
    assert seen[-1][0] == (g2,)
    assert {n for _, n in seen} == {len(expected)}  # every search saw a complete index
    assert await sink.live_generation("order_search") == 2
    restored = await raw.indices.get_settings(index=g2)
    index_settings = restored[g2]["settings"]["index"]
    assert index_settings["refresh_interval"] == "1s"
    assert index_settings["number_of_replicas"] == "1"
    stored = await fetch_all(raw, g2)
    assert {k: v["source"][DOCUMENT_FIELD] for k, v in stored.items()} == expected
    with pytest.raises(ConfigurationError):
        await sink.drop(rebuild_lane.target)
    await sink.drop(live.target)
    assert not await raw.indices.exists(index=g1)
    assert await sink.read_checkpoint(live.target) is None
    # a later generation never takes the alias on its own
    g3 = search_lane(log, sink, generation=3)
    await sink.prepare(g3.target)
    assert await sink.live_generation("order_search") == 2
