"""Sink factories named in the configuration (``sinks.factories:postgres`` ...).

Each has the signature ``factory(name, settings, options) -> Sink``: ``settings`` is the
runner's :class:`core.settings.Settings` (service addresses), ``options`` the sink's own
settings from the configuration file, validated by the sink's settings model (a bad option
names the field, the value and the fix).

A factory whose sink admits one writing process per configured sink carries
``one_process = True`` (DuckDB: one process holds the file's lock); ``projectionist run
--processes N`` keeps all the lanes of such a sink in one process (:mod:`core.supervisor`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import ConfigurationError
from core.settings import Settings
from core.sink import Sink

__all__ = ("duckdb", "elasticsearch", "postgres", "redis")


def _validated(model: Any, sink: str, values: dict[str, Any]) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        secret = any(s in field.lower() for s in ("url", "dsn", "pass", "pwd", "key", "secret"))
        secret = secret or first["type"] == "extra_forbidden"  # a mistyped name: maybe a secret
        shown = "***" if secret else first.get("input")
        raise ConfigurationError(f"sinks.{sink}.options.{field}", shown, first["msg"]) from None


def _need(value: Any, sink: str, variable: str) -> Any:
    if value is None:
        raise ConfigurationError(f"sinks.{sink}", None, f"set {variable} to the store's address")
    return value


def postgres(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    """Read models in the event store's database unless ``options.dsn`` names another."""
    from sinks.postgres import PostgresSink, PostgresSinkSettings

    values = {"dsn": settings.postgres_dsn, "schema": settings.read_model_schema, **options}
    return PostgresSink(_validated(PostgresSinkSettings, name, values), name=name)


def elasticsearch(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    from sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings

    url = _need(settings.elasticsearch_url, name, "PROJECTIONIST_ELASTICSEARCH_URL")
    values = {"url": url, **options}
    return ElasticsearchSink(_validated(ElasticsearchSinkSettings, name, values), name=name)


def redis(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    from sinks.redis import RedisSink, RedisSinkSettings

    url = _need(settings.redis_url, name, "PROJECTIONIST_REDIS_URL")
    values = {"url": url, **options}
    return RedisSink(_validated(RedisSinkSettings, name, values), name=name)


def duckdb(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    from sinks.duckdb import DuckDBSink, DuckDBSinkSettings

    path = _need(settings.duckdb_path, name, "PROJECTIONIST_DUCKDB_PATH")
    values = {"path": path, **options}
    return DuckDBSink(_validated(DuckDBSinkSettings, name, values), name=name)


duckdb.one_process = True  # type: ignore[attr-defined]
