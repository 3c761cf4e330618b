#!/usr/bin/env bash
# crunch benchmark driver: one command, loopback only, every load bounded in time.
#   ./bench/run.sh              all scenarios, about 5 minutes on 2 cores
#   DURATION=4 ./bench/run.sh   shorter loads
#   ONLY="password json_body" ./bench/run.sh   those scenarios alone (the report shows the rest as not run)
# Prints each figure as it comes, then writes bench/results/latest.json and, from it,
# bench/results/report.md with PNG plots (gnuplot). Each scenario runs on its own: one that fails
# is reported as failed (in the output, the JSON and the report) and the others still run; the
# driver then exits 1.
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/prepare.sh"
bench_build crunchd fib_single latency_probe argon2_single json_body thumbnail_single make_image

duration="${DURATION:-10}"
half="$(( duration / 2 > 1 ? duration / 2 : 1 ))"
out="$root/bench/results"
parts="$out/parts"
rm -rf "$parts" "$out"/*.err
mkdir -p "$parts"
log="$out/crunchd.log"
cores="$(nproc)"
commit="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $cores cores, kernel $(uname -r)"
pid=""

stop_server() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}

# Starts crunchd on a free loopback port with the given flags; sets $port. Readiness is read from
# /healthz, not from the log, so any --log-level works.
start_server() {
  port="$(free_port)"
  "$build/crunchd" --address 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
  pid=$!
  wait_healthz "$port" || { echo "crunchd did not start:" >&2; cat "$log" >&2; return 1; }
}

# Three runs of the same load → {"median": the run with the median req/s, "runs": [...]}.
median_of() { python3 -c 'import json,sys
runs=[json.loads(l) for l in sys.stdin if l.strip()]
assert runs, "no runs"
print(json.dumps({"median": sorted(runs, key=lambda r: r["rps"])[len(runs)//2], "runs": runs}))'; }

runs_of() { python3 -c 'import json,sys; print(", ".join("%.0f" % r["rps"] for r in json.loads(sys.argv[1])["runs"]))' "$1"; }

# CPU used by other processes during a scenario: cpu_begin; ...; cpu_end → prints the JSON.
cpu_begin() { python3 "$root/bench/cpu_snapshot.py" >"$out/cpu-begin.json"; }
cpu_end() {
  python3 "$root/bench/cpu_snapshot.py" >"$out/cpu-end.json"
  python3 "$root/bench/cpu_snapshot.py" "$out/cpu-begin.json" "$out/cpu-end.json" ${pid:+"$pid"}
}

# 1. Physical limit: the same fib kernel, one thread, no server — before, and again after the run.
s_limit() {
  local single t30
  single="$("$build/fib_single" 30 41)"
  t30="$(json_get "$single" median_s)"
  echo "{\"fib30_single\":$single,\"limit_rps\":$(python3 -c "print($cores / $t30)")}" >"$parts/limit.json"
  echo "fib(30) single thread: ${t30}s  -> limit $(python3 -c "print(int($cores / $t30))") req/s on $cores cores"
}
s_limit_after() {
  local single
  single="$("$build/fib_single" 30 41)"
  echo "{\"fib30_single\":$single}" >"$parts/limit_after.json"
  echo "fib(30) single thread after the run: $(json_get "$single" median_s)s"
}

# 2. CPU throughput: /fib/30 saturating the workers, three runs.
s_throughput() {
  local runs cpu
  start_server
  cpu_begin
  runs="$(for _ in 1 2 3; do load 2 16 "$half" /fib/30; done | median_of)"
  cpu="$(cpu_end)"
  stop_server
  echo "{\"wrk\":$runs,\"cpu\":$cpu}" >"$parts/throughput.json"
  echo "/fib/30 wrk -t2 -c16, 3 x ${half}s: median $(json_get "$runs" median.rps) req/s (runs $(runs_of "$runs")), errors $(json_get "$runs" median.errors); others: $cpu"
}

# 3. Responsiveness under CPU load, per worker priority, and inline for contrast: /fib/32 keeps
#    every worker busy while /healthz is measured three ways — open-loop (one request every 2 ms,
#    as a health checker sends them), with wrk paced (4 connections, 1 ms between a connection's
#    requests: ~3,500 req/s) and with wrk flat out (which itself takes a core of the two). The
#    loop lag comes from /metrics, scraped between the phases.
s_responsiveness() {
  local variant="$1" bg probe paced flat cpu lag lag_paced
  if [[ "$variant" == inline ]]; then start_server --mode inline; else start_server --worker-priority "$variant"; fi
  wrk -t1 -c"$((2 * cores))" -d"$((3 * half + 2))s" --timeout 10s "http://127.0.0.1:$port/fib/32" >/dev/null 2>&1 &
  bg=$!
  sleep 1
  cpu_begin
  curl -sf "http://127.0.0.1:$port/metrics" >"$out/scrape0.txt"
  probe="$("$build/latency_probe" "$port" /healthz "$half" 2000)"
  curl -sf "http://127.0.0.1:$port/metrics" >"$out/scrape1.txt"
  paced="$(PACE_MS=1 load 1 4 "$half" /healthz)"
  curl -sf "http://127.0.0.1:$port/metrics" >"$out/scrape2.txt"
  flat="$(load 1 4 "$half" /healthz)"
  cpu="$(cpu_end)"
  wait "$bg" || true
  lag="$(python3 "$root/bench/lag_quantile.py" "$out/scrape0.txt" "$out/scrape1.txt")"
  lag_paced="$(python3 "$root/bench/lag_quantile.py" "$out/scrape1.txt" "$out/scrape2.txt")"
  stop_server
  echo "{\"open_loop\":$probe,\"wrk_paced\":$paced,\"wrk_flat_out\":$flat,\"lag_open_loop\":$lag,\"lag_paced\":$lag_paced,\"cpu\":$cpu}" >"$parts/responsiveness_$variant.json"
  echo "/healthz under /fib/32 load, workers $variant:"
  echo "    open-loop 500/s:     p50 $(json_get "$probe" latency_us.p50)us p99 $(json_get "$probe" latency_us.p99)us p99.9 $(json_get "$probe" latency_us.p999)us max $(json_get "$probe" latency_us.max)us"
  echo "    wrk -t1 -c4 paced:   p50 $(json_get "$paced" latency_us.p50)us p99 $(json_get "$paced" latency_us.p99)us max $(json_get "$paced" latency_us.max)us, $(json_get "$paced" rps) req/s"
  echo "    wrk -t1 -c4 flat:    p50 $(json_get "$flat" latency_us.p50)us p99 $(json_get "$flat" latency_us.p99)us max $(json_get "$flat" latency_us.max)us, $(json_get "$flat" rps) req/s"
  echo "    loop lag: open-loop phase p50 $(json_get "$lag" p50_us)us p99 $(json_get "$lag" p99_us)us p99.9 $(json_get "$lag" p999_us)us; paced phase p99 $(json_get "$lag_paced" p99_us)us"
  echo "    others: $cpu"
}

# 4. HTTP overhead: /healthz alone, with the default access log and without it, three runs each.
#    Then the two latency measurements of scenario 3 against this idle server: the floor that the
#    method itself (wrk or the probe, and waking an idle machine) puts under any p99 measured there.
s_http_overhead() {
  local on off cpu paced probe
  start_server
  cpu_begin
  on="$(for _ in 1 2 3; do load 2 64 "$half" /healthz; done | median_of)"
  cpu="$(cpu_end)"
  probe="$("$build/latency_probe" "$port" /healthz "$half" 2000)"
  paced="$(PACE_MS=1 load 1 4 "$half" /healthz)"
  stop_server
  start_server --log-level warn
  off="$(for _ in 1 2 3; do load 2 64 "$half" /healthz; done | median_of)"
  stop_server
  echo "{\"access_log\":$on,\"log_warn\":$off,\"no_load\":{\"open_loop\":$probe,\"wrk_paced\":$paced},\"cpu\":$cpu}" >"$parts/http_overhead.json"
  echo "/healthz alone wrk -t2 -c64, 3 x ${half}s: median $(json_get "$on" median.rps) req/s, p99 $(json_get "$on" median.latency_us.p99)us (access log on); $(json_get "$off" median.rps) req/s, p99 $(json_get "$off" median.latency_us.p99)us (--log-level warn); others: $cpu"
  echo "    with no CPU load: open-loop 500/s p99 $(json_get "$probe" latency_us.p99)us; wrk -t1 -c4 paced p99 $(json_get "$paced" latency_us.p99)us"
}

# 5. Overload: /fib/35 from 256 connections, far beyond what the workers can do. The excess must
#    get fast 503s, accepted requests a bounded latency, the loop stays fast, and once the clients
#    leave no CPU keeps burning for them.
s_overload() {
  local bg probe over cpu t0 t1 after rss idle_rss counters
  start_server
  idle_rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  cpu_begin
  wrk -t2 -c256 -d"$((duration + 5))s" --timeout 10s -s "$root/bench/overload.lua" "http://127.0.0.1:$port/fib/35" >"$out/overload.txt" 2>&1 &
  bg=$!
  sleep 2
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  cpu="$(cpu_end)"
  over="$(tail -1 "$out/overload.txt")"
  [[ "$over" == "{"* ]] || { echo "overload: wrk printed no result" >&2; return 1; }
  sleep 1  # in-flight answers and connection teardown are allowed their second
  t0="$(awk '{print $14 + $15}' "/proc/$pid/stat")"; sleep 1; t1="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
  after="$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK), 3))")"
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  counters="$(curl -sf "http://127.0.0.1:$port/metrics" | grep '^crunch_jobs_total' | tr '\n' ' ')"
  stop_server
  echo "{\"wrk\":$over,\"healthz_open_loop\":$probe,\"cpu_seconds_after\":$after,\"idle_rss_kib\":$idle_rss,\"peak_rss_kib\":$rss,\"cpu\":$cpu}" >"$parts/overload.json"
  echo "/fib/35 wrk -t2 -c256: accepted $(json_get "$over" accepted_rps)/s, rejected (503) $(json_get "$over" rejected_rps)/s, socket errors $(json_get "$over" socket_errors)"
  echo "    accepted server time p50 $(json_get "$over" accepted_server_ms.p50) ms p99 $(json_get "$over" accepted_server_ms.p99) ms max $(json_get "$over" accepted_server_ms.max) ms; all answers p50 $(json_get "$over" all_latency_us.p50)us"
  echo "    /healthz open-loop meanwhile: p50 $(json_get "$probe" latency_us.p50)us p99 $(json_get "$probe" latency_us.p99)us max $(json_get "$probe" latency_us.max)us"
  echo "    CPU seconds used from 1 s to 2 s after wrk stopped: $after; RSS after start $((idle_rss / 1024)) MiB, peak $((rss / 1024)) MiB; others: $cpu"
  echo "    $counters"
}

# 6. Scaling: /fib/30 throughput with 1, 2, ... usable-cores workers.
s_scaling() {
  local all="[" s
  for w in $(seq 1 "$cores"); do
    start_server --workers "$w"
    s="$(load 2 "$((8 * w))" "$half" /fib/30)"
    stop_server
    echo "/fib/30 with $w worker(s): $(json_get "$s" rps) req/s"
    all+="{\"workers\":$w,\"rps\":$(json_get "$s" rps)},"
  done
  echo "${all%,}]" >"$parts/scaling.json"
}

# 7. Password hashing: Argon2id at the default parameters (19 MiB, 2 passes) with every worker busy,
#    against the physical limit — the same libsodium call outside crunch on one thread, times the
#    workers (the faster of before and after) — and against the same call on as many threads at
#    once, which is what the machine itself allows hashes side by side. /healthz is probed
#    open-loop meanwhile.
s_password() {
  local single_before single_after side_before side_after bg probe load cpu workers rss
  workers="$cores"
  single_before="$("$build/argon2_single" 19456 2 "$half")"
  side_before="$("$build/argon2_single" 19456 2 "$half" "$workers")"
  start_server --workers "$workers"
  cpu_begin
  BODY='{"password":"correct horse battery staple"}' wrk -t2 -c"$((4 * workers))" -d"$((duration + 2))s" \
    --timeout 10s -s "$root/bench/post.lua" "http://127.0.0.1:$port/v1/password/hash" >"$out/password.txt" 2>&1 &
  bg=$!
  sleep 1
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  cpu="$(cpu_end)"
  load="$(tail -1 "$out/password.txt")"
  [[ "$load" == "{"* ]] || { echo "password: wrk printed no result" >&2; return 1; }
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  stop_server
  single_after="$("$build/argon2_single" 19456 2 "$half")"
  side_after="$("$build/argon2_single" 19456 2 "$half" "$workers")"
  echo "{\"single_before\":$single_before,\"single_after\":$single_after,\"side_by_side_before\":$side_before,\"side_by_side_after\":$side_after,\"workers\":$workers,\"wrk\":$load,\"healthz_open_loop\":$probe,\"peak_rss_kib\":$rss,\"cpu\":$cpu}" >"$parts/password.json"
  python3 - "$parts/password.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
single = max(s["single_before"]["hashes_per_s"], s["single_after"]["hashes_per_s"])
side = max(s["side_by_side_before"]["hashes_per_s"], s["side_by_side_after"]["hashes_per_s"])
limit = s["workers"] * single
rps = s["wrk"]["rps"]
print(f"/v1/password/hash (19 MiB, t=2) wrk -t2 -c{4 * s['workers']}: {rps:.1f} hashes/s = {rps / limit:.3f} of the limit "
      f"({s['workers']} x {single:.1f}/s on one thread) and {rps / side:.3f} of {side:.1f}/s, the library on {s['workers']} "
      f"threads at once; 503 {s['wrk']['status_503']}, other {s['wrk']['other']}")
p = s["healthz_open_loop"]["latency_us"]
print(f"    /healthz open-loop meanwhile: p50 {p['p50']}us p99 {p['p99']}us max {p['max']}us; peak RSS {s['peak_rss_kib'] / 1024:.1f} MiB")
PY
}

# 8. A flood of maximum-parameter hashes (256 MiB, 6 passes: about a second each) from 256
#    connections, under a memory budget that holds one of them at a time: the peak RSS stays within
#    the budget, the excess is refused at once, and the loop stays fast.
s_password_flood() {
  local budget_mib=384 bg probe load idle_rss rss
  start_server --memory-budget "${budget_mib}MiB"
  idle_rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  BODY='{"password":"x","m_cost_kib":262144,"t_cost":6}' wrk -t2 -c256 -d"$((duration + 2))s" --timeout 20s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port/v1/password/hash" >"$out/password_flood.txt" 2>&1 &
  bg=$!
  sleep 1
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  load="$(tail -1 "$out/password_flood.txt")"
  [[ "$load" == "{"* ]] || { echo "password flood: wrk printed no result" >&2; return 1; }
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  stop_server
  echo "{\"budget_kib\":$((budget_mib * 1024)),\"idle_rss_kib\":$idle_rss,\"peak_rss_kib\":$rss,\"wrk\":$load,\"healthz_open_loop\":$probe}" >"$parts/password_flood.json"
  echo "max-parameter hash flood, wrk -t2 -c256, --memory-budget ${budget_mib}MiB: peak RSS $((rss / 1024)) MiB (idle $((idle_rss / 1024)) MiB); $(json_get "$load" ok) hashed, $(json_get "$load" status_503) refused (503), $(json_get "$load" status_504) late (504), socket errors $(json_get "$load" socket_errors)"
  echo "    /healthz open-loop meanwhile: p50 $(json_get "$probe" latency_us.p50)us p99 $(json_get "$probe" latency_us.p99)us max $(json_get "$probe" latency_us.max)us"
}

# 10. Thumbnails: a 12-megapixel photo-like JPEG (4000x3000, ~3.5 MiB) to a 400 px wide WebP, from
#    4 connections per worker, against the physical limit — the same libvips call outside crunch
#    on one thread, times the workers (the faster of before and after) — and against the call on
#    as many threads at once. /healthz is probed open-loop meanwhile. Then 64 connections
#    uploading at once under a 48 MiB memory budget (what a 64 MiB container gets): peak RSS.
#
# thumbnails_against_the_limit NAME FORMAT QUALITY CONNECTIONS_PER_WORKER: the photo to a 400 px
# FORMAT thumbnail through crunchd under wrk, between two runs of bench/thumbnail_single (one
# thread, and as many threads as workers); writes $parts/NAME.json and prints the ratios.
thumbnails_against_the_limit() {
  local name="$1" format="$2" quality="$3" per_worker="$4"
  local photo="$out/photo-4000x3000.jpg" single_before single_after side_before side_after bg probe load cpu workers rss
  local target="/v1/image/thumbnail?width=400&format=$format&quality=$quality"
  workers="$cores"
  [[ -s "$photo" ]] || "$build/make_image" 4000 3000 jpeg 88 "$photo" >/dev/null
  single_before="$("$build/thumbnail_single" "$photo" 400 "$format" "$quality" "$half")"
  side_before="$("$build/thumbnail_single" "$photo" 400 "$format" "$quality" "$half" "$workers")"
  start_server --workers "$workers" --log-level warn
  cpu_begin
  BODY_FILE="$photo" CONTENT_TYPE=image/jpeg wrk -t2 -c"$((per_worker * workers))" -d"$((duration + 2))s" --timeout 10s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port$target" >"$out/$name.txt" 2>&1 &
  bg=$!
  sleep 1
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  cpu="$(cpu_end)"
  load="$(tail -1 "$out/$name.txt")"
  [[ "$load" == "{"* ]] || { echo "$name: wrk printed no result" >&2; return 1; }
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  stop_server
  single_after="$("$build/thumbnail_single" "$photo" 400 "$format" "$quality" "$half")"
  side_after="$("$build/thumbnail_single" "$photo" 400 "$format" "$quality" "$half" "$workers")"
  echo "{\"photo_bytes\":$(stat -c %s "$photo"),\"format\":\"$format\",\"connections\":$((per_worker * workers)),\"single_before\":$single_before,\"single_after\":$single_after,\"side_by_side_before\":$side_before,\"side_by_side_after\":$side_after,\"workers\":$workers,\"wrk\":$load,\"healthz_open_loop\":$probe,\"peak_rss_kib\":$rss,\"cpu\":$cpu}" >"$parts/$name.json"
  python3 - "$parts/$name.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
single = max(s["single_before"]["per_s"], s["single_after"]["per_s"])
side = max(s["side_by_side_before"]["per_s"], s["side_by_side_after"]["per_s"])
limit = s["workers"] * single
rps = s["wrk"]["rps"]
print(f"/v1/image/thumbnail 4000x3000 JPEG ({s['photo_bytes'] / 1048576:.1f} MiB) -> 400 px {s['format']}, wrk -t2 -c{s['connections']}: "
      f"{rps:.1f} thumbnails/s = {rps / limit:.3f} of the limit ({s['workers']} x {single:.1f}/s on one thread, "
      f"{1000 / single:.0f} ms each) and {rps / side:.3f} of {side:.1f}/s, libvips on {s['workers']} threads at once; "
      f"503 {s['wrk']['status_503']}, other {s['wrk']['other']}")
p = s["healthz_open_loop"]["latency_us"]
print(f"    /healthz open-loop meanwhile: p50 {p['p50']}us p99 {p['p99']}us max {p['max']}us; peak RSS {s['peak_rss_kib'] / 1024:.1f} MiB")
PY
}

s_thumbnail() {
  local photo="$out/photo-4000x3000.jpg" flood flood_rss idle_rss target="/v1/image/thumbnail?width=400&format=webp"
  thumbnails_against_the_limit thumbnail webp 80 4
  start_server --workers "$cores" --log-level warn --memory-budget 48MiB
  idle_rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  flood="$(BODY_FILE="$photo" CONTENT_TYPE=image/jpeg wrk -t2 -c64 -d"${half}s" --timeout 10s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port$target" | tail -1)"
  flood_rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  stop_server
  python3 - "$parts/thumbnail.json" "{\"budget_kib\":49152,\"idle_rss_kib\":$idle_rss,\"peak_rss_kib\":$flood_rss,\"wrk\":$flood}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
f = s["flood_64"] = json.loads(sys.argv[2])
json.dump(s, open(sys.argv[1], "w"))
print(f"    64 connections uploading at once, --memory-budget 48MiB: peak RSS {f['peak_rss_kib'] / 1024:.1f} MiB "
      f"(idle {f['idle_rss_kib'] / 1024:.1f}); {f['wrk']['ok']} thumbnails, {f['wrk']['status_503']} refused (503), "
      f"{f['wrk']['other']} other")
PY
}

# 10b. AVIF thumbnails: the same photo to a 400 px wide AVIF at the route's defaults for AVIF
#    (quality 50, effort 4), from 2 connections per worker (one ~100 ms encode running and one
#    waiting), against the same call outside crunch as above. /healthz is probed meanwhile.
s_thumbnail_avif() { thumbnails_against_the_limit thumbnail_avif avif 50 2; }

# 9. Loop time spent reading JSON bodies: the worst bodies the password routes' 4 KiB limit admits,
#    and the 64 KiB other routes take.
s_json_body() {
  local costs
  costs="$("$build/json_body")"
  echo "$costs" >"$parts/json_body.json"
  echo "reading a JSON body on the I/O thread (µs, fastest of many): $costs"
}

# 12. What the live view's streams cost the loop: with 0 and with 50 /v1/events streams open
#     (curl readers at nice 19: on a real deployment the readers are browsers elsewhere, and here they
#     must not take the loop's CPU themselves), alternating (STREAM_ROUNDS times, default 2), /healthz throughput alone and its open-loop p99 while
#     /fib/32 keeps every worker busy.
s_event_streams() {
  local rows=() readers=() n round alone bg probe got
  start_server --max-event-streams 64
  for round in $(seq "${STREAM_ROUNDS:-2}"); do
    for n in 0 50; do
      readers=()
      for _ in $(seq "$n"); do
        nice -n 19 curl -sN --max-time "$((4 * half + 20))" "http://127.0.0.1:$port/v1/events" >/dev/null 2>&1 &
        readers+=($!)
      done
      for _ in $(seq 200); do  # up to 10 s for every stream to be open
        got="$(json_get "$(curl -sf "http://127.0.0.1:$port/v1/stats")" event_streams)"
        (( got == n )) && break
        sleep 0.05
      done
      (( got == n )) || { echo "only $got of $n streams opened" >&2; return 1; }
      alone="$(load 2 64 "$half" /healthz)"
      wrk -t1 -c"$((2 * cores))" -d"$((half + 2))s" --timeout 10s "http://127.0.0.1:$port/fib/32" >/dev/null 2>&1 &
      bg=$!
      sleep 1
      probe="$("$build/latency_probe" "$port" /healthz "$half" 2000)"
      wait "$bg" || true
      ((${#readers[@]})) && kill "${readers[@]}" 2>/dev/null && wait "${readers[@]}" 2>/dev/null || true
      rows+=("{\"streams\":$n,\"round\":$round,\"healthz_alone\":$alone,\"open_loop_under_load\":$probe}")
      echo "    $n streams (round $round): /healthz alone $(json_get "$alone" rps) req/s; open-loop p99 under /fib/32 $(json_get "$probe" latency_us.p99)us"
    done
  done
  stop_server
  (IFS=,; echo "{\"runs\":[${rows[*]}]}") >"$parts/event_streams.json"
}

# 13. Noisy neighbour: client A floods /fib/35 with 64 connections while client B sends /fib/30
#     twice a second, open loop; they are told apart by X-Client-Id. B's latency (from when each
#     request was due) and refusals, and A's throughput, with fair queuing between them
#     (--fair-key header:X-Client-Id) and with one FIFO (--fair-key none) — and A's throughput alone.
s_noisy_neighbour() {
  local rows=() mode a b bg alone=()
  # A alone before and after the two runs with B: the machine's drift shows between them.
  a_alone() {
    start_server --fair-key header:X-Client-Id
    a="$(wrk -t1 -c64 -d"$((duration + 2))s" --timeout 30s -s "$root/bench/overload.lua" -H "X-Client-Id: a" \
           "http://127.0.0.1:$port/fib/35" | tail -1)"
    stop_server
    [[ "$a" == "{"* ]] || { echo "noisy neighbour: wrk printed no result" >&2; return 1; }
    alone+=("$a")
    echo "    A alone: $(json_get "$a" accepted_rps) fib(35)/s accepted, $(json_get "$a" rejected_rps)/s refused"
  }
  a_alone
  for mode in header:X-Client-Id none; do
    start_server --fair-key "$mode"
    wrk -t1 -c64 -d"$((duration + 2))s" --timeout 30s -s "$root/bench/overload.lua" -H "X-Client-Id: a" \
        "http://127.0.0.1:$port/fib/35" >"$out/noisy_a.txt" 2>&1 &
    bg=$!
    sleep 1
    b="$("$build/latency_probe" "$port" /fib/30 "$duration" 500000 "X-Client-Id: b")" || true
    wait "$bg"
    a="$(tail -1 "$out/noisy_a.txt")"
    stop_server
    [[ "$a" == "{"* && "$b" == "{"* ]] || { echo "noisy neighbour ($mode): no result" >&2; return 1; }
    rows+=("{\"fair_key\":\"$mode\",\"a\":$a,\"b\":$b}")
    echo "    --fair-key $mode: B $(json_get "$b" status) (by status); B's 200s p50 $(json_get "$b" ok_latency_us.p50)us p99 $(json_get "$b" ok_latency_us.p99)us; A $(json_get "$a" accepted_rps) fib(35)/s"
  done
  a_alone
  (IFS=,; echo "{\"a_alone\":[${alone[*]}],\"runs\":[${rows[*]}]}") >"$parts/noisy_neighbour.json"
}

# 14. Tiny jobs: what the trip to a worker and back costs. /healthz and /fib/1 on crunchd, and the
#     same two on Go's net/http computing fib in its handler (bench/go, built here with Debian's
#     golang-go), `wrk -t1 -c64`, alternating, TINY_ROUNDS rounds (default 3). crunchd's CPU per
#     request comes from /proc/PID/stat over each run: /fib/1's less /healthz's is the hop.
s_tiny_jobs() {
  local rows=() round gport gpid fib health gfib ghealth t0 t1
  command -v go >/dev/null || { echo "tiny_jobs needs Go: apt-get install golang-go (Debian's)" >&2; return 1; }
  (cd "$root/bench/go" && GOFLAGS=-mod=mod GOCACHE="$out/gocache" GOPATH="$out/gopath" go build -o "$out/fibserver" .)
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  per_request_us() {  # TICKS_BEFORE TICKS_AFTER WRK_JSON
    python3 -c 'import json,sys; t0,t1=int(sys.argv[1]),int(sys.argv[2]); r=json.loads(sys.argv[3])
print(round((t1 - t0) / int(sys.argv[4]) * 1e6 / r["requests"], 2))' "$1" "$2" "$3" "$(getconf CLK_TCK)"
  }
  for round in $(seq "${TINY_ROUNDS:-3}"); do
    start_server --log-level warn
    t0="$(ticks "$pid")"; health="$(load 1 64 "$half" /healthz)"; t1="$(ticks "$pid")"
    health_cpu="$(per_request_us "$t0" "$t1" "$health")"
    t0="$(ticks "$pid")"; fib="$(load 1 64 "$half" /fib/1)"; t1="$(ticks "$pid")"
    fib_cpu="$(per_request_us "$t0" "$t1" "$fib")"
    stop_server
    gport="$(free_port)"
    "$out/fibserver" "$gport" >"$out/fibserver.log" 2>&1 &
    gpid=$!
    wait_healthz "$gport" || { kill "$gpid"; echo "the Go server did not start" >&2; return 1; }
    ghealth="$(port="$gport" load 1 64 "$half" /healthz)"
    gfib="$(port="$gport" load 1 64 "$half" /fib/1)"
    kill "$gpid"; wait "$gpid" 2>/dev/null || true
    rows+=("{\"round\":$round,\"crunch_healthz\":$health,\"crunch_fib1\":$fib,\"go_healthz\":$ghealth,\"go_fib1\":$gfib,\"crunch_cpu_us_per_request\":{\"healthz\":$health_cpu,\"fib1\":$fib_cpu}}")
    echo "    round $round: crunchd /healthz $(json_get "$health" rps) req/s ($health_cpu us CPU each), /fib/1 $(json_get "$fib" rps) req/s ($fib_cpu us each); Go /healthz $(json_get "$ghealth" rps), /fib/1 $(json_get "$gfib" rps)"
  done
  (IFS=,; echo "{\"runs\":[${rows[*]}]}") >"$parts/tiny_jobs.json"
}

# 15. Every kind, from its own declaration: each example of each route that succeeds, under wrk
#     (2 connections), with /healthz probed open-loop meanwhile (bench/examples.py). A kind added
#     through the library, or zstd, has its scenario here with no line of its own.
s_kinds() {
  start_server --workers "$cores" --log-level warn
  python3 "$root/bench/examples.py" "$port" "$half" "$build" "$parts/kinds.json"
  stop_server
}

# Runs one scenario in a subshell of its own. A failure stops that scenario only (its server and
# loads are stopped too), is printed with the tail of its errors, and is written into the results.
failed=()
scenario() {  # NAME COMMAND...
  local name="$1" rc; shift
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return 0; fi
  set +e
  (
    set -e
    trap 'stop_server; jobs -p | xargs -r kill 2>/dev/null || true' EXIT
    "$@"
  ) 2>"$out/$name.err"
  rc=$?
  set -e
  if (( rc != 0 )) || [[ ! -s "$parts/$name.json" ]]; then
    echo "FAILED: scenario $name (exit $rc):" >&2
    tail -5 "$out/$name.err" >&2
    python3 -c 'import json,sys; print(json.dumps({"failed": "exit %s; %s (bench/results/%s.err)" % tuple(sys.argv[1:])}))' \
      "$rc" "$(tail -5 "$out/$name.err" | tr '\n' ' ' | grep . || echo 'no error output')" "$name" >"$parts/$name.json"
    failed+=("$name")
  fi
}

echo "machine: $machine"
echo "commit:  $commit"
scenario limit s_limit
scenario throughput s_throughput
for variant in batch idle normal inline; do scenario "responsiveness_$variant" s_responsiveness "$variant"; done
scenario http_overhead s_http_overhead
scenario overload s_overload
scenario scaling s_scaling
scenario password s_password
scenario password_flood s_password_flood
scenario json_body s_json_body
scenario thumbnail s_thumbnail
scenario thumbnail_avif s_thumbnail_avif
scenario event_streams s_event_streams
scenario noisy_neighbour s_noisy_neighbour
scenario tiny_jobs s_tiny_jobs
scenario kinds s_kinds
scenario limit_after s_limit_after

python3 - "$parts" "$out/latest.json" "$commit" "$machine" "$cores" "$duration" <<'PY'
import json, os, sys
parts, dest, commit, machine, cores, duration = sys.argv[1:]
r = {"commit": commit, "machine": machine, "cores": int(cores), "duration_s": int(duration), "scenarios": {}}
for name in sorted(os.listdir(parts)):
    with open(os.path.join(parts, name)) as f:
        r["scenarios"][name[:-len(".json")]] = json.load(f)
with open(dest, "w") as f:
    json.dump(r, f, indent=1)
PY
echo "wrote $out/latest.json"
python3 "$root/bench/report.py" "$out"
if (( ${#failed[@]} )); then
  echo "FAILED scenarios: ${failed[*]}" >&2
  exit 1
fi
