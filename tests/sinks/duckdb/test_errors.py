"""DuckDB's exceptions, raised by a real DuckDB, land in the core error tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core.errors import (
    AmbiguousCommit,
    ConfigurationError,
    PermanentError,
    StoreUnavailable,
    TransientError,
)
from sinks.duckdb.errors import lock_holder, translate_duckdb_error

pytestmark = pytest.mark.duckdb


def raised(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Error:
    with pytest.raises(duckdb.Error) as info:
        con.execute(sql)
    return info.value


def test_constraint_and_conversion_errors_are_permanent(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    try:
        con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY, n INTEGER)")
        con.execute("INSERT INTO t VALUES ('a', 1)")
        for sql in (
            "INSERT INTO t VALUES ('a', 2)",
            "INSERT INTO t VALUES ('b', 'x')",
            "SELECT nope FROM t",
        ):
            error = translate_duckdb_error(raised(con, sql), "writing", db_path)
            assert isinstance(error, PermanentError), sql
            assert not isinstance(error, TransientError)
            assert str(db_path) in str(error)
        commit = translate_duckdb_error(raised(con, "COMMIT"), "writing", db_path, in_commit=True)
        assert isinstance(commit, AmbiguousCommit)
    finally:
        con.close()


def test_a_lock_conflict_is_transient_and_names_the_holder(db_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
            "time.sleep(30)",
            str(db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(duckdb.IOException) as info:
            duckdb.connect(str(db_path), read_only=True)
        assert lock_holder(info.value) is not None
        error = translate_duckdb_error(info.value, "opening", db_path)
        assert isinstance(error, StoreUnavailable)
        assert f"pid {holder.pid}" in str(error)
        assert "analytics.current.duckdb" in str(error)
    finally:
        holder.kill()
        holder.communicate()


def test_a_file_that_is_not_a_duckdb_database_is_a_configuration_error(db_path: Path) -> None:
    """It is an IOException, but retrying cannot help: the lane must not retry forever."""
    db_path.write_text("not a database\n")
    with pytest.raises(duckdb.Error) as info:
        duckdb.connect(str(db_path))
    error = translate_duckdb_error(info.value, "opening", db_path)
    assert isinstance(error, ConfigurationError), error
    text = str(error)
    assert "duckdb.path" in text and str(db_path) in text and "does not exist yet" in text
