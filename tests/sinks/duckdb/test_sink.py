"""The DuckDB sink's contract on a real file: round trips, the version guard, tombstones,
checkpoint compare-and-set with rollback, rejected documents, schema evolution, generations."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pyarrow as pa
import pytest

from core.errors import CheckpointConflict, ConfigurationError, DocumentRejected
from core.operations import Batch, DeleteDocument, PutDocument, UpsertRow
from core.position import Position
from core.schema import ChildTable, DocumentSchema, Field, FieldType
from core.sink import StoredDocument, Target
from sinks.duckdb import open_current
from sinks.duckdb.schema import table_set
from sinks.duckdb.sink import _registered
from tests.sinks.duckdb.conftest import SinkFactory
from tests.sinks.duckdb.support import checkpoint_of, dump

pytestmark = [pytest.mark.anyio, pytest.mark.duckdb]

T = FieldType
PARTS = ChildTable(
    name="parts",
    source="parts",
    fields=(Field(name="sku", type=T.KEYWORD, nullable=False), Field(name="qty", type=T.INTEGER)),
    key_fields=("sku",),
)
THINGS = DocumentSchema(
    fields=(
        Field(name="id", type=T.KEYWORD, nullable=False),
        Field(name="label", type=T.TEXT),
        Field(name="price", type=T.DECIMAL),
        Field(name="at", type=T.TIMESTAMP),
        Field(name="day", type=T.DATE),
        Field(name="n", type=T.INTEGER),
        Field(name="ok", type=T.BOOLEAN),
        Field(name="meta", type=T.JSON),
    ),
    children=(PARTS,),
)
LANE = "things@duckdb"


def target(schema: DocumentSchema = THINGS, generation: int = 1, **options: Any) -> Target:
    return Target(LANE, "things", schema, generation, options)


def thing(key: str, n: int, parts: int = 2) -> dict[str, Any]:
    return {
        "id": key,
        "label": f"Ding ü {n} ✓",
        "price": f"{n}.50",
        "at": "2025-03-01T10:00:00+00:00",
        "day": "2025-03-01",
        "n": n,
        "ok": n % 2 == 0,
        "meta": {"nested": [1, {"a": None}], "n": n},
        "parts": [{"sku": f"s{i}", "qty": i + n} for i in range(parts)],
        "extra": {"kept": "only in the document", "float": 0.1},
    }


def batch(ops: list[Any], expected: Position | None, to: Position) -> Batch:
    return Batch(LANE, tuple(ops), expected, to)


def rows(sink_path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = open_current(sink_path)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


async def test_round_trip_returns_equal_documents(make_sink: SinkFactory, db_path: Path) -> None:
    sink = make_sink()
    await sink.prepare(target())
    docs = {f"k{i}": thing(f"k{i}", i) for i in range(5)}
    ops = [PutDocument(k, 3, d) for k, d in docs.items()]
    await sink.write(target(), batch(ops, None, Position(10, 1)))
    loaded = await sink.load(target(), [*docs, "missing"])
    assert loaded == {k: StoredDocument(3, d) for k, d in docs.items()}
    assert await sink.read_checkpoint(target()) == Position(10, 1)
    assert rows(db_path, "SELECT id, price, n, ok, day::VARCHAR FROM things ORDER BY id")[0] == (
        "k0",
        Decimal("0.5"),
        0,
        True,
        "2025-03-01",
    )
    assert rows(db_path, "SELECT count(*), sum(qty) FROM parts") == [(10, 25)]


async def test_version_guard_and_tombstones(make_sink: SinkFactory, db_path: Path) -> None:
    sink = make_sink()
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("a", 2, thing("a", 2, parts=3))], None, Position(1, 1)))
    older = [PutDocument("a", 1, thing("a", 1, parts=1)), PutDocument("a", 2, thing("a", 9))]
    await sink.write(t, batch(older, Position(1, 1), Position(1, 2)))
    assert (await sink.load(t, ["a"]))["a"] == StoredDocument(2, thing("a", 2, parts=3))
    assert rows(db_path, "SELECT count(*) FROM parts") == [(3,)]
    await sink.write(t, batch([DeleteDocument("a", 3)], Position(1, 2), Position(1, 3)))
    assert (await sink.load(t, ["a"]))["a"] == StoredDocument(3, None)
    assert rows(db_path, "SELECT count(*) FROM things") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM parts") == [(0,)]
    assert rows(db_path, "SELECT key, version, deleted FROM things_g1") == [("a", 3, True)]
    late = [PutDocument("a", 3, thing("a", 3)), DeleteDocument("a", 2)]
    await sink.write(t, batch(late, Position(1, 3), Position(1, 4)))
    assert (await sink.load(t, ["a"]))["a"] == StoredDocument(3, None)
    await sink.write(t, batch([PutDocument("a", 4, thing("a", 4))], Position(1, 4), Position(1, 5)))
    assert (await sink.load(t, ["a"]))["a"] == StoredDocument(4, thing("a", 4))
    assert rows(db_path, "SELECT count(*) FROM parts") == [(2,)]
    assert rows(db_path, "SELECT count(*) FROM things_g1") == [(1,)]  # one row per key


async def test_tables_made_with_a_primary_key_take_the_same_writes(
    make_sink: SinkFactory, db_path: Path
) -> None:
    """Files made before the key lost its index (``key VARCHAR PRIMARY KEY``) keep it; the
    delete-then-insert flush must work on them too, replacing a key in one transaction."""
    sink = make_sink()
    t = target()
    await sink.prepare(t)
    await sink.close()
    with duckdb.connect(str(db_path)) as con:
        con.execute("DROP TABLE things_g1")
        ddl = table_set(t).ddl()[0]
        con.execute(ddl.replace("key VARCHAR NOT NULL", "key VARCHAR PRIMARY KEY"))
        indexed = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'things_g1' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
        assert indexed == [(1,)]
    again = make_sink()
    await again.prepare(t)
    ops = [PutDocument(k, 1, thing(k, 1)) for k in ("a", "b")]
    await again.write(t, batch(ops, None, Position(1, 1)))
    ops = [PutDocument("a", 2, thing("a", 2)), PutDocument("c", 1, thing("c", 1))]
    await again.write(t, batch(ops, Position(1, 1), Position(1, 2)))
    assert await again.load(t, ["a", "b", "c"]) == {
        "a": StoredDocument(2, thing("a", 2)),
        "b": StoredDocument(1, thing("b", 1)),
        "c": StoredDocument(1, thing("c", 1)),
    }
    assert rows(db_path, "SELECT count(*) FROM things_g1") == [(3,)]


@pytest.mark.parametrize(
    ("given", "shown", "load_over"), [(None, "23.8 MiB", 1), ("64MB", "61.0 MiB", 0)]
)
async def test_a_call_too_big_for_memory_limit_runs_without_it_once(
    make_sink: SinkFactory,
    caplog: pytest.LogCaptureFixture,
    given: str | None,
    shown: str,
    load_over: int,
) -> None:
    """An out-of-memory error would come back at every retry of the same batch; the sink
    runs that one flush (or load) under DuckDB's own limit, says so, and restores the
    configured one (the default, 25MB, and a limit given). Reading a 20 MiB document back
    needs a 32 MiB allocation: over the default, within 64MB."""
    sink = make_sink() if given is None else make_sink(memory_limit=given)
    limit_name = given or "25MB"
    t = target()
    await sink.prepare(t)
    big = {**thing("big", 1), "label": "x" * (20 * 1024 * 1024)}
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        await sink.write(t, batch([PutDocument("big", 1, big)], None, Position(1, 1)))
    assert f"lane things@duckdb's flush up to 1/1 needs more than memory_limit={limit_name}" in (
        caplog.text
    )
    assert "snapshot not published" not in caplog.text
    assert (await sink.describe())["calls_over_memory_limit"] == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        assert (await sink.load(t, ["big"]))["big"] == StoredDocument(1, big)
    assert ("loading 1 documents from things_g1 needs more" in caplog.text) == bool(load_over)
    assert (await sink.describe())["calls_over_memory_limit"] == 1 + load_over
    con = sink._connection()
    limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit == shown  # the configured limit again
    await sink.write(t, batch([PutDocument("a", 1, thing("a", 1))], Position(1, 1), Position(1, 2)))
    assert (await sink.describe())["calls_over_memory_limit"] == 1 + load_over
    assert sink.counters()["calls_over_memory_limit"][0] == 1 + load_over  # a metric too


async def test_a_snapshot_checkpoint_too_big_for_memory_limit_runs_without_it_once(
    make_sink: SinkFactory, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under 16MB a 20 MiB document fails the snapshot's CHECKPOINT as well as the flush
    (DuckDB cannot pin a block larger than the limit); both run once without the limit, so
    the snapshot is published and readers see the document."""
    sink = make_sink(memory_limit="16MB")
    t = target()
    await sink.prepare(t)
    big = {**thing("big", 1), "label": "x" * (20 * 1024 * 1024)}
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        await sink.write(t, batch([PutDocument("big", 1, big)], None, Position(1, 1)))
    assert "publishing a snapshot needs more than memory_limit=16MB" in caplog.text
    assert "snapshot not published" not in caplog.text
    facts = await sink.describe()
    assert facts["calls_over_memory_limit"] == 2
    assert facts["unpublished_writes"] == 0
    assert rows(db_path, "SELECT length(label) FROM things") == [(20 * 1024 * 1024,)]
    await sink.write(t, batch([PutDocument("a", 1, thing("a", 1))], Position(1, 1), Position(1, 2)))
    assert rows(db_path, "SELECT count(*) FROM things") == [(2,)]
    # its checkpoint rewrites the big document's row group: over the limit again, and published
    assert (await sink.describe())["calls_over_memory_limit"] == 3
    con = sink._connection()
    assert con.execute("SELECT current_setting('memory_limit')").fetchall() == [("15.2 MiB",)]


