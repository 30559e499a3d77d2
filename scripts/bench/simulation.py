"""Lever simulation (design §10) against a plain-Python loop over the same grid; the loop runs on a few
lessons and is extrapolated."""

from __future__ import annotations

import itertools

from bench.harness import NOT_AVAILABLE, SPAN_DAYS, START, optional, timed
from bench.table import Row, filled, verdict
from lowcap_learning import synthetic

SIZES = {
    False: {"sim_lessons": 1000, "sim_events": 1000, "sim_python_lessons": 5},
    True: {"sim_lessons": 20, "sim_events": 200, "sim_python_lessons": 1},
}
TARGET = "≤ 5 s, ≥ 50× plain Python"
TS_LEVERS = (-0.10, -0.05, 0.0, 0.05, 0.10)
HALO_LEVERS = (-0.2, -0.1, 0.0, 0.1, 0.2)
SLOPE_LEVERS = (-0.002, -0.001, 0.0, 0.001, 0.002)


def sim_events(n_lessons: int, n_events: int):
    """Per lesson (a generator), its events' decision samples, decision and outcome."""
    for k in range(n_lessons):
        rows = synthetic.episode_events(
            n_events, seed=1000 + k, start=START, span_days=SPAN_DAYS, missing_thresholds_share=0
        )
        events = []
        for r in rows:
            if r["outcome"] == "neutral":
                r["outcome"] = "failure"
            last = r["factors"]["samples"][-1]
            events.append({**last, "decision": r["decision"], "outcome": r["outcome"]})
        yield events


def python_grid(events: list[dict]) -> tuple:
    """The plain loop: every non-zero lever combination, every event, base thresholds 0.60 / 1.0 / 0.0."""

    def passes(e, ts_min, halo_max, slope_min):
        return (
            e["ts_score"] >= ts_min
            and e["halo_distance"] <= halo_max
            and (e["ema60_slope"] > slope_min or e["ema144_slope"] >= slope_min)
        )

    best = None
    for dt, dh, ds in itertools.product(TS_LEVERS, HALO_LEVERS, SLOPE_LEVERS):
        if dt == dh == ds == 0:
            continue
        gained = lost = 0
        for e in events:
            base = passes(e, 0.60, 1.0, 0.0)
            if base != (e["decision"] == "acted"):
                continue
            cand = passes(e, 0.60 * (1 + dt), 1.0 * (1 + dh), 0.0 + ds)
            if cand == base:
                continue
            if not base:  # skipped -> pass
                gained += e["outcome"] == "success"
                lost += e["outcome"] == "failure"
            else:  # acted -> fail
                gained += e["outcome"] == "failure"
                lost += e["outcome"] == "success"
        key = ((gained + 1) / (lost + 1), gained)
        if best is None or key > best[0]:
            best = (key, (dt, dh, ds))
    return best


def as_arrays(arrays, events: list[dict]):
    """One lesson's events as lowcap_learning.simulate.EventArrays at the base thresholds."""
    import numpy as np

    col = {k: np.array([e[k] for e in events]) for k in events[0]}
    n = len(events)
    samples = ("ts_score", "halo_distance", "ema60_slope", "ema144_slope", "ts_ok", "slope_ok", "entry_zone_ok")
    return arrays(
        acted=col["decision"] == "acted",
        success=col["outcome"] == "success",
        **{k: col[k] for k in samples},
        ts_min=np.full(n, 0.60),
        halo_max=np.full(n, 1.0),
        slope_min=np.full(n, 0.0),
    )


def job_simulation(url: str, size: dict) -> dict:
    n_lessons, n_events = size["sim_lessons"], size["sim_events"]
    lessons = list(sim_events(size["sim_python_lessons"], n_events))
    with timed() as python:
        for events in lessons:
            python_grid(events)
    per_lesson_python = python.seconds / len(lessons)
    result = {
        "lessons": n_lessons,
        "events_per_lesson": n_events,
        "python_seconds_per_lesson": per_lesson_python,
        "python_seconds_extrapolated": per_lesson_python * n_lessons,
        "python_lessons_measured": len(lessons),
    }
    simulate = optional("lowcap_learning.simulate", "simulate")
    arrays = optional("lowcap_learning.simulate", "EventArrays")
    if simulate is None or arrays is None:
        return {**result, "status": NOT_AVAILABLE}
    all_events = [as_arrays(arrays, e) for e in sim_events(n_lessons, n_events)]
    simulate(all_events[0])
    with timed() as t:
        found = sum(simulate(ev).best is not None for ev in all_events)
    result |= {"seconds": t.seconds, "lessons_with_best": found}
    result["speedup"] = result["python_seconds_extrapolated"] / t.seconds
    return result


JOBS = {"simulation": job_simulation}
FIGURE = "lever simulation"


ROW = Row(
    "lever simulation, {lessons:,} × {events_per_lesson:,}",
    "{seconds:.2f} s vs {python_seconds_extrapolated:.0f} s plain Python",
    "{speedup:.0f}×",
    TARGET,
    "{verdict}",
)


def rows(t: dict) -> list[Row]:
    return filled([ROW], {**t, "verdict": verdict(t["seconds"] <= 5 and t["speedup"] >= 50)})
