# Sourced by the bench scripts after they set $root: installs what is missing (the build tools,
# wrk, gnuplot, python3), loads the loopback helpers, and builds the given targets in Release into
# $build.
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_packages+=(wrk gnuplot-nox python3 golang-go)
build="$root/build"

bench_build() {  # TARGET...
  crunch_install_deps
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target "$@" >/dev/null
}

# wrk with the JSON reporter; prints the JSON line. PACE_MS=N in the environment paces each
# connection (see report.lua).
load() {  # threads connections seconds path [extra wrk args]
  local t="$1" c="$2" d="$3" path="$4"; shift 4
  local line
  line="$(wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$root/bench/report.lua" "$@" "http://127.0.0.1:$port$path" | tail -1)"
  [[ "$line" == "{"* ]] || { echo "wrk printed no result for $path" >&2; return 1; }
  echo "$line"
}

json_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d=d[int(k)] if isinstance(d, list) else d[k]
print(d)' "$1" "$2"; }

# For the peer comparisons (bench/*/compare.sh) and bench/ab.sh: a server of the run in the
# background ($CRUNCHD, default this build's), its pid in $pid and its port in $port.
start_peer_crunchd() {  # LOG [crunchd flags...]
  local log="$1"; shift
  port="$(free_port)"
  "${CRUNCHD:-$build/crunchd}" --address 127.0.0.1 --port "$port" --log-level warn "$@" >"$log" 2>&1 &
  pid=$!
  wait_healthz "$port"
}
# Stops whatever $pid is (crunchd drains on SIGTERM) and waits for it.
stop_peer() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
