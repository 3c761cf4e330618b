#!/usr/bin/env python3
"""Event-loop lag quantiles (microseconds) from /metrics scrapes, as JSON.

  lag_quantile.py AFTER            quantiles over everything AFTER has recorded
  lag_quantile.py BEFORE AFTER     quantiles over what was recorded between the two scrapes

Quantiles are interpolated inside histogram buckets, as Prometheus' histogram_quantile() does.
"""
import json
import re
import sys


def read(path):
    buckets = {}
    with open(path) as scrape:
        for line in scrape:
            m = re.match(r'crunch_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets[le] = float(m.group(2))
    return buckets


after = read(sys.argv[-1])
before = read(sys.argv[1]) if len(sys.argv) > 2 else {}
buckets = sorted((le, n - before.get(le, 0.0)) for le, n in after.items())
count = buckets[-1][1] if buckets else 0.0


def quantile(q):
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return round(lower * 1e6, 1)  # beyond the last bound: report the last bound
            fraction = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return round((lower + (le - lower) * fraction) * 1e6, 1)
        lower, below = le, cumulative
    return None


print(json.dumps({"samples": int(count), "p50_us": quantile(0.5), "p99_us": quantile(0.99),
                  "p999_us": quantile(0.999)}))
