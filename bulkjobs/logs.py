"""Log set-up shared by the web process, the Celery worker and the CLI.

``LOG_FORMAT=plain`` (default) writes ``time level logger: message`` lines; ``LOG_FORMAT=json``
writes one JSON object per line: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``message``,
``pid``, ``exc`` when an exception is attached, and every ``extra=`` field of the call — job
log lines pass ``extra={"job": token}``, so a log pipeline can group them by job token.
``LOG_LEVEL`` sets the level (default ``INFO``).

* Web and CLI call :func:`setup`.  In JSON mode uvicorn's own loggers are routed through it
  too, so every line of the process is JSON.
* The worker leaves handler set-up to Celery and gives Celery's handlers the JSON formatter
  from its ``after_setup_logger`` signal (:func:`apply_to`, wired in :mod:`worker.signals`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from bulkjobs.settings import get_settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}

#: Marks the handler :func:`setup` installed, so a second call replaces it.
_MARK = "_bulkjobs_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test runners and the
    CLI's runner swap it; a handler bound to an old stream would write to a closed file)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (``plain`` | ``json``; default: the ``LOG_FORMAT`` setting)."""
    if (fmt or get_settings().log_format) == "json":
        return JsonFormatter()
    return logging.Formatter(PLAIN_FORMAT)


def setup(*, level: str | int | None = None, fmt: str | None = None,
          stream: TextIO | None = None) -> logging.Handler:
    """Give the root logger one handler with the configured format and level; idempotent (a
    second call replaces the handler this module installed, leaving others alone)."""
    fmt = fmt or get_settings().log_format
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter(fmt))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level if level is not None else get_settings().log_level.upper())
    if fmt == "json":
        # uvicorn's loggers have handlers of their own with a text format; send them here.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.handlers = []
            lg.propagate = True
    return handler


def apply_to(logger: logging.Logger, fmt: str | None = None) -> None:
    """Switch the handlers Celery set up on ``logger`` to JSON when ``LOG_FORMAT=json``
    (plain keeps Celery's own format)."""
    if (fmt or get_settings().log_format) != "json":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
