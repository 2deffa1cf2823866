"""One contract, every event store: the in-memory one and the real Postgres one.

Each test runs once per store (see the ``store`` fixture); Postgres runs are marked postgres.
"""

from __future__ import annotations

import math
from time import monotonic
from typing import Any, ClassVar

import anyio
import anyio.abc
import pytest

from core.errors import (
    CheckpointAheadOfLog,
    ConcurrencyError,
    ConfigurationError,
    InvalidEvent,
)
from core.events import DomainEvent, EventRegistry, NewEvent, RawEvent
from core.eventstore import ANY, NO_STREAM, EventStore
from core.position import START, Position
from tests.eventstore.support import LIMITS, event, events, read_all, read_until

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """Raised inside a transaction to abort it."""


async def test_append_then_read_in_order(store: EventStore) -> None:
    first = events(3)
    r1 = await store.append("order-1", first, NO_STREAM)
    r2 = await store.append("order-2", [event(10)], NO_STREAM)
    r3 = await store.append("order-1", [event(4)], expected_version=3)
    assert (r1.next_expected_version, r1.written) == (3, 3)
    assert (r2.next_expected_version, r2.written) == (1, 1)
    assert (r3.next_expected_version, r3.written) == (4, 1)

    got = await read_until(store, 5)
    assert [(e.stream_id, e.stream_version) for e in got] == [
        ("order-1", 1),
        ("order-1", 2),
        ("order-1", 3),
        ("order-2", 1),
        ("order-1", 4),
    ]
    assert [e.position for e in got] == sorted({e.position for e in got})
    assert [e.event_id for e in got[:3]] == [e.event_id for e in first]
    assert got[0].data == {"n": 0} and got[0].metadata == {"by": "test"}
    assert got[0].event_type == "Noted" and got[0].schema_version == 1
    assert got[0].recorded_at.tzinfo is not None

    assert await store.read(got[1].position, 2) == got[2:4]
    assert await store.read(got[-1].position, 10) == []
    assert [e async for e in store.iterate(START, page=2)] == got


