"""The Redis sink: document read models as JSON strings, one atomic Lua call per batch, a
live-generation pointer, and the reader an API uses. See docs/sinks/redis.md."""

from __future__ import annotations

from sinks.redis.config import RedisSinkSettings
from sinks.redis.keys import KeyLayout
from sinks.redis.reader import ORDER_CACHE_PREFIX, OrderCacheReader, RedisDocumentReader
from sinks.redis.sink import RedisSink

__all__ = (
    "ORDER_CACHE_PREFIX",
    "KeyLayout",
    "OrderCacheReader",
    "RedisDocumentReader",
    "RedisSink",
    "RedisSinkSettings",
)
