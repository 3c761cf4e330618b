#!/usr/bin/env python3
"""Reads a /metrics scrape on stdin; prints the event-loop lag quantiles as JSON (microseconds).

Quantiles are interpolated inside histogram buckets, as Prometheus' histogram_quantile() does.
"""
import json
import re
import sys

buckets = []
count = 0.0
for line in sys.stdin:
    m = re.match(r'crunch_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
    if m:
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, float(m.group(2))))
    elif line.startswith("crunch_event_loop_lag_seconds_count "):
        count = float(line.split()[1])


def quantile(q):
    if count == 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower * 1e6  # beyond the last bound: report the last bound
            fraction = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return (lower + (le - lower) * fraction) * 1e6
        lower, below = le, cumulative
    return None


print(json.dumps({"samples": int(count), "p50_us": quantile(0.5), "p99_us": quantile(0.99),
                  "p999_us": quantile(0.999)}))
