"""Translate asyncpg exceptions into the core error tree (shared by the event store and the
Postgres sink, so both classify the same failure the same way)."""

from __future__ import annotations

import asyncpg

from core.errors import (
    AmbiguousCommit,
    ConfigurationError,
    PermanentError,
    ProjectionistError,
    StoreUnavailable,
)
from core.redact import redact_text

__all__ = (
    "DRIVER_ERRORS",
    "TRANSIENT_SQLSTATES",
    "TRANSIENT_SQLSTATE_CLASSES",
    "translate_pg_error",
)

TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
"""Connection exception, transaction rollback (serialization, deadlock), insufficient
resources, operator intervention (admin shutdown, cancel), system error."""
TRANSIENT_SQLSTATES = ("55P03", "25006")
"""Single states of other classes that pass: a lock not available (``lock_timeout`` behind
another session's lock or an index build) and a read-only transaction (a standby, or a pooler
still pointing at the old primary during a failover)."""

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What asyncpg raises for a store problem; :func:`translate_pg_error` maps each to a core
error (``InternalClientError`` is a connection whose backend died mid-query)."""

_CONNECTION_ERRORS = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def translate_pg_error(
    exc: BaseException, what: str, *, in_commit: bool = False
) -> ProjectionistError:
    """The core error for ``exc`` raised while doing ``what``.

    A connection lost during COMMIT is an :class:`AmbiguousCommit`: the caller must find out
    whether it landed. Other connection and resource failures are :class:`StoreUnavailable`;
    anything else (constraint, data, syntax) is a :class:`PermanentError`, and a refused
    login or a missing database a :class:`ConfigurationError`.
    """
    text = redact_text(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError):
        return StoreUnavailable(text)  # a schema change invalidated a prepared statement
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state.startswith("28"):
            return ConfigurationError(
                "postgres_dsn", "***", f"{what}: authentication failed; check user and password"
            )
        if state == "3D000":
            return ConfigurationError(
                "postgres_dsn", "***", f"{what}: {exc}; create the database or fix the DSN"
            )
        if state.startswith(TRANSIENT_SQLSTATE_CLASSES) or state in TRANSIENT_SQLSTATES:
            if in_commit and state.startswith(("08", "57")):
                return AmbiguousCommit(text)
            return StoreUnavailable(text)
        return PermanentError(text)
    if isinstance(exc, _CONNECTION_ERRORS):
        return AmbiguousCommit(text) if in_commit else StoreUnavailable(text)
    return PermanentError(text)
