"""The sink contract on the real Redis: round trips, the version guard, tombstones, the
checkpoint compare-and-set, TTL without regressions, reset, generations, key layout."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from core.errors import CheckpointConflict, ConfigurationError, DocumentRejected
from core.operations import Batch, DeleteDocument, Operation, PutDocument, UpsertRow
from core.position import Position
from core.sink import Target
from sinks.redis import KeyLayout, RedisDocumentReader, RedisSink, RedisSinkSettings
from sinks.redis.keys import layout_for
from tests.sinks.redis.support import document_keys, snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

LANE = "order_cache@redis"
DOC: dict[str, Any] = {
    "id": "order-1",
    "total_amount": "12.50",
    "items": [{"product_id": "p1", "unit_price": "0.10", "quantity": 3}],
    "completed_at": None,
    "note": "çà ✓",
    "ratio": 0.1,
}


def target(prefix: str, generation: int = 1, **options: Any) -> Target:
    return Target(
        lane=LANE,
        projection="order_cache",
        generation=generation,
        options={"key_prefix": prefix, **options},
    )


def batch(
    ops: list[Operation], expected: Position | None, checkpoint: Position, lane: str = LANE
) -> Batch:
    return Batch(lane, tuple(ops), expected, checkpoint, events=len(ops))


P1, P2, P3 = Position(10, 1), Position(11, 2), Position(12, 3)


async def test_round_trip_returns_equal_documents(sink: RedisSink, namespace: str) -> None:
    t = target(namespace)
    await sink.prepare(t)
    assert await sink.read_checkpoint(t) is None
    await sink.write(t, batch([PutDocument("order-1", 3, DOC)], None, P1))
    assert await sink.read_checkpoint(t) == P1
    assert await sink.load(t, ["order-1", "order-2"]) == {
        "order-1": _stored(3, DOC),
    }


def _stored(version: int, document: dict[str, Any] | None) -> Any:
    from core.sink import StoredDocument

    return StoredDocument(version, document)


async def test_version_guard_and_tombstones(sink: RedisSink, namespace: str, raw: Redis) -> None:
    t = target(namespace)
    await sink.prepare(t)
    newer = {**DOC, "status": "completed"}
    await sink.write(t, batch([PutDocument("k", 5, newer), DeleteDocument("gone", 4)], None, P1))
    # older and equal versions change nothing, also for the tombstone
    await sink.write(
        t,
        batch(
            [PutDocument("k", 4, DOC), PutDocument("k", 5, DOC), PutDocument("gone", 4, DOC)],
            P1,
            P2,
        ),
    )
    assert await sink.load(t, ["k", "gone"]) == {"k": _stored(5, newer), "gone": _stored(4, None)}
    # a newer delete wins and keeps its version; an older put cannot resurrect it
    await sink.write(t, batch([DeleteDocument("k", 6)], P2, P3))
    await sink.write(t, batch([PutDocument("k", 6, DOC)], P3, Position(13, 4)))
    assert await sink.load(t, ["k"]) == {"k": _stored(6, None)}
    assert await raw.exists(KeyLayout(namespace).document("k")) == 0


async def test_checkpoint_conflict_applies_nothing(sink: RedisSink, namespace: str) -> None:
    t = target(namespace)
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("a", 1, DOC)], None, P1))
    stale = batch([PutDocument("a", 2, {"x": 1}), PutDocument("b", 1, DOC)], None, P2)
    with pytest.raises(CheckpointConflict, match="found at 10/1"):
        await sink.write(t, stale)
    wrong = batch([PutDocument("b", 1, DOC)], Position(9, 9), P2)
    with pytest.raises(CheckpointConflict):
        await sink.write(t, wrong)
    assert await sink.read_checkpoint(t) == P1
    assert await sink.load(t, ["a", "b"]) == {"a": _stored(1, DOC)}


async def test_the_same_batch_from_a_second_writer_is_a_conflict(
    sink: RedisSink, namespace: str
) -> None:
    """The stored checkpoint is the batch's own but this sink never lost its reply: another
    runner flushed the very same batch. It is told (the resend after a lost reply is accepted:
    test_server_faults.py::test_a_lost_reply_of_a_batch_that_landed_is_an_ambiguous_commit)."""
    t = target(namespace)
    await sink.prepare(t)
    first = batch([PutDocument("a", 1, DOC)], None, P1)
    await sink.write(t, first)
    with pytest.raises(CheckpointConflict):
        await sink.write(t, first)
    assert await sink.read_checkpoint(t) == P1


async def test_expired_documents_never_go_back(sink: RedisSink, namespace: str, raw: Redis) -> None:
    """TTL: the document expires, its version does not. A late older write is refused, the
    same version restores it, load reports the expired one as missing (the lane refolds)."""
    t = target(namespace, ttl_seconds=1)
    layout = layout_for(t)
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("k", 5, {"v": 5})], None, P1))
    assert 0 < await raw.ttl(layout.document("k")) <= 1
    assert await raw.ttl(layout.versions) == -1
    await anyio.sleep(1.2)
    assert await sink.load(t, ["k"]) == {}
    await sink.write(t, batch([PutDocument("k", 4, {"v": 4})], P1, P2))
    assert await sink.load(t, ["k"]) == {}
    assert (await snapshot(raw, layout)).versions == {"k": 5}
    await sink.write(t, batch([PutDocument("k", 5, {"v": 5})], P2, P3))
    assert await sink.load(t, ["k"]) == {"k": _stored(5, {"v": 5})}
    async with RedisDocumentReader(sink.settings, namespace) as reader:
        assert await reader.get("k") == {"v": 5}


async def test_reset_removes_one_generation(sink: RedisSink, namespace: str, raw: Redis) -> None:
    one, two = target(namespace), target(namespace, generation=2)
    for t in (one, two):
        await sink.prepare(t)
        ops: list[Operation] = [PutDocument(f"k{i}", 1, {"i": i}) for i in range(2_500)]
        await sink.write(t, batch(ops, None, P1))
    await sink.reset(two)
    assert await sink.read_checkpoint(two) is None
    assert await document_keys(raw, layout_for(two)) == set()
    assert not await raw.exists(layout_for(two).versions)
    assert await sink.read_checkpoint(one) == P1
    assert len(await document_keys(raw, layout_for(one))) == 2_500


async def test_generations_swap_atomically(sink: RedisSink, namespace: str) -> None:
    one, two = target(namespace), target(namespace, generation=2)
    await sink.prepare(one)
    await sink.write(one, batch([PutDocument("k", 1, {"g": 1})], None, P1))
    await sink.prepare(two)
    assert await sink.live_generation(two) == 1
    with pytest.raises(ConfigurationError, match="has not written generation 2"):
        await sink.promote(two)
    await sink.write(two, batch([PutDocument("k", 1, {"g": 2})], None, P1))
    async with RedisDocumentReader(sink.settings, namespace) as reader:
        assert await reader.get("k") == {"g": 1}
        assert await sink.promote(two) == 1
        assert await reader.get("k") == {"g": 2}
        with pytest.raises(ConfigurationError, match="it is live"):
            await sink.drop(two)
        await sink.drop(one)
        assert await sink.read_checkpoint(one) is None
        assert await reader.get_many(["k", "missing"]) == {"k": {"g": 2}}


async def test_every_key_of_a_batch_shares_one_cluster_slot(
    sink: RedisSink, namespace: str, raw: Redis
) -> None:
    t = target(namespace)
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument(f"order-{i}", 1, {}) for i in range(50)], None, P1))
    names = {k async for k in raw.scan_iter(match="{" + namespace + "}*")}  # SCAN may repeat
    assert len(names) == 54  # live, owner, checkpoint, versions and 50 documents
    assert {key_slot(n) for n in names} == {key_slot(namespace.encode())}


@pytest.mark.parametrize("prefix", ["Order", "a*b", "a?", "a[b]", "{a}", "a:b", "", "9a"])
async def test_prefix_is_validated(sink: RedisSink, prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="key_prefix"):
        await sink.prepare(target(prefix))


async def test_two_lanes_cannot_share_a_prefix(sink: RedisSink, namespace: str) -> None:
    await sink.prepare(target(namespace))
    await sink.write(target(namespace), batch([], None, P1))
    other = Target(lane="other@redis", projection="other", options={"key_prefix": namespace})
    with pytest.raises(ConfigurationError, match="already writes generation 1"):
        await sink.prepare(other)


async def test_two_new_lanes_cannot_share_a_prefix(sink: RedisSink, namespace: str) -> None:
    """Neither has a checkpoint yet (both start fresh, at once): the claim refuses the
    second, which would have written the same versions hash and document keys."""
    other = Target(lane="other@redis", projection="other", options={"key_prefix": namespace})
    both = await asyncio.gather(
        sink.prepare(target(namespace)), sink.prepare(other), return_exceptions=True
    )
    refused = [r for r in both if isinstance(r, ConfigurationError)]
    assert len(refused) == 1 and "already writes generation 1" in str(refused[0]), both
    await sink.prepare(target(namespace) if refused[0] is both[1] else other)  # the owner: again


async def test_a_dropped_generation_can_be_claimed_again(sink: RedisSink, namespace: str) -> None:
    first = Target(lane="a@redis", projection="a", generation=2, options={"key_prefix": namespace})
    await sink.prepare(target(namespace))  # generation 1 is live
    await sink.prepare(first)
    await sink.drop(first)
    await sink.prepare(
        Target(lane="b@redis", projection="b", generation=2, options={"key_prefix": namespace})
    )


@pytest.mark.parametrize("ttl", [0, -1, 1.5, "10", True])
async def test_ttl_is_validated(sink: RedisSink, namespace: str, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl_seconds"):
        await sink.prepare(target(namespace, ttl_seconds=ttl))


async def test_bad_documents_and_rows_are_refused_before_anything_is_written(
    sink: RedisSink, namespace: str
) -> None:
    t = target(namespace)
    await sink.prepare(t)
    bad = batch([PutDocument("ok", 1, DOC), PutDocument("bad", 1, {"x": {1, 2}})], None, P1)
    with pytest.raises(DocumentRejected, match="'bad'"):
        await sink.write(t, bad)
    with pytest.raises(DocumentRejected, match="'nan'"):
        await sink.write(t, batch([PutDocument("nan", 1, {"x": float("nan")})], None, P1))
    with pytest.raises(ConfigurationError, match="documents only"):
        await sink.write(t, batch([UpsertRow("t", (1,), 1, {})], None, P1))
    assert await sink.read_checkpoint(t) is None
    assert await sink.load(t, ["ok"]) == {}


async def test_values_are_plain_json_documents(sink: RedisSink, namespace: str, raw: Redis) -> None:
    t = target(namespace)
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("order-1", 2, DOC)], None, P1))
    stored = await raw.get(KeyLayout(namespace).document("order-1"))
    assert stored is not None and json.loads(stored) == DOC
    assert await raw.hget(KeyLayout(namespace).versions, "order-1") == b"2"


async def test_settings_never_show_secrets() -> None:
    settings = RedisSinkSettings(
        url="redis://user:url-secret-1@127.0.0.1:6390/2", password="field-secret-2"
    )
    shown = repr(settings) + str(settings) + settings.address()
    assert "url-secret-1" not in shown and "field-secret-2" not in shown
    assert settings.address() == "redis://127.0.0.1:6390/2"
    assert set(settings.secrets()) == {"url-secret-1", "field-secret-2"}
    with pytest.raises(ConfigurationError) as bad:
        RedisSinkSettings(url="http://u:pw-9@host/0")
    assert "pw-9" not in str(bad.value)


@pytest.mark.parametrize("options", [{"ttl_second": 60}, {"key_prefx": "order"}])
def test_an_unknown_lane_option_is_refused_at_start(
    options: dict[str, object], redis_url: str
) -> None:
    """``ttl_second`` meant documents that never expire, ``key_prefx`` a prefix the
    readers miss: refused before any lane starts, naming the known ones."""
    sink = RedisSink(RedisSinkSettings(url=redis_url))
    bad = Target(lane="order_cache@redis", projection="order_cache", options=options)
    with pytest.raises(ConfigurationError, match="knows: key_prefix, ttl_seconds"):
        sink.check_target(bad)
