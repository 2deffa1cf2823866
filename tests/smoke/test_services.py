"""Each service is real and reachable: one round trip to each."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import duckdb
import pytest
import redis.asyncio as aioredis
from elasticsearch import AsyncElasticsearch, ConflictError

pytestmark = pytest.mark.anyio


@pytest.mark.postgres
async def test_postgres_round_trip(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        snapshot = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        assert int(version) >= 130000  # xid8 and pg_current_snapshot need 13+
        assert int(snapshot) > 0
    finally:
        await conn.close()


@pytest.mark.redis
async def test_redis_round_trip(redis_url: str, namespace: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await client.set(f"{namespace}:smoke", "ok", ex=60)
        assert await client.get(f"{namespace}:smoke") == b"ok"
        await client.delete(f"{namespace}:smoke")
    finally:
        await client.aclose()


@pytest.mark.elasticsearch
async def test_elasticsearch_external_versions(elasticsearch_url: str, namespace: str) -> None:
    client = AsyncElasticsearch(elasticsearch_url)
    index = f"{namespace}-smoke"
    try:
        await client.indices.create(index=index, settings={"number_of_replicas": 0})
        await client.index(
            index=index, id="a", document={"n": 5}, version=5, version_type="external"
        )
        with pytest.raises(ConflictError):
            await client.index(
                index=index, id="a", document={"n": 4}, version=4, version_type="external"
            )
        found = await client.get(index=index, id="a")
        assert found["_version"] == 5
        assert found["_source"] == {"n": 5}
    finally:
        await client.indices.delete(index=index, ignore_unavailable=True)
        await client.close()


@pytest.mark.duckdb
def test_duckdb_file_written_and_reopened(duckdb_dir: Path, namespace: str) -> None:
    path = duckdb_dir / f"{namespace}.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS n FROM range(1000)")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT sum(n) FROM t").fetchone() == (499500,)
    path.unlink()
