"""Positions in the event log.

A position is the pair ``(transaction_id, global_position)``: events are read in that order and
only behind the visibility fence, so a position handed out is never passed by a later commit.
It is never a bare integer and never an event id.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ("START", "Position")


class Position(NamedTuple):
    """A point in the log, ordered as a tuple: transaction id first, then global position."""

    transaction_id: int
    global_position: int

    def __str__(self) -> str:
        return f"{self.transaction_id}/{self.global_position}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``"<transaction_id>/<global_position>"`` as printed by :meth:`__str__`."""
        try:
            txid, _, gpos = text.partition("/")
            return cls(int(txid), int(gpos))
        except ValueError:
            raise ValueError(
                f"position {text!r} is not of the form <transaction_id>/<global_position>"
            ) from None


START = Position(0, 0)
"""Before the first event: a lane with no checkpoint reads after this."""
