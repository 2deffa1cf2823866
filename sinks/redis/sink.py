"""The Redis sink: documents as JSON strings, one atomic script call per batch.

Guarantees (see docs/sinks/redis.md):

* A batch and the lane's checkpoint are applied by one Lua script call (``write.lua``): the
  checkpoint compare-and-set, each document written only if its held version is older, then
  the new checkpoint. Redis runs a script to the end without interleaving other commands, and
  refuses the whole call up front when it is out of memory: never half a batch.
* Versions live in a per-generation hash that never expires, so a document with a TTL may
  expire but its version cannot go back. :meth:`load` reports an expired (or evicted)
  document as missing: the lane then refolds the stream from the event log.
* A connection lost after the script was sent is an :class:`~core.errors.AmbiguousCommit`;
  the resend of that batch after it landed is recognised by the script (``done``) and
  accepted. The same ``done`` for a batch this sink did not lose the reply of is another
  runner that flushed the very same batch: :class:`~core.errors.CheckpointConflict`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from core import jsontext
from core.errors import (
    AmbiguousCommit,
    CheckpointConflict,
    ConfigurationError,
    DocumentRejected,
    TransientError,
)
from core.operations import Batch, DeleteDocument, PutDocument
from core.position import Position
from core.redact import redact_text
from core.sink import Sink, SinkCapabilities, StoredDocument, Target, check_promotable
from sinks.redis.client import (
    PARSER,
    SentButUnanswered,
    call_script,
    commit_script,
    make_client,
)
from sinks.redis.config import RedisSinkSettings
from sinks.redis.errors import DRIVER_ERRORS, translate
from sinks.redis.keys import KeyLayout, checkpoint_field, layout_for, ttl_for
from sinks.redis.scripts import PROMOTE, READ, WRITE

__all__ = ("RedisSink",)

log = logging.getLogger("projectionist.sinks.redis")

MIN_SERVER = (7, 0)


class RedisSink(Sink):
    """Writes document projections to Redis. Use as ``async with RedisSink(settings):``."""

    kind = "redis"
    capabilities = SinkCapabilities(
        transactional_checkpoint=True,
        max_batch_operations=5_000,
        max_batch_bytes=16 * 1024 * 1024,
        supports_rows=False,
    )

    def __init__(self, settings: RedisSinkSettings, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self._client: Redis | None = None
        self.server_version = ""
        self.maxmemory_policy: str | None = None
        self._checked = False
        self._warned: set[str] = set()
        """Lanes already told that their batches exceed the sink's bounds."""
        self._in_doubt: dict[tuple[str, int], Position] = {}
        """Per (lane, generation): the checkpoint of a batch sent whose reply was lost."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisSink is not open: use `async with RedisSink(...)`")
        return self._client

    def _error(self, exc: BaseException, what: str) -> Exception:
        return translate(exc, what, self.settings.address(), self.settings.secrets())

    async def open(self) -> None:
        """Connect and check the server: version 7.0+, eviction policy (a warning unless
        ``noeviction``), scripts loaded. A bad setting (password, TLS, version) raises here;
        an unreachable server does not: the checks run again on the lane's ``prepare``,
        which the lane retries, so a Redis that is down at start stops no other lane."""
        self._client = make_client(self.settings)
        self._checked = False
        try:
            await self._check_server()
        except TransientError as exc:
            log.warning("Redis sink %s starts unchecked, retried on first use: %s", self.name, exc)
        except BaseException:
            await self.close()
            raise

    async def _check_server(self) -> None:
        if self._checked:
            return
        try:
            info = await self.client.info("server")
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "connecting") from None
        self.server_version = str(info.get("redis_version", ""))
        found = tuple(int(p) for p in self.server_version.split(".")[:2] if p.isdigit())
        if found < MIN_SERVER:
            raise ConfigurationError(
                "redis server", self.server_version, "the Redis sink needs Redis 7.0 or later"
            )
        await self._check_policy()
        try:
            for script in (WRITE, READ, PROMOTE):
                await self.client.script_load(script.source)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "loading the scripts") from None
        self._checked = True

    async def _check_policy(self) -> None:
        try:
            reply: dict[Any, Any] = await self.client.config_get("maxmemory-policy")
        except DRIVER_ERRORS as exc:
            log.warning(
                "could not read maxmemory-policy of Redis at %s (%s); make sure it is "
                "noeviction: an evicted checkpoint or version breaks the lanes' guarantees",
                self.settings.address(),
                redact_text(str(exc), self.settings.secrets()),
            )
            return
        policy = _text(reply.get(b"maxmemory-policy", reply.get("maxmemory-policy", b"")))
        self.maxmemory_policy = policy
        if policy != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy %s: when memory runs out it may evict a "
                "lane's checkpoint or document versions (allkeys-*) or documents with a TTL "
                "(volatile-*). Set `maxmemory-policy noeviction` (docs/sinks/redis.md).",
                self.settings.address(),
                policy,
            )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "address": self.settings.address(),
            "server_version": self.server_version,
            "maxmemory_policy": self.maxmemory_policy,
            "parser": PARSER,
        }

    # -- the contract ----------------------------------------------------------------------

    def check_target(self, target: Target) -> None:
        """``key_prefix`` (a lower-case name: no glob or hash-tag character) and
        ``ttl_seconds`` are valid, and no other option is given (a mistyped ``ttl_second``
        meant documents that never expire, a ``key_prefx`` a prefix the readers miss)."""
        unknown = sorted(set(target.options) - _LANE_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"{target.lane}.options",
                unknown,
                f"the Redis sink knows: {', '.join(sorted(_LANE_OPTIONS))}",
            )
        layout_for(target)
        ttl_for(target)

    async def prepare(self, target: Target) -> None:
        """Validate the options, refuse a prefix another lane writes, and point ``live`` at
        this generation when no generation is live yet."""
        keys = layout_for(target)
        ttl_for(target)
        await self._check_server()
        try:
            fields = await self.client.hkeys(keys.checkpoint)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"preparing {keys.tag} for lane {target.lane}") from None
        suffix = f":g{target.generation}"
        for raw in fields:
            other = _text(raw).removesuffix(suffix)
            if _text(raw).endswith(suffix) and other != target.lane:
                raise _shared_prefix(keys, target, other)
        try:
            # Claimed atomically (SET NX), so two new lanes on one prefix (neither with a
            # checkpoint yet, so neither seen above) cannot both pass.
            await self.client.set(keys.owner, target.lane, nx=True)
            owner = _text(await self.client.get(keys.owner) or b"")
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"preparing {keys.tag} for lane {target.lane}") from None
        if owner != target.lane:
            raise _shared_prefix(keys, target, owner)
        try:
            await self.client.set(keys.live, str(target.generation), nx=True)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"preparing {keys.tag} for lane {target.lane}") from None

    async def read_checkpoint(self, target: Target) -> Position | None:
        keys = layout_for(target)
        try:
            raw = await self.client.hget(keys.checkpoint, checkpoint_field(target))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"reading the checkpoint of lane {target.lane}") from None
        return None if raw is None else Position.parse(_text(raw))

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        """Held documents and tombstones. A version whose document is gone (expired under a
        TTL, or evicted) is reported as missing, so the lane refolds it from the log."""
        if not keys:
            return {}
        layout = layout_for(target)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hmget(layout.versions, list(keys))
                pipe.mget([layout.document(k) for k in keys])
                versions, documents = await pipe.execute()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"loading documents of lane {target.lane}") from None
        out: dict[str, StoredDocument] = {}
        for key, version, document in zip(keys, versions, documents, strict=True):
            if version is None:
                continue
            held = int(version)
            if held < 0:
                out[key] = StoredDocument(-held, None)
            elif document is not None:
                out[key] = StoredDocument(held, jsontext.loads(document))
        return out

    async def write(self, target: Target, batch: Batch) -> None:
        """Apply ``batch`` and move the checkpoint in one script call (see write.lua)."""
        layout = layout_for(target)
        keys, args = self._encode(target, layout, batch)
        what = f"writing a batch of lane {target.lane} up to {batch.checkpoint}"
        doubt = (target.lane, target.generation)
        try:
            reply = await commit_script(self.client, WRITE, keys, args)
        except SentButUnanswered as lost:
            self._in_doubt[doubt] = batch.checkpoint
            raise AmbiguousCommit(
                f"lane {target.lane}: the connection to Redis at {self.settings.address()} "
                f"failed after the batch up to {batch.checkpoint} was sent "
                f"({redact_text(str(lost), self.settings.secrets())}); it may have been "
                "applied: the lane re-reads the checkpoint"
            ) from None
        except DRIVER_ERRORS as exc:
            raise self._error(exc, what) from None
        status = reply[0].decode()
        if status == "conflict":
            found = reply[1].decode()
            raise CheckpointConflict(
                batch.lane, batch.expected_checkpoint, Position.parse(found) if found else None
            )
        in_doubt = self._in_doubt.pop(doubt, None)
        if status == "done":
            # The checkpoint is already this batch's own: the resend of a batch whose reply
            # this sink lost, or another runner that flushed the very same batch.
            if in_doubt != batch.checkpoint:
                raise CheckpointConflict(batch.lane, batch.expected_checkpoint, batch.checkpoint)
            log.info("lane %s: batch up to %s had already landed", batch.lane, batch.checkpoint)

    def _encode(
        self, target: Target, layout: KeyLayout, batch: Batch
    ) -> tuple[list[str], list[str | bytes]]:
        keys: list[str] = [layout.checkpoint, layout.versions]
        args: list[str | bytes] = [
            checkpoint_field(target),
            "" if batch.expected_checkpoint is None else str(batch.expected_checkpoint),
            str(batch.checkpoint),
            str(ttl_for(target)),
        ]
        size = 0
        for op in batch.operations:
            if isinstance(op, PutDocument):
                body = _dumps(op.key, op.document)
                size += len(body)
            elif isinstance(op, DeleteDocument):
                body = b""
            else:
                raise ConfigurationError(
                    "sink", self.name, "the Redis sink stores documents only, not rows"
                )
            if op.version < 1:
                raise DocumentRejected(op.key, f"version {op.version} is not a stream version")
            keys.append(layout.document(op.key))
            args += [op.key, str(op.version), body]
        limit = self.capabilities.max_batch_bytes
        too_many = len(batch.operations) > self.capabilities.max_batch_operations
        if (too_many or (limit is not None and size > limit)) and batch.lane not in self._warned:
            self._warned.add(batch.lane)
            log.warning(
                "lane %s: a batch of %d operations and %d bytes exceeds the sink's bounds "
                "(%d operations, %d bytes); it is still written in one atomic call, which "
                "blocks Redis longer: lower the lane's max_batch and catch_up_batch (said once)",
                batch.lane,
                len(batch.operations),
                size,
                self.capabilities.max_batch_operations,
                limit,
            )
        return keys, args

    async def reset(self, target: Target) -> None:
        """Delete the generation's checkpoint, documents (SCAN of their exact prefix) and
        versions, in that order, so a reset interrupted half-way can simply be run again."""
        layout = layout_for(target)
        try:
            await self.client.hdel(layout.checkpoint, checkpoint_field(target))
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=layout.documents_pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self.client.unlink(*batch)
                    batch = []
            if batch:
                await self.client.unlink(*batch)
            await self.client.unlink(layout.versions)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"resetting generation {layout.versions}") from None

    # -- generations -----------------------------------------------------------------------

    async def live_generation(self, target: Target) -> int | None:
        """The generation readers use (``None``: none yet)."""
        try:
            raw = await self.client.get(layout_for(target).live)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "reading the live generation") from None
        return None if raw is None else int(raw)

    async def promote(self, target: Target) -> int | None:
        """Atomically make ``target.generation`` live; returns the previously live generation.
        Readers switch on their next call. Refused (:func:`~core.sink.check_promotable`,
        checked inside the script) unless its lane has written it at least as far as the
        live generation has come."""
        layout = layout_for(target)
        try:
            reply = await call_script(
                self.client,
                PROMOTE,
                [layout.live, layout.checkpoint],
                [str(target.generation), checkpoint_field(target), target.lane],
            )
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"promoting {layout.versions}") from None
        outcome, *rest = [_text(part) for part in reply]
        if outcome == "empty":
            check_promotable(target, None, None, None)
        if outcome == "behind":
            mine, live, theirs = rest
            check_promotable(target, Position.parse(mine), int(live), Position.parse(theirs))
        return int(rest[0]) if rest and rest[0] else None

    async def drop(self, target: Target) -> None:
        """Remove a generation that is not live (after a swap)."""
        if await self.live_generation(target) == target.generation:
            raise ConfigurationError(
                "generation", target.generation, "it is live: promote another generation first"
            )
        await self.reset(target)
        layout = layout_for(target)
        try:
            await self.client.delete(layout.owner)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"dropping {layout.tag} g{target.generation}") from None


_LANE_OPTIONS = frozenset({"key_prefix", "ttl_seconds"})


def _shared_prefix(keys: KeyLayout, target: Target, other: str) -> ConfigurationError:
    return ConfigurationError(
        "key_prefix",
        keys.prefix,
        f"lane {other!r} already writes generation {target.generation} of this prefix; give "
        "each lane its own key_prefix",
    )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _dumps(key: str, document: dict[str, Any]) -> bytes:
    try:
        return jsontext.dumps(document)
    except (TypeError, ValueError, RecursionError) as exc:
        raise DocumentRejected(key, f"not JSON-ready: {exc}") from None
