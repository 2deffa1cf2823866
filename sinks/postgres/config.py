"""Connection settings of the Postgres sink (frozen; the DSN is a secret)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.errors import ConfigurationError
from core.naming import validate_name
from core.redact import redact_url

__all__ = ("PostgresSinkSettings",)


class PostgresSinkSettings(BaseModel):
    """Where and how the sink connects.

    ``schema`` (attribute ``schema_name``) is the Postgres schema that holds the read-model
    tables, their views and the ``projectionist_checkpoints`` table. The DSN is a
    ``postgresql://`` URL; its password never appears in a message, log or ``describe()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: SecretStr
    schema_name: str = Field(default="read_models", alias="schema")
    pool_size: int = Field(default=5, ge=1, le=100)
    """Connections at most. A lane uses one at a time; size it to the lanes on this sink."""
    connect_timeout: float = Field(default=10.0, gt=0)
    command_timeout: float | None = Field(default=300.0, gt=0)
    """Client-side limit for one statement (``None``: none); a timeout is transient."""
    chunk_rows: int = Field(default=2_000, ge=1, le=100_000)
    """Rows per ``INSERT ... SELECT FROM unnest(...)`` statement; larger batches are split
    into several statements of the same transaction."""
    application_name: str = "projectionist-sink"

    @field_validator("dsn")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("postgres", "postgresql") and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise ConfigurationError(
                "postgres.dsn", redact_url(text), "use a postgresql://user@host:port/db URL"
            )
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        return validate_name("postgres.schema", value)

    def address(self) -> str:
        """``postgresql://host:port/database``: the DSN without user, password or options."""
        parts = urlsplit(self.dsn.get_secret_value())
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        return f"{parts.scheme}://{host}:{port}{parts.path}"

    def secrets(self) -> tuple[str, ...]:
        """Strings to mask in any message (the DSN's password)."""
        password = urlsplit(self.dsn.get_secret_value()).password
        return (password,) if password else ()
