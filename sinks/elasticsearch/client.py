"""The one place that builds the Elasticsearch client and calls it: every call goes through
:meth:`Cluster.call`, which maps driver errors into :mod:`core.errors` with secrets masked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from elasticsearch import AsyncElasticsearch, NotFoundError

from core.errors import PermanentError
from sinks.elasticsearch.config import ElasticsearchSinkSettings
from sinks.elasticsearch.errors import DRIVER_ERRORS, translate

__all__ = ("MISSING", "Cluster")

T = TypeVar("T")


class _Missing:
    """Returned by :meth:`Cluster.call` with ``missing_ok`` when the answer was 404."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class Cluster:
    """An open client plus error translation. Create with :meth:`connect`, then ``close``."""

    def __init__(self, settings: ElasticsearchSinkSettings, client: AsyncElasticsearch) -> None:
        self.settings = settings
        self.client = client
        self._secrets = settings.secrets()

    @classmethod
    def connect(cls, settings: ElasticsearchSinkSettings) -> Cluster:
        """Build the client (no request is made). Retries belong to the lane, so the client's
        own are off: ``max_retries=0``."""
        auth: dict[str, Any] = {}
        if settings.api_key is not None:
            auth["api_key"] = settings.api_key.get_secret_value()
        basic = settings.basic_auth()
        if basic is not None:
            auth["basic_auth"] = basic
        tls: dict[str, Any] = {"verify_certs": settings.verify_certs}
        if settings.ca_certs is not None:
            tls["ca_certs"] = str(settings.ca_certs)
        if not settings.verify_certs:
            tls["ssl_show_warn"] = False
        client = AsyncElasticsearch(
            hosts=[settings.endpoint()],
            request_timeout=settings.request_timeout,
            max_retries=0,
            retry_on_timeout=False,
            http_compress=False,
            **auth,
            **tls,
        )
        return cls(settings, client)

    async def close(self) -> None:
        await self.client.close()

    async def call(
        self,
        what: str,
        fn: Callable[[AsyncElasticsearch], Awaitable[T]],
        *,
        in_commit: bool = False,
        missing_ok: bool = False,
    ) -> T | _Missing:
        """``await fn(client)``; a 404 gives :data:`MISSING` when ``missing_ok``."""
        try:
            return await fn(self.client)
        except NotFoundError:
            if missing_ok:
                return MISSING
            raise translate_missing(what) from None
        except DRIVER_ERRORS as exc:
            raise translate(exc, what, self._secrets, in_commit=in_commit) from None

    async def body(
        self, what: str, fn: Callable[[AsyncElasticsearch], Awaitable[Any]], **kw: Any
    ) -> Any:
        """Like :meth:`call`, returning the answer's body (a dict) or :data:`MISSING`."""
        answer = await self.call(what, fn, **kw)
        if isinstance(answer, _Missing):
            return answer
        return getattr(answer, "body", answer)


def translate_missing(what: str) -> PermanentError:
    """A 404 where something must exist: the index was deleted under a running lane. Its
    checkpoint no longer describes the data, so only a rebuild repairs it."""
    return PermanentError(
        f"{what}: index not found; it was deleted while the lane ran: rebuild the lane"
    )