async def test_expected_version_conflict_names_stream_expected_actual(store: EventStore) -> None:
    await store.append("cart-7", events(2), NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("cart-7", [event(9)], NO_STREAM)
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("cart-7", 0, 2)
    assert "'cart-7'" in str(caught.value) and "expected version 0" in str(caught.value)
    assert "at version 2" in str(caught.value)

    with pytest.raises(ConcurrencyError) as ahead:
        await store.append("cart-7", [event(9)], expected_version=5)
    assert (ahead.value.expected, ahead.value.actual) == (5, 2)
    assert len(await store.read_stream("cart-7")) == 2

    done = await store.append("cart-7", [event(3)], expected_version=2)
    assert done.next_expected_version == 3
    done = await store.append("cart-7", [event(4)], ANY)
    assert done.next_expected_version == 4


async def test_reappending_the_same_events_is_a_no_op(store: EventStore) -> None:
    batch = events(3)
    await store.append("pay-1", batch, NO_STREAM)
    again = await store.append("pay-1", batch, NO_STREAM)  # a retry after a lost answer
    assert (again.next_expected_version, again.written) == (3, 0)
    subset = await store.append("pay-1", batch[:2], ANY)
    assert (subset.next_expected_version, subset.written) == (2, 0)
    in_tx: list[int] = []
    async with store.transaction() as tx:
        more = events(2)
        in_tx.append((await tx.append("pay-1", more, 3)).written)
        in_tx.append((await tx.append("pay-1", more, 3)).written)
    assert in_tx == [2, 0]
    got = await read_until(store, 5)
    assert [e.stream_version for e in got] == [1, 2, 3, 4, 5]
    assert len({e.event_id for e in got}) == 5


async def test_partial_reuse_of_event_ids_is_refused(store: EventStore) -> None:
    a, b, c = events(3)
    await store.append("inv-1", [a, b], NO_STREAM)
    with pytest.raises(InvalidEvent, match="already appended"):
        await store.append("inv-1", [b, c], ANY)
    with pytest.raises(InvalidEvent, match="inv-2"):
        await store.append("inv-2", [a, b], NO_STREAM)  # ids belong to another stream
    with pytest.raises(InvalidEvent, match="same event id twice"):
        await store.append("inv-3", [c, c], NO_STREAM)
    with pytest.raises(InvalidEvent, match="nothing to append"):
        await store.append("inv-3", [], NO_STREAM)
    got = await read_until(store, 2)
    assert [(e.stream_id, e.event_id) for e in got] == [
        ("inv-1", a.event_id),
        ("inv-1", b.event_id),
    ]
    assert await store.read_stream("inv-2") == [] and await store.read_stream("inv-3") == []
    later = await store.append("inv-1", [c], expected_version=2)  # c was never written
    assert (later.next_expected_version, later.written) == (3, 1)


async def test_multi_stream_transaction_commits_both(store: EventStore) -> None:
    async with store.transaction() as tx:
        x = await tx.append("ship-1", events(2), NO_STREAM)
        y = await tx.append("bill-1", events(1), NO_STREAM)
    assert (x.next_expected_version, y.next_expected_version) == (2, 1)
    got = await read_until(store, 3)
    assert [e.stream_id for e in got] == ["ship-1", "ship-1", "bill-1"]
    assert len({e.position.transaction_id for e in got}) == 1


async def _in_one_transaction(
    store: EventStore, *appends: tuple[str, int], then: BaseException | float | None = None
) -> None:
    """Append ``(stream, count)`` pairs at NO_STREAM in one transaction, then raise ``then``
    (an exception) or sleep ``then`` seconds before the commit."""
    async with store.transaction() as tx:
        for stream, count in appends:
            await tx.append(stream, events(count), NO_STREAM)
        if isinstance(then, BaseException):
            raise then
        if then is not None:
            await anyio.sleep(then)


async def test_multi_stream_transaction_rolls_back_both(store: EventStore) -> None:
    with pytest.raises(Boom):
        await _in_one_transaction(store, ("ship-2", 2), ("bill-2", 1), then=Boom())
    await store.append("bill-3", events(1), NO_STREAM)
    await store.append("bill-4", events(1), NO_STREAM)
    with pytest.raises(ConcurrencyError):  # bill-4 conflicts: all is undone
        await _in_one_transaction(store, ("ship-3", 2), ("bill-4", 1))
    got = await read_until(store, 2)
    assert [e.stream_id for e in got] == ["bill-3", "bill-4"]
    for stream in ("ship-2", "bill-2", "ship-3"):
        assert await store.read_stream(stream) == []
    retry = await store.append("ship-2", events(1), NO_STREAM)  # its versions were not used
    assert retry.next_expected_version == 1


async def _refused(tx: Any, stream: str, batch: list[NewEvent], error: type[Exception]) -> None:
    """Append in ``tx`` and expect ``error``, caught as a caller inside the block might."""
    with pytest.raises(error):
        await tx.append(stream, batch, NO_STREAM)


async def test_a_failed_append_dooms_its_transaction(store: EventStore) -> None:
    """A failure caught inside the block does not let the rest commit: Postgres has aborted
    the transaction, so a commit would silently write nothing (asyncpg does not check)."""
    await store.append("doom-b", events(1), NO_STREAM)

    async def block() -> None:
        async with store.transaction() as tx:
            await tx.append("doom-a", events(1), NO_STREAM)
            await _refused(tx, "doom-b", events(1), ConcurrencyError)
            await _refused(tx, "doom-c", events(1), ConcurrencyError)  # doomed: raised again

    with pytest.raises(ConcurrencyError) as caught:
        await block()
    assert "rolled back" in "".join(getattr(caught.value, "__notes__", []))
    assert await store.read_stream("doom-a") == [] and await store.read_stream("doom-c") == []
    assert [e.stream_id for e in await read_until(store, 1)] == ["doom-b"]


async def _holding(
    store: EventStore, stream: str, batch: list[NewEvent], held: anyio.Event, release: anyio.Event
) -> None:
    """Append ``batch`` to ``stream`` in a transaction left open until ``release``."""
    async with store.transaction() as tx:
        await tx.append(stream, batch, NO_STREAM)
        held.set()
        await release.wait()


async def _after(seconds: float, release: anyio.Event) -> None:
    await anyio.sleep(seconds)
    release.set()


async def test_an_append_that_lost_a_race_dooms_its_transaction(store: EventStore) -> None:
    """The append waits for the open transaction holding the same stream version, then loses
    to its commit (in Postgres, a unique violation that aborts the transaction)."""
    held, release = anyio.Event(), anyio.Event()

    async def block(group: anyio.abc.TaskGroup) -> None:
        async with store.transaction() as tx:
            await tx.append("race-a", events(1), NO_STREAM)
            group.start_soon(_after, 0.3, release)
            await _refused(tx, "race-b", events(1), ConcurrencyError)  # waits, then loses

    async with anyio.create_task_group() as group:
        group.start_soon(_holding, store, "race-b", events(1), held, release)
        await held.wait()
        with pytest.raises(ConcurrencyError):
            await block(group)
    assert await store.read_stream("race-a") == []
    assert [e.stream_version for e in await store.read_stream("race-b")] == [1]


async def test_a_batch_refused_after_a_race_on_its_ids_writes_nothing(store: EventStore) -> None:
    """Another transaction commits one of the batch's ids meanwhile: the batch is refused,
    and nothing of it (or of its transaction) is committed, so no version is skipped."""
    first, shared, last = events(3)
    held, release = anyio.Event(), anyio.Event()

    async def block(group: anyio.abc.TaskGroup) -> None:
        async with store.transaction() as tx:
            group.start_soon(_after, 0.3, release)
            await _refused(tx, "ids-s", [first, shared, last], InvalidEvent)

    async with anyio.create_task_group() as group:
        group.start_soon(_holding, store, "ids-other", [shared], held, release)
        await held.wait()
        with pytest.raises(InvalidEvent, match="already appended"):
            await block(group)
    assert await store.read_stream("ids-s") == []
    later = await store.append("ids-s", [first, last], NO_STREAM)
    assert (later.next_expected_version, later.written) == (2, 2)


@pytest.mark.parametrize(
    "error",
    [Boom("mine"), TimeoutError("my own deadline"), ConnectionRefusedError("my http call")],
    ids=["exception", "timeout-error", "connection-error"],
)
async def test_errors_raised_inside_a_transaction_propagate_unchanged(
    store: EventStore, error: Exception
) -> None:
    """The caller's own exception (even an OSError) is not a failed or ambiguous commit."""
    with pytest.raises(type(error)) as caught:
        await _in_one_transaction(store, ("own-1", 1), then=error)
    assert caught.value is error
    with pytest.raises(TimeoutError), anyio.fail_after(0.2):
        await _in_one_transaction(store, ("own-2", 1), then=5.0)
    await store.append("own-3", events(1), NO_STREAM)
    assert [e.stream_id for e in await read_until(store, 1)] == ["own-3"]


async def test_open_transaction_holds_back_later_commits(store: EventStore) -> None:
    """The fence in miniature (see test_fence.py for the real thing)."""
    async with store.transaction() as tx:
        await tx.append("early-1", events(2), NO_STREAM)
        await store.append("late-1", events(1), NO_STREAM)  # commits first
        assert await store.read(START, 10) == []
        assert [e.stream_id for e in await store.read_stream("late-1")] == ["late-1"]
    got = await read_until(store, 3)
    assert [e.stream_id for e in got] == ["early-1", "early-1", "late-1"]


async def test_a_position_beyond_the_next_transaction_id_is_refused(store: EventStore) -> None:
    """A checkpoint the log can no longer be behind (it lost transactions that were read)."""
    await store.append("reach-1", events(2), NO_STREAM)
    head = await store.head()
    assert head is not None
    await store.check_reachable(head, "order_summary@postgres")
    await store.check_reachable(START, "order_summary@postgres")
    ahead = Position(head.transaction_id + 1_000_000, 1)
    with pytest.raises(CheckpointAheadOfLog) as caught:
        await store.check_reachable(ahead, "order_summary@postgres")
    text = str(caught.value)
    assert str(ahead) in text and "projectionist rebuild order_summary@postgres" in text


async def test_read_stream_ranges(store: EventStore) -> None:
    await store.append("range-1", events(10), NO_STREAM)
    await store.append("range-2", events(3), NO_STREAM)

    async def versions(*args: Any) -> list[int]:
        return [e.stream_version for e in await store.read_stream("range-1", *args)]

    assert await versions() == list(range(1, 11))
    assert await versions(3, 5) == [3, 4, 5]
    assert await versions(8) == [8, 9, 10]
    assert await versions(5, 5) == [5]
    assert await versions(11) == []
    assert await versions(6, 4) == []
    assert await store.read_stream("nope") == []
    got = await store.read_stream("range-2")
    assert [e.data["n"] for e in got] == [0, 1, 2]


async def test_head_and_count_between(store: EventStore) -> None:
    assert await store.head() is None
    await store.append("head-1", events(4), NO_STREAM)
    await store.append("head-2", events(3), NO_STREAM)
    got = await read_until(store, 7)
    head = await store.head()
    assert head == got[-1].position
    assert await store.count_between(START, head) == 7
    assert await store.count_between(got[1].position, got[4].position) == 3
    assert await store.count_between(head, head) == 0
    assert await store.count_between(head, START) == 0
    assert await store.count_between(got[-2].position, Position(head[0] + 5, 0)) == 1


registry = EventRegistry()


@registry.register
class ItemAdded(DomainEvent):
    """v1 {product, qty}; v2 renamed to {sku, quantity}; v3 adds unit_price."""

    event_type: ClassVar[str] = "ItemAdded"
    schema_version: ClassVar[int] = 3
    sku: str
    quantity: int
    unit_price: str


@registry.upcaster("ItemAdded", 1)
def _item_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {"sku": data["product"], "quantity": data["qty"]}


@registry.upcaster("ItemAdded", 2)
def _item_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "unit_price": "0.00"}


