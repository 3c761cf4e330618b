#!/usr/bin/env bash
# crunch against what a Node.js user gets from node-argon2, on this machine, in one run: Argon2id at
# m=19456 KiB, t=2, p=1 (crunch's default and node-argon2's settings here), 2 workers against
# node-argon2 with UV_THREADPOOL_SIZE=2, both under `wrk -c8`, /healthz probed open-loop every 2 ms
# meanwhile and timed from when each request was due. Each round runs, one after another: an idle
# crunchd probed the same way (the machine's own tail, the baseline), node-argon2, crunchd, and
# the physical limit: the faster of crunch's Argon2 core and libsodium's (AVX-512 where the CPU
# has it), each on 2 threads with its memory kept, outside any server — libsodium's kept by a
# preloaded shim (keep_mapping.c, measurement only) — and libsodium as shipped beside them. ROUNDS rounds (default 3); the report
# gives each round and the median.   ./bench/argon2-node/compare.sh   (DURATION=10 s per load)
# node-argon2 comes from npm (bench/argon2-node/package-lock.json) with its prebuilt binary: it is
# only measured here, never part of crunch. Writes bench/results/argon2-node.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$root/bench/prepare.sh"
command -v node >/dev/null && command -v npm >/dev/null || crunch_packages+=(nodejs npm)
bench_build crunchd latency_probe argon2_single
duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
workers=2
out="$root/bench/results"
mkdir -p "$out"
(cd "$root/bench/argon2-node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
shim="$out/keep_mapping.so"
cc -O2 -shared -fPIC -o "$shim" "$root/bench/argon2-node/keep_mapping.c" -ldl
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

minflt() { awk '{print $10}' "/proc/$1/stat"; }

# Loads PORT's PATH with wrk -c8 while probing /healthz; one JSON line with wrk's result, the
# probe's, and the server's minor page faults per hash over the load.
serve() {  # NAME PORT PATH
  local name="$1" port="$2" path="$3" bg load probe f0 f1
  f0="$(minflt "$pid")"
  BODY='{"password":"correct horse battery staple"}' wrk -t2 -c8 -d"$((duration + 2))s" --timeout 10s \
    -s "$root/bench/post.lua" "http://127.0.0.1:$port$path" >"$out/argon2-$name.txt" 2>&1 &
  bg=$!
  sleep 1
  probe="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  wait "$bg"
  f1="$(minflt "$pid")"
  load="$(tail -1 "$out/argon2-$name.txt")"
  [[ "$load" == "{"* ]] || { echo "argon2 $name: wrk printed no result" >&2; return 1; }
  echo "{\"wrk\":$load,\"healthz_open_loop\":$probe,\"minor_faults\":$((f1 - f0))}"
}

start_crunchd() { start_peer_crunchd "$out/argon2-crunchd.log" --workers "$workers"; }

results=()
for ((r = 1; r <= rounds; r++)); do
  start_crunchd
  idle="$("$build/latency_probe" "$port" /healthz "$duration" 2000)"
  stop_peer

  port="$(free_port)"
  UV_THREADPOOL_SIZE="$workers" node "$root/bench/argon2-node/server.mjs" "$port" >"$out/argon2-node-server.log" 2>&1 &
  pid=$!
  wait_healthz "$port"
  node_run="$(serve node "$port" /hash)"
  stop_peer

  start_crunchd
  crunch_run="$(serve crunchd "$port" /v1/password/hash)"
  hash="$(curl -s -X POST -H 'Content-Type: application/json' -d '{"password":"correct horse battery staple"}' \
            "http://127.0.0.1:$port/v1/password/hash" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')"
  stop_peer
  node_accepts="$(cd "$root/bench/argon2-node" && node verify.mjs "$hash" "correct horse battery staple")"

  half="$((duration / 2 > 1 ? duration / 2 : 1))"
  core="$("$build/argon2_single" 19456 2 "$half" "$workers")"
  kept="$(LD_PRELOAD="$shim" "$build/argon2_single" 19456 2 "$half" "$workers" libsodium)"
  shipped="$("$build/argon2_single" 19456 2 "$half" "$workers" libsodium)"
  results+=("{\"idle\":$idle,\"node\":$node_run,\"crunch\":$crunch_run,\"crunch_core\":$core,\"libsodium_kept\":$kept,\"libsodium_as_shipped\":$shipped,\"node_verifies_crunch_hash\":$node_accepts}")
  echo "round $r done" >&2
done

(IFS=,; echo "{\"workers\":$workers,\"duration_s\":$duration,\"rounds\":[${results[*]}]}") >"$out/argon2-node.json"
python3 - "$out/argon2-node.json" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
def ms(us): return us / 1000
rows = []
for i, x in enumerate(r["rounds"], 1):
    c, n, idle = x["crunch"], x["node"], x["idle"]["latency_us"]
    core, kept = x["crunch_core"]["hashes_per_s"], x["libsodium_kept"]["hashes_per_s"]
    crps, nrps, lim = c["wrk"]["rps"], n["wrk"]["rps"], max(core, kept)
    cf = c["minor_faults"] / max(c["wrk"]["ok"], 1)
    nf = n["minor_faults"] / max(n["wrk"]["ok"], 1)
    ch, nh = c["healthz_open_loop"]["latency_us"], n["healthz_open_loop"]["latency_us"]
    rows.append(dict(crunch=crps, node=nrps, vs_node=crps / nrps, limit=lim, vs_limit=crps / lim,
                     shipped=x["libsodium_as_shipped"]["hashes_per_s"], faults=cf, node_faults=nf,
                     p99=ch["p99"], p999=ch["p999"], idle_p99=idle["p99"], idle_p999=idle["p999"],
                     node_p99=nh["p99"], node_p999=nh["p999"], verified=x["node_verifies_crunch_hash"]))
    print(f"round {i}: crunch {crps:.1f} hashes/s, node-argon2 {nrps:.1f} -> {crps / nrps:.2f}x; limit {lim:.1f}/s "
          f"(crunch's {x['crunch_core']['core']} core {core:.1f}/s, libsodium kept {kept:.1f}/s, as shipped "
          f"{rows[-1]['shipped']:.1f}/s) -> {crps / lim:.3f} of the limit; faults/hash crunch {cf:.1f}, "
          f"node {nf:.1f}; /healthz p99/p99.9 crunch {ms(ch['p99']):.2f}/{ms(ch['p999']):.2f} ms, node "
          f"{ms(nh['p99']):.2f}/{ms(nh['p999']):.2f} ms, idle crunchd {ms(idle['p99']):.2f}/{ms(idle['p999']):.2f} ms; "
          f"node-argon2 verifies crunch's hash: {x['node_verifies_crunch_hash']}")
med = {k: statistics.median(row[k] for row in rows) for k in rows[0] if k != "verified"}
print(f"median of {len(rows)}: {med['vs_node']:.2f}x node-argon2, {med['vs_limit']:.3f} of the limit, "
      f"{med['faults']:.1f} faults/hash, /healthz p99 {ms(med['p99']):.2f} ms p99.9 {ms(med['p999']):.2f} ms "
      f"(idle {ms(med['idle_p99']):.2f}/{ms(med['idle_p999']):.2f} ms)")
PY
