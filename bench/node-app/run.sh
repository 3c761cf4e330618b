#!/usr/bin/env bash
# The Node app's own numbers (issue 33): app.mjs serves POST /login and POST /avatar in-process
# (node-argon2, sharp), on Piscina workers, or through crunch-client to a local crunchd, and the
# three modes take turns under the same open-loop load. For each: logins/s and avatars/s answered,
# their latency, the app's event-loop delay (monitorEventLoopDelay, p99 and max) and its /healthz
# p99 from an ordinary probe and from one at real-time priority (chrt -f 2), with an idle
# baseline. One command, bounded in time (ROUNDS x 3 x (SECONDS + 4) s):
#   ./bench/node-app/run.sh
#   ROUNDS=3 SECONDS_PER_RUN=20 LOGINS=20 AVATARS=6 ./bench/node-app/run.sh
#   MODES="crunch" APP_PRIORITY="chrt -f 1" ./bench/node-app/run.sh   (what CPU contention costs the app)
#   PIN=1 ./bench/node-app/run.sh   (the app on CPU 0, everything else -- crunchd, the load, the probes -- on CPU 1)
# The same argon2id cost everywhere (m=19456 KiB, t=2, p=1: crunch's default); avatars are a
# 1600x1200 JPEG made 256 px wide as WebP at quality 80. Writes bench/results/node-app.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/bench/node-app"
build="${BUILD:-$root/build}"
rounds="${ROUNDS:-2}"
seconds="${SECONDS_PER_RUN:-15}"
logins="${LOGINS:-20}"
avatars="${AVATARS:-6}"
modes="${MODES:-inproc piscina crunch}"
read -r -a app_priority <<<"${APP_PRIORITY:-}"
# PIN=1: the app has a CPU of its own, in every mode (its libuv pool and Piscina's workers with it);
# crunchd, the load generator and the probes share the other.
app_cpu=()
rest_cpu=()
if [[ -n "${PIN:-}" ]]; then
  app_cpu=(taskset -c 0)
  rest_cpu=(taskset -c 1)
fi
probe_rate=100
[[ -x "$build/crunchd" && -x "$build/make_image" ]] || cmake --build "$build" --target crunchd make_image >/dev/null
(cd "$root/clients/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build)
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$build/make_image" 1600 1200 jpeg 85 "$work/photo.jpg" >/dev/null
password="correct horse battery staple"
export HASH
HASH="$(cd "$here" && node -e '
  import("argon2").then(async ({ default: a }) =>
    console.log(await a.hash(process.argv[1], { type: a.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 })))' "$password")"

port_of() {  # the port a process logged, as "port":N
  for _ in $(seq 400); do
    local p; p="$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$1" | head -n 1)"
    [[ -n "$p" ]] && { echo "$p"; return 0; }
    sleep 0.05
  done
  echo "no port in $1" >&2; cat "$1" >&2; return 1
}

source "$root/scripts/loopback.sh"
crunch_port="$(free_port)"
"${rest_cpu[@]}" "$build/crunchd" --address 127.0.0.1 --port "$crunch_port" --log-level warn --workers 2 >"$work/crunchd.log" 2>&1 &
pids+=($!)
wait_healthz "$crunch_port"
export CRUNCH_URL="http://127.0.0.1:$crunch_port"
rt=(chrt -f 2)
"${rt[@]}" true 2>/dev/null || { rt=(); echo "chrt -f 2 is not allowed here: the real-time probe runs as an ordinary one" >&2; }
rt=("${rest_cpu[@]}" "${rt[@]}")

start_app() {  # MODE: sets app_pid and url
  MODE="$1" "${app_cpu[@]}" "${app_priority[@]}" node "$here/app.mjs" >"$work/app-$1.log" 2>&1 &
  app_pid=$!
  pids+=("$app_pid")
  url="http://127.0.0.1:$(port_of "$work/app-$1.log")"
}

results="$root/bench/results/node-app.json"
mkdir -p "$(dirname "$results")"
: >"$work/runs.jsonl"

# The idle baseline: the app (crunch mode) with no load, both probes.
# monitorEventLoopDelay's figures include its 1 ms timer: an idle loop shows about 1.1 ms.
start_app crunch
curl -sf "$url/stats" >/dev/null
idle="$("${rest_cpu[@]}" node "$here/probe.mjs" "$url" 5 "$probe_rate")"
idle_rt="$("${rt[@]}" node "$here/probe.mjs" "$url" 5 "$probe_rate")"
idle_loop="$(curl -sf "$url/stats")"
kill "$app_pid"; wait "$app_pid" 2>/dev/null || true
echo "idle: /healthz $idle, at real-time priority $idle_rt; loop delay $idle_loop"