@registry.register
class NoteAdded(DomainEvent):
    """Version 2 with no upcaster from 1: a v1 event cannot be decoded."""

    event_type: ClassVar[str] = "NoteAdded"
    schema_version: ClassVar[int] = 2
    text: str


async def test_upcasting_through_a_registry(store: EventStore) -> None:
    raw = [
        NewEvent(event_type="ItemAdded", schema_version=1, data={"product": "p-1", "qty": 2}),
        NewEvent(event_type="ItemAdded", schema_version=2, data={"sku": "p-2", "quantity": 1}),
        ItemAdded(sku="p-3", quantity=5, unit_price="9.99").to_new_event(),
        NewEvent(event_type="Mystery", data={"x": [1, 2]}),
    ]
    await store.append("up-1", raw, NO_STREAM)
    got = await read_until(store, 4)
    decoded = [registry.decode(e) for e in got]
    assert decoded[:3] == [
        ItemAdded(sku="p-1", quantity=2, unit_price="0.00"),
        ItemAdded(sku="p-2", quantity=1, unit_price="0.00"),
        ItemAdded(sku="p-3", quantity=5, unit_price="9.99"),
    ]
    assert decoded[3] == RawEvent(event_type="Mystery", data={"x": [1, 2]})

    await store.append(
        "up-2",
        [
            NewEvent(event_type="ItemAdded", schema_version=4, data={"sku": "p"}),
            NewEvent(event_type="NoteAdded", schema_version=1, data={"body": "hi"}),
            NewEvent(event_type="ItemAdded", schema_version=3, data={"sku": "p"}),
        ],
        NO_STREAM,
    )
    newer, no_upcaster, invalid = await store.read_stream("up-2")
    with pytest.raises(InvalidEvent, match="newer than this code"):
        registry.decode(newer)
    with pytest.raises(InvalidEvent, match="no upcaster from it to 2"):
        registry.decode(no_upcaster)
    with pytest.raises(InvalidEvent, match="does not match its class"):
        registry.decode(invalid)


