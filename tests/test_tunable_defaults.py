"""The Python dataclasses that carry tunables for the pure functions (runtime steering, lever
simulation) default to exactly the values of learning.tunable_specs, the one source of the
defaults (design §3): a drift between them would make a pure-function test check other numbers than production."""

import dataclasses

from lowcap_learning.runtime import SteeringTunables
from lowcap_learning.simulate import Tunables


def test_python_defaults_equal_the_database_defaults(conn):
    db_defaults = {
        key: value if kind == "choice" else float(value)
        for key, kind, value in conn.execute(
            "SELECT key, kind, default_value #>> '{}' FROM learning.tunable_specs "
            "WHERE kind IN ('number', 'integer', 'choice')"
        ).fetchall()
    }
    for cls in (SteeringTunables, Tunables):
        for f in dataclasses.fields(cls):
            assert f.name in db_defaults, f"{cls.__name__}.{f.name} is not a tunable of learning.tunable_specs"
            got = f.default if isinstance(f.default, str) else float(f.default)
            assert got == db_defaults[f.name], (cls.__name__, f.name, f.default, db_defaults[f.name])
