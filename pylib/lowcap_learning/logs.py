"""The learning-system log: database rows (learning.learning_log) exported to logs/learning_system.log.

Every learning event, from SQL or Python, is a row written by `learning._log` (Python: `db_log`). The
exporter writes each row to the file exactly once, across SIGKILL at any point (design §14). Per batch,
under an exclusive lock on `<log>.export.lock`:

1. claim unexported rows (`UPDATE ... SET exported_at = now() ... FOR UPDATE SKIP LOCKED RETURNING`);
2. record the batch (row ids, the file's device/inode and its size before the write) in the sidecar
   `<log>.export` (atomic rename);
3. write the rows, one line each, flush and fsync; 4. COMMIT the claim; 5. remove the sidecar.

An exporter that starts (or retries) and finds a sidecar left by a crash resolves it before claiming:
rows whose claim committed are done; of the others, those whose line is in the file after the recorded
offset are marked exported, a torn last line is cut off, and the rest are exported as usual. Every field
value is escaped (control characters, line and paragraph separators) so one row is always one line.
`follow` LISTENs on channel `learning_log` and exports on every notification, on start (what it missed
while down) and every `poll` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

import psycopg

LOGGER_NAME = "learning_system"
DEFAULT_LOG_PATH = Path("logs") / "learning_system.log"
LOG_ENV = "LOWCAP_LEARNING_LOG"
LOG_FORMAT = "%(asctime)s - learning_system - %(levelname)s - %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5
BATCH = 1000
CHANNEL = "learning_log"
STATE_SUFFIX = ".export"  # the batch being written: <log>.export
LOCK_SUFFIX = ".export.lock"  # one exporter of a file at a time: <log>.export.lock

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}

DB_LOG = "SELECT learning._log(%(level)s::text, %(message)s::text)"

# Oldest first; SKIP LOCKED lets two exporters share the work without either waiting or duplicating.
CLAIM = """
UPDATE learning.learning_log AS l
SET exported_at = pg_catalog.now()
WHERE l.id IN (
    SELECT u.id FROM learning.learning_log AS u
    WHERE u.exported_at IS NULL
    ORDER BY u.id
    FOR UPDATE SKIP LOCKED
    LIMIT %(limit)s::integer
)
RETURNING l.id, l.logged_at, l.level, l.message
"""
# The rows of a batch a crashed exporter was writing, locked, with whether their claim committed.
PENDING = """
SELECT l.id, l.logged_at, l.level, l.message, l.exported_at IS NOT NULL
FROM learning.learning_log AS l
WHERE l.id = ANY(%(ids)s::bigint[])
ORDER BY l.id
FOR UPDATE
"""
MARK = "UPDATE learning.learning_log SET exported_at = pg_catalog.now() WHERE id = ANY(%(ids)s::bigint[])"

# Characters that could end a line in some reader: C0 and C1 controls, DEL, U+2028/U+2029 (Python's
# str.splitlines splits on \v, \f, \x1c-\x1e, \x85 and both separators too).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """text with every character that could start a new line written as an escape (\\n, \\x1e, \\u2028)."""

    def one(m: re.Match) -> str:
        ch = m.group()
        return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")

    return _UNSAFE.sub(one, text)


@dataclass(frozen=True)
class LogRow:
    id: int
    logged_at: datetime
    level: str
    message: str


def db_log(conn: psycopg.Connection, level: str, message: str) -> None:
    """Append one learning event (design §14): a learning.learning_log row, exported to the file later."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    conn.execute(DB_LOG, {"level": level, "message": message})


def log_path(path: str | os.PathLike | None = None) -> Path:
    """The log file: the argument, else $LOWCAP_LEARNING_LOG, else logs/learning_system.log."""
    return Path(path or os.environ.get(LOG_ENV) or DEFAULT_LOG_PATH)


