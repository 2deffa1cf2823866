"""Capped exponential backoff with full jitter, and a log throttle for long outages."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from time import monotonic

__all__ = ("Backoff", "LogThrottle")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): uniform in ``[0, min(cap, base * 2**n)]``."""

    base: float = 0.05
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class LogThrottle:
    """Say the first failure, then at most once per ``every`` seconds: bounded log volume."""

    every: float = 60.0
    _last: float = field(default=-1e18)
    suppressed: int = 0

    def should_log(self) -> bool:
        now = monotonic()
        if now - self._last >= self.every:
            self._last = now
            return True
        self.suppressed += 1
        return False

    def reset(self) -> None:
        self._last = -1e18
        self.suppressed = 0
