#!/usr/bin/env bash
# Soak: crunchd under mixed load for a long time; its resident memory and open descriptors must
# stay flat. Not part of CI (it takes 10 minutes); run it before a release.
#   ./bench/soak.sh                 10 minutes
#   SOAK_SECONDS=120 ./bench/soak.sh
# The load, all at once and bounded in time, loopback only:
#   steady    wrk -c8 /fib/27                      work that completes
#   deadlines wrk -c16 /fib/34?timeout_ms=5        most miss their deadline (504)
#   overload  wrk -c128 /fib/35                    far beyond capacity (503)
#   vanishing curl -m 0.05 /fib/38, in a loop      clients that leave mid-job
#   probes    /healthz and /metrics every second
# Writes bench/results/soak.csv (seconds, RSS KiB, descriptors, connections open), soak.png, and
# prints the first and last minute's figures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/prepare.sh"
bench_build crunchd

seconds="${SOAK_SECONDS:-600}"
out="$root/bench/results"
mkdir -p "$out"
port="$(free_port)"
"$build/crunchd" --address 127.0.0.1 --port "$port" --log-level warn >"$out/soak-crunchd.log" 2>&1 &
pid=$!
loads=()
cleanup() {
  for p in "${loads[@]}"; do kill "$p" 2>/dev/null || true; done
  kill -TERM "$pid" 2>/dev/null || true
  { wait; } 2>/dev/null || true
}
trap cleanup EXIT
wait_healthz "$port"

url="http://127.0.0.1:$port"
wrk -t1 -c8 -d"${seconds}s" --timeout 10s "$url/fib/27" >"$out/soak-steady.txt" 2>&1 & loads+=($!)
wrk -t1 -c16 -d"${seconds}s" --timeout 10s "$url/fib/34?timeout_ms=5" >"$out/soak-deadlines.txt" 2>&1 & loads+=($!)
wrk -t1 -c128 -d"${seconds}s" --timeout 10s "$url/fib/35" >"$out/soak-overload.txt" 2>&1 & loads+=($!)
( end=$((SECONDS + seconds)); while (( SECONDS < end )); do curl -s -o /dev/null -m 0.05 "$url/fib/38" || true; done ) & loads+=($!)

echo "seconds,rss_kib,fds,connections_open" >"$out/soak.csv"
start=$SECONDS
while (( SECONDS - start < seconds )); do
  rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  fds="$(ls "/proc/$pid/fd" | wc -l)"
  open="$(curl -s -m 2 "$url/metrics" | awk '$1 == "crunch_connections_open" {print $2}')"
  curl -sf -m 2 -o /dev/null "$url/healthz" || echo "t=$((SECONDS - start))s: /healthz failed" >&2
  echo "$((SECONDS - start)),$rss,$fds,${open:-}" >>"$out/soak.csv"
  sleep 1
done
for p in "${loads[@]}"; do wait "$p" 2>/dev/null || true; done
loads=()
sleep 2  # in-flight answers and teardown
after_rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
after_fds="$(ls "/proc/$pid/fd" | wc -l)"
jobs_line="$(curl -s "$url/metrics" | grep '^crunch_jobs_total' | tr '\n' ' ')"

python3 - "$out/soak.csv" "$after_rss" "$after_fds" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
def stats(part, key):
    v = [int(r[key]) for r in part]
    return f"{min(v)}..{max(v)}"
first, last = rows[:60], rows[-60:]
print(f"samples: {len(rows)}")
print(f"RSS KiB      first minute {stats(first, 'rss_kib')}, last minute {stats(last, 'rss_kib')}, after the load {sys.argv[2]}")
print(f"descriptors  first minute {stats(first, 'fds')}, last minute {stats(last, 'fds')}, after the load {sys.argv[3]}")
PY
echo "$jobs_line"
for f in steady deadlines overload; do echo "$f: $(grep -E 'Requests/sec|Non-2xx|Socket errors' "$out/soak-$f.txt" | xargs)"; done
gnuplot <<GP || true
set terminal pngcairo size 800,400 font "sans,11"
set output "$out/soak.png"
set datafile separator ","
set title "crunchd under mixed load"
set xlabel "seconds"
set ylabel "resident memory (KiB)"
set y2label "open descriptors"
set ytics nomirror
set y2tics
set key bottom right
plot "$out/soak.csv" using 1:2 every ::1 with lines lw 2 title "RSS", "" using 1:3 every ::1 axes x1y2 with lines lw 2 title "descriptors"
GP
echo "wrote $out/soak.csv and $out/soak.png"
