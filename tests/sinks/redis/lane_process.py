"""Runs the order cache lane until it is caught up, in a process of its own, so a test can
SIGKILL it at any moment. Configured by the environment (no secret on the command line):
LANE_DSN, LANE_SCHEMA, LANE_REDIS_URL, LANE_PREFIX, LANE_MAX_BATCH."""

from __future__ import annotations

import os

import anyio

from sinks.redis import RedisSink, RedisSinkSettings
from tests.sinks.redis.support import OrderLog, order_lane
from tests.support.orders import make_catalog


async def main() -> None:
    log = OrderLog(os.environ["LANE_DSN"], os.environ["LANE_SCHEMA"], make_catalog(), [])
    store = await log.store()
    try:
        async with RedisSink(RedisSinkSettings(url=os.environ["LANE_REDIS_URL"])) as sink:
            lane = order_lane(
                sink,
                store,
                log.catalog,
                os.environ["LANE_PREFIX"],
                max_batch=int(os.environ["LANE_MAX_BATCH"]),
            )
            await lane.run(until_caught_up=True)
    finally:
        await store.close()


if __name__ == "__main__":
    anyio.run(main)
