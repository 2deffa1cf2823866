"""The order cache lane (Redis): catch-up against a raw pipelined write of the same final
documents through the same client, in the same run.

Ceiling ``pipelined_set``: SET of every final document (the JSON text the lane stored) in
pipelines of 1,000 commands, no version guard, no checkpoint, no script: the floor for
writing the final bytes through this client. ``script_ms_per_batch`` is how long Redis itself
ran the sink's script per batch (from ``INFO commandstats``, shared with any other client).

Run with ``bench/run.py --only catchup --lanes order_cache``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.history import BenchLog
from bench.lanes import catch_up, figures
from bench.places import Services, Where
from bench.timing import Clock, Timed
from sinks.redis import RedisSink, RedisSinkSettings
from sinks.redis.keys import layout_for

__all__ = ("measure", "raw_write")

PIPELINE = 1_000


class TimedSink(Timed, RedisSink):
    pass


async def raw_write(sink: RedisSink, prefix: str, documents: dict[str, Any]) -> float:
    """Seconds to SET ``documents`` under ``{prefix}:<key>`` with pipelines of 1,000."""
    encoded = [
        (f"{{{prefix}}}:{key}", json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        for key, doc in documents.items()
    ]
    started = time.perf_counter()
    for start in range(0, len(encoded), PIPELINE):
        async with sink.client.pipeline(transaction=False) as pipe:
            for key, value in encoded[start : start + PIPELINE]:
                pipe.set(key, value)
            await pipe.execute()
    return time.perf_counter() - started


async def script_stats(sink: RedisSink) -> tuple[int, int]:
    """``(calls, microseconds)`` of EVALSHA on the server so far."""
    stats = await sink.client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return int(evalsha.get("calls", 0)), int(evalsha.get("usec", 0))


async def measure(log: BenchLog, name: str, services: Services, where: Where) -> dict[str, Any]:
    clock = Clock()
    async with TimedSink(RedisSinkSettings(url=services.redis_url), clock) as sink:
        before = await script_stats(sink)
        run = await catch_up(log, name, sink, where, clock)
        after = await script_stats(sink)
        found = await sink.client.hkeys(layout_for(run.lane.target).versions)
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in found)
        documents: dict[str, Any] = {}
        for start in range(0, len(keys), 1_000):
            stored = await sink.load(run.lane.target, keys[start : start + 1_000])
            documents.update({k: v.document for k, v in stored.items() if v.document})
        raw = await raw_write(sink, where.key_prefix("raw"), documents)
    out = figures(log, run, len(documents), {"pipelined_set": raw}, judged="pipelined_set")
    calls = max(1, after[0] - before[0])
    out["script_ms_per_batch"] = round((after[1] - before[1]) / calls / 1000, 2)
    return out
