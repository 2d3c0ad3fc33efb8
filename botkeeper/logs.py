"""Logging for every botkeeper process: one redaction filter, size-rotated files, quiet httpx.

The redactor removes every configured secret in any form it takes (plain, URL-encoded, the secret
half of a bot token, inside `/bot<token>/` URLs) and anything else shaped like a bot token.

LOG_FORMAT=json: each Python component formats its own records as one JSON object per line
(python-json-logger: time, level, component, logger, message, exception, and extras such as
update_id, fingerprint or cause), after the same redaction filter, so a traceback stays one object.
The supervisor writes those lines to logs/<component>.log as they are, wraps any other line of a
child (print(), a non-Python bot, a crash on stderr) into an object of its own, and renders them
back to text for logs/combined.log and the foreground stream (`readable`). The JSON library is
imported only when LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from .config import TOKEN_SECRET_MIN

# Anything shaped like a bot token (config.TOKEN_RE, and longer runs too: masking more is harmless).
TOKEN_SHAPE = re.compile(rf"([0-9]{{3,20}})(:|%3A|%3a)[A-Za-z0-9_-]{{{TOKEN_SECRET_MIN},}}")
MASK = "***"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        self._forms: set[str] = set()
        self._pattern: re.Pattern | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also mask these (a reload brought new secrets; the old ones may still be printed)."""
        forms = self._forms
        for secret in secrets:
            if not secret or len(secret) < 4:
                continue
            forms.update({secret, quote(secret, safe=""), quote(secret)})
            if ":" in secret:  # the secret half of a bot token, alone
                tail = secret.split(":", 1)[1]
                if len(tail) >= 8:
                    forms.add(tail)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return TOKEN_SHAPE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


# --- client-supplied values ----------------------------------------------------------------------
# A request path, a header, a name a client chose: shown escaped, so `%0A<fake line>` or an ANSI
# escape can never forge or colour a log line; cut so a 1 MiB header cannot fill the log.
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\",
    0x2028: "\\u2028", 0x2029: "\\u2029"}
CLIENT_VALUE_MAX = 200


def escape(value: object, limit: int = CLIENT_VALUE_MAX) -> str:
    """A client-supplied value as it may reach a log: control characters as \\n, \\x1b ..., a
    backslash doubled, at most `limit` characters (then how many more there were)."""
    text = value if isinstance(value, str) else str(value)
    more = len(text) - limit
    text = text[:limit].translate(_ESCAPES)
    return f"{text}...(+{more} chars)" if more > 0 else text


class Refusals:
    """Refused requests (a wrong webhook secret, a locked-out token guesser) logged as at most one
    line per `every` seconds: the first at once, later ones as a count with the latest detail.
    A flood costs one line a minute, not one per request. Thread-safe (waitress's threads)."""

    def __init__(self, logger: logging.Logger, what: str, every: float = 60.0,
                 clock=time.monotonic):
        self.log, self.what, self.every, self.clock = logger, what, every, clock
        self.total = 0
        self._pending = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def note(self, detail: str = "") -> None:
        """Count one refusal; `detail` must already be escaped (see `escape`)."""
        with self._lock:
            now = self.clock()
            self.total += 1
            self._pending += 1
            if self._last is not None and now - self._last < self.every:
                return
            first, count = self._last is None, self._pending
            self._last, self._pending = now, 0
        suffix = f" ({detail})" if detail else ""
        if first:
            self.log.warning("%s%s", self.what, suffix)
        else:
            self.log.warning("%s: %d in the last %d s, %d in all; latest%s", self.what, count,
                             round(self.every), self.total, suffix or " (no detail)")


