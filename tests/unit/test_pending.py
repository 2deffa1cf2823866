"""The lane's document cache after a flush: bounded, and it keeps what is being written."""

from __future__ import annotations

from core.fold import DocState, Pending
from core.position import Position


def pending_with(stored: int, written: int) -> Pending:
    pending = Pending(position=Position(1, 1))
    for i in range(stored):
        pending.docs[f"old-{i}"] = DocState(1, {"i": i})
    for i in range(written):
        pending.docs[f"new-{i}"] = DocState(2, {"i": i}, dirty=True)
        pending.dirty.add(f"new-{i}")
    return pending


def test_everything_is_kept_clean_while_under_the_bound() -> None:
    after = pending_with(stored=5, written=3).flushed(keep_documents=10)
    assert len(after.docs) == 8
    assert not any(state.dirty for state in after.docs.values())
    assert after.dirty == set() and after.events == 0


def test_past_the_bound_only_the_documents_just_written_are_kept() -> None:
    after = pending_with(stored=20, written=3).flushed(keep_documents=10)
    assert sorted(after.docs) == ["new-0", "new-1", "new-2"]
    assert not any(state.dirty for state in after.docs.values())


def test_the_newest_documents_just_written_are_kept_up_to_the_bound() -> None:
    after = pending_with(stored=0, written=12).flushed(keep_documents=10)
    assert sorted(after.docs) == sorted(f"new-{i}" for i in range(2, 12))
    assert not any(state.dirty for state in after.docs.values())


def test_a_bound_of_zero_keeps_nothing() -> None:
    assert pending_with(stored=3, written=3).flushed(keep_documents=0).docs == {}