class _UTCFormatter(logging.Formatter):
    """UTC asctime; the whole line escaped, so no value (or traceback) can start a line of its own."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))


_HANDLER_LOCK = threading.Lock()


def get_logger(path: str | os.PathLike | None = None) -> logging.Logger:
    """The `learning_system` logger writing to one rotating file (re-pointed when path changes).

    Under a lock: two threads that both found no handler would each add one, and every line would
    then be written twice."""
    with _HANDLER_LOCK:
        return _get_logger(log_path(path).resolve())


def _get_logger(target: Path) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        if isinstance(handler, RotatingFileHandler) and Path(handler.baseFilename) == target:
            return logger
        logger.removeHandler(handler)
        handler.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(target, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8")
    handler.setFormatter(_UTCFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger


def _file_handler(logger: logging.Logger) -> RotatingFileHandler:
    return next(h for h in logger.handlers if isinstance(h, RotatingFileHandler))


def _line(handler: RotatingFileHandler, row: LogRow) -> str:
    """One row as one line, asctime = the row's logged_at (not the export time)."""
    record = logging.LogRecord(LOGGER_NAME, LEVELS.get(row.level, logging.INFO), __file__, 0, row.message, None, None)
    # Exact milliseconds from the row (float arithmetic on the epoch would round 0.123 down to 0.122).
    record.created = row.logged_at.timestamp()
    record.msecs = float(row.logged_at.microsecond // 1000)
    return handler.format(record) + handler.terminator


def _write_state(base: str, state: dict) -> None:
    """The sidecar, replaced atomically before any line of its batch is written.

    Not fsynced: a killed process leaves it in the page cache. After a power loss it may be missing while
    lines of its batch are on disk; that batch is then written again (at-least-once), never lost."""
    tmp = base + STATE_SUFFIX + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, base + STATE_SUFFIX)


def _read_state(base: str) -> dict | None:
    try:
        with open(base + STATE_SUFFIX, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:  # torn by a power loss: its batch, if in the file, is written again (at-least-once)
        return None


def _clear_state(base: str) -> None:
    # A sidecar that reappears after a power loss names rows whose claim committed: a no-op.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(base + STATE_SUFFIX)


def _write_batch(handler: RotatingFileHandler, rows: list[LogRow]) -> None:
    """Record the batch in the sidecar, then append its lines and fsync. Never rolls over mid-batch."""
    data = "".join(_line(handler, row) for row in rows)
    handler.acquire()
    try:
        if handler.stream is None:
            handler.stream = handler._open()
        handler.stream.flush()
        size = os.fstat(handler.stream.fileno()).st_size
        if handler.maxBytes > 0 and size > 0 and size + len(data.encode("utf-8")) > handler.maxBytes:
            handler.doRollover()
            if handler.stream is None:
                handler.stream = handler._open()
        st = os.fstat(handler.stream.fileno())
        _write_state(handler.baseFilename, {
            "ids": [row.id for row in rows], "dev": st.st_dev, "ino": st.st_ino, "offset": st.st_size,
        })
        handler.stream.write(data)
        handler.stream.flush()
        os.fsync(handler.stream.fileno())
    finally:
        handler.release()


def _find_file(handler: RotatingFileHandler, dev: int, ino: int) -> str | None:
    """The file the batch was written to: the log itself, or a backup if it has rolled over since."""
    candidates = [handler.baseFilename] + [f"{handler.baseFilename}.{i}" for i in range(1, handler.backupCount + 1)]
    for name in candidates:
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) == (dev, ino):
            return name
    return None


def _written_prefix(handler: RotatingFileHandler, state: dict, rows: list[LogRow]) -> int:
    """How many of rows (in id order) have their line in the file after the recorded offset.

    A torn last line is cut off. Lines are matched in order, so a line another writer put in between
    (an exporter's own warning) is passed over."""
    name = _find_file(handler, state["dev"], state["ino"])
    if name is None:  # the file is gone (removed or rotated away): nothing of the batch is there
        return 0
    offset = state["offset"]
    handler.acquire()
    try:
        if handler.stream is not None:
            handler.stream.flush()
        with open(name, "r+b") as f:
            f.seek(offset)
            tail = f.read()
            end = tail.rfind(b"\n") + 1
            if end < len(tail):
                f.truncate(offset + end)
                f.flush()
                os.fsync(f.fileno())
    finally:
        handler.release()
    expected = [_line(handler, row).encode("utf-8") for row in rows]
    found = 0
    for line in tail[:end].splitlines(keepends=True):
        if found < len(expected) and line == expected[found]:
            found += 1
    return found


