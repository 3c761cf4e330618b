#!/usr/bin/env python3
"""CPU accounting for honest benchmark figures.

  cpu_snapshot.py > A.json                 take a snapshot: machine busy time, and per process
  cpu_snapshot.py A.json B.json PID...     seconds of CPU used between the snapshots by processes
                                           other than the benchmark's own (the PIDs given and any
                                           wrk, latency_probe or curl), as JSON

Processes that start and end between the snapshots are not seen; the machine-wide busy time is,
so 'unattributed' holds what the machine did that no surviving process accounts for.
"""
import json
import os
import sys

TICKS = os.sysconf("SC_CLK_TCK")
OURS = {"wrk", "latency_probe", "curl", "crunchd", "fib_single"}


def snapshot():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle and iowait
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        rest = text[text.rindex(")") + 2:].split()
        procs[pid] = {"comm": comm, "cpu": (int(rest[11]) + int(rest[12])) / TICKS}
    return {"busy": busy / TICKS, "procs": procs}


def diff(a, b, ours):
    others, mine = 0.0, 0.0
    for pid, p in b["procs"].items():
        used = p["cpu"] - a["procs"].get(pid, {"cpu": 0.0})["cpu"] if pid in a["procs"] else p["cpu"]
        if pid in ours or p["comm"] in OURS:
            mine += used
        elif pid in a["procs"]:
            others += used
    total = b["busy"] - a["busy"]
    return {"machine_busy_s": round(total, 2), "benchmark_s": round(mine, 2), "others_s": round(others, 2),
            "unattributed_s": round(max(0.0, total - mine - others), 2)}


if len(sys.argv) == 1:
    print(json.dumps(snapshot()))
else:
    with open(sys.argv[1]) as f:
        a = json.load(f)
    with open(sys.argv[2]) as f:
        b = json.load(f)
    print(json.dumps(diff(a, b, set(sys.argv[3:]))))
