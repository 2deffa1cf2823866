"""Runs the lanes of one configuration in several processes: ``projectionist run --processes N``.

A runner process folds on one core (Python's interpreter lock), so on a machine with more
cores the lanes finish sooner spread over processes. The supervisor:

* splits the lanes into at most N groups (:func:`partition`). A sink whose factory carries
  ``one_process = True`` keeps all of its lanes in one group (a DuckDB file admits one
  writing process); every other lane goes to the group with the fewest lanes so far, largest
  units first, in configuration order;
* starts one ordinary runner per group (``python -m core run --lane ...``). Each has its own
  owner in ``lane_status``, opens only its lanes' sinks and, when ``metrics_port`` is set,
  serves metrics on ``metrics_port + i`` (``i`` from 0);
* forwards the first SIGTERM or SIGINT to every runner as SIGTERM (each finishes its
  in-flight writes) and a second one as SIGKILL. The runners live in their own session, so
  a terminal's Ctrl-C reaches the supervisor only, and the kernel sends them SIGTERM if the
  supervisor dies (``PR_SET_PDEATHSIG``), so no orphan keeps a lane or a DuckDB file;
* when a runner exits without being asked to:

  - with 0 or 1 (it caught up, or every lane of it halted): the others go on, as the lanes
    of one process go on when one halts;
  - otherwise (killed, crashed, a bad configuration, a service unreachable at start): it
    stops the others and exits with that runner's code, so the process manager restarts the
    whole; every lane resumes from its checkpoint.

Exit code: the worst of the runners' (a runner killed by a signal counts as 1), or the
failing runner's. Lanes in different processes share neither the log window nor the decode
nor the fold (decision 0007): each process reads the log itself, and each imports the
clients of its own sinks only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

from core.errors import ConfigurationError
from core.settings import LaneSettings, Settings, import_object

__all__ = ("Child", "partition", "runner_command", "supervise")

log = logging.getLogger("projectionist.supervisor")

STOP_GRACE_SECONDS = 60.0
"""How long runners stopped because another failed may finish their writes before SIGKILL."""
POLL_SECONDS = 0.1

_PR_SET_PDEATHSIG = 1


def partition(
    lanes: Mapping[str, LaneSettings], settings: Settings, processes: int
) -> list[list[str]]:
    """``lanes`` (name -> settings, in configuration order) split into at most ``processes``
    non-empty groups, each in configuration order. Deterministic: the same configuration
    always gives the same groups."""
    if processes < 1:
        raise ConfigurationError("processes", processes, "run at least 1 process")
    order = {name: i for i, name in enumerate(lanes)}
    units: list[list[str]] = []
    by_sink: dict[str, list[str]] = {}
    for name, lane in lanes.items():
        factory = import_object(settings.sinks[lane.sink].factory, f"sinks.{lane.sink}.factory")
        if not getattr(factory, "one_process", False):
            units.append([name])
        elif lane.sink in by_sink:
            by_sink[lane.sink].append(name)
        else:
            by_sink[lane.sink] = [name]
            units.append(by_sink[lane.sink])
    groups: list[list[str]] = [[] for _ in range(min(processes, len(units)))]
    for unit in sorted(units, key=len, reverse=True):  # sorted() is stable: config order
        min(groups, key=len).extend(unit)
    return [sorted(g, key=order.__getitem__) for g in groups]


def runner_command(lanes: list[str], until_caught_up: bool) -> list[str]:
    """The command line of one runner process of ``lanes``."""
    command = [sys.executable, "-m", "core", "run"]
    for name in lanes:
        command += ["--lane", name]
    if until_caught_up:
        command.append("--until-caught-up")
    return command


@dataclass
class Child:
    """One runner process and the lanes it runs."""

    index: int
    lanes: list[str]
    process: subprocess.Popen[bytes]
    code: int | None = None
    """Its exit code once it has exited (``-N``: killed by signal N)."""
    peak_rss_mb: float | None = None
    """Its peak resident memory (``ru_maxrss``) once it has exited."""
    stopped: bool = field(default=False)
    """The supervisor asked it to stop."""

    def describe(self) -> str:
        return f"runner {self.index + 1} (pid {self.process.pid}; lanes {', '.join(self.lanes)})"

    def reap(self) -> int | None:
        """Its exit code if it has exited (collected once, with its peak memory), else None."""
        if self.code is None:
            try:
                pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            except ChildProcessError:  # collected elsewhere (by Popen): its code, no memory
                self.code = self.process.returncode if self.process.returncode is not None else 1
                return self.code
            if pid == 0:
                return None
            self.code = os.waitstatus_to_exitcode(status)
            self.process.returncode = self.code  # reaped here: Popen must not wait for it
            self.peak_rss_mb = usage.ru_maxrss / 1024
        return self.code


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGTERM when ``parent`` dies; exit at once if it already has."""

    def arm() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _environment(settings: Settings, index: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PROJECTIONIST_PROCESSES"] = "1"
    if settings.metrics_port:
        env["PROJECTIONIST_METRICS_PORT"] = str(settings.metrics_port + index)
    return env


def _exit_code(returncode: int) -> int:
    return 1 if returncode < 0 else returncode


def supervise(
    groups: list[list[str]],
    settings: Settings,
    *,
    until_caught_up: bool,
    say: Callable[[str], None],
) -> int:
    """Run one runner process per group until they have all exited; return the exit code.
    Call from the main thread (it installs SIGTERM and SIGINT handlers, restored on return).
    """
    if settings.metrics_port and settings.metrics_port + len(groups) - 1 > 65535:
        raise ConfigurationError(
            "metrics_port",
            settings.metrics_port,
            f"{len(groups)} processes serve metrics on metrics_port + 0..{len(groups) - 1}; "
            "choose a port at most " + str(65536 - len(groups)),
        )
    children: list[Child] = []
    signals = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        how = signal.SIGTERM if signals == 1 else signal.SIGKILL
        say(
            f"received {signal.Signals(signum).name}: "
            + ("stopping the runners" if signals == 1 else "killing the runners")
        )
        for child in children:
            _send(child, how)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        parent = os.getpid()
        for i, lanes in enumerate(groups):
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                runner_command(lanes, until_caught_up),
                env=_environment(settings, i),
                start_new_session=True,
                preexec_fn=_die_with(parent),  # the supervisor runs no threads
            )
            children.append(Child(i, lanes, process))
            say(f"started {children[-1].describe()}")
            if signals:
                _send(children[-1], signal.SIGTERM)
        return _wait(children, lambda: signals > 0, say, until_caught_up)
    finally:
        for child in children:  # only after an error of our own: never leave a runner behind
            if child.code is None:
                _send(child, signal.SIGKILL)
                child.process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _send(child: Child, signum: signal.Signals) -> None:
    """Signal ``child`` unless it has been collected. ``os.kill``, not ``Popen.send_signal``:
    that polls first, which would collect a runner that just exited behind :meth:`Child.reap`
    (its code lost, and the next reap failing on a child that is gone). An exited runner not
    yet collected is a zombie: signalling it does nothing."""
    child.stopped = True
    if child.code is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signum)


