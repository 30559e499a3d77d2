"""Performance figures of lowcap-learning (`make bench`, entry point scripts/bench.py).

One module a figure (trigger, live, bulk, growth, miner, strength, simulation, runtime), each with its
jobs (run in child processes by harness.Runner), its `measure` (the parent's order of jobs) and its
report rows; report.py renders the results through table.py.
"""
