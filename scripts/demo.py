"""make demo: the whole system on a seeded synthetic history (see lowcap_learning.demo).

Usage: DATABASE_URL=postgresql://... python scripts/demo.py [--small] [--out DIR] [--seed N]
The demo database is the URL's database if its name contains "demo", else lowcap_learning_demo on the
same server; it is dropped and recreated. stdout carries the seeded figures only; progress goes to stderr
(a line per phase, and a bar while replaying on a terminal, else a line per job round).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))

from lowcap_learning import demo  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' version (tests)")
    parser.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    demo.main(small=args.small, out_dir=args.out, seed=args.seed)
