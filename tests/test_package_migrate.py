"""A failed migrate says one line and leaves no half-made database behind; the runtime import path
needs only psycopg, numpy and the standard library."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

from conftest import RUN_ID, empty_db, url_for
from lowcap_learning import migrate
from test_tunables_validate_on_write import BOT_LEARNING_CONFIGS, OLD_LEARNING_ROW


def database_exists(url: str) -> bool:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url_for("postgres"), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %(n)s", {"n": name}).fetchone() is not None


def test_a_migrate_that_fails_after_creating_the_database_drops_it_again():
    url = url_for(f"ll_pkg_fail_{RUN_ID}_{uuid.uuid4().hex[:6]}")
    try:
        with pytest.raises(migrate.MigrateError) as info:
            migrate.migrate(url, revision="no_such_revision")
        message = str(info.value)
        assert "no_such_revision" in message and "dropped again" in message
        assert "\n" not in message
        assert not database_exists(url)
    finally:
        migrate.db.drop_database(url)


def test_a_refused_adopted_row_says_one_line_and_keeps_the_bots_database():
    with empty_db("pkg_refused") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BOT_LEARNING_CONFIGS)
            conn.execute(
                "INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', %(row)s::jsonb)",
                {"row": json.dumps(OLD_LEARNING_ROW)},
            )
        with pytest.raises(migrate.MigrateError) as info:
            migrate.migrate(url)
        message = str(info.value)
        assert "unusable tunable: tunable steer_gain must be" in message and "\n" not in message
        assert "dropped" not in message  # the database was the bot's: it stays, unchanged
        assert database_exists(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('learning')").fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM public.learning_configs").fetchone()[0] == 1


def test_a_bad_server_says_one_line_and_creates_nothing():
    with pytest.raises(migrate.MigrateError) as info:
        migrate.migrate("postgresql://root@127.0.0.1:1/ll_pkg_nowhere")
    assert "\n" not in str(info.value) and "127.0.0.1" in str(info.value)


# Every heavy or optional dependency of the CLI, the jobs and the demo: the bot's process must not need them.
BLOCKED = ("click", "alembic", "sqlalchemy", "matplotlib", "apscheduler", "scipy", "pandas", "mako")
RUNTIME_IMPORT = f"""
import sys
BLOCKED = {BLOCKED!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the runtime must not import it")
sys.meta_path.insert(0, Blocker())
before = set(sys.modules)
import lowcap_learning
import lowcap_learning.runtime
new = {{m.partition(".")[0] for m in set(sys.modules) - before}}
print(",".join(sorted(new - set(sys.stdlib_module_names))))
"""


def test_the_runtime_imports_with_only_psycopg_and_numpy(tmp_path):
    result = subprocess.run([sys.executable, "-c", RUNTIME_IMPORT], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.strip().split(",")) - {""} <= {"lowcap_learning", "numpy", "psycopg", "psycopg_binary"}
