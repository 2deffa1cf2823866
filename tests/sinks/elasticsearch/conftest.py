"""Fixtures of the Elasticsearch sink tests: settings whose index prefix is the test's
namespace (every index is deleted afterwards), an opened sink and a raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch

from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from tests.sinks.elasticsearch.support import delete_prefix


@pytest.fixture
def es_settings(elasticsearch_url: str, namespace: str) -> ElasticsearchSinkSettings:
    return ElasticsearchSinkSettings(url=elasticsearch_url, index_prefix=f"{namespace}_")


@pytest.fixture
async def raw(elasticsearch_url: str, namespace: str) -> AsyncIterator[AsyncElasticsearch]:
    """A plain client; the test's indices (``<namespace>_*``) are deleted afterwards."""
    client = AsyncElasticsearch(elasticsearch_url)
    yield client
    await delete_prefix(client, f"{namespace}_")
    await client.close()


@pytest.fixture
async def sink(
    es_settings: ElasticsearchSinkSettings, raw: AsyncElasticsearch
) -> AsyncIterator[ElasticsearchSink]:
    async with ElasticsearchSink(es_settings) as opened:
        yield opened
