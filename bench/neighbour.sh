#!/usr/bin/env bash
# Good neighbour (issue 31): how long another process on the same host waits for a CPU while
# crunch's workers and their helpers are busy, for each worker priority, in one run.
#   ./bench/neighbour.sh                      batch and idle, 10 s of load each, two rounds
#   SECONDS_EACH=5 ROUNDS=1 POLICIES="batch idle normal" ./bench/neighbour.sh
# For each policy, alternating: crunchd (2 workers, that policy) under wrk -t1 -c4 posting a 12 MP
# JPEG for 400 px WebP thumbnails, and beside it a /healthz probe every 2 ms as an ordinary
# process (SCHED_OTHER, nice 0: the neighbour) and one at real-time priority (chrt -f 2: the
# server's own part); perf sched records how long the ordinary probe waited to run. First, the
# same probes against the idle server. Loopback only; every load is bounded in time.
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/prepare.sh"
bench_build crunchd latency_probe make_image
seconds="${SECONDS_EACH:-10}"
rounds="${ROUNDS:-2}"
policies="${POLICIES:-batch idle}"
out="$root/bench/results"
mkdir -p "$out"
photo="$out/photo-4000x3000.jpg"
[[ -s "$photo" ]] || "$build/make_image" 4000 3000 jpeg 88 "$photo" >/dev/null
# The real-time probe under a name of its own, so that perf sched tells the two apart.
ln -sf "$build/latency_probe" "$out/rt_probe"
perf_ok=0
command -v perf >/dev/null && perf sched record -o /dev/null -- true >/dev/null 2>&1 && perf_ok=1
pid=""
trap '[[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; true' EXIT

p99() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])["latency_us"]; print("p99 %.2f ms, p99.9 %.2f ms, max %.2f ms" % (d["p99"] / 1000, d["p999"] / 1000, d["max"] / 1000))' "$1"; }

# The ordinary probe's scheduling delays (woken to running), from perf sched timehist: their
# p50, p99 and largest over every time it was woken, and for each wait over 0.5 ms the task that
# held its CPU meanwhile (the one that ran on that CPU just before it).
probe_waits() {  # PERF_DATA
  perf sched timehist -i "$1" 2>/dev/null | awk 'NR > 3 {
      if ($3 ~ /^latency_probe/) {
        print "wait", $5
        if ($5 + 0 > 0.5) { task = prev[$2]; sub(/\[.*/, "", task); print "behind", task }
      }
      prev[$2] = $3
    }' | python3 -c '
import collections, sys
waits, behind = [], collections.Counter()
for line in sys.stdin:
    what, value = line.split(maxsplit=1)
    if what == "wait": waits.append(float(value))
    else: behind[value.strip()] += 1
waits.sort()
if waits:
    q = lambda f: waits[min(len(waits) - 1, int(f * len(waits)))]
    print("perf sched: the ordinary probe waited for a CPU p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d wake-ups; "
          "%d waits over 0.5 ms, behind: %s" % (q(0.5), q(0.99), waits[-1], len(waits), sum(behind.values()),
          ", ".join("%s %d" % kv for kv in behind.most_common()) or "-"))'
}

measure() {  # LABEL
  local label="$1" ordinary realtime data="$out/neighbour-$1.perf"
  if (( perf_ok )); then
    perf sched record -q -o "$data" -- env PROBE_NORMAL=1 "$build/latency_probe" "$port" /healthz "$seconds" 2000 >"$out/ordinary.json" 2>/dev/null &
  else
    PROBE_NORMAL=1 "$build/latency_probe" "$port" /healthz "$seconds" 2000 >"$out/ordinary.json" &
  fi
  local probe=$!
  PROBE_NORMAL=1 chrt -f 2 "$out/rt_probe" "$port" /healthz "$seconds" 2000 >"$out/realtime.json" || true
  wait "$probe" || true
  ordinary="$(cat "$out/ordinary.json")"
  realtime="$(cat "$out/realtime.json")"
  echo "  $label: ordinary probe $(p99 "$ordinary"); real-time probe $(p99 "$realtime")"
  if (( perf_ok )); then echo "    $(probe_waits "$data")"; rm -f "$data"; fi
}

for round in $(seq "$rounds"); do
  for policy in $policies; do
    start_peer_crunchd "$out/neighbour-crunchd.log" --workers 2 --worker-priority "$policy"
    echo "round $round, --worker-priority $policy"
    measure "idle server"
    BODY_FILE="$photo" CONTENT_TYPE=image/jpeg wrk -t1 -c4 -d"$((seconds + 2))s" --timeout 20s -s "$root/bench/post.lua" \
        "http://127.0.0.1:$port/v1/image/thumbnail?width=400&format=webp" >"$out/neighbour-wrk.txt" 2>&1 &
    load=$!
    sleep 1  # let the load reach its pace before the probes start (pacing, not synchronisation)
    measure "under thumbnail load"
    wait "$load" || true
    echo "    thumbnails: $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["rps"])' "$out/neighbour-wrk.txt")/s"
    stop_peer
  done
done
