"""The evaluation targets of design §16, fast and seeded: on the same seeds, through the real
trigger, the evidence rule keeps the split on null data and follows a planted edge (and its move),
while the plan's rule drifts far on null data. Fails if the evidence is switched off (the evidence
figures would be the plan's). The full run (30 seeds) is `make evaluate`."""

from __future__ import annotations

import time

from conftest import SERVER_URL
from lowcap_learning import evaluate_allocation

SEEDS = 4


def test_evidence_learns_signal_not_noise_on_the_seeded_scenarios():
    started = time.perf_counter()
    result = evaluate_allocation.run(SERVER_URL, seeds=SEEDS, rules=("evidence", "plan"), first_seed=0)
    evidence, plan = result["rules"]["evidence"], result["rules"]["plan"]
    # The design §16 targets, on these seeds.
    assert evidence["null_final_mean"] <= 0.05, evidence
    assert evidence["null_final_p90"] <= 0.15, evidence
    assert evidence["edge_gain_mean"] >= 0.15, evidence
    assert evidence["edge_below"] == 0, evidence
    assert evidence["shift_above"] >= SEEDS - 1, evidence
    # The same seeds under the plan's rule: the noise moves the split far.
    assert plan["null_final_mean"] >= 0.15, plan
    assert plan["null_final_mean"] >= evidence["null_final_mean"] + 0.1, (plan, evidence)
    assert time.perf_counter() - started < 30
