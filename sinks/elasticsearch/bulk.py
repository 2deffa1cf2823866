"""The ``_bulk`` path: whole-document ``index`` actions guarded by external versions, split into
requests bounded by documents and bytes, every item resolved before the write returns.

Item answers: 2xx applied; 409 already applied (the index holds this version or a newer one:
a replay or a redelivery); 429 and 5xx retried with capped exponential backoff and jitter up
to ``item_retries`` times, then the write fails with :class:`StoreUnavailable` (the lane
retries the whole batch, which is idempotent); 400 is one rejected document, reported after
every other item is resolved; anything else fails the write for good.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from core import jsontext
from core.errors import PermanentError, StoreUnavailable
from core.operations import DeleteDocument, Operation, PutDocument
from core.retry import Backoff
from core.schema import DocumentSchema
from sinks.elasticsearch.errors import ItemOutcome, classify_item, item_reason
from sinks.elasticsearch.mapping import indexed_body, tombstone_body

__all__ = ("BulkItem", "BulkReport", "collapse", "encode", "requests", "resolve")

Send = Callable[[list[bytes]], Awaitable[Mapping[str, Any]]]
"""Send one ``_bulk`` body (NDJSON lines) and return the answer's body."""

MAX_ID_BYTES = 512
"""Elasticsearch refuses a longer ``_id``, and with it the whole ``_bulk`` request."""


def _dumps(value: Any) -> bytes:
    return jsontext.dumps(value)


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One ``index`` action and its source, encoded once."""

    key: str
    version: int
    lines: bytes
    """The action line and the source line, each ending in a newline."""


@dataclass
class BulkReport:
    """How the items of one write were resolved."""

    applied: int = 0
    already_applied: int = 0
    retried: int = 0
    requests: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    """Key -> reason, for the documents the index refused (mapping, parse, argument)."""


def collapse(operations: Sequence[Operation]) -> dict[str, PutDocument | DeleteDocument]:
    """The final operation per document key (the highest version; the last one on a tie)."""
    final: dict[str, PutDocument | DeleteDocument] = {}
    for op in operations:
        if not isinstance(op, PutDocument | DeleteDocument):
            raise PermanentError(
                f"the Elasticsearch sink stores documents, not rows ({type(op).__name__}); "
                "write row projections to Postgres or DuckDB"
            )
        held = final.get(op.key)
        if held is None or op.version >= held.version:
            final[op.key] = op
    return final


def encode(
    index: str, schema: DocumentSchema | None, op: PutDocument | DeleteDocument
) -> BulkItem | str:
    """The item for ``op``, or the reason it cannot be sent (an id over :data:`MAX_ID_BYTES`,
    a document that is not JSON or nests deeper than the encoder follows)."""
    size = len(op.key.encode())
    if size > MAX_ID_BYTES:
        return f"the key is {size} bytes; Elasticsearch ids are at most {MAX_ID_BYTES} bytes"
    action = {
        "index": {
            "_index": index,
            "_id": op.key,
            "version": op.version,
            "version_type": "external",
        }
    }
    if isinstance(op, PutDocument):
        body = indexed_body(schema, op.key, op.document)
    else:
        body = tombstone_body(schema, op.key)
    try:
        source = _dumps(body)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"not JSON-serialisable: {exc}"
    return BulkItem(op.key, op.version, _dumps(action) + b"\n" + source + b"\n")


def requests(items: Sequence[BulkItem], max_docs: int, max_bytes: int) -> Iterator[list[BulkItem]]:
    """Consecutive groups of at most ``max_docs`` items and ``max_bytes`` bytes (an item larger
    than ``max_bytes`` goes alone)."""
    group: list[BulkItem] = []
    size = 0
    for item in items:
        if group and (len(group) >= max_docs or size + len(item.lines) > max_bytes):
            yield group
            group, size = [], 0
        group.append(item)
        size += len(item.lines)
    if group:
        yield group


async def resolve(
    items: Sequence[BulkItem],
    send: Send,
    *,
    max_docs: int,
    max_bytes: int,
    retries: int,
    backoff: Backoff,
) -> BulkReport:
    """Send every item until each is applied, already applied or rejected.

    Raises :class:`StoreUnavailable` when items still answer 429/5xx after ``retries`` rounds,
    and :class:`PermanentError` for an item failure that is neither (missing index, privileges).
    A request-level failure propagates from ``send`` as it was raised.
    """
    report = BulkReport()
    pending = list(items)
    attempt = 0
    while pending:
        again: list[BulkItem] = []
        last_reason = ""
        for group in requests(pending, max_docs, max_bytes):
            answer = await send([item.lines for item in group])
            report.requests += 1
            answered = answer.get("items", [])
            if len(answered) != len(group):
                raise StoreUnavailable(
                    f"_bulk answered {len(answered)} items for {len(group)} actions"
                )
            for item, result in zip(group, answered, strict=True):
                detail = next(iter(result.values()))
                status = int(detail.get("status", 0))
                outcome = classify_item(status)
                if outcome is ItemOutcome.APPLIED:
                    report.applied += 1
                elif outcome is ItemOutcome.ALREADY_APPLIED:
                    report.already_applied += 1
                elif outcome is ItemOutcome.RETRY:
                    again.append(item)
                    last_reason = f"HTTP {status} {item_reason(detail.get('error'))}"
                elif outcome is ItemOutcome.REJECTED:
                    report.rejected[item.key] = item_reason(detail.get("error"))
                else:
                    raise PermanentError(
                        f"document {item.key!r}: HTTP {status} "
                        f"{item_reason(detail.get('error'))}; check the index and privileges"
                    )
        if not again:
            break
        attempt += 1
        if attempt > retries:
            raise StoreUnavailable(
                f"{len(again)} documents still refused after {retries} retries: {last_reason}"
            )
        report.retried += len(again)
        await anyio.sleep(backoff.delay(attempt))
        pending = again
    return report
