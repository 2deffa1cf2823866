"""The Elasticsearch sink: document read models in a managed index per generation behind a
read alias, written with ``_bulk`` under external versions, and the query helpers searchers
use. See docs/sinks/elasticsearch.md."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import ConfigurationError
from core.settings import Settings
from sinks.elasticsearch.config import ElasticsearchSinkSettings
from sinks.elasticsearch.generations import rebuild
from sinks.elasticsearch.mapping import DELETED_FIELD, DOCUMENT_FIELD, IndexLayout
from sinks.elasticsearch.queries import SearchPage, TermTotal, count, search, top_terms
from sinks.elasticsearch.sink import ElasticsearchSink

__all__ = (
    "DELETED_FIELD",
    "DOCUMENT_FIELD",
    "ElasticsearchSink",
    "ElasticsearchSinkSettings",
    "IndexLayout",
    "SearchPage",
    "TermTotal",
    "count",
    "create_sink",
    "rebuild",
    "search",
    "top_terms",
)


def create_sink(name: str, settings: Settings, options: dict[str, Any]) -> ElasticsearchSink:
    """The factory named in ``sinks.<name>.factory``: the URL comes from ``options["url"]``
    or ``PROJECTIONIST_ELASTICSEARCH_URL``; other options are
    :class:`ElasticsearchSinkSettings` fields."""
    values = dict(options)
    if "url" not in values:
        if settings.elasticsearch_url is None:
            raise ConfigurationError(
                "elasticsearch_url",
                None,
                "set PROJECTIONIST_ELASTICSEARCH_URL (or the sink's url option)",
            )
        values["url"] = settings.elasticsearch_url
    try:
        config = ElasticsearchSinkSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "options"
        secret = any(word in field for word in ("url", "password", "api_key"))
        shown = "***" if secret else first.get("input")
        raise ConfigurationError(f"sinks.{name}.{field}", shown, first["msg"]) from None
    return ElasticsearchSink(config, name=name)
