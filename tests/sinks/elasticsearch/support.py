"""Helpers of the Elasticsearch sink tests: order logs in memory, lanes, index inspection and
clean-up, all against the real cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from elasticsearch import AsyncElasticsearch

from core.events import EventEnvelope
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START
from core.retry import Backoff
from core.sink import Sink
from core.strategy import ErrorPolicy, Strategy
from projections.orders import OrderSearch
from tests.support.orders import Catalog, expected_orders, make_catalog, order_history

SEARCH_OPTIONS: dict[str, Any] = {"text_subfields": ["customer_email", "items.category"]}


@dataclass
class OrderLog:
    store: InMemoryEventStore
    catalog: Catalog
    orders: int

    async def envelopes(self) -> list[EventEnvelope]:
        return [e async for e in self.store.iterate(START)]

    async def expected(self) -> dict[str, dict[str, Any]]:
        return expected_orders(await self.envelopes(), self.catalog)

    async def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in await self.envelopes():
            out[e.stream_id] = max(out.get(e.stream_id, 0), e.stream_version)
        return out


async def order_log(
    orders: int, seed: int = 11, store: InMemoryEventStore | None = None
) -> OrderLog:
    catalog = make_catalog()
    store = store or InMemoryEventStore()
    for stream, events in order_history(orders, catalog, seed=seed):
        await store.append(stream, events)
    return OrderLog(store, catalog, orders)


def search_lane(
    log: OrderLog,
    sink: Sink,
    *,
    projection: OrderSearch | None = None,
    batch: int = 1_000,
    policy: ErrorPolicy = ErrorPolicy.HALT,
    generation: int = 1,
    options: dict[str, Any] | None = None,
    **kw: Any,
) -> Lane:
    return Lane(
        projection or OrderSearch(),
        sink,
        log.store,
        lookups=StaticLookups(log.catalog.lookups()),
        strategy=Strategy.immediate(max_batch=batch, catch_up_batch=batch),
        policy=policy,
        generation=generation,
        options=SEARCH_OPTIONS if options is None else options,
        backoff=Backoff(base=0.02, cap=0.5),
        **kw,
    )


async def fetch_all(client: AsyncElasticsearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` as ``{id: {"version": v, "seq_no": s, "source": {...}}}``
    (refreshed first; paged by ``search_after``)."""
    await client.indices.refresh(index=index)
    out: dict[str, dict[str, Any]] = {}
    after: list[Any] | None = None
    while True:
        extra: dict[str, Any] = {"search_after": after} if after else {}
        answer = await client.search(
            index=index,
            size=1_000,
            sort=[{"id": "asc"}],
            version=True,
            seq_no_primary_term=True,
            query={"match_all": {}},
            **extra,
        )
        hits = answer["hits"]["hits"]
        for h in hits:
            out[h["_id"]] = {
                "version": h["_version"],
                "seq_no": h["_seq_no"],
                "source": h["_source"],
            }
        if len(hits) < 1_000:
            return out
        after = hits[-1]["sort"]


async def delete_prefix(client: AsyncElasticsearch, prefix: str) -> None:
    """Delete every index whose name starts with ``prefix`` (by name, never a wildcard)."""
    found = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
    names = sorted(found)
    if names:
        await client.indices.delete(index=",".join(names))


async def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)
