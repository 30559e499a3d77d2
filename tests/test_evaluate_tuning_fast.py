"""A fast, seeded slice of `make evaluate`'s tuning scenarios (design §16) through the real pipeline:
episode rows through the capture trigger, the tuning miner, the materializer, pm_overrides read back.

Under tuning_rule evidence the targets hold (null: at most 5 % of slices get an override; planted
loosen-ts / tighten-ts: found in >= 80 %, wrong or mixed in <= 5 %); under plan the same data gives
most null slices an override, so switching the evidence off fails this test."""

from __future__ import annotations

import time

from conftest import SERVER_URL
from lowcap_learning import evaluate_tuning

DESIGN = {
    "null_windows": (100, 200),
    "null_base_rates": (0.1, 0.3),
    "repeats": 2,
    "planted_windows": (600,),
    "planted_repeats": 2,
}
SEEDS = range(3)


def test_evidence_meets_the_targets_and_plan_does_not(tmp_path):
    started = time.perf_counter()
    result = evaluate_tuning.run(SERVER_URL, seeds=SEEDS, workers=1, design=DESIGN)
    elapsed = time.perf_counter() - started
    ev, plan = result["results"]["evidence"], result["results"]["plan"]

    assert ev["null"]["slices"] == 24 and ev["loosen_ts"]["slices"] == 6 and ev["tighten_ts"]["slices"] == 6
    assert ev["null"]["overrides"] <= 0.05 * ev["null"]["slices"]
    for signal in ("loosen_ts", "tighten_ts"):
        assert ev[signal]["found_rate"] >= 0.8, (signal, ev[signal])
        assert ev[signal]["wrong_or_mixed_rate"] <= 0.05, (signal, ev[signal])
    assert ev["meets_targets"]["all"]

    # The plan's rule on the same rows: noise becomes overrides, and the loosening is never found.
    assert plan["null"]["rate"] >= 0.5
    assert plan["loosen_ts"]["found_rate"] < 0.8
    assert not plan["meets_targets"]["all"]

    paths = evaluate_tuning.write_plots(result, tmp_path)
    assert [p.name for p in paths] == ["tuning_null_override_rate.png", "tuning_planted_power.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert any(line.startswith("| evidence | 0 / 24") or line.startswith("| evidence | 1 / 24")
               for line in evaluate_tuning.table(result))
    assert elapsed < 30, f"the fast tuning evaluation took {elapsed:.1f} s"
