"""Log handlers for the fastsched-pool command; the library itself only creates loggers.

Two formats, both with the process id in every line (a pool is a master and its children):

- ``text``: ``2024-05-01 12:00:00,123 4711 INFO fastsched.pool: message``
- ``json``: one JSON object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``pid``
  and ``message``, plus the structured fields a caller passes as ``extra={"fields": {...}}``
  (they never replace the five keys above), and ``exception`` when there is a traceback.

Secrets handed to :func:`configure` (the DSN password, the HTTP token) are replaced by ``***`` in
every formatted line, whatever logged them: a last line of defence, the code logs masked DSNs.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable
from typing import IO, Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MIN_SECRET_LENGTH = 4  # characters; shorter secrets are not scrubbed (it would garble every line)
MASK = "***"

_HANDLER_NAME = "fastsched-cli"
_CORE_KEYS = ("time", "level", "logger", "pid", "message")


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record), self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update((str(key), value) for key, value in fields.items() if key not in _CORE_KEYS)
        entry["time"] = dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
        entry["level"] = record.levelname
        entry["logger"] = record.name
        entry["pid"] = record.process
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a field that JSON cannot encode (a datetime, a Priority...) is shown as text.
        return _scrub(json.dumps(entry, default=str, ensure_ascii=False), self._secrets)


def make_formatter(log_format: str, secrets: Iterable[str] = ()) -> logging.Formatter:
    kept = tuple(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
    if log_format == "json":
        return JsonFormatter(kept)
    if log_format == "text":
        return TextFormatter(kept)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def configure(
    log_format: str = "text",
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``log_format``, at ``level`` and above.

    Calling it again replaces the handler it installed before (never anyone else's).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(make_formatter(log_format, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