for round in $(seq "$rounds"); do
  for mode in $modes; do
    start_app "$mode"
    "${rest_cpu[@]}" node "$here/load.mjs" "$url" 3 "$logins" "$avatars" "$work/photo.jpg" "$password" >/dev/null  # warm-up
    curl -sf "$url/stats" >/dev/null                                                               # resets the delay histogram
    "${rest_cpu[@]}" node "$here/probe.mjs" "$url" "$seconds" "$probe_rate" >"$work/probe" &
    probe=$!
    "${rt[@]}" node "$here/probe.mjs" "$url" "$seconds" "$probe_rate" >"$work/probe-rt" &
    probe_rt=$!
    load="$("${rest_cpu[@]}" node "$here/load.mjs" "$url" "$seconds" "$logins" "$avatars" "$work/photo.jpg" "$password")"
    wait "$probe" "$probe_rt"
    loop="$(curl -sf "$url/stats")"
    kill "$app_pid"; wait "$app_pid" 2>/dev/null || true
    line="{\"round\":$round,\"mode\":\"$mode\",\"load\":$load,\"loop\":$loop,\"healthz\":$(cat "$work/probe"),\"healthz_rt\":$(cat "$work/probe-rt")}"
    echo "$line" >>"$work/runs.jsonl"
    echo "round $round $mode: $line"
  done
done

python3 - "$work/runs.jsonl" "$results" "$idle" "$idle_rt" "$logins" "$avatars" "$seconds" "$idle_loop" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
idle, idle_rt, idle_loop = json.loads(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[8])
out = {"offered": {"logins_per_s": float(sys.argv[5]), "avatars_per_s": float(sys.argv[6]), "seconds": float(sys.argv[7])},
       "idle": {"healthz": idle, "healthz_rt": idle_rt, "loop": idle_loop}, "runs": runs, "median": {}}
med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None
rounds = len({r["round"] for r in runs})
print(f"\noffered: {sys.argv[5]} logins/s and {sys.argv[6]} avatars/s, open loop, {sys.argv[7]} s a run; medians of {rounds} rounds")
print(f"idle app: /healthz p99 {idle['p99_ms']:.2f} ms, at real-time priority {idle_rt['p99_ms']:.2f} ms; "
      f"loop delay p99 {idle_loop['p99_ms']:.2f} ms, max {idle_loop['max_ms']:.2f} ms (the 1 ms timer included)\n")
print("| mode | logins/s | avatars/s | login p99 ms | avatar p99 ms | loop delay p99 ms | loop delay max ms | /healthz p99 ms | /healthz p99 ms (chrt -f 2) | failed |")
print("|---|---|---|---|---|---|---|---|---|---|")
for mode in ("inproc", "piscina", "crunch"):
    rs = [r for r in runs if r["mode"] == mode]
    if not rs: continue
    m = {
        "logins_per_s": med([r["load"]["login"]["per_s"] for r in rs]),
        "avatars_per_s": med([r["load"]["avatar"]["per_s"] for r in rs]),
        "login_p99_ms": med([r["load"]["login"]["p99_ms"] for r in rs]),
        "avatar_p99_ms": med([r["load"]["avatar"]["p99_ms"] for r in rs]),
        "loop_p99_ms": med([r["loop"]["p99_ms"] for r in rs]),
        "loop_max_ms": med([r["loop"]["max_ms"] for r in rs]),
        "healthz_p99_ms": med([r["healthz"]["p99_ms"] for r in rs]),
        "healthz_rt_p99_ms": med([r["healthz_rt"]["p99_ms"] for r in rs]),
        "failed": sum(r["load"]["login"]["failed"] + r["load"]["avatar"]["failed"] for r in rs),
    }
    out["median"][mode] = m
    f = lambda v: "—" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    print(f"| {mode} | {f(m['logins_per_s'])} | {f(m['avatars_per_s'])} | {f(m['login_p99_ms'])} | {f(m['avatar_p99_ms'])} | "
          f"{f(m['loop_p99_ms'])} | {f(m['loop_max_ms'])} | {f(m['healthz_p99_ms'])} | {f(m['healthz_rt_p99_ms'])} | {m['failed']} |")
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(f"\nwritten: {sys.argv[2]}")
PY
