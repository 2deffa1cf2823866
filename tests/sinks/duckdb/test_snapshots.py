"""Snapshot publishing and the reader helper: the newest snapshots kept, the symlink on the
newest, leftovers of a killed publish removed, readers unaffected by deletion, publishing
deferred while a lane catches up; the factory."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from core.errors import ConfigurationError
from core.operations import Batch, PutDocument
from core.position import Position
from core.schema import DocumentSchema, Field, FieldType
from core.sink import Target
from sinks.duckdb import DuckDBSink, Layout, NoSnapshot, create_sink, current_snapshot, open_current
from tests.sinks.duckdb.conftest import SinkFactory

pytestmark = [pytest.mark.anyio, pytest.mark.duckdb]

SCHEMA = DocumentSchema(fields=(Field(name="n", type=FieldType.INTEGER),))
TARGET = Target("counts@duckdb", "counts", SCHEMA)


async def write(sink: DuckDBSink, n: int, *, catching_up: bool = False) -> None:
    """Version ``n`` of the one document, moving the checkpoint from 1/n-1 to 1/n."""
    batch = Batch(
        TARGET.lane,
        (PutDocument("a", n, {"n": n}),),
        Position(1, n - 1) if n > 1 else None,
        Position(1, n),
        catching_up=catching_up,
    )
    await sink.write(TARGET, batch)


def count_in(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT n FROM counts").fetchall()[0][0])


async def test_newest_snapshots_are_kept_and_old_readers_keep_reading(
    make_sink: SinkFactory, db_path: Path
) -> None:
    layout = Layout(db_path)
    sink = make_sink(keep_snapshots=2)
    await sink.prepare(TARGET)
    await write(sink, 1)
    old_reader = open_current(db_path)
    for n in range(2, 7):
        await write(sink, n)
    snapshots = layout.snapshots()
    assert len(snapshots) == 2
    assert current_snapshot(db_path) == snapshots[-1][1]
    assert stat.S_IMODE(snapshots[-1][1].stat().st_mode) == 0o444
    assert count_in(old_reader) == 1  # its file is deleted, it still reads it
    old_reader.close()
    fresh = open_current(db_path)
    assert count_in(fresh) == 6
    fresh.close()


async def test_leftovers_of_a_killed_publish_are_removed_on_open(
    make_sink: SinkFactory, db_path: Path
) -> None:
    layout = Layout(db_path)
    sink = make_sink()
    await sink.prepare(TARGET)
    await write(sink, 1)
    await sink.close()
    half = layout.snapshot(99).with_name(layout.snapshot(99).name + ".publishing")
    half.write_bytes(b"half a file")
    link = layout.current.with_name(layout.current.name + ".publishing")
    link.symlink_to(half.name)
    again = make_sink()
    await again.open()
    assert layout.leftovers() == []
    await write(again, 2)
    assert layout.snapshots()[-1][0] > 1


def published_count(db_path: Path) -> int:
    """The ``n`` of the snapshot dashboards open now."""
    con = open_current(db_path)
    try:
        return count_in(con)
    finally:
        con.close()


async def deferring(make_sink: SinkFactory) -> DuckDBSink:
    """A sink that defers catch-up publishing for an hour, with version 1 published."""
    sink = make_sink(catch_up_publish_seconds=3600)
    await sink.prepare(TARGET)
    await write(sink, 1)
    return sink


async def test_catching_up_publishes_once_per_interval_and_at_the_head(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = await deferring(make_sink)
    for n in range(2, 6):
        await write(sink, n, catching_up=True)
    assert published_count(db_path) == 1  # the four catch-up writes wait for the interval
    assert sink.publishing.unpublished_writes == 4
    assert (await sink.describe())["unpublished_writes"] == 4
    await write(sink, 6)  # the lane reached the head: published at once
    assert published_count(db_path) == 6
    assert sink.publishing.unpublished_writes == 0
    await write(sink, 7, catching_up=True)
    assert published_count(db_path) == 6
    await sink.finish_deferred(TARGET)  # the lane found that batch was its last before the head
    assert published_count(db_path) == 7
    published = sink.publishing.published
    await sink.finish_deferred(TARGET)  # nothing deferred: nothing to do
    assert sink.publishing.published == published


async def test_close_publishes_what_catching_up_deferred(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = await deferring(make_sink)
    await write(sink, 2, catching_up=True)
    assert published_count(db_path) == 1
    await sink.close()
    assert published_count(db_path) == 2


async def test_an_interval_of_zero_publishes_every_catch_up_write(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink(catch_up_publish_seconds=0)
    await sink.prepare(TARGET)
    for n in range(1, 4):
        await write(sink, n, catching_up=True)
        assert published_count(db_path) == n


async def test_reader_before_any_snapshot_says_what_to_do(db_path: Path) -> None:
    with pytest.raises(NoSnapshot, match=r"no snapshot .* is published yet"):
        open_current(db_path, timeout=0.05)


async def test_snapshots_can_be_turned_off(make_sink: SinkFactory, db_path: Path) -> None:
    sink = make_sink(publish_snapshots=False)
    await sink.prepare(TARGET)
    await write(sink, 1)
    assert Layout(db_path).snapshots() == []


def test_factory_takes_the_path_from_settings_or_options(tmp_path: Path) -> None:
    settings = SimpleNamespace(duckdb_path=tmp_path / "a.duckdb")
    sink = create_sink("analytics", settings, {"keep_snapshots": 5})
    assert sink.name == "analytics"
    assert sink.settings.keep_snapshots == 5
    assert sink.layout.working == tmp_path / "a.duckdb"
    other = create_sink("x", settings, {"path": str(tmp_path / "b.duckdb")})
    assert other.layout.working == tmp_path / "b.duckdb"
    with pytest.raises(ConfigurationError, match="PROJECTIONIST_DUCKDB_PATH"):
        create_sink("x", SimpleNamespace(duckdb_path=None), {})
    with pytest.raises(ConfigurationError, match="keep_snapshots"):
        create_sink("x", settings, {"keep_snapshots": 1})
    with pytest.raises(ConfigurationError, match="working file"):
        create_sink("x", settings, {"path": str(tmp_path / "a.current.duckdb")})
    with pytest.raises(ConfigurationError, match="memory"):
        create_sink("x", settings, {"path": ":memory:"})


def test_memory_limit_is_checked_when_read(tmp_path: Path) -> None:
    settings = SimpleNamespace(duckdb_path=tmp_path / "a.duckdb")
    assert create_sink("x", settings, {}).settings.memory_limit == "25MB"  # decision 0012
    for fine in ("2GB", "512 MiB", "10%", None):
        assert create_sink("x", settings, {"memory_limit": fine}).settings.memory_limit == fine
    for bad, why in [("100", "with its unit"), ("150%", "share"), ("8MB", "at least")]:
        with pytest.raises(ConfigurationError, match=f"duckdb.memory_limit.*{why}"):
            create_sink("x", settings, {"memory_limit": bad})