def _nested(depth: int, leaf: Any = 1) -> Any:
    """Dicts ``depth`` deep (``{}`` alone is depth 1), built without recursion."""
    value: Any = {"leaf": leaf}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def _nested_lists(depth: int) -> Any:
    """Lists ``depth`` deep, built without recursion."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            inner = item.values() if isinstance(item, dict) else item
            stack.extend((v, level + 1) for v in inner)
    return deepest


_DEEP = 100_000
_bad_events = [
    pytest.param(
        NewEvent(event_type="Big", data={"blob": "x" * LIMITS.max_payload_bytes}),
        "data is 10011 bytes, over max_payload_bytes=10000",
        id="payload-over-limit",
    ),
    pytest.param(
        NewEvent(event_type="Big", metadata={"blob": "x" * LIMITS.max_payload_bytes}),
        "metadata is 10011 bytes, over max_payload_bytes",
        id="metadata-over-limit",
    ),
    pytest.param(
        NewEvent(event_type="Deep", data={"v": _nested(LIMITS.max_depth)}),
        "data nests deeper than max_depth=16",
        id="depth-limit-plus-one",
    ),
    pytest.param(
        NewEvent(event_type="Deep", data=_nested(_DEEP)),
        "data nests deeper than max_depth=16",
        id="depth-100000-dicts",
    ),
    pytest.param(
        NewEvent(event_type="Deep", metadata={"l": _nested_lists(_DEEP)}),
        "metadata nests deeper than max_depth=16",
        id="metadata-depth-100000-lists",
    ),
    pytest.param(
        NewEvent(event_type="Set", data={"tags": {"a", "b"}}),
        "data is not JSON",
        id="set",
    ),
    pytest.param(NewEvent(event_type="Nan", data={"x": math.nan}), "data is not JSON", id="nan"),
    pytest.param(NewEvent(event_type="Inf", data={"x": [math.inf]}), "data is not JSON", id="inf"),
    pytest.param(NewEvent(event_type="Bytes", data={"x": b"raw"}), "data is not JSON", id="bytes"),
    pytest.param(
        NewEvent(event_type="Obj", metadata={"x": object()}),
        "metadata is not JSON",
        id="object-in-metadata",
    ),
    pytest.param(
        NewEvent(event_type="IntKey", data={"x": {1: "one"}}),
        "non-string key int",
        id="non-string-key",
    ),
    pytest.param(
        NewEvent(event_type="Nul", data={"x": "a\x00b"}), "NUL character", id="nul-in-value"
    ),
    pytest.param(NewEvent(event_type="Nul", data={"a\x00": 1}), "NUL character", id="nul-in-key"),
    pytest.param(
        NewEvent(event_type="Nul", metadata={"m": ["\x00"]}),
        "metadata holds a NUL character",
        id="nul-in-metadata",
    ),
    pytest.param(
        NewEvent(event_type="Surrogate", data={"x": "\ud800"}),
        "not valid UTF-8",
        id="lone-surrogate",
    ),
    pytest.param(
        NewEvent(event_type="Bad\nType"), "event type holds a control character", id="type"
    ),
]


@pytest.mark.parametrize(("bad", "message"), _bad_events)
async def test_bad_event_is_refused_and_nothing_is_written(
    store: EventStore, bad: NewEvent, message: str
) -> None:
    good = event(1)
    with pytest.raises(InvalidEvent) as caught:
        await store.append("bad-1", [good, bad], NO_STREAM)
    text = str(caught.value)
    assert message in text
    assert "'bad-1'" in text and repr(bad.event_type) in text
    async with store.transaction() as tx:
        await tx.append("bad-2", [event(2)], NO_STREAM)
        with pytest.raises(InvalidEvent):
            await tx.append("bad-1", [bad], NO_STREAM)
    got = await read_until(store, 1)
    assert [e.stream_id for e in got] == ["bad-2"]
    assert await store.read_stream("bad-1") == []


def test_depth_fixtures_are_what_they_claim() -> None:
    assert _depth(_nested(LIMITS.max_depth)) == LIMITS.max_depth
    assert _depth({"v": _nested(LIMITS.max_depth)}) == LIMITS.max_depth + 1
    assert _depth(_nested_lists(40)) == 40


async def test_payload_at_the_limits_is_accepted(store: EventStore) -> None:
    """The bounds are inclusive: exactly max_payload_bytes and max_depth are stored."""
    filler = LIMITS.max_payload_bytes - len('{"blob":""}')
    exact = NewEvent(event_type="Edge", data={"blob": "é" * (filler // 2) + "x" * (filler % 2)})
    deep = NewEvent(event_type="Edge", data=_nested(LIMITS.max_depth, leaf="\u2603 \\u0000"))
    await store.append("edge-1", [exact, deep], NO_STREAM)
    got = await read_until(store, 2)
    assert got[0].data == exact.data
    assert got[1].data == deep.data  # a backslash-u0000 text is not a NUL character


@pytest.mark.parametrize(
    "stream_id",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * (LIMITS.max_stream_id_length + 1), id="too-long"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\ud800", id="lone-surrogate"),
    ],
)
async def test_invalid_stream_id_is_refused(store: EventStore, stream_id: str) -> None:
    with pytest.raises(ConfigurationError, match="stream_id"):
        await store.append(stream_id, [event()], NO_STREAM)
    assert await read_all(store) == []


async def test_unicode_stream_id_at_the_length_limit_round_trips(store: EventStore) -> None:
    stream = "ordre-é-" + "雪" * (LIMITS.max_stream_id_length - 8)
    await store.append(stream, [event()], NO_STREAM)
    assert [e.stream_id for e in await store.read_stream(stream)] == [stream]


async def test_unknown_event_type_is_read_as_raw_event(store: EventStore) -> None:
    await store.append("raw-1", [NewEvent(event_type="FromTheFuture", data={"k": "v"})])
    (envelope,) = await read_until(store, 1)
    assert registry.decode(envelope) == RawEvent(event_type="FromTheFuture", data={"k": "v"})


async def test_wait_for_new_wakes_on_append(store: EventStore) -> None:
    await store.wait_for_new(0)  # the Postgres store starts listening here
    elapsed: list[float] = []

    async def waiter() -> None:
        started = monotonic()
        await store.wait_for_new(30)
        elapsed.append(monotonic() - started)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.3)
        await store.append("wake-1", [event()], NO_STREAM)
    assert 0.25 < elapsed[0] < 5.0


async def test_wait_for_new_returns_at_its_timeout_without_news(store: EventStore) -> None:
    started = monotonic()
    await store.wait_for_new(0.3)
    assert 0.25 < monotonic() - started < 5.0
