"""How Projectionist's asyncpg pools hand connections back.

asyncpg's pool sends a reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL``) with every release: a second round trip for each one-statement use. A log read,
a Postgres sink's flush and a status update are each one statement, so at the head of the log
the reset was half of the runner's round trips to Postgres. Measured per ``pool.fetchval``
on the 2-core machine: 134-177 against 278-376 us of wall time, 96-119 against 166-250 us of
client CPU. End to end (the benchmark's freshness at 200 and 500 events/s) the runner's CPU
share did not move beyond the machine's noise (0.49-0.56 against 0.48-0.53 of a core): the
gain is the server's work and the round trips, not a figure this machine resolves.

Contract of these pools: nothing leaves session state on a pooled connection. Settings are
made with ``SET LOCAL`` inside a transaction or as ``server_settings`` of the pool, advisory
locks are transaction-scoped (``pg_advisory_xact_lock``), LISTEN uses a connection of its own,
cursors live inside transactions. asyncpg still rolls back a transaction left open and drops
listener callbacks on release (``Connection._reset``, before this hook).
"""

from __future__ import annotations

import asyncpg

__all__ = ("keep_session",)


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pools' ``reset`` hook: no reset query (see the module's contract)."""
