"""The redis-py asyncio client (hiredis parser) built from settings, and script calls.

:func:`call_script` is for idempotent scripts (reads, promotion): any failure may be retried.
:func:`commit_script` is for the batch script: it tells apart a failure before the command
was sent (nothing happened) from one after (:class:`SentButUnanswered`: it may have run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.utils import HIREDIS_AVAILABLE

from sinks.redis.config import RedisSinkSettings
from sinks.redis.scripts import LuaScript

__all__ = ("PARSER", "SentButUnanswered", "call_script", "commit_script", "make_client")

PARSER = "hiredis" if HIREDIS_AVAILABLE else "python"

Arg = str | bytes | int


class SentButUnanswered(Exception):
    """The script was (at least partly) sent, then the connection failed: it may have run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def make_client(settings: RedisSinkSettings) -> Redis:
    """A pooled asyncio client. redis-py retries a failed command once (reads only: batch
    scripts go through :func:`commit_script`, which never resends on its own)."""
    url = settings.url.get_secret_value()
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "max_connections": settings.max_connections,
        "decode_responses": False,
        "retry": Retry(NoBackoff(), 1),
        "client_name": "projectionist",
    }
    if settings.username is not None:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.uses_tls:
        if parts.scheme == "redis":
            url = urlunsplit(parts._replace(scheme="rediss"))
        kwargs.update(
            ssl_ca_certs=settings.tls_ca_file,
            ssl_certfile=settings.tls_cert_file,
            ssl_keyfile=settings.tls_key_file,
            ssl_cert_reqs=settings.tls_verify,
            ssl_check_hostname=settings.tls_check_hostname and settings.tls_verify != "none",
        )
        if settings.tls_key_password is not None:
            kwargs["ssl_password"] = settings.tls_key_password.get_secret_value()
    return Redis.from_url(url, **kwargs)


async def call_script(
    client: Redis, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]
) -> Any:
    """EVALSHA, loading the script once when the server does not know it (after a restart)."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except rx.NoScriptError:
        await client.script_load(script.source)
        return await client.evalsha(script.sha, len(keys), *keys, *args)


async def commit_script(
    client: Redis, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]
) -> Any:
    """Run ``script`` once on one pooled connection; never resend it after a failure.

    Raises redis-py errors when the command was not sent (connecting failed) or when Redis
    answered with an error (OOM, LOADING, ...: the script did not run), and
    :class:`SentButUnanswered` when the connection failed after sending began.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        try:
            return await _send_and_read(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
        except rx.NoScriptError:
            await _send_and_read(conn, "SCRIPT", "LOAD", script.source)
            return await _send_and_read(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
    finally:
        await pool.release(conn)


async def _send_and_read(conn: Any, *command: Arg) -> Any:
    try:
        packed = hiredis.pack_command(command)  # type: ignore[arg-type]  # C, fast on many args
        await conn.send_packed_command(packed, check_health=False)
        return await conn.read_response()
    except rx.ResponseError:
        raise  # an error reply: the server answered, nothing ran
    except rx.BusyLoadingError:
        raise  # LOADING: the server refused the command
    except (rx.ConnectionError, rx.TimeoutError, OSError, TimeoutError) as exc:
        await conn.disconnect(nowait=True)
        raise SentButUnanswered(exc) from exc
    except BaseException:
        await conn.disconnect(nowait=True)  # a reply may still arrive: never reuse the socket
        raise
