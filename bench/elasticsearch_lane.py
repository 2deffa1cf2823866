"""The order search lane (Elasticsearch): catch-up against a raw ``_bulk`` loader of the same
final documents, in the same run.

Ceiling ``bulk``: the lane's final documents (read back from its index with their versions)
encoded with the sink's own action lines before timing, then sent to a fresh index of the
same mapping and settings with plain ``client.bulk`` calls of 1,000 documents (the sink's
``bulk_max_docs``), one request at a time, no checkpoint. The lane's time includes its own
encoding and its ``_mget`` loads.

Run with ``bench/run.py --only catchup --lanes order_search``.
"""

from __future__ import annotations

import time
from typing import Any

from elasticsearch import AsyncElasticsearch

from bench.history import BenchLog
from bench.lanes import catch_up, figures
from bench.places import Services, Where
from bench.timing import Clock, Timed
from core.operations import PutDocument
from core.sink import Target
from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from sinks.elasticsearch.bulk import BulkItem, encode, requests
from sinks.elasticsearch.mapping import DOCUMENT_FIELD

__all__ = ("final_documents", "measure", "raw_loader")

BULK_DOCS = 1_000


class TimedSink(Timed, ElasticsearchSink):
    pass


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
    client: AsyncElasticsearch, sink: ElasticsearchSink, target: Target, docs: list[PutDocument]
) -> float:
    """Seconds to send ``docs`` with plain ``_bulk`` requests into a fresh index with the
    lane's mapping and settings (bodies encoded beforehand)."""
    raw_target = Target(
        lane="raw", projection=f"{target.projection}_raw", schema=target.schema,
        options=target.options,
    )  # fmt: skip
    await sink.prepare(raw_target)
    index = sink.index(raw_target)
    items = [encode(index, target.schema, op) for op in docs]
    encoded = [i for i in items if isinstance(i, BulkItem)]
    assert len(encoded) == len(items), "a final document could not be encoded"
    bodies = [[i.lines for i in group] for group in requests(encoded, BULK_DOCS, 100 << 20)]
    started = time.perf_counter()
    for body in bodies:
        answer = await client.bulk(operations=body, filter_path="errors")  # type: ignore[arg-type]
        assert not answer["errors"], "the raw loader's bulk reported errors"
    seconds = time.perf_counter() - started
    await client.indices.refresh(index=index)
    stored = (await client.count(index=index))["count"]
    assert stored == len(docs), (stored, len(docs))
    return seconds


async def measure(log: BenchLog, name: str, services: Services, where: Where) -> dict[str, Any]:
    clock = Clock()
    settings = ElasticsearchSinkSettings(
        url=services.elasticsearch_url,
        index_prefix=where.index_prefix,
        bulk_max_docs=BULK_DOCS,
        request_timeout=120,
    )
    client = AsyncElasticsearch(services.elasticsearch_url, request_timeout=120)
    try:
        async with TimedSink(settings, clock) as sink:
            run = await catch_up(log, name, sink, where, clock)
            docs = await final_documents(client, sink.index(run.lane.target))
            raw = await raw_loader(client, sink, run.lane.target, docs)
    finally:
        await client.close()
    return figures(log, run, len(docs), {"bulk": raw}, judged="bulk")
