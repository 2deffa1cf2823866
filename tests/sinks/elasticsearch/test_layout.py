"""The pure parts of the Elasticsearch sink: mappings from schemas, indexed bodies, request
bounds, collapsing, and the public API. No service needed."""

from __future__ import annotations

import pytest

import sinks.elasticsearch
from core.errors import ConfigurationError, PermanentError
from core.operations import DeleteDocument, PutDocument, UpsertRow
from projections.orders import OrderSearch
from sinks.elasticsearch.bulk import BulkItem, collapse, encode, requests
from sinks.elasticsearch.mapping import (
    DELETED_FIELD,
    DOCUMENT_FIELD,
    FOLDING_ANALYZER,
    IndexLayout,
    indexed_body,
)


def test_public_api() -> None:
    assert sinks.elasticsearch.__all__ == (
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


def test_order_search_mapping() -> None:
    layout = IndexLayout.of(OrderSearch.schema, {"text_subfields": ["items.category"]})
    mapping = layout.mapping()
    props = mapping["properties"]
    assert mapping["dynamic"] == "strict"
    assert props[DOCUMENT_FIELD] == {"type": "object", "enabled": False}
    assert props[DELETED_FIELD] == {"type": "boolean"}
    assert props["customer_name"]["type"] == "text"
    assert props["customer_name"]["analyzer"] == "standard"
    assert props["customer_name"]["fields"]["keyword"]["type"] == "keyword"
    assert props["status"]["type"] == "keyword"
    assert props["total_amount"] == {"type": "scaled_float", "scaling_factor": 100}
    assert props["item_count"] == {"type": "long"}
    assert props["created_at"]["type"] == "date_nanos"
    items = props["items"]
    assert items["type"] == "nested"
    assert items["properties"]["category"]["fields"]["text"]["type"] == "text"
    assert "fields" not in items["properties"]["product_id"]
    assert layout.settings()["refresh_interval"] == "1s"
    assert "analysis" not in layout.settings()


def test_layout_options() -> None:
    double = IndexLayout.of(OrderSearch.schema, {"decimal_type": "double"})
    assert double.mapping()["properties"]["total_amount"] == {"type": "double"}
    folding = IndexLayout.of(OrderSearch.schema, {"analyzer": FOLDING_ANALYZER})
    assert FOLDING_ANALYZER in folding.settings()["analysis"]["analyzer"]
    for bad in ({"nope": 1}, {"decimal_type": "float"}, {"dynamic": "maybe"}):
        with pytest.raises(ConfigurationError):
            IndexLayout.of(OrderSearch.schema, bad)


def test_indexed_body_keeps_the_whole_document_beside_the_mapped_fields() -> None:
    doc = {
        "id": "order-1",
        "status": "pending",
        "total_amount": "12.50",
        "shipping_address": {"city": "Oslo"},
        "items": [{"product_id": "p1", "quantity": 2, "colour": "red"}],
    }
    body = indexed_body(OrderSearch.schema, "order-1", doc)
    assert body[DOCUMENT_FIELD] is doc
    assert body[DELETED_FIELD] is False
    assert "shipping_address" not in body  # not a schema field: only in the stored document
    assert body["items"] == [{"product_id": "p1", "quantity": 2}]
    assert body["total_amount"] == "12.50"


def test_requests_are_bounded_by_documents_and_bytes() -> None:
    items = [BulkItem(str(i), 1, b"x" * 100) for i in range(25)]
    by_docs = list(requests(items, max_docs=10, max_bytes=1_000_000))
    assert [len(g) for g in by_docs] == [10, 10, 5]
    by_bytes = list(requests(items, max_docs=1_000, max_bytes=350))
    assert all(sum(len(i.lines) for i in g) <= 350 for g in by_bytes)
    assert sum(len(g) for g in by_bytes) == 25
    huge = [BulkItem("big", 1, b"x" * 5_000), *items[:2]]
    assert [len(g) for g in requests(huge, max_docs=10, max_bytes=1_000)] == [1, 2]


def test_collapse_keeps_the_highest_version_and_refuses_rows() -> None:
    ops: list[PutDocument | DeleteDocument] = [
        PutDocument("a", 2, {"id": "a"}),
        PutDocument("a", 1, {"id": "old"}),
        DeleteDocument("b", 3),
        PutDocument("b", 2, {"id": "b"}),
    ]
    final = collapse(ops)
    assert final == {"a": ops[0], "b": ops[2]}
    with pytest.raises(PermanentError):
        collapse([UpsertRow("t", ("k",), 1, {})])
    item = encode("i-g1", OrderSearch.schema, PutDocument("a", 7, {"id": "a"}))
    assert isinstance(item, BulkItem)
    assert b'"version":7' in item.lines and b'"version_type":"external"' in item.lines
    bad = encode("i-g1", None, PutDocument("a", 1, {"x": object()}))
    assert isinstance(bad, str) and "JSON" in bad
