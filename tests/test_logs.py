"""bulkjobs.logs: plain and JSON log lines; job lines carry the job token."""

from __future__ import annotations

import io
import json
import logging

from bulkjobs import logs


def _line(fmt: str, *args: object, **kw: object) -> str:
    stream = io.StringIO()
    handler = logs.setup(level="DEBUG", fmt=fmt, stream=stream)
    try:
        logging.getLogger("bulkjobs.test").info(*args, **kw)  # type: ignore[arg-type]
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue().strip()


def test_json_lines_carry_extra_fields_such_as_the_job_token():
    """LOG_FORMAT=json writes one object per line with the call's ``extra`` fields."""
    record = json.loads(_line("json", "job %s: done", "tok-1", extra={"job": "tok-1"}))
    assert record["message"] == "job tok-1: done"
    assert record["job"] == "tok-1"
    assert record["level"] == "INFO" and record["logger"] == "bulkjobs.test"
    assert record["ts"].endswith("+00:00")


def test_plain_lines_are_text():
    """The default format is one readable text line."""
    line = _line("plain", "job %s: done", "tok-2")
    assert line.endswith("INFO bulkjobs.test: job tok-2: done")


def test_setup_replaces_its_own_handler_only():
    """Calling setup twice leaves one handler of ours and keeps foreign handlers."""
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first = logs.setup(fmt="plain")
        second = logs.setup(fmt="json")
        assert first not in root.handlers and second in root.handlers
        assert foreign in root.handlers
    finally:
        root.removeHandler(foreign)


def test_apply_to_switches_celery_handlers_in_json_mode():
    """The worker's after_setup_logger hook gives Celery's handlers the JSON formatter."""
    logger = logging.getLogger("celery-like")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        logs.apply_to(logger, fmt="plain")
        assert not isinstance(handler.formatter, logs.JsonFormatter)
        logs.apply_to(logger, fmt="json")
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        logger.removeHandler(handler)
