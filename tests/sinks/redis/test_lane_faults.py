"""A running order cache lane meets a real Redis restart and a real memory limit, on private
redis-server processes: it retries, never leaves half a batch, and converges exactly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import anyio
import pytest
from redis.asyncio import Redis

from core.lane import Lane
from core.strategy import LaneState, Strategy
from sinks.redis import KeyLayout, RedisSink, RedisSinkSettings
from tests.sinks.redis.servers import PrivateRedis
from tests.sinks.redis.support import OrderLog, assert_exactly_at_checkpoint, order_lane, snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.postgres, pytest.mark.reliability]

Start = Callable[..., PrivateRedis]
LAYOUT = KeyLayout("order")
FAST = Strategy.immediate(max_batch=1_000, catch_up_batch=5_000)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def mid_run(lane: Lane) -> bool:
    return lane.stats.batches >= 5 and lane.checkpoint is not None


async def test_redis_restarted_mid_run(private_redis: Start, order_log: OrderLog) -> None:
    """SIGKILL the server while the lane writes, start it again on the same data (AOF with
    fsync on every write): the lane retries, resumes at the checkpoint Redis kept, and ends
    exactly at the oracle."""
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    settings = RedisSinkSettings(url=server.url, connect_timeout=1, socket_timeout=5)
    store = await order_log.store()
    raw = Redis.from_url(server.url)
    try:
        async with RedisSink(settings) as sink, anyio.create_task_group() as group:
            lane = order_lane(sink, store, order_log.catalog, "order", max_batch=20)
            group.start_soon(partial(lane.run, until_caught_up=True))
            await until(lambda: mid_run(lane))
            run_id = server.run_id()
            server.kill()
            await until(lambda: lane.state is LaneState.RETRYING)
            killed_at = lane.checkpoint  # the last batch Redis acknowledged
            await anyio.sleep(0.5)
            assert lane.checkpoint == killed_at  # nothing can land while Redis is down
            server.start()
            assert server.run_id() != run_id
            kept = await assert_exactly_at_checkpoint(raw, LAYOUT, order_log)
            assert kept is not None and killed_at is not None and kept >= killed_at
            assert kept < order_log.head, "the restart was not in the middle of the run"
            lane.strategy = FAST  # small batches made the fault land mid-run; now catch up
        assert lane.state is LaneState.IDLE
        assert lane.stats.retries > 0
        assert await assert_exactly_at_checkpoint(raw, LAYOUT, order_log) == order_log.head
    finally:
        await raw.aclose()
        await store.close()


async def test_memory_limit_reached_mid_run(
    private_redis: Start, order_log: OrderLog, caplog: pytest.LogCaptureFixture
) -> None:
    """maxmemory drops below the used memory while the lane writes: every batch is refused
    whole (OOM), the checkpoint stays put and Redis holds exactly the oracle at it; once the
    limit is raised the lane converges."""
    server = private_redis()
    admin = server.admin()
    store = await order_log.store()
    raw = Redis.from_url(server.url)
    try:
        async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
            with caplog.at_level(logging.WARNING):
                async with anyio.create_task_group() as group:
                    lane = order_lane(sink, store, order_log.catalog, "order", max_batch=20)
                    group.start_soon(partial(lane.run, until_caught_up=True))
                    await until(lambda: mid_run(lane))
                    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
                    await until(lambda: lane.state is LaneState.RETRYING)
                    first = await assert_exactly_at_checkpoint(raw, LAYOUT, order_log)
                    retries = lane.stats.retries
                    await anyio.sleep(1.0)
                    assert lane.stats.retries > retries
                    assert (await snapshot(raw, LAYOUT)).checkpoint() == first
                    assert first is not None and first < order_log.head
                    assert "out of memory" in str(lane.stats.last_error)
                    admin.config_set("maxmemory", 0)
                    lane.strategy = FAST
            assert "nothing was written; the lane retries" in caplog.text
            assert lane.state is LaneState.IDLE
        assert await assert_exactly_at_checkpoint(raw, LAYOUT, order_log) == order_log.head
    finally:
        admin.close()
        await raw.aclose()
        await store.close()
