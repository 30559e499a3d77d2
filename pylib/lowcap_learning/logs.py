"""The learning-system log: database rows (learning.learning_log) exported to logs/learning_system.log.

Every learning event, from SQL or Python, is a row written by `learning._log` (Python: `db_log`). The
exporter claims unexported rows (`UPDATE ... SET exported_at = now() ... FOR UPDATE SKIP LOCKED
RETURNING`), writes them to the `learning_system` logger's rotating file with asctime = the row's
logged_at, flushes and fsyncs the file, and only then commits the claim. A crash before the commit
leaves the rows unexported, so they are written again by the next export: at-least-once, never lost
(docs/decisions.md, Operations). `follow` LISTENs on channel `learning_log` and exports on every
notification, on start (what it missed while down) and every `poll` seconds.
"""

from __future__ import annotations

import logging
import os
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


@dataclass(frozen=True)
class LogRow:
    id: int
    logged_at: datetime
    level: str
    message: str


def db_log(conn: psycopg.Connection, level: str, message: str) -> None:
    """Append one learning event (contract 3): a learning.learning_log row, exported to the file later."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    conn.execute(DB_LOG, {"level": level, "message": message})


def log_path(path: str | os.PathLike | None = None) -> Path:
    """The log file: the argument, else $LOWCAP_LEARNING_LOG, else logs/learning_system.log."""
    return Path(path or os.environ.get(LOG_ENV) or DEFAULT_LOG_PATH)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


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


def _emit(logger: logging.Logger, row: LogRow) -> None:
    """One row as one line, asctime = the row's logged_at (not the export time)."""
    record = logger.makeRecord(LOGGER_NAME, LEVELS.get(row.level, logging.INFO), __file__, 0, row.message, None, None)
    # Exact milliseconds from the row (float arithmetic on the epoch would round 0.123 down to 0.122).
    record.created = row.logged_at.timestamp()
    record.msecs = float(row.logged_at.microsecond // 1000)
    logger.handle(record)


def _sync(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()
        stream = getattr(handler, "stream", None)
        if stream is not None:
            os.fsync(stream.fileno())


def export(
    conn: psycopg.Connection,
    path: str | os.PathLike | None = None,
    *,
    batch: int = BATCH,
    after_write: Callable[[list[LogRow]], None] | None = None,
) -> int:
    """Export every unexported row to the file; returns how many. Claim, write + fsync, then commit."""
    logger = get_logger(path)
    total = 0
    while True:
        with conn.transaction():
            rows = [LogRow(*r) for r in conn.execute(CLAIM, {"limit": batch}).fetchall()]
            rows.sort(key=lambda r: r.id)
            for row in rows:
                _emit(logger, row)
            _sync(logger)
            if after_write is not None:
                after_write(rows)
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
