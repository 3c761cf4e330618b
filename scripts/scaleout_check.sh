#!/usr/bin/env bash
# Scale-out check: nginx (with docker/nginx.conf, pointed at loopback) balancing three crunchd
# processes under steady load. One replica is SIGKILLed, another SIGTERMed (it drains); clients
# must see no failed request, and the drained replica must exit 0.
#   ./scripts/scaleout_check.sh [BUILD_DIR=build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_packages=(nginx-light wrk curl python3)
crunch_install_deps
build="${1:-$root/build}"
# crunchd's run_service with the tests' own kind (tests/work_kind.hpp): the load is /work/1, a
# millisecond of CPU, whichever product kinds are built.
crunchd="$build/tests/crunch_test_service"
[[ -x "$crunchd" ]] || { echo "no $crunchd: build first (./scripts/test.sh)" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
nginx_pid=""
cleanup() {
  # nginx's master stops its workers on QUIT; a KILLed master would leave them behind.
  if [[ -n "$nginx_pid" ]]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  { wait; } 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT


ports=()
for i in 1 2 3; do
  ports+=("$(free_port)")
  "$crunchd" --address 127.0.0.1 --port "${ports[-1]}" --workers 1 --drain-timeout 5s >"$work/crunch$i.log" 2>&1 &
  pids+=($!)
done
for p in "${ports[@]}"; do wait_healthz "$p"; done

# The compose file's nginx.conf, with the replicas and the listener moved to loopback ports.
lb="$(free_port)"
sed -e "s/crunch1:8080/127.0.0.1:${ports[0]}/; s/crunch2:8080/127.0.0.1:${ports[1]}/; s/crunch3:8080/127.0.0.1:${ports[2]}/" \
    -e "s/listen 8080;/listen 127.0.0.1:$lb;/" "$root/docker/nginx.conf" >"$work/nginx.conf"
grep -q "127.0.0.1:${ports[2]}" "$work/nginx.conf" || { echo "docker/nginx.conf no longer names crunch1..3:8080" >&2; exit 1; }
mkdir -p "$work/logs"
nginx -p "$work" -c "$work/nginx.conf" -g "daemon off; pid $work/nginx.pid; error_log $work/logs/error.log warn;" \
  >"$work/logs/nginx.out" 2>&1 &
nginx_pid=$!
wait_healthz "$lb"

# Steady load through nginx for 12 s: SIGKILL replica 1 at 3 s, SIGTERM replica 2 at 7 s.
wrk -t2 -c8 -d12s --timeout 10s -s "$root/bench/report.lua" "http://127.0.0.1:$lb/work/1" >"$work/wrk.txt" 2>&1 &
load=$!
sleep 3
kill -KILL "${pids[0]}"
{ wait "${pids[0]}"; } 2>/dev/null || true
echo "t=3s: SIGKILL replica 1"
sleep 4
kill -TERM "${pids[1]}"
echo "t=7s: SIGTERM replica 2"
set +e
wait "${pids[1]}"
drained=$?
set -e
echo "replica 2 exited $drained"
wait "$load"
result="$(tail -1 "$work/wrk.txt")"
[[ "$result" == "{"* ]] || { cat "$work/wrk.txt" >&2; exit 1; }

count() { grep -c '"event":"access"' "$work/crunch$1.log" || true; }
read -r requests failed <<<"$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["requests"], sum(r["errors"].values()))' "$result")"
echo "through nginx: $requests requests, $failed failed (socket errors + non-2xx); answered by replica 1: $(count 1) (killed), replica 2: $(count 2) (drained), replica 3: $(count 3)"
echo "nginx retried elsewhere: $(grep -c 'upstream' "$work/logs/error.log" || true) upstream errors logged"
grep -h '"event":"draining"\|"event":"stopped"' "$work/crunch2.log" | cut -c1-160
(( drained == 0 )) || { echo "the drained replica exited $drained" >&2; exit 1; }
(( failed == 0 )) || { echo "clients saw $failed failed requests" >&2; cat "$work/logs/error.log" >&2; exit 1; }
(( $(count 3) > 0 )) || { echo "replica 3 answered nothing" >&2; exit 1; }
echo "scale-out check passed"
