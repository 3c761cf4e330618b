#!/usr/bin/env bash
# Before and after, in the same run: the speed figures a change must not lose, for crunchd built
# at REV (in a temporary worktree) and for this checkout, alternating ROUNDS times (default 3) so
# that the machine's drift falls on both alike.
#   ./bench/ab.sh REV                 e.g. ./bench/ab.sh origin/main, ./bench/ab.sh HEAD~5
#   DURATION=6 ROUNDS=5 ./bench/ab.sh REV
# Each round, for each build: /fib/30 throughput with the workers saturated (run.sh's scenario 2),
# /healthz open-loop latency while /fib/32 keeps every worker busy (scenario 3), and /healthz and
# /fib/1 throughput (scenario 14). Prints the medians and after/before ratios and writes
# bench/results/ab.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/prepare.sh"
rev="${1:?usage: bench/ab.sh REV}"
duration="${DURATION:-4}"
rounds="${ROUNDS:-3}"
out="$root/bench/results"
mkdir -p "$out"

bench_build crunchd latency_probe
before="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$before/src" >/dev/null 2>&1 || true; rm -rf "$before"' EXIT
git -C "$root" worktree add --detach "$before/src" "$rev" >/dev/null 2>&1
cmake -S "$before/src" -B "$before/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_TESTS=OFF >/dev/null
cmake --build "$before/build" --target crunchd >/dev/null
declare -A bins=([before]="$before/build/crunchd" [after]="$build/crunchd")

pid=""
rows=()
for round in $(seq "$rounds"); do
  for side in before after; do
    CRUNCHD="${bins[$side]}" start_peer_crunchd "$out/ab-crunchd.log"
    fib30="$(load 2 16 "$duration" /fib/30)"
    wrk -t1 -c4 -d"$((duration + 2))s" --timeout 10s "http://127.0.0.1:$port/fib/32" >/dev/null 2>&1 &
    bg=$!
    sleep 1
    probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
    wait "$bg" || true
    health="$(load 1 64 "$duration" /healthz)"
    fib1="$(load 1 64 "$duration" /fib/1)"
    stop_peer
    rows+=("{\"round\":$round,\"side\":\"$side\",\"fib30_rps\":$(json_get "$fib30" rps),\"healthz_under_load_p99_us\":$(json_get "$probe" latency_us.p99),\"healthz_rps\":$(json_get "$health" rps),\"fib1_rps\":$(json_get "$fib1" rps)}")
    echo "round $round $side: /fib/30 $(json_get "$fib30" rps) req/s; /healthz under load p99 $(json_get "$probe" latency_us.p99)us; /healthz $(json_get "$health" rps) req/s; /fib/1 $(json_get "$fib1" rps) req/s"
  done
done
(IFS=,; echo "{\"before\":\"$(git -C "$root" rev-parse --short "$rev")\",\"after\":\"$(git -C "$root" describe --always --dirty)\",\"duration_s\":$duration,\"rows\":[${rows[*]}]}") >"$out/ab.json"
python3 - "$out/ab.json" <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
print(f"medians over {len(d['rows']) // 2} rounds, before {d['before']} / after {d['after']}:")
for key, what in [("fib30_rps", "/fib/30 req/s (S2)"), ("healthz_under_load_p99_us", "/healthz p99 under /fib/32, us (S3)"),
                  ("healthz_rps", "/healthz req/s"), ("fib1_rps", "/fib/1 req/s")]:
    b = statistics.median(r[key] for r in d["rows"] if r["side"] == "before")
    a = statistics.median(r[key] for r in d["rows"] if r["side"] == "after")
    print(f"  {what:40} before {b:10.1f}  after {a:10.1f}  after/before {a / b:.3f}")
PY
