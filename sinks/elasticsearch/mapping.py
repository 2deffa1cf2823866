"""From a projection's :class:`~core.schema.DocumentSchema` to an index: settings, mapping and
the body of each indexed document.

Every indexed document has three parts:

* the schema's fields, copied from the document and mapped for querying (``dynamic: strict``
  by default, so a field the mapping does not know is refused instead of guessed);
* ``_doc``: the whole document exactly as the fold produced it, in an object that is stored
  but not indexed (``enabled: false``), so ``load`` returns what was written (decimal strings
  stay strings);
* ``_deleted``: ``true`` for a tombstone, which keeps the key's version so a late replay
  cannot resurrect it; the read alias filters tombstones out.

Schema field names start with a letter (:func:`core.naming.validate_name`), so they never
collide with ``_doc`` and ``_deleted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.errors import ConfigurationError
from core.schema import DocumentSchema, Field, FieldType

__all__ = (
    "DECIMAL_TYPES",
    "DELETED_FIELD",
    "DOCUMENT_FIELD",
    "FOLDING_ANALYZER",
    "LIVE_FILTER",
    "IndexLayout",
    "indexed_body",
    "tombstone_body",
)

DOCUMENT_FIELD = "_doc"
DELETED_FIELD = "_deleted"
LIVE_FILTER: dict[str, Any] = {"bool": {"must_not": [{"term": {DELETED_FIELD: True}}]}}
"""The read alias's filter: tombstones are never visible through it."""

FOLDING_ANALYZER = "projectionist_folding"
"""Standard tokenizer, lower case and ASCII folding (needs the analysis-common module)."""
DECIMAL_TYPES = ("scaled_float", "double")
_OPTIONS = frozenset(
    {
        "analyzer",
        "decimal_type",
        "dynamic",
        "refresh_interval",
        "replicas",
        "scaling_factor",
        "shards",
        "text_subfields",
    }
)


