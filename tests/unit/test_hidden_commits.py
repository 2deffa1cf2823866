"""PostgresEventStore's memory of notified commits: which commit a reader at a position has
not read yet, and since when (the recheck of decision 0002's amendment). No I/O: the NOTIFY
callback is called as the listener would."""

from __future__ import annotations

from typing import Any

from core.eventstore.postgres import PostgresEventStore
from core.position import Position


def _store() -> PostgresEventStore:
    pool: Any = None  # never used: nothing here reads or writes
    return PostgresEventStore(pool, "postgresql://unused", "unit", poll_interval=60)


def test_the_oldest_unread_commit_is_found_when_commits_arrive_out_of_id_order() -> None:
    """Transaction 98 took its id before 100 but committed after it. A reader at (99, *)
    has read nothing of 100 (and all of 98, which the fence let through before 99): 100 is
    the commit it waits for, since 100's arrival. Walking back by each commit's own id would
    stop at 98 and find nothing."""
    store = _store()
    store._notified(None, 1, "unit_events", "100")
    store._notified(None, 1, "unit_events", "98")
    first_arrival = store._commits[0][1]
    assert store._hidden_since(Position(99, 7)) == first_arrival
    assert store._hidden_since(Position(97, 1)) == first_arrival
    assert store._hidden_since(Position(100, 3)) is None


def test_the_newest_commits_are_the_ones_waited_for_once_the_older_are_read() -> None:
    store = _store()
    for txid in ("10", "11", "12"):
        store._notified(None, 1, "unit_events", txid)
    arrivals = [at for _, at in store._commits]
    assert store._hidden_since(Position(10, 1)) == arrivals[1]
    assert store._hidden_since(Position(11, 1)) == arrivals[2]
    assert store._hidden_since(Position(12, 1)) is None
    assert store.notifications == 3


def test_an_empty_payload_counts_as_a_wake_up_without_a_commit_to_wait_for() -> None:
    """A trigger from before the payload (an older runner migrated the schema)."""
    store = _store()
    store._notified(None, 1, "unit_events", "")
    assert store.notifications == 1
    assert store._hidden_since(Position(0, 0)) is None
