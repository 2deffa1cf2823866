"""Connection settings of the Elasticsearch sink (frozen; the API key and password are secrets)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from core.errors import ConfigurationError
from core.redact import redact_url

__all__ = ("ElasticsearchSinkSettings",)

_PREFIX = re.compile(r"^([a-z][a-z0-9_]{0,31})?$")


class ElasticsearchSinkSettings(BaseModel):
    """Where and how to reach the cluster, and how large one ``_bulk`` request may be.

    ``url`` is ``http(s)://host:port``. Authenticate with ``api_key`` (the encoded form that
    Kibana shows) or ``username`` and ``password`` (basic auth; credentials written in the URL
    are taken as basic auth too, the fields win). TLS: ``https://`` with ``ca_certs`` (a PEM
    file) and ``verify_certs`` (on by default). No API key or password ever appears in a
    message, a log line, ``repr`` or ``describe()``.

    ``index_prefix`` is prepended to every index and alias name the sink manages (the read
    aliases, their generations and the checkpoint index), so several deployments or test runs
    can share one cluster.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr = SecretStr("http://127.0.0.1:9200")
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout: float = Field(default=30.0, gt=0, le=600)
    """Longest wait for one request. A checkpoint write that times out is reported as an
    ambiguous commit (the lane re-reads the checkpoint)."""
    bulk_max_docs: int = Field(default=1_000, ge=1, le=100_000)
    """Documents per ``_bulk`` request; larger batches are split into several requests."""
    bulk_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    """Body bytes per ``_bulk`` request (a single larger document still goes alone)."""
    max_document_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest document the sink sends (its encoded action and source). A larger one is
    rejected (:class:`~core.errors.DocumentRejected`: parked or halting its lane, its
    neighbours indexed) instead of failing its request with HTTP 413. Keep it at or below the
    cluster's ``http.max_content_length`` (100mb by default)."""
    item_retries: int = Field(default=5, ge=0, le=100)
    """Retries of the items answered 429 or 5xx, inside one write, before it fails transiently."""
    item_backoff: float = Field(default=0.2, gt=0, le=60)
    """First delay between item retries; doubles each time, with jitter, up to 10 s."""
    index_prefix: str = ""
    checkpoint_index: str = "projectionist-checkpoints"

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise ConfigurationError(
                "elasticsearch.url", redact_url(text), "use http://host:9200 or https://host:9200"
            )
        return value

    @field_validator("index_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ConfigurationError(
                "elasticsearch.index_prefix",
                value,
                "use up to 32 lower-case letters, digits or '_', starting with a letter",
            )
        return value

    @field_validator("checkpoint_index")
    @classmethod
    def _checkpoints(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,99}", value):
            raise ConfigurationError(
                "elasticsearch.checkpoint_index",
                value,
                "use lower-case letters, digits, '-' or '_', starting with a letter",
            )
        return value

    @model_validator(mode="after")
    def _auth(self) -> ElasticsearchSinkSettings:
        if self.api_key is not None and (self.password is not None or self.username):
            raise ConfigurationError(
                "elasticsearch.api_key", "***", "use either an API key or username/password"
            )
        if (self.password is None) != (self.username is None) and self.api_key is None:
            raise ConfigurationError(
                "elasticsearch.username",
                self.username,
                "basic auth needs both username and password",
            )
        return self

    # -- derived ---------------------------------------------------------------------------

    def endpoint(self) -> str:
        """The URL without credentials, as the client is given it."""
        parts = urlsplit(self.url.get_secret_value())
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or (443 if parts.scheme == "https" else 9200)
        return urlunsplit((parts.scheme, f"{host}:{port}", parts.path.rstrip("/"), "", ""))

    def address(self) -> str:
        """What ``describe()`` and messages show: the endpoint, never a credential."""
        return self.endpoint()

    def basic_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` from the fields, else from the URL, else ``None``."""
        if self.username is not None and self.password is not None:
            return self.username, self.password.get_secret_value()
        parts = urlsplit(self.url.get_secret_value())
        if parts.username is not None and parts.password is not None:
            return unquote(parts.username), unquote(parts.password)
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every secret string, to mask in any message built from a driver error."""
        found: list[str | None] = [urlsplit(self.url.get_secret_value()).password]
        for secret in (self.api_key, self.password):
            if secret is not None:
                found.append(secret.get_secret_value())
        return tuple(s for s in found if s)

    def index_name(self, name: str) -> str:
        """``name`` with the deployment's prefix."""
        return f"{self.index_prefix}{name}"
