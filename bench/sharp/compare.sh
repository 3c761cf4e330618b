#!/usr/bin/env bash
# crunch against what a Node.js user gets from sharp, on this machine, the same photo and the same
# operation (a 4000x3000 JPEG to a 400 px wide WebP at quality 80, EXIF orientation applied):
#   ./bench/sharp/compare.sh            (DURATION=10 seconds per load)
# 1. one thumbnail on one thread, in-process: bench/thumbnail_single (crunch's libvips call) and
#    single.mjs (sharp.concurrency(1)) — the cost of the operation itself, and the output size;
# 2. each as a server under `wrk -t1 -c4` (4 connections, as the issue measured), /healthz probed
#    open-loop every 2 ms meanwhile: server.mjs (sharp with its defaults) and crunchd, alternating,
#    ROUNDS rounds (default 3), each with an idle crunchd probed the same way as the baseline.
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

serve() {  # NAME PORT PATH → one JSON line: wrk's, and the probe's
  local name="$1" port="$2" path="$3" bg load probe
  BODY_FILE="$photo" CONTENT_TYPE=image/jpeg wrk -t1 -c4 -d"$((duration + 2))s" --timeout 10s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port$path" >"$out/sharp-$name.txt" 2>&1 &
  bg=$!
  sleep 1
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  load="$(tail -1 "$out/sharp-$name.txt")"
  echo "{\"wrk\":$load,\"healthz_open_loop\":$probe}"
}

rounds="${ROUNDS:-3}"
start_crunchd() { start_peer_crunchd "$out/sharp-crunchd.log"; }

# Each round: an idle crunchd probed the same way (the machine's own tail, the baseline), sharp's
# server, then crunchd's, one after the other.
results=()
for ((r = 1; r <= rounds; r++)); do
  start_crunchd
  idle="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  stop_peer
  port="$(free_port)"
  node "$root/bench/sharp/server.mjs" "$port" >"$out/sharp-server.log" 2>&1 &
  pid=$!
  wait_healthz "$port"
  sharp_server="$(serve node "$port" "/thumbnail?width=400")"
  stop_peer
  start_crunchd
  crunch_server="$(serve crunchd "$port" "/v1/image/thumbnail?width=400&format=webp")"
  stop_peer
  results+=("{\"idle\":$idle,\"sharp_server\":$sharp_server,\"crunch_server\":$crunch_server}")
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
for i, x in enumerate(r["rounds"], 1):
    cw, sw = x["crunch_server"]["wrk"], x["sharp_server"]["wrk"]
    ch, sh, idle = (x[k]["healthz_open_loop"]["latency_us"] if k != "idle" else x["idle"]["latency_us"]
                    for k in ("crunch_server", "sharp_server", "idle"))
    rows.append(dict(ratio=cw["rps"] / sw["rps"], p99=ch["p99"], p999=ch["p999"], idle_p99=idle["p99"], idle_p999=idle["p999"]))
    print(f"round {i}: crunch {cw['rps']:.1f}/s, sharp {sw['rps']:.1f}/s -> {cw['rps'] / sw['rps']:.2f}x; /healthz p99/p99.9 "
          f"crunch {ch['p99'] / 1000:.2f}/{ch['p999'] / 1000:.2f} ms, sharp {sh['p99'] / 1000:.2f}/{sh['p999'] / 1000:.2f} ms, "
          f"idle crunchd {idle['p99'] / 1000:.2f}/{idle['p999'] / 1000:.2f} ms (other: crunch {cw['other']}, sharp {sw['other']})")
med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
print(f"median of {len(rows)}: {med['ratio']:.2f}x sharp; /healthz p99 {med['p99'] / 1000:.2f} ms p99.9 {med['p999'] / 1000:.2f} ms "
      f"(idle {med['idle_p99'] / 1000:.2f}/{med['idle_p999'] / 1000:.2f} ms)")
PY
