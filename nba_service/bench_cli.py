"""`nba bench`: the service benchmark (loadtests/bench.py) behind the `nba` command.

The harness lives in loadtests/ next to the locust file and its results; it needs a source
checkout (the fixture trains a model with `training` and reads `examples/`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "loadtests" / "bench.py").is_file():
        print("error: nba bench runs from a source checkout (loadtests/bench.py not found "
              f"under {root})", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    bench = importlib.import_module("loadtests.bench")
    return int(bench.main(list(argv)))