def _wait(
    children: list[Child],
    asked_to_stop: Callable[[], bool],
    say: Callable[[str], None],
    until_caught_up: bool,
) -> int:
    failure: int | None = None
    kill_at: float | None = None
    while any(c.code is None for c in children):
        for child in children:
            if child.code is not None:
                continue
            returncode = child.reap()
            if returncode is None:
                continue
            say(f"{child.describe()} exited ({returncode}); peak RSS {child.peak_rss_mb:.1f} MB")
            if child.stopped or asked_to_stop():
                continue
            running = [c for c in children if c.code is None]
            if returncode in (0, 1):
                if returncode == 1:
                    how = "stopped: its lanes halted"
                else:
                    how = "caught up" if until_caught_up else "stopped by itself (signalled?)"
                say(f"{child.describe()} {how}; {len(running)} other runner(s) go on")
                continue
            failure = _exit_code(returncode)
            say(
                f"{child.describe()} failed with exit code {returncode}; stopping the "
                f"{len(running)} other runner(s) so that the whole restarts"
            )
            for other in running:
                _send(other, signal.SIGTERM)
            kill_at = time.monotonic() + STOP_GRACE_SECONDS
        if kill_at is not None and time.monotonic() > kill_at:
            for child in children:
                if child.code is None:
                    say(f"{child.describe()} did not stop in {STOP_GRACE_SECONDS:g} s: killed")
                    _send(child, signal.SIGKILL)
            kill_at = None
        time.sleep(POLL_SECONDS)
    if failure is not None:
        return failure
    return max(_exit_code(c.code or 0) for c in children)
