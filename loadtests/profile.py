"""Where a worker's time goes under load: py-spy samples of a live worker, summarised.

    .venv/bin/python loadtests/profile.py STACKS.folded      # summarise an existing profile

bench.py --profile runs `py-spy record --nonblocking` (the target is never paused) against one
worker during a closed-loop Decide phase and writes the summary next to the other results.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# First match from the leaf up decides a sample's stage; asyncio and grpc frames sit at the
# bottom of every stack, so they only win when nothing more specific is on it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("score (scorer / LightGBM)", ("nba_service/scoring/", "lightgbm/")),
    ("rules + arbitration (engine)", ("nba_service/engine/",)),
    ("encode (features)", ("features/",)),
    ("store (redis-py, store code)", ("nba_service/store/", "redis/", "hiredis")),
    ("servicer (validation, protobuf conversion)", ("nba_service/servicer.py",)),
    ("decide.py (coordination, response types)", ("nba_service/decide", "nba_service/types.py")),
    ("interceptor / admin", ("nba_service/interceptors.py", "nba_service/admin.py")),
    ("gRPC aio transport", ("grpc/",)),
    # grpc.aio's Cython callbacks have no Python frames: their time lands on Handle._run.
    ("event loop + gRPC aio core", ("asyncio/",)),
)


def parse_folded(text: str) -> list[tuple[list[str], int]]:
    out: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def _file(frame: str) -> str:
    # "function (path/to/file.py:123)"
    inside = frame[frame.rfind("(") + 1:].rstrip(")")
    return inside.rsplit(":", 1)[0]


def _func(frame: str) -> str:
    name, _, rest = frame.partition(" (")
    path = rest.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        f = _file(frame)
        for stage, needles in STAGES:
            if any(n in f for n in needles):
                return stage
    return "other"


def summarize(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    total = sum(c for _, c in stacks)
    if total == 0:
        return "no samples\n"
    stage: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, c in stacks:
        stage[stage_of(frames)] += c
        self_t[_func(frames[-1])] += c
        for f in {_func(x) for x in frames}:
            incl[f] += c
    lines = [f"{total} samples of the worker's Python threads (idle time excluded)", "",
             "By stage (a sample counts for the innermost stage on its stack):"]
    lines += [f"  {100 * c / total:5.1f}%  {s}" for s, c in stage.most_common()]
    lines += ["", f"Top {top} functions by own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_t.most_common(top)]
    lines += ["", f"Top {top} functions including callees:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines) + "\n"


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise RuntimeError("py-spy not found: pip install py-spy (the `load` extra)")
    return exe


def profile_phase(runner: Any, pid: int, args: Any, log: Any) -> Path:
    """Profile worker `pid` during a closed-loop Decide phase at the highest concurrency."""
    cmax = max(args.concurrency)
    folded = args.workdir / f"profile_decide_n{args.profile_candidates}.folded"
    seconds = args.duration + args.warmup + 1.0
    spy = subprocess.Popen(
        [py_spy(), "record", "--pid", str(pid), "--nonblocking", "--rate", "250",
         "--duration", str(int(seconds + 0.999)), "--format", "raw", "--output", str(folded)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        phase = runner.run(f"profiled_c{cmax}", "closed", record=False, concurrency=cmax)
    finally:
        _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not folded.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')}")
    text = summarize(parse_folded(folded.read_text()))
    header = (f"py-spy profile of one worker (pid {pid}), Decide, N={args.profile_candidates}, "
              f"closed loop c={cmax}, {phase['throughput']:.0f} decisions/s while sampled\n"
              f"command: py-spy record --pid {pid} --nonblocking --rate 250 --format raw\n\n")
    out = args.out / f"profile_decide_n{args.profile_candidates}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text, encoding="utf-8")
    log(f"    profile: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Summarise py-spy raw (folded) stacks.")
    p.add_argument("folded", type=Path)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    print(summarize(parse_folded(a.folded.read_text()), a.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
