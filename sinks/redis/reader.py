"""Reading the cache: what an API calls. It hides the key layout and resolves the live
generation through the pointer key, in the same script call as the reads.

A miss (``None``, or a key left out of :meth:`RedisDocumentReader.get_many`) means the cache
does not hold the document right now: it was never written, it expired (TTL), it is being
rebuilt, or the key does not exist. Read the Postgres detail (``order_detail``) then; never
treat a miss as "no such order". A :class:`~core.errors.StoreUnavailable` means the same.

Example::

    async with OrderCacheReader(RedisSinkSettings(url=...)) as orders:
        one = await orders.get_order("order-42")           # dict or None
        some = await orders.get_orders(["order-1", "order-2"])  # {id: dict} of the hits
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis

from core import jsontext
from sinks.redis.client import call_script, make_client
from sinks.redis.config import RedisSinkSettings
from sinks.redis.errors import DRIVER_ERRORS, translate
from sinks.redis.keys import KeyLayout
from sinks.redis.scripts import READ

__all__ = ("ORDER_CACHE_PREFIX", "OrderCacheReader", "RedisDocumentReader")

ORDER_CACHE_PREFIX = "order"
"""The key prefix of the order cache lane (``key_prefix`` option of ``order_cache@redis``)."""

CHUNK = 500
"""Keys per script call, so one call never blocks Redis for long."""


class RedisDocumentReader:
    """Documents of one key prefix, from its live generation. An async resource."""

    def __init__(
        self, settings: RedisSinkSettings, prefix: str, *, client: Redis | None = None
    ) -> None:
        self.settings = settings
        self.layout = KeyLayout(prefix)
        self._own_client = client is None
        self._client = client

    async def __aenter__(self) -> Self:
        if self._client is None:
            self._client = make_client(self.settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None and self._own_client:
            client, self._client = self._client, None
            await client.aclose()

    async def get(self, key: str) -> dict[str, Any] | None:
        """The document of ``key``, or ``None`` on a miss (read the Postgres detail)."""
        return (await self.get_many([key])).get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{key: document}`` for the keys the cache holds; misses are left out."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            reply = await self._read(chunk)
            if not reply or reply[0] is None:
                return {}  # nothing is live yet
            for key, raw in zip(chunk, reply[1:], strict=True):
                if raw is not None:
                    out[key] = jsontext.loads(raw)
        return out

    async def live_generation(self) -> int | None:
        reply = await self._read([])
        return None if not reply or reply[0] is None else int(reply[0])

    async def _read(self, keys: list[str]) -> list[Any]:
        if self._client is None:
            raise RuntimeError("the reader is not open: use `async with` it")
        try:
            reply: list[Any] = await call_script(
                self._client, READ, [self.layout.live], [self.layout.tag, *keys]
            )
        except DRIVER_ERRORS as exc:
            raise translate(
                exc, f"reading {self.layout.tag}", self.settings.address(), self.settings.secrets()
            ) from None
        return reply


class OrderCacheReader(RedisDocumentReader):
    """The order cache: order documents by order id (the order's stream id)."""

    def __init__(
        self,
        settings: RedisSinkSettings,
        prefix: str = ORDER_CACHE_PREFIX,
        *,
        client: Redis | None = None,
    ) -> None:
        super().__init__(settings, prefix, client=client)

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        """The order, or ``None``: then read it from the Postgres order detail."""
        return await self.get(order_id)

    async def get_orders(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The cached orders among ``order_ids``; read the missing ones from Postgres."""
        return await self.get_many(order_ids)
