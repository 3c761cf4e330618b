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

# For the peer comparisons (bench/*/compare.sh): a server of the run in the background, its pid in
# $pid and its port in $port.
start_peer_crunchd() {  # LOG [crunchd flags...]
  local log="$1"; shift
  port="$(free_port)"
  "$build/crunchd" --address 127.0.0.1 --port "$port" --log-level warn "$@" >"$log" 2>&1 &
  pid=$!
  wait_healthz "$port"
}
# Stops whatever $pid is (crunchd drains on SIGTERM) and waits for it.
stop_peer() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
