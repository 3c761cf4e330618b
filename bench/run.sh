#!/usr/bin/env bash
# crunch benchmark driver: one command, loopback only, every load bounded in time.
#   ./bench/run.sh              all scenarios, about 2.5 minutes on 2 cores
#   DURATION=5 ./bench/run.sh   shorter loads
# Prints each figure as it comes, then writes bench/results/latest.json and, from it,
# bench/results/report.md with PNG plots (gnuplot). A scenario that fails stops the run loudly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
crunch_packages+=(wrk gnuplot-nox python3)
crunch_install_deps

duration="${DURATION:-10}"
build="$root/build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target crunchd fib_single latency_probe >/dev/null
out="$root/bench/results"
mkdir -p "$out"
log="$out/crunchd.log"
cores="$(nproc)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $cores cores, kernel $(uname -r)"
pid=""

stop_server() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap stop_server EXIT

# Starts crunchd on a free loopback port with the given flags; sets $port. Readiness is read from
# /healthz, not from the log, so any --log-level works.
start_server() {
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$build/crunchd" --address 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
    sleep 0.05
  done
  echo "crunchd did not start:" >&2; cat "$log" >&2; exit 1
}

# wrk with the JSON reporter; prints the JSON line.
load() {  # threads connections seconds path [extra wrk args]
  local t="$1" c="$2" d="$3" path="$4"; shift 4
  wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$root/bench/report.lua" "$@" "http://127.0.0.1:$port$path" | tail -1
}

json_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }

# CPU used by other processes during a scenario: cpu_begin NAME ... cpu_end NAME.
declare -A cpu
cpu_begin() { python3 "$root/bench/cpu_snapshot.py" >"$out/cpu-$1.json"; }
cpu_end() {
  python3 "$root/bench/cpu_snapshot.py" >"$out/cpu-$1-end.json"
  cpu[$1]="$(python3 "$root/bench/cpu_snapshot.py" "$out/cpu-$1.json" "$out/cpu-$1-end.json" ${pid:+"$pid"})"
}

echo "machine: $machine"
echo "commit:  $commit"

# 1. Physical limit: the same fib kernel, one thread, no server — before, and again after the run.
single30="$("$build/fib_single" 30 41)"
t30="$(json_get "$single30" median_s)"
limit="$(python3 -c "print($cores / $t30)")"
echo "fib(30) single thread: ${t30}s  -> limit ${limit%.*} req/s on $cores cores"

# 2. CPU throughput: /fib/30 saturating the workers.
start_server
cpu_begin throughput
thr="$(load 2 16 "$duration" /fib/30)"
cpu_end throughput
stop_server
rps="$(json_get "$thr" rps)"
echo "/fib/30 wrk -t2 -c16: $rps req/s, ratio to limit $(python3 -c "print(round($rps / $limit, 3))"), errors $(json_get "$thr" errors); others: ${cpu[throughput]}"

# 3. Responsiveness under CPU load, per worker priority, and inline for contrast: /fib/32 keeps
#    every worker busy while /healthz is measured twice — open-loop (one request every 2 ms, as a
#    health checker sends them) and closed-loop with wrk (as fast as it can, which also loads the
#    CPU). The loop lag comes from /metrics, scraped between the phases.
declare -A hz probe lag lag_wrk
for variant in batch idle normal inline; do
  if [[ "$variant" == inline ]]; then start_server --mode inline; else start_server --worker-priority "$variant"; fi
  wrk -t1 -c"$((2 * cores))" -d"$((duration + 2))s" --timeout 10s "http://127.0.0.1:$port/fib/32" >/dev/null 2>&1 &
  bg=$!
  sleep 1
  cpu_begin "responsiveness_$variant"
  curl -s "http://127.0.0.1:$port/metrics" >"$out/scrape0.txt"
  probe[$variant]="$("$build/latency_probe" "$port" /healthz "$((duration / 2))" 2000)"
  curl -s "http://127.0.0.1:$port/metrics" >"$out/scrape1.txt"
  hz[$variant]="$(load 1 4 "$((duration / 2))" /healthz)"
  curl -s "http://127.0.0.1:$port/metrics" >"$out/scrape2.txt"
  cpu_end "responsiveness_$variant"
  wait "$bg" || true
  lag[$variant]="$(python3 "$root/bench/lag_quantile.py" "$out/scrape0.txt" "$out/scrape1.txt")"
  lag_wrk[$variant]="$(python3 "$root/bench/lag_quantile.py" "$out/scrape1.txt" "$out/scrape2.txt")"
  stop_server
  echo "/healthz under /fib/32 load, workers $variant:"
  echo "    open-loop 500/s: p50 $(json_get "${probe[$variant]}" latency_us.p50)us p99 $(json_get "${probe[$variant]}" latency_us.p99)us p99.9 $(json_get "${probe[$variant]}" latency_us.p999)us max $(json_get "${probe[$variant]}" latency_us.max)us"
  echo "    wrk -t1 -c4:     p50 $(json_get "${hz[$variant]}" latency_us.p50)us p99 $(json_get "${hz[$variant]}" latency_us.p99)us max $(json_get "${hz[$variant]}" latency_us.max)us, $(json_get "${hz[$variant]}" rps) req/s"
  echo "    loop lag, open-loop phase: p50 $(json_get "${lag[$variant]}" p50_us)us p99 $(json_get "${lag[$variant]}" p99_us)us p99.9 $(json_get "${lag[$variant]}" p999_us)us; wrk phase: p50 $(json_get "${lag_wrk[$variant]}" p50_us)us p99 $(json_get "${lag_wrk[$variant]}" p99_us)us"
  echo "    others: ${cpu[responsiveness_$variant]}"
