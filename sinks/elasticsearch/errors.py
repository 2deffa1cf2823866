"""Translate Elasticsearch client errors and ``_bulk`` item failures into the core error tree.

Request level: no connection, a timeout, 429 and 5xx answers are :class:`StoreUnavailable`
(a timeout while the checkpoint is written is an :class:`AmbiguousCommit`); 401/403 and TLS
failures are :class:`ConfigurationError` (credentials, privileges, certificates); other 4xx
are :class:`PermanentError`. Item level (:func:`classify_item`): 409 is "already applied",
429 and 5xx are retried, 400 is one rejected document, anything else permanent.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, SerializationError, TlsError, TransportError
from elasticsearch import ApiError

from core.errors import (
    AmbiguousCommit,
    ConfigurationError,
    PermanentError,
    ProjectionistError,
    StoreUnavailable,
)
from core.redact import redact_text

__all__ = ("DRIVER_ERRORS", "ItemOutcome", "classify_item", "item_reason", "translate")

DRIVER_ERRORS: tuple[type[Exception], ...] = (ApiError, TransportError, OSError, TimeoutError)
"""What a client call may raise; catch these and pass them to :func:`translate`."""


def _status(exc: ApiError) -> int:
    try:
        return int(exc.meta.status)
    except (AttributeError, TypeError, ValueError):
        return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {_status(exc)} {exc.message}: {item_reason(_error_of(exc.body))}"
    return f"{type(exc).__name__}: {exc}"


def _error_of(body: Any) -> Any:
    return body.get("error") if isinstance(body, dict) else body


def translate(
    exc: BaseException,
    what: str,
    secrets: tuple[str, ...] = (),
    *,
    in_commit: bool = False,
) -> ProjectionistError:
    """The core error for ``exc`` raised while doing ``what`` (secrets masked)."""
    text = redact_text(f"{what}: {_describe(exc)}", secrets)
    if isinstance(exc, TlsError):
        return ConfigurationError(
            "elasticsearch.ca_certs",
            "***",
            redact_text(f"{what}: TLS failed ({exc}); check ca_certs and the server", secrets),
        )
    if isinstance(exc, ConnectionTimeout | TimeoutError):
        return AmbiguousCommit(text) if in_commit else StoreUnavailable(text)
    if isinstance(exc, TransportConnectionError | OSError):
        return AmbiguousCommit(text) if in_commit else StoreUnavailable(text)
    if isinstance(exc, ApiError):
        status = _status(exc)
        if status in (401, 403):
            return ConfigurationError(
                "elasticsearch.credentials",
                "***",
                f"{text}; check the API key or user and its index privileges",
            )
        if status == 429 or status >= 500:
            return StoreUnavailable(text)
        return PermanentError(text)
    if isinstance(exc, SerializationError):
        return PermanentError(text)
    if isinstance(exc, TransportError):
        return StoreUnavailable(text)
    return PermanentError(text)


class ItemOutcome(Enum):
    """What one ``_bulk`` item's answer means for the write."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    """409 version conflict: the index holds this version or a newer one."""
    RETRY = "retry"
    """429 or 5xx: try the item again."""
    REJECTED = "rejected"
    """400: this document can never be indexed as it is (mapping, parse, argument)."""
    FAILED = "failed"
    """Anything else (missing index, privileges): a permanent failure of the write."""


def classify_item(status: int) -> ItemOutcome:
    if 200 <= status < 300:
        return ItemOutcome.APPLIED
    if status == 409:
        return ItemOutcome.ALREADY_APPLIED
    if status == 429 or status >= 500:
        return ItemOutcome.RETRY
    if status == 400:
        return ItemOutcome.REJECTED
    return ItemOutcome.FAILED


def item_reason(error: Any) -> str:
    """``type: reason (caused by: type: reason)`` from an item's or answer's ``error``."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return text
