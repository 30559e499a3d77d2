"""The pandas side of the miner and strength comparisons: the window's rows read through COPY into
categorical columns, and every slice counted by one groupby per dimension subset."""

from __future__ import annotations

import io
import itertools

import psycopg
from psycopg import sql

from bench.harness import AS_OF
from bench.workload import DIMS

SCOPE_COLUMNS = ", ".join(f"scope ->> '{d}'" for d in DIMS)
N_MIN, MAX_DIMS = 33, 4


def window_frame(conn: psycopg.Connection, table: str, columns: list[str], where: str, dtypes: dict):
    """pattern_key, the scope's dimensions and `columns` of the table's rows in the 90-day window
    before AS_OF (and `where`), as a DataFrame read through COPY ... TO STDOUT (CSV): far less memory
    than Python tuples."""
    import pandas as pd

    query = (
        f"SELECT pattern_key, {SCOPE_COLUMNS}, {', '.join(columns)} FROM {table}"
        " WHERE timestamp > %(as_of)s::timestamptz - interval '90 days' AND timestamp <= %(as_of)s::timestamptz"
        f" AND {where}"
    )
    inner = psycopg.ClientCursor(conn).mogrify(query, {"as_of": AS_OF})
    buf = io.BytesIO()
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(sql.SQL(inner))) as copy:
        for chunk in copy:
            buf.write(chunk)
    buf.seek(0)
    names = ["pattern_key", *DIMS, *columns]
    categories = dict.fromkeys(["pattern_key", *DIMS], "category")
    return pd.read_csv(buf, names=names, dtype={**categories, **dtypes}, header=None)


def pandas_result(fetch, compute, lessons) -> dict:
    """A pandas job's result from its fetch and compute timings (harness.Timing) and its lessons."""
    return {
        "fetch_seconds": fetch.seconds,
        "compute_seconds": compute.seconds,
        "seconds": fetch.seconds + compute.seconds,
        "lessons": len(lessons),
    }


def compared(sql_result: dict, pandas_result: dict) -> dict:
    """A SQL-vs-pandas row's values: each side's fields prefixed sql_ and pandas_, and the speedup."""
    values = {f"sql_{k}": v for k, v in sql_result.items()} | {f"pandas_{k}": v for k, v in pandas_result.items()}
    return values | {"speedup": pandas_result["seconds"] / sql_result["seconds"]}


def slices(df, value_columns: list[str]):
    """Every (pattern_key, slice) with >= N_MIN units: one groupby per dimension subset (57 for 6 dims, 4)."""
    import pandas as pd

    for c in ["pattern_key", *DIMS]:
        df[c] = df[c].astype("category")
    out = []
    for k in range(MAX_DIMS + 1):
        for dims in itertools.combinations(DIMS, k):
            sub = df.dropna(subset=list(dims)) if dims else df
            g = sub.groupby(["pattern_key", *dims], sort=False, observed=True)[value_columns].sum()
            g = g[g[value_columns[0]] >= N_MIN]
            if len(g):
                g = g.reset_index()
                g["slice"] = [",".join(dims)] * len(g)
                out.append(g)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
