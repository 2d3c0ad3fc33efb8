"""Where the supervisor's and its children's output goes: one redaction, rotation, the combined stream.

Children log through the supervisor's pipes, so there is exactly one place that redacts and rotates
whatever they print (a non-Python bot included): logs/<component>.log, logs/supervisor.log and
logs/combined.log (`HH:MM:SS name | line`, what the foreground start streams). The supervisor's
loop only tells this module that a pipe is readable.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, Callable, Iterable

from .. import logs
from ..logs import RedactingFilter, rotating_handler

CHILD_LINE_TIME = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d)[,.]\d+ ")
LONG_LINE = 16384  # a line this long without a newline is flushed anyway


class OutputFanout:
    def __init__(self, settings: Any, redact: Callable[[str], str], to_stdout: bool = False):
        self.settings, self.redact, self.to_stdout = settings, redact, to_stdout
        self._combined: logging.Logger | None = None
        self._children: dict[str, logging.Logger] = {}
        self._partial: dict[int, bytes] = {}  # pipe fd -> the start of a line still being written

    def setup(self, names: Iterable[str]) -> None:
        """The supervisor's own log, the combined stream, one log per component."""
        s = self.settings
        redacting = RedactingFilter(self.redact)
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        own = rotating_handler(s.logs_dir / "supervisor.log", s.log_max_bytes, s.log_backups,
                               logs.formatter(s, "supervisor"))
        own.addFilter(redacting)
        root.addHandler(own)
        root.setLevel(s.log_level)
        combined = logging.getLogger("botkeeper.combined")
        combined.propagate = False
        combined.addHandler(rotating_handler(s.logs_dir / "combined.log", s.log_max_bytes, s.log_backups,
                                             "%(message)s"))
        if self.to_stdout:  # under an outer supervisor: journald / `docker logs` / PM2 show the stream
            stream = logging.StreamHandler(sys.stdout)
            stream.setFormatter(logging.Formatter("%(message)s"))
            combined.addHandler(stream)
        self._combined = combined
        fanout = self

        class ToCombined(logging.Handler):  # supervisor lines also go to the combined stream
            def emit(self, record: logging.LogRecord) -> None:
                fanout.to_combined("supervisor", record.getMessage(), time.strftime("%H:%M:%S"))

        tee = ToCombined(logging.INFO)
        tee.addFilter(redacting)
        root.addHandler(tee)
        for name in names:
            self.add_child(name)

    def add_child(self, name: str) -> None:
        """logs/<name>.log for a component (at start, or one a reload added)."""
        s = self.settings
        out = logging.getLogger(f"botkeeper.child.{name}")
        out.propagate = False
        for old in list(out.handlers):
            old.close()
            out.removeHandler(old)
        out.addHandler(rotating_handler(s.logs_dir / f"{name}.log", s.log_max_bytes, s.log_backups,
                                        logs.child_formatter(s, name)))
        out.setLevel(logging.DEBUG)
        self._children[name] = out

    def to_combined(self, name: str, line: str, hhmmss: str | None = None) -> None:
        if self._combined is None:
            return
        match = CHILD_LINE_TIME.match(line)
        if match:
            hhmmss, line = match.group(1), line[match.end():]
        self._combined.info("%s %-10s| %s", hhmmss or time.strftime("%H:%M:%S"), name, line)

    # --- a child's pipe --------------------------------------------------------------------------------
    def read(self, pipe: Any, name: str) -> bool:
        """Read what is there; False at end of file (the caller closes the pipe)."""
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        self._emit(pipe.fileno(), name, data)
        return True

    def drain(self, pipe: Any, name: str) -> bool:
        """Read until nothing is left (a child just exited); False at end of file."""
        while True:
            try:
                data = os.read(pipe.fileno(), 65536)
            except (BlockingIOError, OSError):
                return True
            if not data:
                return False
            self._emit(pipe.fileno(), name, data)

    def finish(self, pipe: Any, name: str) -> None:
        """The pipe is about to close: a last line without a newline is still a line."""
        rest = self._partial.pop(pipe.fileno(), b"")
        if rest:
            self._emit(None, name, rest + b"\n")

    def _emit(self, fd: int | None, name: str, data: bytes) -> None:
        partial = (self._partial.pop(fd, b"") if fd is not None else b"") + data
        *lines, rest = partial.split(b"\n")
        if len(rest) > LONG_LINE:
            lines.append(rest)
            rest = b""
        if rest and fd is not None:
            self._partial[fd] = rest
        out = self._children.get(name)
        for raw in lines:
            line = self.redact(raw.decode("utf-8", "replace").rstrip("\r"))
            if out is not None:
                out.info("%s", line)
            for text in logs.readable(line) if line.startswith("{") else (line,):  # LOG_FORMAT=json
                self.to_combined(name, text)
