"""A runner killed (SIGKILL) at random moments in the middle of a run: Redis never holds half
a batch, and the restarted runner resumes from the checkpoint in Redis and ends exactly at the
oracle."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from sinks.redis import KeyLayout
from tests.sinks.redis.support import OrderLog, assert_exactly_at_checkpoint, snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.postgres, pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[3]


def start_lane(order_log: OrderLog, redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LANE_DSN": order_log.dsn,
        "LANE_SCHEMA": order_log.schema,
        "LANE_REDIS_URL": redis_url,
        "LANE_PREFIX": prefix,
        "LANE_MAX_BATCH": "25",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sinks.redis.lane_process"], cwd=ROOT, env=env
    )


async def stored_checkpoint(raw: Redis, layout: KeyLayout) -> object:
    return (await snapshot(raw, layout)).checkpoint()


async def test_a_killed_runner_leaves_no_half_batch_and_catches_up_exactly(
    raw: Redis, redis_url: str, namespace: str, order_log: OrderLog
) -> None:
    rng = random.Random()
    layout = KeyLayout(namespace)
    kills_mid_run = 0
    for _ in range(3):
        before = await stored_checkpoint(raw, layout)
        process = start_lane(order_log, redis_url, namespace)
        try:
            with anyio.fail_after(60):
                while await stored_checkpoint(raw, layout) == before:
                    assert process.poll() is None, "the lane process ended before writing"
                    await anyio.sleep(0.01)
            await anyio.sleep(rng.uniform(0.0, 0.4))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        await anyio.sleep(0.1)  # a batch sent just before the kill is run (whole) or dropped
        checkpoint = await assert_exactly_at_checkpoint(raw, layout, order_log)
        assert checkpoint is not None
        if checkpoint < order_log.head:
            kills_mid_run += 1
    assert kills_mid_run >= 2, "the runner finished before it could be killed mid-run"
    process = start_lane(order_log, redis_url, namespace)
    with anyio.fail_after(120):
        while process.poll() is None:
            await anyio.sleep(0.1)
    assert process.returncode == 0
    assert await assert_exactly_at_checkpoint(raw, layout, order_log) == order_log.head
