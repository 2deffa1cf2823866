"""Writer storm against the real Postgres, with a reader tailing the log live all along.

16 writers, each transaction on its own connection (``store.transaction()``), with random
delays inside their transactions: plain appends with an expected version (some lose the race),
appends at ANY, multi-stream transactions, transactions that take their id early and append to
a busy stream late (they invert per-stream order in fence order), and aborted transactions.

At the end the set of events read equals the set committed (queried from the table), each read
exactly once, positions strictly increasing; per stream, arrivals in increasing version order
and inversions are counted (inversions are what the lanes' per-stream guard repairs).

Size: ``--storm-events N`` (default 5,000, well under a minute); above 20,000 the run is marked
slow (so it also needs ``--long``). The headline is printed even without ``-s``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from time import monotonic
from uuid import UUID

import anyio
import asyncpg
import pytest

from core.errors import ConcurrencyError, TransientError
from core.events import EventEnvelope, NewEvent
from core.eventstore import ANY
from core.eventstore.postgres import PostgresEventStore
from core.position import START
from tests.eventstore.support import PgStoreFactory

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

WRITERS = 16
DEFAULT_EVENTS = 5_000
SLOW_ABOVE = 20_000
SETTLE_SECONDS = 60.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``storm_size`` comes from ``--storm-events``; a large storm is slow and gets more time."""
    if "storm_size" not in metafunc.fixturenames:
        return
    size = metafunc.config.getoption("storm_events") or DEFAULT_EVENTS
    marks = [pytest.mark.timeout(max(600, size // 200))]
    if size > SLOW_ABOVE:
        marks.append(pytest.mark.slow)
    metafunc.parametrize("storm_size", [pytest.param(size, marks=marks, id=f"{size}-events")])


class Abort(Exception):
    """Raised inside a transaction to roll it back."""


@dataclass
class Tally:
    """What the writers did, from their own point of view."""

    target: int
    committed_events: int = 0
    committed_ids: set[UUID] = field(default_factory=set)
    discarded_ids: set[UUID] = field(default_factory=set)
    transactions: int = 0
    aborts: int = 0
    losers: int = 0
    multi_stream: int = 0
    early_id: int = 0
    transient: int = 0


@dataclass
class Arrivals:
    """What the reader saw, in order."""

    events: list[tuple[UUID, str, int]] = field(default_factory=list)
    regressions: int = 0
    pages: int = 0


class Writer:
    def __init__(
        self, store: PostgresEventStore, tally: Tally, streams: int, rng: random.Random
    ) -> None:
        self.store, self.tally, self.rng = store, tally, rng
        self.cold = [f"s-{i}" for i in range(streams)]
        self.hot = [f"z-hot-{i}" for i in range(8)]  # sort after the cold ones
        self.known: dict[str, int] = {}

    def _batch(self) -> list[NewEvent]:
        return [
            NewEvent(event_type="Stormed", data={"i": i, "pad": "x" * self.rng.randrange(40)})
            for i in range(self.rng.randint(1, 5))
        ]

    def _stream(self) -> str:
        return self.rng.choice(self.hot if self.rng.random() < 0.25 else self.cold)

    def _plan(self, kind: str) -> list[tuple[str, int | None]]:
        if kind == "expected":  # loses when another writer moved the stream since
            stream = self._stream()
            return [(stream, self.known.get(stream, ANY))]
        if kind in ("any", "abort"):
            return [(self._stream(), ANY)]
        if kind == "early":  # takes its id on a cold stream, appends to a hot one late
            return [(self.rng.choice(self.cold), ANY), (self.rng.choice(self.hot), ANY)]
        # multi: distinct streams in name order, so two of them never deadlock
        streams = sorted({self._stream() for _ in range(self.rng.randint(2, 3))})
        return [(s, self.known.get(s, ANY) if self.rng.random() < 0.5 else ANY) for s in streams]

    async def run(self) -> None:
        kinds = ["expected", "any", "multi", "early", "abort"]
        while self.tally.committed_events < self.tally.target:
            await self.transaction(self.rng.choices(kinds, weights=[40, 15, 20, 10, 15])[0])

    async def transaction(self, kind: str) -> None:
        tally = self.tally
        staged: list[list[NewEvent]] = []
        versions: list[tuple[str, int]] = []
        tally.transactions += 1
        try:
            async with self.store.transaction() as tx:
                for stream, expected in self._plan(kind):
                    staged.append(self._batch())
                    result = await tx.append(stream, staged[-1], expected)
                    versions.append((stream, result.next_expected_version))
                    pause = self.rng.uniform(0.005, 0.02) if kind == "early" else 0.002
                    await anyio.sleep(self.rng.uniform(0, pause))
                if kind == "abort":
                    raise Abort
        except (Abort, ConcurrencyError, TransientError) as exc:
            if isinstance(exc, Abort):
                tally.aborts += 1
            elif isinstance(exc, ConcurrencyError):
                tally.losers += 1
                self.known[exc.stream_id] = exc.actual
            else:
                tally.transient += 1
            tally.discarded_ids.update(e.event_id for batch in staged for e in batch)
            return
        tally.multi_stream += kind == "multi"
        tally.early_id += kind == "early"
        self.known.update(versions)
        for batch in staged:
            tally.committed_ids.update(e.event_id for e in batch)
            tally.committed_events += len(batch)


async def tail(store: PostgresEventStore, arrivals: Arrivals, stop: anyio.Event) -> None:
    """Read after the last position, through ``store.read`` only, until told to stop."""
    position = START
    while not stop.is_set():
        page: list[EventEnvelope] = await store.read(position, 1000)
        arrivals.pages += 1
        for envelope in page:
            if envelope.position <= position:
                arrivals.regressions += 1
            position = envelope.position
            arrivals.events.append((envelope.event_id, envelope.stream_id, envelope.stream_version))
        if len(page) < 1000:
            await store.wait_for_new(0.2)


def per_stream_order(arrivals: Arrivals) -> tuple[int, int, int]:
    """(arrivals in increasing version order, inversions, gaps the guard must fill)."""
    last: dict[str, int] = defaultdict(int)
    in_order = inversions = gaps = 0
    for _, stream, version in arrivals.events:
        if version > last[stream]:
            in_order += 1
            gaps += version > last[stream] + 1
            last[stream] = version
        else:
            inversions += 1
    return in_order, inversions, gaps


async def test_writer_storm(
    pg_store_factory: PgStoreFactory,
    pg_conn: asyncpg.Connection,
    namespace: str,
    storm_size: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = random.randrange(1 << 32)
    store = await pg_store_factory(pool_size=WRITERS + 4, poll_interval=0.2)
    tally, arrivals = Tally(target=storm_size), Arrivals()
    streams = max(32, storm_size // 40)
    writers = [Writer(store, tally, streams, random.Random(seed + i)) for i in range(WRITERS)]
    stop = anyio.Event()
    started = monotonic()

    async with anyio.create_task_group() as readers:
        readers.start_soon(tail, store, arrivals, stop)
        async with anyio.create_task_group() as tg:
            for writer in writers:
                tg.start_soon(writer.run)
        written = monotonic() - started
        rows = await pg_conn.fetch(
            f'SELECT event_id, stream_id, stream_version FROM "{namespace}".events'
        )
        committed = {r["event_id"] for r in rows}
        deadline = monotonic() + SETTLE_SECONDS
        while len({a[0] for a in arrivals.events}) < len(committed) and monotonic() < deadline:
            await anyio.sleep(0.05)
        await anyio.sleep(0.3)  # a late duplicate or stray event would show up here
        stop.set()

    read_ids = [a[0] for a in arrivals.events]
    lost = committed - set(read_ids)
    duplicates = len(read_ids) - len(set(read_ids))
    strays = set(read_ids) - committed
    in_order, inversions, gaps = per_stream_order(arrivals)
    versions: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        versions[r["stream_id"]].append(r["stream_version"])
    holes = sum(sorted(v) != list(range(1, len(v) + 1)) for v in versions.values())
    with capsys.disabled():
        print(
            f"\nstorm: events lost {len(lost)} of {len(committed)}; duplicates {duplicates}; "
            f"inversions {inversions}\n"
            f"storm: {WRITERS} writers, {tally.transactions} transactions ({tally.aborts} "
            f"aborted, {tally.losers} concurrency losers, {tally.multi_stream} multi-stream, "
            f"{tally.early_id} early-id, {tally.transient} transient); {len(versions)} streams; "
            f"per stream {in_order} in order, {inversions} inverted, {gaps} gaps for the guard; "
            f"{arrivals.pages} reads; written in {written:.1f}s, "
            f"total {monotonic() - started:.1f}s; seed {seed}"
        )
    assert not lost, f"{len(lost)} committed events never read"
    assert duplicates == 0 and not strays and arrivals.regressions == 0
    assert committed == tally.committed_ids, "the table differs from what writers committed"
    assert not committed & tally.discarded_ids, "aborted or losing events were stored"
    assert holes == 0, "a stream has a hole in its versions"
    assert len(committed) >= storm_size
    assert tally.aborts and tally.losers and tally.multi_stream and tally.early_id
