"""Is this connection behind a connection pooler, and does the pooler share server sessions?

Two signals, both read from the connection itself (a pooler answers SQL like the server it fronts, so
`SHOW pool_mode` cannot tell):

1. **A pooler at all.** The process id the server sent at connect time (BackendKeyData, psycopg's
   `conn.info.backend_pid`) is the server backend's pid on a direct connection; PgBouncer and Supavisor
   invent their own key, so it differs from `SELECT pg_backend_pid()`.
2. **Sessions shared (transaction or statement pooling).** With a pooler found, a second client
   connection runs one transaction while the first stays connected and idle: if it lands on the server
   backend the first one just used, server sessions are handed between clients between transactions, so
   LISTEN, session advisory locks and session settings do not stay with the client. In session pooling
   that backend stays the first client's until it disconnects, so this never happens. Poolers hand out
   the most recently used backend first (PgBouncer's default), so the probe is repeated a few times.

A port of 6543 (Supabase's transaction pooler) counts as transaction pooling whatever the probe says.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import conninfo

SUPABASE_TRANSACTION_PORT = "6543"
PROBES = 3


@dataclass(frozen=True)
class PoolerInfo:
    pooler: bool  # something between us and PostgreSQL
    transaction_pooling: bool  # server sessions change hands between transactions
    how: str  # which signal decided, for `doctor`

    @property
    def sessions_kept(self) -> bool:
        return not self.transaction_pooling


def _server_pid(conn: psycopg.Connection) -> int:
    if conn.autocommit:
        return conn.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()[0]
    with conn.transaction():
        return conn.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()[0]


def detect(conn: psycopg.Connection, url: str | None = None) -> PoolerInfo:
    """Classify conn's route to the server; url (default: conn's own) opens the probe connection."""
    params = conninfo.conninfo_to_dict(url) if url else {}
    port = str(params.get("port") or conn.info.port or "")
    first = _server_pid(conn)
    if conn.info.backend_pid == first:
        if port == SUPABASE_TRANSACTION_PORT:
            return PoolerInfo(False, True, f"port {port} is Supabase's transaction pooler")
        return PoolerInfo(False, False, "the server's backend pid matches the connection's: a direct connection")
    if port == SUPABASE_TRANSACTION_PORT:
        return PoolerInfo(True, True, f"port {port} is Supabase's transaction pooler")
    target = url or conn.info.dsn
    if url is None and conn.info.password:
        target = conninfo.make_conninfo(target, password=conn.info.password)
    for _ in range(PROBES):
        mine = _server_pid(conn)
        with psycopg.connect(target, autocommit=True, prepare_threshold=None) as other:
            theirs = _server_pid(other)
        if theirs == mine:
            return PoolerInfo(
                True, True, "a second client got this client's server backend between transactions: transaction pooling"
            )
    return PoolerInfo(True, False, "a pooler (the backend pid differs), keeping each client's server session")


def refuse_transaction_pooler(url: str | None, command: str, needs: str) -> None:
    """Raise RuntimeError with a clear message when url goes through a transaction pooler."""
    from lowcap_learning.db import connect, database_url

    with connect(url, autocommit=True) as conn:
        info = detect(conn, database_url(url))
    if info.transaction_pooling:
        raise RuntimeError(
            f"{command} needs a session of its own ({needs}), and this connection goes through a transaction "
            f"pooler ({info.how}): use a direct connection (Supabase: db.<project>.supabase.co:5432) or a "
            "session pooler (port 5432)"
        )