@dataclass(frozen=True, slots=True)
class IndexLayout:
    """The index settings and mapping for one target, from its schema and ``options``.

    Options (``Target.options``): ``analyzer`` for text fields (``standard``; any analyzer of
    the cluster, or ``projectionist_folding`` which this sink declares), ``dynamic``
    (``strict``), ``refresh_interval`` (``1s``), ``replicas`` (1), ``shards`` (1),
    ``decimal_type`` (``scaled_float`` or ``double``; the sink picks ``scaled_float`` when the
    cluster has it), ``scaling_factor`` of scaled floats (100: cents), and ``text_subfields``:
    keyword fields (dotted paths such as ``items.category``) that also get an analysed
    ``.text`` subfield for full-text search.
    """

    schema: DocumentSchema | None
    analyzer: str = "standard"
    decimal_type: str = "scaled_float"
    dynamic: str = "strict"
    refresh_interval: str = "1s"
    replicas: int = 1
    shards: int = 1
    scaling_factor: int = 100
    text_subfields: frozenset[str] = frozenset()

    @classmethod
    def of(cls, schema: DocumentSchema | None, options: Mapping[str, Any]) -> IndexLayout:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                "options", unknown[0], f"Elasticsearch lane options are {sorted(_OPTIONS)}"
            )
        dynamic = str(options.get("dynamic", "strict"))
        if dynamic not in ("strict", "false", "true"):
            raise ConfigurationError("options.dynamic", dynamic, "use strict, false or true")
        decimal_type = str(options.get("decimal_type", "scaled_float"))
        if decimal_type not in DECIMAL_TYPES:
            raise ConfigurationError("options.decimal_type", decimal_type, f"use {DECIMAL_TYPES}")
        layout = cls(
            schema=schema,
            analyzer=str(options.get("analyzer", "standard")),
            decimal_type=decimal_type,
            dynamic=dynamic,
            refresh_interval=str(options.get("refresh_interval", "1s")),
            replicas=int(options.get("replicas", 1)),
            shards=int(options.get("shards", 1)),
            scaling_factor=int(options.get("scaling_factor", 100)),
            text_subfields=frozenset(options.get("text_subfields", ())),
        )
        layout._check_subfields()
        return layout

    def _check_subfields(self) -> None:
        known: set[str] = set()
        if self.schema is not None:
            known.update(f.name for f in self.schema.fields if f.type is FieldType.KEYWORD)
            for child in self.schema.children:
                known.update(
                    f"{child.name}.{f.name}" for f in child.fields if f.type is FieldType.KEYWORD
                )
        for path in sorted(self.text_subfields - known):
            raise ConfigurationError(
                "options.text_subfields", path, f"name keyword fields: {sorted(known)}"
            )

    # -- index definition ------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number_of_shards": self.shards,
            "number_of_replicas": self.replicas,
            "refresh_interval": self.refresh_interval,
        }
        if self.analyzer == FOLDING_ANALYZER:
            out["analysis"] = {
                "analyzer": {
                    FOLDING_ANALYZER: {
                        "type": "custom",
                        "tokenizer": "standard",
                        "filter": ["lowercase", "asciifolding"],
                    }
                }
            }
        return out

    def mapping(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            DOCUMENT_FIELD: {"type": "object", "enabled": False},
            DELETED_FIELD: {"type": "boolean"},
        }
        if self.schema is not None:
            for f in self.schema.fields:
                properties[f.name] = self._field(f, f.name)
            for child in self.schema.children:
                properties[child.name] = {
                    "type": "nested",
                    "properties": {
                        c.name: self._field(c, f"{child.name}.{c.name}") for c in child.fields
                    },
                }
        return {"dynamic": self.dynamic, "properties": properties}

    def _field(self, field: Field, path: str) -> dict[str, Any]:
        kind = field.type
        if kind is FieldType.TEXT:
            return {
                "type": "text",
                "analyzer": self.analyzer,
                "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
            }
        if kind is FieldType.KEYWORD:
            out: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
            if path in self.text_subfields:
                out["fields"] = {"text": {"type": "text", "analyzer": self.analyzer}}
            return out
        if kind is FieldType.INTEGER:
            return {"type": "long"}
        if kind is FieldType.DECIMAL:
            if self.decimal_type == "double":
                return {"type": "double"}
            return {"type": "scaled_float", "scaling_factor": self.scaling_factor}
        if kind is FieldType.TIMESTAMP:
            # nanosecond resolution: sorts exactly as the ISO strings do (1970 to 2262)
            return {"type": "date_nanos", "format": "strict_date_optional_time_nanos"}
        if kind is FieldType.DATE:
            return {"type": "date", "format": "strict_date||strict_date_optional_time"}
        if kind is FieldType.BOOLEAN:
            return {"type": "boolean"}
        return {"type": "object", "enabled": False}


@dataclass(frozen=True, slots=True)
class _Plan:
    """The field names to copy, computed once per schema (encoding is on the hot path)."""

    fields: tuple[str, ...]
    key_field: str | None
    children: tuple[tuple[str, str, tuple[str, ...]], ...]
    """``(child name, source field, child field names)``."""


@lru_cache(maxsize=64)
def _plan(schema: DocumentSchema) -> _Plan:
    names = schema.field_names()
    return _Plan(
        fields=names,
        key_field=schema.key_field if schema.key_field in names else None,
        children=tuple(
            (c.name, c.source, tuple(f.name for f in c.fields)) for c in schema.children
        ),
    )


def _pick(source: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: source[n] for n in names if n in source}


def indexed_body(
    schema: DocumentSchema | None, key: str, document: Mapping[str, Any]
) -> dict[str, Any]:
    """What is sent for a live document: its schema fields, the whole document, not deleted."""
    body: dict[str, Any] = {}
    if schema is not None:
        plan = _plan(schema)
        body.update(_pick(document, plan.fields))
        if plan.key_field is not None:
            body.setdefault(plan.key_field, key)
        for name, source, child_fields in plan.children:
            rows = document.get(source)
            if isinstance(rows, list):
                body[name] = [
                    _pick(row, child_fields) if isinstance(row, Mapping) else row for row in rows
                ]
            elif rows is not None:
                body[name] = rows
    body[DOCUMENT_FIELD] = document
    body[DELETED_FIELD] = False
    return body


def tombstone_body(schema: DocumentSchema | None, key: str) -> dict[str, Any]:
    """What is sent for a deleted key: its key and the tombstone flag (the version is
    ``_version``)."""
    body: dict[str, Any] = {DELETED_FIELD: True}
    if schema is not None and _plan(schema).key_field is not None:
        body[schema.key_field] = key
    return body