done

# 4. HTTP overhead: /healthz alone, with the default access log and without it.
start_server
cpu_begin http_overhead
idle_hz="$(load 2 64 "$duration" /healthz)"
cpu_end http_overhead
stop_server
start_server --log-level warn
idle_hz_quiet="$(load 2 64 "$duration" /healthz)"
stop_server
echo "/healthz alone wrk -t2 -c64: $(json_get "$idle_hz" rps) req/s, p99 $(json_get "$idle_hz" latency_us.p99)us (access log on); $(json_get "$idle_hz_quiet" rps) req/s, p99 $(json_get "$idle_hz_quiet" latency_us.p99)us (--log-level warn); others: ${cpu[http_overhead]}"

# 5. Overload: /fib/35 from 256 connections, far beyond what the workers can do. The excess must
#    get fast 503s, accepted requests a bounded latency, the loop stays fast, and once the clients
#    leave no CPU keeps burning for them.
start_server
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
cpu_begin overload
wrk -t2 -c256 -d"$((duration + 5))s" --timeout 10s -s "$root/bench/overload.lua" "http://127.0.0.1:$port/fib/35" >"$out/overload.txt" 2>&1 &
bg=$!
sleep 2
over_probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
wait "$bg" || true
cpu_end overload
over="$(tail -1 "$out/overload.txt")"
sleep 1  # in-flight answers and connection teardown are allowed their second
t0="$(cpu_ticks)"; sleep 1; t1="$(cpu_ticks)"
cpu_after="$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK), 3))")"
peak_rss_kib="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
overload_metrics="$(curl -s "http://127.0.0.1:$port/metrics" | grep '^crunch_jobs_total' | tr '\n' ' ')"
stop_server
echo "/fib/35 wrk -t2 -c256: accepted $(json_get "$over" accepted_rps)/s, rejected (503) $(json_get "$over" rejected_rps)/s, socket errors $(json_get "$over" socket_errors)"
echo "    accepted server time p50 $(json_get "$over" accepted_server_ms.p50) ms p99 $(json_get "$over" accepted_server_ms.p99) ms max $(json_get "$over" accepted_server_ms.max) ms; all answers p50 $(json_get "$over" all_latency_us.p50)us"
echo "    /healthz open-loop meanwhile: p50 $(json_get "$over_probe" latency_us.p50)us p99 $(json_get "$over_probe" latency_us.p99)us max $(json_get "$over_probe" latency_us.max)us"
echo "    CPU seconds used from 1 s to 2 s after wrk stopped: $cpu_after; peak RSS $((peak_rss_kib / 1024)) MiB; others: ${cpu[overload]}"
echo "    $overload_metrics"

# 6. Scaling: /fib/30 throughput with 1, 2, ... usable-cores workers.
scaling="["
for w in $(seq 1 "$cores"); do
  start_server --workers "$w"
  s="$(load 2 "$((8 * w))" "$((duration / 2))" /fib/30)"
  stop_server
  echo "/fib/30 with $w worker(s): $(json_get "$s" rps) req/s"
  scaling+="{\"workers\":$w,\"rps\":$(json_get "$s" rps)},"
done
scaling="${scaling%,}]"

single30_after="$("$build/fib_single" 30 41)"
echo "fib(30) single thread after the run: $(json_get "$single30_after" median_s)s"

cat >"$out/latest.json" <<JSON
{"commit":"$commit","machine":"$machine","cores":$cores,"duration_s":$duration,
 "fib30_single":$single30,"fib30_single_after":$single30_after,"limit_rps":$limit,"fib30_load":$thr,
 "healthz_under_load_wrk":{"idle":${hz[idle]},"batch":${hz[batch]},"normal":${hz[normal]},"inline":${hz[inline]}},
 "healthz_under_load_open_loop":{"idle":${probe[idle]},"batch":${probe[batch]},"normal":${probe[normal]},"inline":${probe[inline]}},
 "loop_lag_open_loop_phase":{"idle":${lag[idle]},"batch":${lag[batch]},"normal":${lag[normal]},"inline":${lag[inline]}},
 "loop_lag_wrk_phase":{"idle":${lag_wrk[idle]},"batch":${lag_wrk[batch]},"normal":${lag_wrk[normal]},"inline":${lag_wrk[inline]}},
 "healthz_alone":$idle_hz,"healthz_alone_log_warn":$idle_hz_quiet,
 "overload":{"wrk":$over,"healthz_open_loop":$over_probe,"cpu_seconds_after":$cpu_after,"peak_rss_kib":$peak_rss_kib},
 "scaling":$scaling,
 "cpu":{"throughput":${cpu[throughput]},"responsiveness_batch":${cpu[responsiveness_batch]},"http_overhead":${cpu[http_overhead]},"overload":${cpu[overload]}}}
JSON
echo "wrote $out/latest.json"
python3 "$root/bench/report.py" "$out"