class RedactingFilter(logging.Filter):
    """Rewrites each record's final text, traceback included, before any handler sees it."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format must not lose the record
            message = f"{record.msg!r} (unformattable: {exc})"
        record.msg, record.args = self.redactor(message), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.redactor(text), None
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


ROTATE_RETRY = 10.0  # seconds between two tries of a rotation that failed
# Told when a log cannot rotate (path, the error) and when it can again (path, None): the supervisor
# turns it into a typed fault (degraded, cause log-rotation) and one alert. Called under the
# handler's lock; it may log (the handler's state is set first, so that is no loop).
on_rotation: "Callable[[str, OSError | None], None] | None" = None


class SizeRotatingHandler(logging.FileHandler):
    """logging.handlers.RotatingFileHandler's size rotation (name.log -> name.log.1 ... .N).

    Written out because importing logging.handlers costs the supervisor ~1 MB of its 20 MB budget.
    When rotation fails (logs/ read-only, the disk full, a backup name taken by a directory) the
    file is capped: it is not written past LOG_MAX_BYTES (one line says so), rotation is tried again
    every ROTATE_RETRY seconds, and `on_rotation` is told once per episode.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes, self.backups = max_bytes, backups
        self.rotation_error: OSError | None = None  # the rotation is failing (since rotation_failed_at)
        self.rotation_failed_at = 0.0
        self.dropped = 0  # lines not written while capped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            full = self.stream is not None and self.stream.tell() >= self.max_bytes
        except (OSError, ValueError):
            full = False
        if full and (self.rotation_error is None or time.monotonic() - self.rotation_failed_at >= ROTATE_RETRY):
            try:
                self.rotate()
            except OSError as exc:
                self._rotation_failed(exc)
            else:
                full = False
                if self.rotation_error is not None:
                    self.rotation_error, self.dropped = None, 0
                    if on_rotation is not None:
                        on_rotation(self.baseFilename, None)
        if full and self.rotation_error is not None:
            self.dropped += 1  # capped: the disk is not filled by a log that cannot rotate
            return
        try:
            super().emit(record)  # opens the file if it has none: that may fail on a read-only logs/
        except OSError:
            self.dropped += 1  # a log line is never worth the process

    def _rotation_failed(self, exc: OSError) -> None:
        first = self.rotation_error is None
        self.rotation_error, self.rotation_failed_at = exc, time.monotonic()
        if first and self.stream is not None:
            try:
                self.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} botkeeper: cannot rotate this log"
                                  f" ({exc.strerror or exc}): further lines are dropped until it can\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            if on_rotation is not None:
                on_rotation(self.baseFilename, exc)

    def rotate(self) -> None:
        """Rename first, then reopen: the open file stays ours until a new one is, so a rotation
        that fails half-way leaves a working (capped) log, never a handler without a file."""
        base = self.baseFilename
        for i in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{base}.{i}"):
                os.replace(f"{base}.{i}", f"{base}.{i + 1}")
        os.replace(base, f"{base}.1")
        new = self._open()  # may fail (read-only, full): the old stream, now name.1, stays in use
        old, self.stream = self.stream, new
        if old is not None:
            old.close()


def rotating_handler(path: Path, max_bytes: int, backups: int,
                     fmt: str | logging.Formatter = FORMAT) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = SizeRotatingHandler(path, max_bytes, backups)
    handler.setFormatter(fmt if isinstance(fmt, logging.Formatter) else logging.Formatter(fmt))
    return handler


# --- JSON lines (LOG_FORMAT=json) ----------------------------------------------------------------
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"levelname": "level", "name": "logger", "exc_info": "exception"}


def formatter(settings, component: str) -> logging.Formatter:
    """The formatter of one process's own records: FORMAT text, or one JSON object per line."""
    if getattr(settings, "log_format", "text") != "json":
        return logging.Formatter(FORMAT)
    from pythonjsonlogger.json import JsonFormatter  # only with LOG_FORMAT=json

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, static_fields={"component": component},
                         timestamp="time", json_ensure_ascii=False)


def child_formatter(settings, component: str) -> logging.Formatter:
    """How the supervisor writes a child's output line to logs/<component>.log: as it came, or in
    JSON mode a child's own JSON object as it came and any other line wrapped into one."""
    if getattr(settings, "log_format", "text") != "json":
        return logging.Formatter("%(message)s")
    from pythonjsonlogger.json import JsonFormatter

    class ChildLines(JsonFormatter):
        def format(self, record: logging.LogRecord) -> str:
            line = record.getMessage()
            if _json_object(line) is not None:
                return line
            record.name = "output"  # the child's stdout/stderr, not one of its loggers
            return super().format(record)

    return ChildLines(JSON_FIELDS, rename_fields=JSON_RENAMES, static_fields={"component": component},
                      timestamp="time", json_ensure_ascii=False)


def _json_object(line: str) -> dict | None:
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def readable(line: str) -> list[str]:
    """A child's output line as text for combined.log: a JSON record in FORMAT (local time), its
    exception as the lines that follow; any other line unchanged."""
    record = _json_object(line)
    if record is None or "message" not in record:
        return [line]
    when = ""
    try:
        stamp = datetime.fromisoformat(str(record.get("time"))).astimezone()
        when = stamp.strftime("%Y-%m-%d %H:%M:%S,") + f"{stamp.microsecond // 1000:03d} "
    except ValueError:
        pass
    text = [f"{when}{str(record.get('level', '')):<7} {record.get('logger', '')}: {record['message']}"]
    exception = record.get("exception")
    if exception:
        text += str(exception).splitlines()
    return text


def setup(settings, component: str, to_file: bool = False) -> logging.Logger:
    """Configure the root logger of one process.

    Supervised children log to stderr (the supervisor writes logs/<component>.log); processes
    outside the supervisor (auto_recovery, the supervisor itself) write their own rotated file.
    """
    redacting = RedactingFilter(Redactor(settings.secrets() + [settings.bot_token or ""]))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if to_file:
        handler: logging.Handler = rotating_handler(
            settings.logs_dir / f"{component}.log", settings.log_max_bytes, settings.log_backups
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings, component))
    handler.addFilter(redacting)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # httpx logs every request URL, which contains the token, at INFO.
    for noisy in ("httpx", "httpcore", "apscheduler", "waitress.queue", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(component)
