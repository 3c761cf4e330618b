#!/usr/bin/env bash
# /healthz against nginx, the cheapest answer a mature server gives: nginx (one worker, a fixed
# 15-byte body from its config) and crunchd (this build, and any other commits named), alternated
# round by round under the same `wrk -t1 -c8 -d4s`. Prints each round's req/s and, per crunchd,
# the median of its ratios to the nginx run beside it. Loopback only; every load is 4 s.
#   ./bench/healthz_vs_nginx.sh [ROUNDS=8] [COMMIT...]
# Each COMMIT is built once (Release, crunchd alone) in /tmp/crunch-at-COMMIT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/prepare.sh"
crunch_packages+=(nginx-light curl)
bench_build crunchd
rounds="${1:-8}"
shift || true

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  { wait; } 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

names=(HEAD)
binaries=("$build/crunchd")
for commit in "$@"; do
  dir="/tmp/crunch-at-$commit"
  if [[ ! -x "$dir/build/crunchd" ]]; then
    rm -rf "$dir"
    git -C "$root" worktree add --force --detach "$dir" "$commit" >/dev/null
    cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_TESTS=OFF >/dev/null
    cmake --build "$dir/build" --target crunchd >/dev/null
  fi
  names+=("$commit")
  binaries+=("$dir/build/crunchd")
done

nginx_port="$(free_port)"
mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nginx_port;
    location = /healthz { default_type application/json; return 200 '{"status":"ok"}'; }
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -g "daemon off; pid $work/nginx.pid; error_log $work/logs/error.log warn;" &
pids+=($!)
wait_healthz "$nginx_port"

ports=()
for binary in "${binaries[@]}"; do
  p="$(free_port)"
  "$binary" --address 127.0.0.1 --port "$p" --workers 1 --log-level warn >"$work/crunchd-$p.log" 2>&1 &
  pids+=($!)
  wait_healthz "$p"
  ports+=("$p")
done

rps() {  # PORT -> req/s of a 4 s wrk run on /healthz
  wrk -t1 -c8 -d4s "http://127.0.0.1:$1/healthz" | awk '/Requests\/sec/ {print $2}'
}

: >"$work/rounds"
for round in $(seq "$rounds"); do
  n="$(rps "$nginx_port")"
  line="round $round: nginx $n"
  for i in "${!ports[@]}"; do
    c="$(rps "${ports[$i]}")"
    line+=", ${names[$i]} $c ($(python3 -c "print(f'{$c / $n:.3f}')")x)"
    echo "${names[$i]} $(python3 -c "print($c / $n)")" >>"$work/rounds"
  done
  echo "$line"
done
python3 - "$work/rounds" <<'PY'
import statistics, sys
ratios = {}
for line in open(sys.argv[1]):
    name, r = line.split()
    ratios.setdefault(name, []).append(float(r))
for name, rs in ratios.items():
    print(f"{name}: /healthz req/s over nginx's, median {statistics.median(rs):.3f} "
          f"(range {min(rs):.3f}-{max(rs):.3f}, {len(rs)} rounds)")
PY
