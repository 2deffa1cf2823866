"""Fixtures of the Redis sink tests: the shared Redis (keys under the test's namespace, removed
afterwards), private redis-server processes, and one order log in Postgres per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from sinks.redis import RedisSink, RedisSinkSettings
from tests.sinks.redis.servers import PrivateRedis
from tests.sinks.redis.support import OrderLog, build_log, delete_prefix, drop_schema


@pytest.fixture
def redis_settings(redis_url: str) -> RedisSinkSettings:
    return RedisSinkSettings(url=redis_url)


@pytest.fixture
async def raw(redis_url: str, namespace: str) -> AsyncIterator[Redis]:
    """A plain client on the shared Redis; the test's keys are deleted afterwards."""
    client = Redis.from_url(redis_url)
    yield client
    await delete_prefix(client, namespace)
    await client.aclose()


@pytest.fixture
async def sink(redis_settings: RedisSinkSettings, raw: Redis) -> AsyncIterator[RedisSink]:
    async with RedisSink(redis_settings) as opened:
        yield opened


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """``start(*redis_server_args)``: a private, started redis-server; all stopped at the end."""
    started: list[PrivateRedis] = []

    def start(*args: str, tls: dict[str, Path] | None = None) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis{len(started)}", *args, tls=tls)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def order_log(postgres_dsn: str) -> Iterator[OrderLog]:
    """About 10,000 order events in a schema of their own, shared by the tests that only read
    the log; the schema is dropped at the end of the session."""
    schema = "t" + uuid.uuid4().hex[:12]
    log = anyio.run(build_log, postgres_dsn, schema)
    yield log
    anyio.run(drop_schema, postgres_dsn, schema)