async def test_a_commit_too_big_for_memory_limit_is_retried_without_it_and_loses_nothing(
    make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With a block larger than the limit in the file, ``COMMIT`` can fail for memory (its
    autocheckpoint once the WAL passes DuckDB's threshold): DuckDB rolls the transaction
    back, and the same batch would fail at every retry. The sink runs it once without the
    limit, so every write lands. Snapshots off after the first write, so nothing but the
    commits checkpoints (as while a lane catches up between publishes)."""
    first = make_sink(memory_limit="16MB")  # publishes, so the big document is checkpointed
    t = target()
    await first.prepare(t)
    big = {**thing("big", 1), "label": "x" * (20 * 1024 * 1024)}
    await first.write(t, batch([PutDocument("big", 1, big)], None, Position(1, 1)))
    await first.close()
    sink = make_sink(memory_limit="16MB", publish_snapshots=False)
    caplog.clear()
    done = Position(1, 1)
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        for n in range(2, 22):  # 1 MiB a write: the WAL passes 16 MiB
            docs = [
                PutDocument(f"m{n}-{i}", 1, {**thing(f"m{n}-{i}", 1), "label": "y" * 65_536})
                for i in range(16)
            ]
            await sink.write(t, batch(docs, done, Position(1, n)))
            done = Position(1, n)
    assert "needs more than memory_limit=16MB (TransactionContext Error: Failed to commit" in (
        caplog.text
    )
    assert await sink.read_checkpoint(t) == done
    keys = ["big"] + [f"m{n}-{i}" for n in range(2, 22) for i in range(16)]
    stored = await sink.load(t, keys)
    assert len(stored) == len(keys)
    assert stored["big"] == StoredDocument(1, big)


class _DurableButFatalCommit:
    """The working connection, but its next ``COMMIT`` commits and then raises DuckDB's fatal
    error for a failed autocheckpoint (seen with a raw connection: checkpoint_threshold 1MB,
    a 20 MiB block, 16MB; the sink's own workload fails earlier, with a rolled-back commit)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def execute(self, sql: str, *args: Any) -> Any:
        out = self.con.execute(sql, *args)
        if sql == "COMMIT":
            raise duckdb.FatalException(
                "FATAL Error: Transaction COMMIT succeeded and is durable, but the "
                "autocheckpoint failed. Reopen the database instance to recover. Failed to "
                "create checkpoint because of error: failed to pin block of size 20.0 MiB"
            )
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


async def test_a_commit_durable_before_a_fatal_autocheckpoint_counts_as_written(
    make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """That fatal error comes after the data is durable: writing the batch again would find
    its own checkpoint and stop the lane with a conflict. The sink takes the write as done,
    counts it, drops the invalidated connection, and the next call reopens the file."""
    sink = make_sink(memory_limit="16MB", publish_snapshots=False)
    t = target()
    await sink.prepare(t)
    sink._con = _DurableButFatalCommit(sink._connection())  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        await sink.write(t, batch([PutDocument("a", 1, thing("a", 1))], None, Position(1, 1)))
    assert "lane things@duckdb's autocheckpoint after COMMIT needs more than" in caplog.text
    assert sink._con is None  # dropped: DuckDB invalidated it
    assert (await sink.describe())["calls_over_memory_limit"] == 1
    assert await sink.read_checkpoint(t) == Position(1, 1)
    assert (await sink.load(t, ["a"]))["a"] == StoredDocument(1, thing("a", 1))


async def test_a_wal_too_big_for_memory_limit_is_replayed_without_it_once(
    make_sink: SinkFactory, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash after a large document was written without the limit, before its checkpoint,
    leaves a WAL whose replay needs more than the limit: opening the file under it fails
    every time, which would stall the lane for good. The sink opens it once without the
    limit, then sets the limit."""
    sink = make_sink(memory_limit="16MB")
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("a", 1, thing("a", 1))], None, Position(1, 1)))
    await sink.close()
    working = sink.layout.working
    crashed = duckdb.connect(str(working), config={"checkpoint_threshold": "1GB"})
    crashed.execute("PRAGMA disable_checkpoint_on_shutdown")
    crashed.execute("CREATE TABLE big AS SELECT repeat('x', 20 * 1024 * 1024) AS label")
    crashed.close()
    assert sink.layout.wal.stat().st_size > 20 * 1024 * 1024  # the crash left it unreplayed
    with pytest.raises(duckdb.OutOfMemoryException, match="replaying WAL"):
        duckdb.connect(str(working), config={"memory_limit": "16MB"})
    reopened = make_sink(memory_limit="16MB")
    with caplog.at_level("WARNING", logger="projectionist.sink.duckdb"):
        assert (await reopened.read_checkpoint(t)) == Position(1, 1)
    assert "opening the working file (replaying its WAL) needs more than" in caplog.text
    assert (await reopened.describe())["calls_over_memory_limit"] == 1
    con = reopened._connection()
    assert con.execute("SELECT current_setting('memory_limit')").fetchall() == [("15.2 MiB",)]


async def test_the_cache_is_bounded_by_default_and_can_be_given_back(
    make_sink: SinkFactory,
) -> None:
    """Decision 0012: without a limit DuckDB caches the tables up to 80% of the RAM, and the
    runner grows with the history; the sink sets 25MB unless told otherwise."""
    sink = make_sink()
    await sink.prepare(target())
    setting = "SELECT current_setting('memory_limit')"
    assert sink._connection().execute(setting).fetchall() == [("23.8 MiB",)]  # 25MB
    assert (await sink.describe())["memory_limit"] == "25MB"
    await sink.close()
    unbounded = make_sink(memory_limit="80%")
    await unbounded.prepare(target())
    found = unbounded._connection().execute(setting).fetchall()[0][0]
    assert found.endswith("GiB") or float(found.split()[0]) > 23.8, found


def test_a_failed_statement_is_reported_not_the_aborted_transaction() -> None:
    """After a statement fails inside a transaction, DuckDB also refuses to unregister the
    Arrow table ("Current transaction is aborted"); the flush must report the first error."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.ConstraintException), _registered(con, "x", pa.table({"k": [1, 1]})):
        con.execute("INSERT INTO t SELECT k FROM x")
    con.execute("ROLLBACK")
    with _registered(con, "x", pa.table({"k": [2]})):
        con.execute("INSERT INTO t SELECT k FROM x")
    assert con.execute("SELECT k FROM t").fetchall() == [(2,)]
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM x")  # unregistered after the block


async def test_duplicate_keys_in_one_batch_keep_the_newest(make_sink: SinkFactory) -> None:
    sink = make_sink()
    await sink.prepare(target())
    ops = [PutDocument("a", 5, thing("a", 5)), PutDocument("a", 7, thing("a", 7))]
    ops.append(PutDocument("a", 6, thing("a", 6)))
    await sink.write(target(), batch(ops, None, Position(1, 1)))
    assert (await sink.load(target(), ["a"]))["a"] == StoredDocument(7, thing("a", 7))


async def test_checkpoint_conflict_rolls_back_the_data(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink()
    t = target()
    await sink.prepare(t)
    await sink.write(t, batch([PutDocument("a", 1, thing("a", 1))], None, Position(5, 5)))
    stray = [PutDocument("a", 2, thing("a", 2)), PutDocument("b", 1, thing("b", 1))]
    with pytest.raises(CheckpointConflict, match="5/5"):
        await sink.write(t, batch(stray, Position(4, 4), Position(6, 6)))
    with pytest.raises(CheckpointConflict):
        await sink.write(t, batch(stray, None, Position(6, 6)))
    assert await sink.read_checkpoint(t) == Position(5, 5)
    assert await sink.load(t, ["a", "b"]) == {"a": StoredDocument(1, thing("a", 1))}
    assert rows(db_path, "SELECT count(*) FROM parts") == [(2,)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": "1.0000000001"}, "price"),
        ({"price": "abc"}, "price"),
        ({"id": None}, "id"),
        ({"at": "yesterday"}, "at"),
        ({"n": 1 << 64}, "n"),
        ({"ok": "yes"}, "ok"),
        ({"parts": [{"sku": "x"}, {"sku": "x"}]}, "same sku"),
        ({"parts": [{"qty": 1}]}, r"parts\[0\]: field 'sku'"),
        ({"parts": [{"sku": "y", "qty": 1.5}]}, "qty"),
        ({"meta": {1, 2}}, "not JSON"),
        ({"parts": [{"sku": ["x"], "qty": 1}]}, "key field"),
        ({"price": "1_000"}, "price"),
        ({"n": "1_000"}, "'n'"),
    ],
)
async def test_rejected_document_names_key_and_field_and_rolls_back(
    make_sink: SinkFactory, change: dict[str, Any], field: str
) -> None:
    sink = make_sink(chunk_rows=2)
    t = target()
    await sink.prepare(t)
    good = [PutDocument(f"g{i}", 1, thing(f"g{i}", i)) for i in range(5)]
    bad = PutDocument("bad", 1, {**thing("bad", 1), **change})
    with pytest.raises(DocumentRejected, match=f"'bad'.*{field}"):
        await sink.write(t, batch([*good, bad], None, Position(1, 1)))
    assert await sink.read_checkpoint(t) is None
    assert await sink.load(t, ["g0", "g4", "bad"]) == {}


async def test_row_operations_are_refused(make_sink: SinkFactory) -> None:
    sink = make_sink()
    await sink.prepare(target())
    op = UpsertRow("t", ("k",), 1, {"a": 1})
    with pytest.raises(ConfigurationError, match="row projections"):
        await sink.write(target(), batch([op], None, Position(1, 1)))


async def test_reserved_and_colliding_names_are_refused(make_sink: SinkFactory) -> None:
    sink = make_sink()
    reserved = DocumentSchema(fields=(Field(name="version", type=T.INTEGER),))
    with pytest.raises(ConfigurationError, match="version"):
        await sink.prepare(target(reserved))
    child = ChildTable(name="c", source="c", fields=(Field(name="id", type=T.TEXT),), key_fields=())
    with pytest.raises(ConfigurationError, match="parent key"):
        await sink.prepare(target(DocumentSchema(fields=THINGS.fields, children=(child,))))


async def test_two_projections_cannot_share_a_child_table(
    make_sink: SinkFactory, db_path: Path
) -> None:
    """A second projection declaring the same child name (a subclass inheriting the schema)
    wrote into the first one's child table: each flush deleted the other's rows of the same
    parent key, and a reset of either emptied both."""
    sink = make_sink()
    await sink.prepare(target())
    await sink.write(target(), batch([PutDocument("t1", 2, thing("t1", 2))], None, Position(5, 1)))
    other = Target("others@duckdb", "others", THINGS, 1, {})
    with pytest.raises(ConfigurationError, match=r"parts .*belong to projection 'things'"):
        await sink.prepare(other)
    own_child = DocumentSchema(
        fields=THINGS.fields, children=(PARTS.model_copy(update={"name": "other_parts"}),)
    )
    await sink.prepare(Target("others@duckdb", "others", own_child, 1, {}))
    assert rows(db_path, "SELECT count(*) FROM parts") == [(2,)]
    clash = Target("x@duckdb", "parts", DocumentSchema(fields=THINGS.fields), 1, {})
    with pytest.raises(ConfigurationError, match="belong to projection 'things'"):
        await sink.prepare(clash)  # a projection named like another's child


async def test_additive_schema_change_is_applied_and_others_refused(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink()
    small = DocumentSchema(fields=THINGS.fields[:3], children=(PARTS,))
    await sink.prepare(target(small))
    await sink.write(
        target(small), batch([PutDocument("a", 1, thing("a", 1))], None, Position(1, 1))
    )
    await sink.prepare(target())
    assert rows(db_path, "SELECT id, n FROM things") == [("a", None)]
    await sink.write(
        target(), batch([PutDocument("a", 2, thing("a", 2))], Position(1, 1), Position(1, 2))
    )
    assert rows(db_path, 'SELECT id, n, "at" FROM things')[0][:2] == ("a", 2)
    retyped = DocumentSchema(
        fields=(*THINGS.fields[:-1], Field(name="meta", type=T.TEXT)), children=(PARTS,)
    )
    with pytest.raises(ConfigurationError, match=r"meta.*generation"):
        await sink.prepare(target(retyped))
    with pytest.raises(ConfigurationError, match="removed field"):
        await sink.prepare(target(small))


async def test_generations_are_separate_and_promote_swaps_the_views(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink()
    g1, g2 = target(generation=1), target(generation=2)
    await sink.prepare(g1)
    await sink.write(g1, batch([PutDocument("old", 1, thing("old", 1))], None, Position(1, 1)))
    await sink.prepare(g2)
    with pytest.raises(ConfigurationError, match="has not written generation 2"):
        await sink.promote(g2)
    await sink.write(g2, batch([PutDocument("new", 1, thing("new", 1))], None, Position(0, 9)))
    with pytest.raises(ConfigurationError, match="behind the live generation 1 at 1/1"):
        await sink.promote(g2)
    await sink.write(g2, batch([], Position(0, 9), Position(2, 2)))
    assert rows(db_path, "SELECT id FROM things") == [("old",)]
    assert await sink.read_checkpoint(g1) == Position(1, 1)
    assert await sink.read_checkpoint(g2) == Position(2, 2)
    await sink.promote(g2)
    assert rows(db_path, "SELECT id FROM things") == [("new",)]
    assert rows(db_path, "SELECT DISTINCT id FROM parts") == [("new",)]
    await sink.prepare(g1)  # an old runner preparing gen 1 does not swap the views back
    assert rows(db_path, "SELECT id FROM things") == [("new",)]


async def test_reset_clears_data_and_checkpoint(make_sink: SinkFactory, db_path: Path) -> None:
    sink = make_sink()
    await sink.prepare(target())
    await sink.write(target(), batch([PutDocument("a", 1, thing("a", 1))], None, Position(1, 1)))
    await sink.reset(target())
    assert await sink.read_checkpoint(target()) is None
    assert await sink.load(target(), ["a"]) == {}
    assert rows(db_path, "SELECT count(*) FROM parts") == [(0,)]


async def test_big_batch_in_chunks_is_one_transaction_and_keeps_the_loop_free(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink(chunk_rows=1_000)
    await sink.prepare(target())
    ops = [PutDocument(f"k{i:05d}", 1, thing(f"k{i:05d}", i, parts=3)) for i in range(20_000)]
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        started = time.monotonic()
        await sink.write(target(), batch(ops, None, Position(1, 1)))
        took = time.monotonic() - started
        done.set()
    assert rows(db_path, "SELECT count(*), sum(n) FROM things") == [(20_000, sum(range(20_000)))]
    assert rows(db_path, "SELECT count(*) FROM parts") == [(60_000,)]
    assert len(gaps) > 10, f"the event loop did not run during a {took:.2f}s write"
    assert max(gaps) < max(0.5, took / 4), (max(gaps), took)
    bad = [*ops[:5_000], PutDocument("zz", 2, {**thing("zz", 1), "n": "x"})]
    with pytest.raises(DocumentRejected):
        await sink.write(target(), batch(bad, Position(1, 1), Position(1, 2)))
    assert await sink.read_checkpoint(target()) == Position(1, 1)


async def test_views_option_installs_extra_views(make_sink: SinkFactory, db_path: Path) -> None:
    sink = make_sink()
    t = target(views={"big_things": "SELECT id FROM things WHERE n > 2"})
    await sink.prepare(t)
    ops = [PutDocument(f"k{i}", 1, thing(f"k{i}", i)) for i in range(5)]
    await sink.write(t, batch(ops, None, Position(1, 1)))
    assert rows(db_path, "SELECT id FROM big_things ORDER BY id") == [("k3",), ("k4",)]
    broken = target(views={"broken": "SELECT nope FROM nowhere"})
    with pytest.raises(ConfigurationError, match=r"views\.broken"):
        await sink.prepare(broken)


async def test_working_file_after_close_matches_the_snapshot(
    make_sink: SinkFactory, db_path: Path
) -> None:
    sink = make_sink()
    await sink.prepare(target())
    ops = [PutDocument(f"k{i}", 1, thing(f"k{i}", i)) for i in range(50)]
    await sink.write(target(), batch(ops, None, Position(3, 3)))
    snapshot = open_current(db_path)
    published = dump(snapshot, "things_g1", "parts_g1", "projectionist_checkpoints")
    snapshot.close()
    await sink.close()
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert dump(con, "things_g1", "parts_g1", "projectionist_checkpoints") == published
        assert checkpoint_of(con, LANE) == Position(3, 3)
    finally:
        con.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [({"view": {}}, "lane option is: views"), ({"views": ["x"]}, "mapping of view name")],
)
async def test_bad_lane_options_are_refused_at_start(
    make_sink: SinkFactory, options: dict[str, Any], match: str
) -> None:
    """Refused before any lane starts (``check_target``), not when the lane prepares."""
    with pytest.raises(ConfigurationError, match=match):
        make_sink().check_target(target(**options))
    with pytest.raises(ConfigurationError, match="version"):
        make_sink().check_target(
            target(DocumentSchema(fields=(Field(name="version", type=T.INTEGER),)))
        )


def test_a_timestamp_before_the_year_1_in_utc_is_refused_on_the_slow_path() -> None:
    """A column with a value without an offset takes the per-value path, where converting
    ``0001-01-01T00:00:00+01:00`` to UTC raised a raw OverflowError (the lane crashed)."""
    from sinks.duckdb.encode import _Refused, _timestamp

    with pytest.raises(_Refused, match="out of the timestamp range"):
        _timestamp("0001-01-01T00:00:00+01:00")
