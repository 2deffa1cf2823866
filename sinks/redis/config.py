"""Connection settings of the Redis sink and its reader (frozen; URL and passwords are secrets)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.errors import ConfigurationError
from core.redact import redact_url

__all__ = ("RedisSinkSettings",)


class RedisSinkSettings(BaseModel):
    """Where and how to connect to Redis (7.0 or later, standalone or one cluster node).

    ``url`` is ``redis://host:port/db``, ``rediss://`` (TLS) or ``unix:///path.sock``. The
    ACL ``username`` and ``password`` fields win over credentials written in the URL. No
    password (from the URL, ``password`` or ``tls_key_password``) ever appears in a message, a
    log line, ``repr`` or ``describe()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    """Use TLS even with a ``redis://`` URL (``rediss://`` always does)."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    """Client certificate, for servers that require ``tls-auth-clients``."""
    tls_key_file: str | None = None
    tls_key_password: SecretStr | None = None
    tls_verify: Literal["required", "optional", "none"] = "required"
    tls_check_hostname: bool = True
    connect_timeout: float = Field(default=5.0, gt=0)
    socket_timeout: float = Field(default=30.0, gt=0)
    """Longest wait for one reply. A batch script that answers later is reported as an
    ambiguous commit (the lane re-reads the checkpoint), so keep it above the slowest batch."""
    max_connections: int = Field(default=16, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("redis", "rediss", "unix") and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise ConfigurationError(
                "redis.url",
                redact_url(text),
                "use redis://host:port/db, rediss://host:port/db (TLS) or unix:///path.sock",
            )
        return value

    @property
    def uses_tls(self) -> bool:
        return self.tls or urlsplit(self.url.get_secret_value()).scheme == "rediss"

    def address(self) -> str:
        """``redis://host:port/db`` (or the socket path): the URL without any credential."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
        scheme = "rediss" if self.uses_tls else "redis"
        return f"{scheme}://{host}:{port}{parts.path or '/0'}"

    def secrets(self) -> tuple[str, ...]:
        """Every secret string, to mask in any message built from a driver error."""
        found = [urlsplit(self.url.get_secret_value()).password]
        for secret in (self.password, self.tls_key_password):
            if secret is not None:
                found.append(secret.get_secret_value())
        return tuple(s for s in found if s)