def _recover(conn: psycopg.Connection, handler: RotatingFileHandler) -> int:
    """Resolve the batch a crashed exporter left in the sidecar; returns how many rows it marks exported."""
    state = _read_state(handler.baseFilename)
    if state is None:
        return 0
    marked = 0
    with conn.transaction():
        pending = conn.execute(PENDING, {"ids": state.get("ids", [])}).fetchall()
        # Rows whose claim committed are done; only a batch whose COMMIT never happened is left open.
        open_rows = [LogRow(*r[:4]) for r in pending if not r[4]]
        if open_rows:
            written = open_rows[: _written_prefix(handler, state, open_rows)]
            if written:
                conn.execute(MARK, {"ids": [row.id for row in written]})
            marked = len(written)
    _clear_state(handler.baseFilename)
    return marked


class _ExportLock:
    """An exclusive flock on <log>.export.lock: one batch of one exporter in the file at a time (threads
    and processes alike; the kernel releases it when the holder dies)."""

    def __init__(self, base: str) -> None:
        self.path = base + LOCK_SUFFIX

    def __enter__(self) -> _ExportLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing the only descriptor releases the lock


def export(
    conn: psycopg.Connection,
    path: str | os.PathLike | None = None,
    *,
    batch: int = BATCH,
    after_write: Callable[[list[LogRow]], None] | None = None,
) -> int:
    """Export every unexported row to the file, each exactly once; returns how many rows this call
    marked exported (including those of a crashed earlier batch found already in the file).

    Per batch: claim, record the batch in the sidecar, write + fsync, COMMIT, drop the sidecar."""
    handler = _file_handler(get_logger(path))
    with _ExportLock(handler.baseFilename):
        total = _recover(conn, handler)
        while True:
            with conn.transaction():
                rows = [LogRow(*r) for r in conn.execute(CLAIM, {"limit": batch}).fetchall()]
                rows.sort(key=lambda r: r.id)
                if rows:
                    _write_batch(handler, rows)
                if after_write is not None:
                    after_write(rows)
            _clear_state(handler.baseFilename)
            total += len(rows)
            if len(rows) < batch:
                return total


def follow(
    url: str | None,
    path: str | os.PathLike | None = None,
    *,
    poll: float = 30.0,
    stop: Callable[[], bool] | None = None,
    on_export: Callable[[int], None] | None = None,
    reconnect_delay: float = 2.0,
) -> None:
    """Export on start, then on every NOTIFY learning_log (and every `poll` s as a safety net).

    One connection only listens (notifications that arrive while the other one exports stay queued on
    it, so none is missed); the other claims and commits. A lost connection is logged to the file and
    reopened (with backoff); the export on reconnect picks up whatever was written meanwhile.
    """
    delay = reconnect_delay
    while not (stop and stop()):
        try:
            _follow_once(url, path, poll=poll, stop=stop, on_export=on_export)
            return
        except psycopg.OperationalError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            get_logger(path).warning("LOG EXPORTER: Database connection lost | retry_in=%.0fs | error=%s", delay, first)
            time.sleep(delay)
            delay = min(delay * 2, 60.0)


def _follow_once(url, path, *, poll, stop, on_export) -> None:
    from lowcap_learning.db import connect

    with connect(url, autocommit=True) as listener, connect(url, autocommit=True) as conn:
        listener.execute("LISTEN learning_log")
        count = export(conn, path)
        if on_export:
            on_export(count)
        waited = 0.0
        while not (stop and stop()):
            step = min(poll, 0.5)
            woken = any(True for _ in listener.notifies(timeout=step, stop_after=1))
            waited += step
            if not woken and waited < poll:
                continue
            waited = 0.0
            if woken:  # drain the rest: one export serves every queued notification
                for _ in listener.notifies(timeout=0.01):
                    pass
            count = export(conn, path)
            if on_export and count:
                on_export(count)
