"""The Elasticsearch sink: whole documents in a managed index per generation behind a read
alias, written with ``_bulk`` under external versions; the lane's checkpoint is a document of
the checkpoint index, moved after every item of the batch is resolved.

Guarantees (see docs/sinks/elasticsearch.md):

* **Idempotent writes.** Each document is indexed with ``version_type=external`` and
  ``version`` = its stream version, so the index never replaces a version with an equal or
  older one: replays, redeliveries and batches retried after a crash change nothing.
* **Checkpoint after data.** Not atomic with the data (Elasticsearch has no such transaction):
  a crash between the bulk and the checkpoint replays the batch, which the versions make
  harmless. The checkpoint moves by compare-and-set; another writer gives
  :class:`~core.errors.CheckpointConflict`.
* **Tombstones.** A delete indexes ``{"_deleted": true}`` at the delete's version, so the version
  survives and a late replay cannot resurrect the document; the read alias filters them out.
* **One rejected document** (mapping or parse error, or larger than ``max_document_bytes``)
  does not fail its neighbours: every other item is resolved first, then
  :class:`~core.errors.DocumentRejected` names the key and the reason, and the checkpoint is
  not moved (the lane parks the key's events, or halts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from core.errors import ConfigurationError, DocumentRejected, PermanentError
from core.operations import Batch
from core.position import Position
from core.retry import Backoff
from core.sink import Sink, SinkCapabilities, StoredDocument, Target, check_promotable
from sinks.elasticsearch import indices
from sinks.elasticsearch.bulk import BulkItem, BulkReport, collapse, encode, resolve
from sinks.elasticsearch.checkpoints import CheckpointStore
from sinks.elasticsearch.client import Cluster
from sinks.elasticsearch.config import ElasticsearchSinkSettings
from sinks.elasticsearch.mapping import DELETED_FIELD, DOCUMENT_FIELD, IndexLayout

__all__ = ("ElasticsearchSink",)

log = logging.getLogger("projectionist.sinks.elasticsearch")

_MGET_CHUNK = 1_000


class ElasticsearchSink(Sink):
    """Document read models in Elasticsearch 9 (see the module docstring for the contract)."""

    kind = "elasticsearch"

    def __init__(self, settings: ElasticsearchSinkSettings, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self.capabilities = SinkCapabilities(
            transactional_checkpoint=False,
            max_batch_operations=100_000,
            max_batch_bytes=None,
        )
        self._cluster: Cluster | None = None
        self._checkpoints: CheckpointStore | None = None
        self._layouts: dict[tuple[str, int], IndexLayout] = {}
        self._decimal_type: str | None = None
        self.last_report = BulkReport()

    # -- resource --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._cluster is None:
            self._cluster = Cluster.connect(self.settings)
            self._checkpoints = CheckpointStore(
                self._cluster, self.settings.index_name(self.settings.checkpoint_index)
            )

    async def close(self) -> None:
        cluster, self._cluster, self._checkpoints = self._cluster, None, None
        if cluster is not None:
            await cluster.close()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("open the sink first (async with sink: ...)")
        return self._cluster

    @property
    def checkpoints(self) -> CheckpointStore:
        if self._checkpoints is None:
            raise RuntimeError("open the sink first (async with sink: ...)")
        return self._checkpoints

    # -- names -----------------------------------------------------------------------------

    def alias(self, projection: str) -> str:
        """The read alias searchers use for a projection (with the deployment's prefix)."""
        return self.settings.index_name(projection)

    def index(self, target: Target) -> str:
        """The target generation's physical index: ``<alias>-g<generation>``."""
        return f"{self.alias(target.projection)}-g{target.generation}"

    async def layout(self, target: Target) -> IndexLayout:
        """The target's settings and mapping; ``decimal_type`` defaults to ``scaled_float``
        where the cluster has it (the mapper-extras module), else ``double``."""
        key = (target.lane, target.generation)
        found = self._layouts.get(key)
        if found is None:
            options = dict(target.options)
            if "decimal_type" not in options:
                options["decimal_type"] = await self._default_decimal_type()
            found = self._layouts[key] = IndexLayout.of(target.schema, options)
        return found

    async def _default_decimal_type(self) -> str:
        if self._decimal_type is None:
            answer = await self.cluster.body(
                "listing the cluster's modules",
                lambda c: c.nodes.info(metric="plugins", filter_path="nodes.*.modules.name"),
            )
            modules = {
                m.get("name") for n in answer.get("nodes", {}).values() for m in n["modules"]
            }
            self._decimal_type = "scaled_float" if "mapper-extras" in modules else "double"
        return self._decimal_type

    # -- the contract ----------------------------------------------------------------------

    def check_target(self, target: Target) -> None:
        """The index options are valid (the decimal type the cluster has is settled later)."""
        options = dict(target.options)
        options.setdefault("decimal_type", "double")
        try:
            IndexLayout.of(target.schema, options)
        except (TypeError, ValueError) as exc:  # a number given as text, say
            raise ConfigurationError(f"{target.lane}.options", target.options, str(exc)) from None

    async def prepare(self, target: Target) -> None:
        """Create the checkpoint index and the generation's index (with the alias for
        generation 1); an existing index takes added fields and refuses changed ones."""
        layout = await self.layout(target)
        await indices.ensure_checkpoint_index(self.cluster, self.checkpoints.index)
        index = self.index(target)
        if not await self._exists(index) and (await self.checkpoints.read(target)).position:
            # Deleted outside the sink (a reset deletes the checkpoint first): its documents
            # are gone, so the checkpoint is a lie. The lane replays from the start.
            log.warning(
                "index %s of lane %s was deleted while its checkpoint remained: the "
                "checkpoint is deleted too, and the lane rebuilds the index from the start",
                index,
                target.lane,
            )
            await self.checkpoints.delete(target)
        await indices.ensure_index(
            self.cluster,
            self.index(target),
            self.alias(target.projection),
            target.generation,
            layout,
        )

    async def read_checkpoint(self, target: Target) -> Position | None:
        return (await self.checkpoints.read(target)).position

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        """One realtime ``_mget`` per 1000 keys on the generation's index (tombstones too)."""
        index = self.index(target)
        out: dict[str, StoredDocument] = {}
        for start in range(0, len(keys), _MGET_CHUNK):
            answer = await self._mget(index, list(keys[start : start + _MGET_CHUNK]))
            for doc in answer["docs"]:
                if not doc.get("found"):
                    continue
                source = doc.get("_source", {})
                document = None if source.get(DELETED_FIELD) else source.get(DOCUMENT_FIELD)
                out[doc["_id"]] = StoredDocument(int(doc["_version"]), document)
        return out

    async def _mget(self, index: str, ids: list[str]) -> Any:
        return await self.cluster.body(
            f"loading {len(ids)} documents from {index}",
            lambda c: c.mget(
                index=index,
                ids=ids,
                realtime=True,
                source_includes=[DOCUMENT_FIELD, DELETED_FIELD],
            ),
        )

    async def _exists(self, index: str) -> bool:
        return bool(
            await self.cluster.call(
                f"checking index {index}", lambda c: c.indices.exists(index=index)
            )
        )

    async def write(self, target: Target, batch: Batch) -> None:
        """Send the batch's final documents, resolve every item, then move the checkpoint.

        The generation's index must exist: ``_bulk`` would create a missing one with dynamic
        mappings, no alias, and none of the documents written before, and the checkpoint
        would move on over them."""
        move = await self.checkpoints.check(
            target, batch.lane, batch.expected_checkpoint, batch.checkpoint
        )
        index = self.index(target)
        if not await self._exists(index):
            raise PermanentError(
                f"index {index} of lane {target.lane} was deleted while the lane ran: its "
                "documents are gone. Restart the lane: it finds the index gone and its "
                "checkpoint still there, deletes the checkpoint and rebuilds the index"
            )
        items: list[BulkItem] = []
        unencodable: dict[str, str] = {}
        bound = self.settings.max_document_bytes
        for op in collapse(batch.operations).values():
            item = encode(index, target.schema, op)
            if isinstance(item, str):
                unencodable[op.key] = item
            elif len(item.lines) > bound:
                unencodable[op.key] = (
                    f"document too large: {len(item.lines)} bytes encoded, more than "
                    f"max_document_bytes ({bound})"
                )
            else:
                items.append(item)
        report = await resolve(
            items,
            self._sender(index),
            max_docs=self.settings.bulk_max_docs,
            max_bytes=self.settings.bulk_max_bytes,
            retries=self.settings.item_retries,
            backoff=Backoff(base=self.settings.item_backoff, cap=10.0),
        )
        report.rejected.update(unencodable)
        self.last_report = report
        if report.rejected:
            key, reason = next(iter(report.rejected.items()))
            more = len(report.rejected) - 1
            if more:
                reason += f" ({more} more documents of this batch were rejected too)"
            raise DocumentRejected(key, reason)
        if move:
            await self.checkpoints.move(target, batch.lane, batch.checkpoint)

    def _sender(self, index: str) -> Any:
        async def send(lines: list[bytes]) -> Any:
            return await self.cluster.body(
                f"bulk-indexing {len(lines)} documents into {index}",
                lambda c: c.bulk(
                    operations=lines,  # type: ignore[arg-type]  # pre-encoded NDJSON lines
                    filter_path="errors,items.*.status,items.*.error",
                ),
            )

        return send

    async def reset(self, target: Target) -> None:
        """Delete the lane's checkpoint, then the generation's index; ``prepare`` recreates
        them (for generation 1 with the alias again: searchers see the index refill).

        In that order: a reset cut between the two leaves the documents without a checkpoint
        (the lane replays over them; external versions make that a no-op), never a checkpoint
        past documents that are gone."""
        await self.checkpoints.delete(target)
        await self.cluster.call(
            f"deleting {self.index(target)}",
            lambda c: c.indices.delete(index=self.index(target)),
            missing_ok=True,
        )

    async def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "address": self.settings.address(),
            "index_prefix": self.settings.index_prefix,
            "checkpoint_index": self.checkpoints.index if self._checkpoints else None,
        }
        try:
            health = await self.cluster.body("reading cluster health", lambda c: c.cluster.health())
            nodes = await self.cluster.body(
                "reading the node version",
                lambda c: c.nodes.info(node_id="_local", filter_path="nodes.*.version"),
            )
        except Exception as exc:  # describe reports, it never fails a status page
            facts["error"] = str(exc)
            return facts
        facts["cluster_status"] = health.get("status")
        versions = [n.get("version") for n in nodes.get("nodes", {}).values()]
        facts["server_version"] = versions[0] if versions else None
        return facts

    # -- generations -----------------------------------------------------------------------

    async def live_generation(self, projection: str) -> int | None:
        """The generation the read alias points at (``None``: none yet)."""
        alias = self.alias(projection)
        found = await indices.alias_indices(self.cluster, alias)
        generations = [g for g in (indices.generation_of(i, alias) for i in found) if g]
        return max(generations) if generations else None

    async def begin_bulk_load(self, target: Target) -> None:
        """For a rebuild: refresh off and no replicas on the new generation's index while it
        fills (it is not searched yet). :meth:`promote` restores both."""
        await indices.set_settings(self.cluster, self.index(target), indices.BULK_LOAD_SETTINGS)

    async def end_bulk_load(self, target: Target) -> None:
        """Restore the refresh interval and replicas of ``target.options`` and refresh once."""
        layout = await self.layout(target)
        index = self.index(target)
        await indices.set_settings(
            self.cluster,
            index,
            {"refresh_interval": layout.refresh_interval, "number_of_replicas": layout.replicas},
        )
        await self.cluster.call(f"refreshing {index}", lambda c: c.indices.refresh(index=index))

    async def promote(self, target: Target) -> list[str]:
        """Make the target's generation the one searchers see: restore its settings, refresh
        it, then swap the alias onto it atomically. Returns the indices served before.
        Refused (:func:`~core.sink.check_promotable`) unless its lane has written it at least
        as far as the generation the alias serves has come."""
        alias = self.alias(target.projection)
        served = [
            g
            for index in await indices.alias_indices(self.cluster, alias)
            if (g := indices.generation_of(index, alias)) is not None
        ]
        live = max(served) if served else None
        live_position = None
        if live is not None and live != target.generation:
            live_position = (await self.checkpoints.read(replace(target, generation=live))).position
        position = (await self.checkpoints.read(target)).position
        check_promotable(target, position, live, live_position)
        await self.end_bulk_load(target)
        return await indices.promote(
            self.cluster, self.index(target), self.alias(target.projection)
        )

    async def drop(self, target: Target) -> None:
        """Delete a generation that no longer serves (refused while the alias points at it)."""
        index = self.index(target)
        holders = await indices.alias_indices(self.cluster, self.alias(target.projection))
        if index in holders:
            raise ConfigurationError(
                "generation", target.generation, "the read alias serves it: promote another first"
            )
        await self.reset(target)
