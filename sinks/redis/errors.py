"""redis-py exceptions -> :mod:`core.errors`, at the sink boundary, with secrets masked.

* Refused or lost connections, timeouts, ``LOADING`` (a restart reading its data back),
  ``BUSY`` (a long script), ``READONLY`` / ``MASTERDOWN`` / ``TRYAGAIN`` / ``CLUSTERDOWN`` /
  ``MOVED`` / ``ASK`` (failover, resharding), ``MISCONF`` (a snapshot cannot be written, the
  disk is full), ``NOREPLICAS`` and ``OOM`` (``maxmemory`` reached under ``noeviction``) are
  :class:`~core.errors.StoreUnavailable`: transient, retried by the lane. redis-py strips the
  code from the replies it knows and raises its own classes for them (``ReadOnlyError``,
  ``ClusterDownError``, ...), so those are matched by class, the others by their code.
* A connection lost after a batch script was sent is decided by the sink, not here: it is an
  :class:`~core.errors.AmbiguousCommit` (the script may have run).
* Authentication failures, missing ACL permissions, an untrusted TLS certificate and a key
  of the wrong type are
  :class:`~core.errors.ConfigurationError` (permanent: retrying cannot fix them).
"""

from __future__ import annotations

import logging
import ssl

from redis import exceptions as rx

from core.errors import ConfigurationError, ProjectionistError, StoreUnavailable
from core.redact import redact_text

__all__ = ("DRIVER_ERRORS", "is_out_of_memory", "translate")

log = logging.getLogger("projectionist.sinks.redis")

_TRANSIENT_REPLIES = (
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
    "READONLY",
    "MISCONF",
    "NOREPLICAS",
    "ERR max number of clients",
)
_TRANSIENT_CLASSES = (rx.ReadOnlyError, rx.ClusterDownError, rx.TryAgainError, rx.AskError)
"""redis-py's classes for replies it strips the code from (``MasterDownError`` is a
``ClusterDownError``, ``MovedError`` an ``AskError``)."""
DRIVER_ERRORS = (rx.RedisError, OSError, TimeoutError)
"""What a call into redis-py may raise for a store reason (anything else is a bug)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """An ``OOM`` error reply (maxmemory reached with the ``noeviction`` policy)."""
    return isinstance(exc, rx.OutOfMemoryError) or (
        isinstance(exc, rx.ResponseError) and str(exc).startswith("OOM ")
    )


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def translate(
    exc: BaseException, what: str, address: str, secrets: tuple[str, ...] = ()
) -> ProjectionistError:
    """The core error for a redis-py exception raised while doing ``what`` at ``address``."""
    text = redact_text(f"{type(exc).__name__}: {exc}", secrets)
    where = f"{what} at {address}"
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
        return ConfigurationError(
            "redis.password",
            "***",
            f"Redis refused the credentials while {where} ({text}); check username/password",
        )
    if isinstance(exc, rx.NoPermissionError | rx.AuthorizationError):
        return ConfigurationError(
            "redis.username",
            "(ACL user)",
            f"{text} while {where}; grant the user the commands and keys of this sink "
            "(see docs/sinks/redis.md, ACL)",
        )
    if _untrusted_certificate(exc):
        return ConfigurationError(
            "redis.tls_ca_file",
            "(certificate)",
            f"the server's TLS certificate is not trusted while {where} ({text}); set "
            "tls_ca_file to the CA that signed it",
        )
    if is_out_of_memory(exc):
        log.warning(
            "Redis at %s is out of memory (used_memory > maxmemory, policy noeviction) while "
            "%s: nothing was written; the lane retries. Raise maxmemory or free memory.",
            address,
            what,
        )
        return StoreUnavailable(
            f"Redis is out of memory while {where}: nothing was applied; raise maxmemory or "
            "free memory (the lane retries)"
        )
    if isinstance(exc, rx.BusyLoadingError):
        return StoreUnavailable(f"Redis is loading its dataset while {where}: {text}")
    if isinstance(exc, _TRANSIENT_CLASSES):
        return StoreUnavailable(f"Redis answered {text} while {where}")
    if isinstance(exc, rx.ResponseError):
        reply = str(exc)
        if reply.startswith(_TRANSIENT_REPLIES):
            return StoreUnavailable(f"Redis answered {text} while {where}")
        if reply.startswith("WRONGTYPE"):
            return ConfigurationError(
                "key_prefix",
                what,
                f"a key of this prefix holds another data type ({text}); another application "
                "uses the prefix: choose another key_prefix",
            )
        return ConfigurationError(
            "redis server",
            address,
            f"it refused a command while {what} ({text}); Projectionist needs Redis 7.0 or "
            "later with scripting enabled",
        )
    return StoreUnavailable(f"Redis unavailable while {where}: {text}")
