"""Structured log lines (``--log-format json``): one JSON object per line on stderr, for journald, Loki and
other log shippers. Every line has the same keys (:data:`KEYS`, null where they do not apply), whoever wrote
it: kmc's messages (kmc.output.Messages), notices of the mirrors, progress lines, Python logging (kmc's and
kafka-python's loggers) and the last error line of the command. A few events add keys of their own after
these (a progress line: records, records_per_second, lag). Library code: it formats; the caller writes.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

KEYS = ("time", "level", "flow", "source", "target", "topic", "partition", "event", "message")
LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "error": "error",
          "critical": "critical"}


def json_line(level: str, message: str, **fields: Any) -> str:
    """One log line: :data:`KEYS` in order (``fields`` fill flow, topic, event...; unknown ones follow).
    A notice's text may carry its own event, topic and partition (kmc.mirror.telemetry.Notice)."""
    record: dict[str, Any] = dict.fromkeys(KEYS)
    record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    record["level"] = LEVELS.get(level, level)
    said = getattr(message, "__dict__", {})  # a Notice's event, topic and partition (a plain str has none)
    record["event"] = said.get("event") or "message"
    record["topic"] = said.get("topic")
    record["partition"] = said.get("partition")
    record.update({key: value for key, value in fields.items() if value is not None or key not in record})
    record["message"] = str(message)
    return json.dumps(record, default=str)


class JsonFormatter(logging.Formatter):
    """Python logging records as :func:`json_line` lines (event: the logger's name)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return json_line(record.levelname.lower(), message, event=f"log:{record.name}")
