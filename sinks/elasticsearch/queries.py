"""Query helpers the product's searches call: full text with filters, sorting and paging, a
count, and "top terms by a summed quantity" (top products). They are generic: they take the
read alias and field names, so they serve any document read model of this sink.

Field names are the mapped schema fields (``status``, ``created_at``) or, for child tables,
``<child>.<field>`` (``items.product_name``): a name under one of the ``nested`` paths is
queried inside a ``nested`` query automatically. Tombstones never match (the read alias
filters them out, and the helpers filter them again so they are safe on a physical index).
Results are the stored documents, exactly as the projection folded them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ConfigurationError
from sinks.elasticsearch.client import MISSING
from sinks.elasticsearch.mapping import DELETED_FIELD, DOCUMENT_FIELD

if TYPE_CHECKING:
    from sinks.elasticsearch.sink import ElasticsearchSink

__all__ = ("MAX_WINDOW", "SearchPage", "TermTotal", "count", "search", "top_terms")

MAX_WINDOW = 10_000
"""``from + size`` may not pass this (the index's ``max_result_window``): page deeper with
``after``."""

Range = tuple[Any, Any]
"""``(lowest, highest)`` inclusive; ``None`` leaves that side open."""


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of hits: the stored documents, the total of matches and how to go on."""

    total: int
    documents: list[dict[str, Any]]
    keys: list[str]
    after: list[Any] | None = None
    """Pass as ``after=`` for the next page (``search_after``); ``None`` on the last page."""


@dataclass(frozen=True, slots=True)
class TermTotal:
    """One bucket of :func:`top_terms`: the term, its summed metric, the child rows counted."""

    term: str
    total: float
    rows: int
    label: str | None = None


def _path_of(name: str, nested: Sequence[str]) -> str | None:
    for path in nested:
        if name.startswith(path + "."):
            return path
    return None


def _filter_clause(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, list | tuple | set | frozenset):
        return {"terms": {name: list(value)}}
    return {"term": {name: value}}


def _range_clause(name: str, bounds: Range) -> dict[str, Any]:
    low, high = bounds
    spec = {k: v for k, v in (("gte", low), ("lte", high)) if v is not None}
    return {"range": {name: spec}}


def _wrap(clauses: list[tuple[str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Group clauses per nested path: one ``nested`` query per path (all must hold in the same
    child row), plain clauses as they are."""
    plain = [c for p, c in clauses if p is None]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path, clause in clauses:
        if path is not None:
            grouped.setdefault(path, []).append(clause)
    for path, inner in grouped.items():
        plain.append({"nested": {"path": path, "query": {"bool": {"filter": inner}}}})
    return plain


def build_query(
    *,
    text: str | None = None,
    fields: Sequence[str] = (),
    nested: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Range] | None = None,
) -> dict[str, Any]:
    """The ``bool`` query of :func:`search`: text over ``fields`` (every word must appear in
    one field; top-level fields and each nested path are alternatives), filters and ranges."""
    must: list[dict[str, Any]] = []
    if text:
        by_path: dict[str | None, list[str]] = {}
        for name in fields:
            by_path.setdefault(_path_of(name, nested), []).append(name)
        should: list[dict[str, Any]] = []
        for path, names in by_path.items():
            match = {
                "multi_match": {
                    "query": text,
                    "fields": names,
                    "type": "best_fields",
                    "operator": "and",
                    "lenient": True,
                }
            }
            if path is None:
                should.append(match)
            else:
                should.append({"nested": {"path": path, "query": match, "score_mode": "max"}})
        if not should:
            raise ConfigurationError("fields", tuple(fields), "name the fields to search text in")
        must.append({"bool": {"should": should, "minimum_should_match": 1}})
    clauses = [
        (_path_of(name, nested), _filter_clause(name, value))
        for name, value in (filters or {}).items()
    ]
    clauses += [
        (_path_of(name, nested), _range_clause(name, bounds))
        for name, bounds in (ranges or {}).items()
    ]
    return {
        "bool": {
            "must": must,
            "filter": _wrap(clauses),
            "must_not": [{"term": {DELETED_FIELD: True}}],
        }
    }


async def _search(sink: ElasticsearchSink, alias: str, what: str, **request: Any) -> Any:
    answer = await sink.cluster.body(
        f"{what} in {alias}", lambda c: c.search(index=alias, **request), missing_ok=True
    )
    if answer is MISSING:
        raise ConfigurationError("alias", alias, "no such read alias: has its lane run?")
    return answer


async def search(
    sink: ElasticsearchSink,
    alias: str,
    *,
    text: str | None = None,
    fields: Sequence[str] = (),
    nested: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Range] | None = None,
    sort: Sequence[tuple[str, str]] = (),
    tiebreak: str = "id",
    page: int = 1,
    size: int = 20,
    after: Sequence[Any] | None = None,
) -> SearchPage:
    """Documents of ``alias`` matching ``text`` (if any), ``filters`` (term, or terms for a
    list) and ``ranges``, sorted by ``sort`` (``[("created_at", "desc")]``; by relevance when
    empty and ``text`` is given) with ``tiebreak`` last, ``size`` per page.

    Page with ``page`` (``from``/``size``, up to :data:`MAX_WINDOW` hits deep) or, for deep
    pages, with ``after`` = the previous page's ``after``.
    """
    if size < 1 or page < 1:
        raise ConfigurationError("page/size", (page, size), "both start at 1")
    start = 0 if after is not None else (page - 1) * size
    if start + size > MAX_WINDOW:
        raise ConfigurationError(
            "page", page, f"pages reach {MAX_WINDOW} hits at most; go deeper with after="
        )
    order: list[dict[str, Any]] = [{name: {"order": way}} for name, way in sort]
    if not order and text:
        order.append({"_score": {"order": "desc"}})
    order.append({tiebreak: {"order": "asc"}})
    query = build_query(text=text, fields=fields, nested=nested, filters=filters, ranges=ranges)
    request: dict[str, Any] = {
        "query": query,
        "sort": order,
        "size": size,
        "track_total_hits": True,
        "source_includes": [DOCUMENT_FIELD],
    }
    if after is not None:
        request["search_after"] = list(after)
    else:
        request["from_"] = start
    answer = await _search(sink, alias, "searching", **request)
    hits = answer["hits"]["hits"]
    return SearchPage(
        total=int(answer["hits"]["total"]["value"]),
        documents=[h["_source"][DOCUMENT_FIELD] for h in hits],
        keys=[h["_id"] for h in hits],
        after=list(hits[-1]["sort"]) if len(hits) == size else None,
    )


async def count(
    sink: ElasticsearchSink,
    alias: str,
    *,
    nested: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Range] | None = None,
) -> int:
    """How many live documents match the filters and ranges."""
    query = build_query(nested=nested, filters=filters, ranges=ranges)
    answer = await sink.cluster.body(
        f"counting in {alias}", lambda c: c.count(index=alias, query=query), missing_ok=True
    )
    if answer is MISSING:
        raise ConfigurationError("alias", alias, "no such read alias: has its lane run?")
    return int(answer["count"])


async def top_terms(
    sink: ElasticsearchSink,
    alias: str,
    *,
    path: str,
    term: str,
    metric: str,
    label: str | None = None,
    size: int = 10,
    filters: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Range] | None = None,
) -> list[TermTotal]:
    """The ``size`` values of ``term`` (a keyword under the nested ``path``) with the largest
    sum of ``metric`` over the matching documents' child rows, ties by term; with ``label``,
    a keyword shown beside each term (the product name beside its id).

    Top products by quantity: ``path="items", term="items.product_id",
    metric="items.quantity", label="items.product_name.keyword"``.
    """
    inner: dict[str, Any] = {"total": {"sum": {"field": metric}}}
    if label is not None:
        inner["label"] = {"terms": {"field": label, "size": 1}}
    aggs = {
        "rows": {
            "nested": {"path": path},
            "aggs": {
                "top": {
                    "terms": {
                        "field": term,
                        "size": size,
                        "order": [{"total": "desc"}, {"_key": "asc"}],
                        "shard_size": max(size * 10, 100),
                    },
                    "aggs": inner,
                }
            },
        }
    }
    query = build_query(nested=(path,), filters=filters, ranges=ranges)
    answer = await _search(sink, alias, "aggregating", query=query, aggs=aggs, size=0)
    out: list[TermTotal] = []
    for bucket in answer["aggregations"]["rows"]["top"]["buckets"]:
        labels = bucket.get("label", {}).get("buckets", [])
        out.append(
            TermTotal(
                term=str(bucket["key"]),
                total=float(bucket["total"]["value"]),
                rows=int(bucket["doc_count"]),
                label=str(labels[0]["key"]) if labels else None,
            )
        )
    return out
