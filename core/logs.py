"""Logging: human lines on a terminal, one JSON object per line elsewhere."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ("configure_logging",)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a record logged with ``exc_info`` carries the traceback
    as ``exception`` (one string, in the same line)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once: JSON when stderr is not a terminal."""
    root = logging.getLogger()
    if getattr(root, "_projectionist", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in ("elasticsearch", "asyncio"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # One warning per failed request (a node marked dead): the sink maps every failure into
    # the error a lane logs, throttled, so these would only repeat it without bound.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    root._projectionist = True  # type: ignore[attr-defined]
