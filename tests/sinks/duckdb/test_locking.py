"""One runner per working file: a second one fails fast naming the first; a foreign process
holding the file is a transient error the lane rides out; the lock dies with its process."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from core.errors import ProjectionistError, StoreUnavailable
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.sink import Target
from core.strategy import Strategy
from projections.orders import OrderAnalytics
from sinks.duckdb import DuckDBSink, FileInUse
from tests.sinks.duckdb.conftest import SinkFactory
from tests.sinks.duckdb.support import append_history
from tests.support.orders import Catalog, order_history

pytestmark = [pytest.mark.anyio, pytest.mark.duckdb]

ROOT = Path(__file__).resolve().parents[3]

SECOND_RUNNER = """
import sys, time, anyio
from pathlib import Path
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings, FileInUse
sink = DuckDBSink(DuckDBSinkSettings(path=Path(sys.argv[1])))
started = time.monotonic()
try:
    anyio.run(sink.open)
except FileInUse as exc:
    print(f"{time.monotonic() - started:.3f}")
    print(exc)
    sys.exit(3)
"""

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def analytics_lane(
    sink: DuckDBSink, store: InMemoryEventStore, catalog: Catalog, strategy: Strategy
) -> Lane:
    return Lane(
        OrderAnalytics(),
        sink,
        store,
        lookups=StaticLookups(catalog.lookups()),
        strategy=strategy,
    )


async def test_second_runner_process_fails_fast_naming_the_first(
    make_sink: SinkFactory, db_path: Path
) -> None:
    first = make_sink()
    await first.open()
    proc = python(SECOND_RUNNER, str(db_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    took, message = out.split("\n", 1)
    assert float(took) < 0.5
    assert f"pid {os.getpid()}" in message
    assert str(db_path) in message
    assert "another runner holds this file" in message


async def test_second_sink_in_the_same_process_fails_and_the_lock_is_released_on_close(
    make_sink: SinkFactory,
) -> None:
    first = make_sink()
    await first.open()
    with pytest.raises(FileInUse, match=f"pid {os.getpid()}"):
        await make_sink().open()
    await first.close()
    again = make_sink()
    await again.open()
    assert (await again.describe())["current_snapshot"] is not None


async def test_foreign_process_on_the_working_file_is_transient_and_ridden_out(
    make_sink: SinkFactory, db_path: Path, catalog: Catalog
) -> None:
    holder = python(HOLDER, str(db_path), "1.5")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        sink = make_sink()
        with pytest.raises(StoreUnavailable, match=rf"open in another process.*pid {holder.pid}"):
            await sink.open()
        store = InMemoryEventStore()
        await append_history(store, order_history(30, catalog))
        lane = analytics_lane(sink, store, catalog, Strategy.batch(3600))
        started = time.monotonic()
        with anyio.fail_after(30):
            await lane.run(until_caught_up=True)
        assert lane.stats.retries >= 1
        assert time.monotonic() - started >= 0.5
        assert lane.checkpoint == await store.head()
    finally:
        holder.kill()
        holder.communicate()


async def test_a_runner_losing_the_race_names_a_holder_still_writing_its_line(
    make_sink: SinkFactory, db_path: Path
) -> None:
    """The holder writes its line just after it takes the lock: one that loses the race
    between the two still names it (it said "a process starting up" once in CI, where
    test_second_runner starts two runners at the same moment)."""
    fd = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    late = threading.Timer(0.3, os.pwrite, (fd, b"pid 4242 on host-a since now\n", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock taken, its line not written
        late.start()
        with pytest.raises(FileInUse, match="pid 4242 on host-a"):
            await make_sink().open()
    finally:
        late.cancel()
        late.join()
        os.close(fd)


async def test_an_observer_reads_the_published_checkpoint_beside_the_runner(
    make_sink: SinkFactory, catalog: Catalog
) -> None:
    """``projectionist status`` opens sinks with ``open_observer``: for DuckDB that reads the
    checkpoint from the published snapshot, beside the runner that holds the working file."""
    observer = make_sink()
    await observer.open_observer()
    target = Target("order_analytics@duckdb", "order_analytics", schema=OrderAnalytics.schema)
    assert await observer.read_checkpoint(target) is None  # nothing published yet
    assert (await observer.describe())["current_snapshot"] is None

    writer = make_sink()
    store = InMemoryEventStore()
    await append_history(store, order_history(30, catalog))
    lane = analytics_lane(writer, store, catalog, Strategy.immediate(max_batch=50))
    with anyio.fail_after(30):
        await lane.run(until_caught_up=True)
    head = await store.head()
    assert lane.checkpoint == head
    # The writer still holds the file; the observer neither waits for it nor takes it.
    assert await observer.read_checkpoint(lane.target) == head
    facts = await observer.describe()
    assert facts["current_snapshot"] == (await writer.describe())["current_snapshot"]
    assert 0 <= facts["snapshot_age_seconds"] < 60
    with pytest.raises(ProjectionistError, match="opened to observe"):
        await observer.load(lane.target, ["order-1"])
    await observer.close()
    with pytest.raises(FileInUse):
        await make_sink().open()  # the writer's lock is untouched by the observer's close


async def test_a_failed_write_of_the_lock_file_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while writing who holds the lock: the locked descriptor leaked, and the
    retry's own new descriptor conflicted with it, refusing this very process as "another
    runner" (a permanent error)."""
    import errno

    import sinks.duckdb.sink as module
    from sinks.duckdb import DuckDBSinkSettings

    real = os.pwrite
    calls: list[int] = []

    def full_once(fd: int, data: bytes, offset: int) -> int:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(module.os, "pwrite", full_once)
    sink = DuckDBSink(DuckDBSinkSettings(path=tmp_path / "a.duckdb"))
    with pytest.raises(StoreUnavailable, match="No space left"):
        await sink.open()
    await sink.open()  # the retry takes the lock
    await sink.close()
