#!/usr/bin/env python3
"""Performance figures of lowcap-learning (`make bench`): see bench/cli.py, or run with --help.

The work is in the package scripts/bench/ (on import a package directory wins over this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))  # this checkout's lowcap_learning

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
