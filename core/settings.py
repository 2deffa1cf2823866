"""Configuration: environment variables (``PROJECTIONIST_*``) and an optional
``projectionist.toml``; lanes and sinks named by import path so a team's own projections and
sinks plug in like the reference ones. Secrets are ``SecretStr`` and never printed."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from core.errors import ConfigurationError
from core.naming import validate_name
from core.redact import redact_text
from core.strategy import ErrorPolicy, Strategy

log = logging.getLogger("projectionist.settings")

__all__ = (
    "DEFAULT_LANES",
    "DEFAULT_SINKS",
    "LaneSettings",
    "Settings",
    "SinkSettings",
    "import_object",
    "load_settings",
)


class SinkSettings(BaseModel):
    """One configured sink: a factory ``create_sink(name, settings, options)`` by import path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factory: str
    options: dict[str, Any] = Field(default_factory=dict)


class LaneSettings(BaseModel):
    """One lane: a projection class by import path, written to a named sink."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    projection: str
    sink: str
    strategy: Strategy = Field(default_factory=Strategy.immediate)
    policy: ErrorPolicy = ErrorPolicy.HALT
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    document_cache: int = Field(default=2_000, ge=0, le=1_000_000)
    """Documents a document lane keeps in memory between flushes (the ones it wrote last), so
    the next events of a stream being written need no load; memory grows with it."""


DEFAULT_SINKS: dict[str, SinkSettings] = {
    "postgres": SinkSettings(factory="sinks.factories:postgres"),
    "elasticsearch": SinkSettings(factory="sinks.factories:elasticsearch"),
    "redis": SinkSettings(factory="sinks.factories:redis"),
    "duckdb": SinkSettings(factory="sinks.factories:duckdb"),
}

DEFAULT_LANES: list[LaneSettings] = [
    LaneSettings(projection="projections.orders:OrderSummary", sink="postgres"),
    LaneSettings(projection="projections.orders:OrderDetail", sink="postgres"),
    LaneSettings(
        projection="projections.orders:OrderCache", sink="redis", options={"key_prefix": "order"}
    ),
    LaneSettings(
        projection="projections.orders:OrderSearch",
        sink="elasticsearch",
        strategy=Strategy.near_real_time(max_delay=0.2),
        options={
            "refresh_interval": "500ms",
            "text_subfields": ["customer_email", "items.category"],
        },
    ),
    LaneSettings(
        projection="projections.orders:OrderAnalytics",
        sink="duckdb",
        strategy=Strategy.batch(interval=3600),
    ),
]


class Settings(BaseSettings):
    """Everything the CLI needs. Environment first, then ``projectionist.toml``, then defaults."""

    model_config = SettingsConfigDict(
        env_prefix="PROJECTIONIST_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    postgres_dsn: SecretStr = Field(description="the event store's Postgres")
    elasticsearch_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    duckdb_path: Path | None = None
    event_store_schema: str = "projectionist"
    read_model_schema: str = "read_models"
    lookups: str | None = "projections.orders:catalog_lookups"
    lookup_cache_seconds: float = Field(default=1.0, ge=0, le=3600)
    """How long a looked-up entity is reused by every lane before it is fetched again
    (:class:`core.lookups.CachedLookups`); 0 fetches for every batch."""
    gc_young_threshold: int = Field(default=20_000, ge=0, le=10_000_000)
    """Allocations between two young-generation passes of Python's cyclic garbage collector
    in a process that runs lanes (:func:`core.app.tune_collector`); Python's own is 700.
    Lanes allocate and drop tens of thousands of objects per batch: at 700 the collector
    rescans and promotes them while they are still in use, and then runs full collections
    for them (a quarter of the runner's CPU in a rebuild, pauses of 0.2-0.7 s at the head).
    0 keeps Python's setting."""
    sinks: dict[str, SinkSettings] = Field(default_factory=lambda: dict(DEFAULT_SINKS))
    lanes: list[LaneSettings] = Field(default_factory=lambda: list(DEFAULT_LANES))
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    """Where the metrics endpoint listens; ``0.0.0.0`` only inside a container network."""
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    processes: int = Field(default=1, ge=1, le=64)
    """Runner processes ``projectionist run`` spreads the lanes over (:mod:`core.supervisor`);
    ``run --processes N`` overrides it. One process folds on one core."""

    @field_validator("sinks", mode="before")
    @classmethod
    def _beside_the_default_sinks(cls, value: Any) -> Any:
        """Configured sinks are added to the four default ones (a section for one sink, to set
        its options, replaced them all); a default sink's section may leave out ``factory``."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict(DEFAULT_SINKS)
        for name, given in value.items():
            if isinstance(given, dict) and "factory" not in given and name in DEFAULT_SINKS:
                given = {**given, "factory": DEFAULT_SINKS[name].factory}
            merged[name] = given
        return merged

    @field_validator("postgres_dsn")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        """A postgresql:// URL, its ports numbers (an empty value would connect to the
        driver's default address, and migrate whatever database answers there)."""
        try:
            parts = urlsplit(value.get_secret_value())
        except ValueError:
            valid = False
        else:
            # several hosts (h1:5432,h2:5433, a failover list) are valid; each port a number
            hosts = parts.netloc.rpartition("@")[2]
            ports = [h.rpartition("]")[2].partition(":")[2] for h in hosts.split(",")]
            valid = parts.scheme in ("postgres", "postgresql") and all(
                p == "" or p.isdigit() for p in ports
            )
        if not valid:
            raise ValueError("use a postgresql://user@host:port/database URL")
        return value

    @field_validator("event_store_schema", "read_model_schema")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        return validate_name(info.field_name or "schema", value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get("PROJECTIONIST_CONFIG")
        if named == os.devnull:  # no file at all, not even ./projectionist.toml
            return (init_settings, env_settings)
        toml = Path(named or "projectionist.toml")
        if named and not toml.is_file():
            # a typo here would run the built-in lanes against the configured stores
            raise ConfigurationError(
                "PROJECTIONIST_CONFIG",
                named,
                "no such file: point it at the configuration file, unset it to read "
                f"./projectionist.toml (when there is one), or set it to {os.devnull} to read "
                "the environment only",
            )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(
                    "PROJECTIONIST_CONFIG" if named else "projectionist.toml",
                    str(toml),
                    f"not valid TOML: {exc}; fix the file",
                ) from None
        return tuple(sources)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, so messages can be scrubbed of them."""
        out = [self.postgres_dsn.get_secret_value()]
        for value in (self.elasticsearch_url, self.redis_url):
            if value is not None:
                out.append(value.get_secret_value())
        return tuple(s for s in out if s)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and file, or a :class:`ConfigurationError` that names
    the field, the value and what is allowed (never a secret)."""
    try:
        settings = Settings(**overrides)
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        raise ConfigurationError(
            "environment", "PROJECTIONIST_*", redact_text(f"{exc}: set it to valid JSON")
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        value = first.get("input")
        shown = "***" if "dsn" in field or "url" in field or "password" in field else value
        env = "PROJECTIONIST_" + field.upper().replace(".", "__")
        if first["type"] == "missing":
            raise ConfigurationError(field, None, f"required: set {env}") from None
        raise ConfigurationError(
            field, shown, redact_text(f"{first['msg']} (set through {env})")
        ) from None
    warn_unknown_variables(os.environ)
    return settings


TOOL_VARIABLES = frozenset(
    {
        "PROJECTIONIST_CONFIG",
        "PROJECTIONIST_ES_JAVA_HOME",
        "PROJECTIONIST_ES_VERSION",
        "PROJECTIONIST_ES_HEAP",
        "PROJECTIONIST_REDIS_SERVER",
    }
)
"""``PROJECTIONIST_*`` variables that are not settings: the configuration file's path and
what scripts/services and the tests read."""


def warn_unknown_variables(environ: Any) -> list[str]:
    """Log a warning for each ``PROJECTIONIST_*`` variable that is neither a setting nor one
    of :data:`TOOL_VARIABLES` (a misspelled ``PROJECTIONIST_METRIC_PORT`` is otherwise ignored
    without a word); returns their names. A warning, not a refusal: other tools may share the
    prefix."""
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for name in sorted(environ):
        if not name.startswith("PROJECTIONIST_") or name in TOOL_VARIABLES:
            continue
        head = name.removeprefix("PROJECTIONIST_").split("__", 1)[0]
        if head in known:
            continue
        unknown.append(name)
        close = difflib.get_close_matches(head, known, n=1)
        hint = f" (did you mean PROJECTIONIST_{close[0]}?)" if close else ""
        log.warning("%s is not a setting and is ignored%s", name, hint)
    return unknown


def import_object(path: str, field: str) -> Any:
    """``"package.module:attribute"`` imported, or a :class:`ConfigurationError`."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(field, path, "use the form 'package.module:Attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(field, path, f"cannot import {module_name}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(field, path, f"{module_name} has no {attribute!r}") from None
