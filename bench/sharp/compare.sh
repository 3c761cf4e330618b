#!/usr/bin/env bash
# crunch against what a Node.js user gets from sharp, on this machine, the same photo and the same
# operation (a 4000x3000 JPEG to a 400 px wide WebP at quality 80, EXIF orientation applied):
#   ./bench/sharp/compare.sh            (DURATION=10 seconds per load)
# 1. one thumbnail on one thread, in-process: bench/thumbnail_single (crunch's libvips call) and
#    single.mjs (sharp.concurrency(1)) — the cost of the operation itself, and the output size;
# 2. each as a server under `wrk -t1 -c4` (4 connections, as the issue measured), /healthz probed
#    open-loop every 2 ms meanwhile by two probes at once, one real-time (chrt -f 2: the server's
#    own part) and one ordinary (a neighbour's view): server.mjs (sharp with its defaults) and
#    crunchd, alternating, ROUNDS rounds (default 3), each with an idle crunchd probed the same way
#    as the baseline. With BASELINE_REV=<rev>, crunchd built at that revision (in a temporary
#    worktree) is a third server in each round: this build's ratio to it is what a change costs.
# sharp comes from npm (bench/sharp/package-lock.json) with its own prebuilt libvips: it is only
# measured here, never part of crunch. Writes bench/results/sharp.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$root/bench/prepare.sh"
command -v node >/dev/null && command -v npm >/dev/null || crunch_packages+=(nodejs npm)
bench_build crunchd latency_probe make_image thumbnail_single
duration="${DURATION:-10}"
out="$root/bench/results"
mkdir -p "$out"
(cd "$root/bench/sharp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
photo="$out/photo-4000x3000.jpg"
[[ -s "$photo" ]] || "$build/make_image" 4000 3000 jpeg 88 "$photo" >/dev/null
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

crunch_single="$("$build/thumbnail_single" "$photo" 400 webp 80 5)"
sharp_single="$(node "$root/bench/sharp/single.mjs" "$photo" 400 80 5)"

# Both probes at once against PORT for the duration: {"healthz_open_loop": real-time's, "ordinary": ordinary's}.
probes() {  # PORT
  local ordinary
  PROBE_NORMAL=1 "$build/latency_probe" "$1" /healthz "$duration" 2000 >"$out/sharp-ordinary.json" &
  ordinary=$!
  local realtime
  realtime="$(PROBE_NORMAL=1 chrt -f 2 "$build/latency_probe" "$1" /healthz "$duration" 2000)"
  wait "$ordinary"
  echo "\"healthz_open_loop\":$realtime,\"ordinary\":$(cat "$out/sharp-ordinary.json")"
}

serve() {  # NAME PORT PATH → one JSON line: wrk's, and the probes'
  local name="$1" port="$2" path="$3" bg load probed
  BODY_FILE="$photo" CONTENT_TYPE=image/jpeg wrk -t1 -c4 -d"$((duration + 2))s" --timeout 10s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port$path" >"$out/sharp-$name.txt" 2>&1 &
  bg=$!
  sleep 1  # the load at its pace before the probes start (pacing, not synchronisation)
  probed="$(probes "$port")"
  wait "$bg"
  load="$(tail -1 "$out/sharp-$name.txt")"
  echo "{\"wrk\":$load,$probed}"
}

baseline=""
if [[ -n "${BASELINE_REV:-}" ]]; then
  before="$(mktemp -d)"
  trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; git -C "$root" worktree remove --force "$before/src" >/dev/null 2>&1; rm -rf "$before"; true' EXIT
  git -C "$root" worktree add --detach "$before/src" "$BASELINE_REV" >/dev/null 2>&1
  cmake -S "$before/src" -B "$before/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_TESTS=OFF >/dev/null
  cmake --build "$before/build" --target crunchd >/dev/null
  baseline="$before/build/crunchd"
fi

rounds="${ROUNDS:-3}"
start_crunchd() { start_peer_crunchd "$out/sharp-crunchd.log"; }

# Each round: an idle crunchd probed the same way (the machine's own tail, the baseline), sharp's
# server, then crunchd's, one after the other.
results=()
for ((r = 1; r <= rounds; r++)); do
  start_crunchd
  idle="{$(probes "$port")}"
  stop_peer
  port="$(free_port)"
  node "$root/bench/sharp/server.mjs" "$port" >"$out/sharp-server.log" 2>&1 &
  pid=$!
  wait_healthz "$port"
  sharp_server="$(serve node "$port" "/thumbnail?width=400")"
  stop_peer
  baseline_server=null
  if [[ -n "$baseline" ]]; then
    CRUNCHD="$baseline" start_crunchd
    baseline_server="$(serve baseline "$port" "/v1/image/thumbnail?width=400&format=webp")"
    stop_peer
  fi
  start_crunchd
  crunch_server="$(serve crunchd "$port" "/v1/image/thumbnail?width=400&format=webp")"
  # What crunchd and its helpers hold once they have made thumbnails (kB).
  rss="$(for p in "$pid" $(pgrep -P "$pid"); do awk '/VmRSS/ {print $2}' "/proc/$p/status"; done | awk '{s += $1} END {print s}')"
  stop_peer
  results+=("{\"idle\":$idle,\"sharp_server\":$sharp_server,\"crunch_server\":$crunch_server,\"baseline_server\":$baseline_server,\"crunch_rss_kib\":$rss}")
  echo "round $r done" >&2
done

(IFS=,; echo "{\"photo_bytes\":$(stat -c %s "$photo"),\"crunch_single\":$crunch_single,\"sharp_single\":$sharp_single,\"rounds\":[${results[*]}]}") >"$out/sharp.json"
python3 - "$out/sharp.json" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
c, s = r["crunch_single"], r["sharp_single"]
print(f"one thumbnail, one thread: crunch (libvips {c['vips']}) {c['median_s'] * 1000:.1f} ms, {c['output_bytes']} bytes; "
      f"sharp {s['sharp']} (libvips {s['vips']}, libwebp {s['webp']}) {s['median_s'] * 1000:.1f} ms, {s['output_bytes']} bytes")
rows = []
ms = lambda us: f"{us / 1000:.2f}"
for i, x in enumerate(r["rounds"], 1):
    cw, sw = x["crunch_server"]["wrk"], x["sharp_server"]["wrk"]
    ch, sh, idle = (x[k]["healthz_open_loop"]["latency_us"] for k in ("crunch_server", "sharp_server", "idle"))
    co, io = x["crunch_server"]["ordinary"]["latency_us"], x["idle"]["ordinary"]["latency_us"]
    row = dict(ratio=cw["rps"] / sw["rps"], p99=ch["p99"], p999=ch["p999"], idle_p99=idle["p99"], idle_p999=idle["p999"],
               ordinary_p99=co["p99"], ordinary_idle_p99=io["p99"], rss_mib=x["crunch_rss_kib"] / 1024)
    line = (f"round {i}: crunch {cw['rps']:.1f}/s, sharp {sw['rps']:.1f}/s -> {cw['rps'] / sw['rps']:.2f}x")
    if x.get("baseline_server"):
        bw = x["baseline_server"]["wrk"]
        row["vs_baseline"] = cw["rps"] / bw["rps"]
        line += f"; baseline build {bw['rps']:.1f}/s -> {cw['rps'] / bw['rps']:.3f}x"
    rows.append(row)
    print(line + f"; /healthz p99/p99.9 real-time probe: crunch {ms(ch['p99'])}/{ms(ch['p999'])}, sharp {ms(sh['p99'])}/{ms(sh['p999'])}, "
          f"idle {ms(idle['p99'])}/{ms(idle['p999'])} ms; ordinary probe p99: crunch {ms(co['p99'])}, idle {ms(io['p99'])} ms; "
          f"crunchd + helpers {row['rss_mib']:.1f} MiB (other: crunch {cw['other']}, sharp {sw['other']})")
med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
print(f"median of {len(rows)}: {med['ratio']:.2f}x sharp" + (f", {med['vs_baseline']:.3f}x the baseline build" if "vs_baseline" in med else "") +
      f"; /healthz p99 {ms(med['p99'])} ms p99.9 {ms(med['p999'])} ms real-time (idle {ms(med['idle_p99'])}/{ms(med['idle_p999'])} ms), "
      f"ordinary probe p99 {ms(med['ordinary_p99'])} ms (idle {ms(med['ordinary_idle_p99'])} ms)")
PY
