"""The closed-loop acceptance run: the simulator against a live service, several rounds.

    .venv/bin/python examples/closed_loop.py [--rounds 5] [--visits 3000] [--plot PATH]

Starts a store and a registry-watching service, then each round: simulated visits -> Decide
over gRPC -> simulated outcomes -> RecordOutcome -> `nba logs export` -> train -> publish ->
hot swap. Prints the random / served / oracle values per round and saves a plot. Every option
of `python -m training loop --help` is accepted; results: docs/closed-loop-results.md.
"""

from __future__ import annotations

import sys

from training.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["loop", *sys.argv[1:]]))
