"""Where the CPU went during the load: cumulative CPU time of every process on the machine,
grouped by command name, read from /proc before and after the measured wrk run.

    python bench/cpu_split.py snapshot > before.json
    python bench/cpu_split.py per-request before.json after.json REQUESTS  (served between them)

Prints "CPU key=value ..." with milliseconds of CPU per request for the app (gunicorn),
PostgreSQL, Redis, the load generator (wrk) and everything else, so the summary can say
how much of a 2-core budget each part spends on one purchase.
"""

import json
import os
import sys
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = {"gunicorn": "app", "postgres": "postgres", "redis-server": "redis", "wrk": "wrk"}


def snapshot() -> dict[str, int]:
    totals: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        totals[name] = totals.get(name, 0) + ticks
    return totals


def per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    spent: dict[str, float] = {}
    for name, ticks in after.items():
        delta = ticks - before.get(name, 0)
        if delta > 0:
            group = GROUPS.get(name, "other")
            spent[group] = spent.get(group, 0) + delta
    return {group: 1000 * ticks / TICKS / max(requests, 1) for group, ticks in spent.items()}


def main() -> None:
    if sys.argv[1] == "snapshot":
        print(json.dumps(snapshot()))
        return
    before, after = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
    spent = per_request(before, after, int(sys.argv[4]))
    order = ["app", "postgres", "redis", "wrk", "other"]
    parts = " ".join(f"{g}_ms={spent.get(g, 0):.2f}" for g in order)
    print(f"CPU {parts} total_ms={sum(spent.values()):.2f}")


if __name__ == "__main__":
    main()
