"""Where `gateway serve` logs: the `[log]` section of the config (`LogConfig`).

`file` names a file to append to (re-opened when log rotation moves it away:
`logging.handlers.WatchedFileHandler`), "" means standard error; `level` is the least
severe level written; `json` writes one JSON object per line (`time` in UTC ISO 8601,
`level`, `logger`, `message`, and `exception` with the traceback when there is one) for log
collectors, instead of the text lines "2024-01-02 03:04:05,678 INFO gateway.server: ...".
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime

from gateway.config import LogConfig

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JSONLineFormatter(logging.Formatter):
    """One log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log: LogConfig, level: str | None = None) -> logging.Handler:
    """Send the root logger's records where `log` says, at `level` (the command line's
    --log-level) or else `log.level`. Raises OSError when the file cannot be opened."""
    handler: logging.Handler
    if log.file is not None:
        log.file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(log.file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONLineFormatter() if log.json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, (level or log.level).upper()))
    return handler
