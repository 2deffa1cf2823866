"""Fixtures of the reliability tests: clean-up of what a test leaves in the shared services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from elasticsearch import AsyncElasticsearch
from redis.asyncio import Redis

from tests.reliability.runs import Services


async def _drop_elasticsearch(url: str, prefix: str) -> None:
    client = AsyncElasticsearch(url)
    try:
        found = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
        for index in found:
            await client.indices.delete(index=index)
    finally:
        await client.close()


async def _drop_redis(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        batch = [key async for key in client.scan_iter(match=f"{{{prefix}*", count=1000)]
        for start in range(0, len(batch), 1000):
            await client.unlink(*batch[start : start + 1000])
    finally:
        await client.aclose()


@pytest.fixture
def leave_no_trace(namespace: str, elasticsearch_url: str, redis_url: str) -> Iterator[None]:
    """After the test: delete the Elasticsearch indices ``<namespace>_*`` and the Redis keys
    of lanes whose ``key_prefix`` starts with the namespace (Postgres schemas and DuckDB files
    are the test's own and stay for inspection)."""
    yield

    async def drop() -> None:
        await _drop_elasticsearch(elasticsearch_url, f"{namespace}_")
        await _drop_redis(redis_url, namespace)

    anyio.run(drop)


@pytest.fixture
async def leave_no_trace_async(
    namespace: str, elasticsearch_url: str, redis_url: str
) -> AsyncIterator[None]:
    """:func:`leave_no_trace` for async tests."""
    yield
    await _drop_elasticsearch(elasticsearch_url, f"{namespace}_")
    await _drop_redis(redis_url, namespace)


@pytest.fixture
def services(postgres_dsn: str, redis_url: str, elasticsearch_url: str) -> Services:
    """The services' addresses, for runners started as subprocesses."""
    return Services(postgres_dsn, redis_url, elasticsearch_url)
