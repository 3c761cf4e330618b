#!/usr/bin/env bash
# Checks crunchd's /metrics against the real Prometheus tools (Debian's prometheus package):
#  1. promtool check metrics on a real scrape taken after some traffic;
#  2. a Prometheus server on loopback scrapes crunchd while traffic runs, and its HTTP API must
#     return data for a request-rate query, for the loop-lag p99 quantile, and for the query of
#     the KEDA ScaledObject (docker/k8s/jobs-on-redis) that scales on the backlog.
# Loopback only; every wait is bounded; everything it starts is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/loopback.sh"
build="${1:-$root/build}"
work="$(mktemp -d)"
crunchd_pid=""; prom_pid=""
cleanup() {
  [[ -n "$prom_pid" ]] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
  [[ -n "$crunchd_pid" ]] && kill -TERM "$crunchd_pid" 2>/dev/null && wait "$crunchd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT


# crunchd's run_service with the tests' own kind beside the built-in ones (tests/work_kind.hpp):
# the traffic below names only it, whichever product kinds are built.
"$build/tests/crunch_test_service" --address 127.0.0.1 --port 0 >"$work/crunchd.log" 2>&1 &
crunchd_pid=$!
port=""
# Up to 30 s: the start calibrates each job kind at the workers' low priority, which takes
# seconds on a machine whose CPUs are busy with anything else.
for _ in $(seq 600); do
  port="$(grep -o '"port":[0-9]*' "$work/crunchd.log" | head -1 | cut -d: -f2 || true)"
  [[ -n "$port" ]] && break
  kill -0 "$crunchd_pid" 2>/dev/null || break
  sleep 0.05
done
[[ -n "$port" ]] || { echo "crunchd did not start" >&2; cat "$work/crunchd.log" >&2; exit 1; }
base="http://127.0.0.1:$port"

traffic() {  # a few seconds of mixed answers: 200, 400, 404, 405, 504
  local until=$((SECONDS + $1))
  while ((SECONDS < until)); do
    curl -s -o /dev/null "$base/work/2"; curl -s -o /dev/null "$base/work/x"
    curl -s -o /dev/null "$base/nope"; curl -s -o /dev/null -X POST "$base/work/3"
    curl -s -o /dev/null "$base/work/60000?timeout_ms=5"; curl -s -o /dev/null "$base/healthz"
  done
}

echo "== promtool check metrics"
traffic 2
curl -sf "$base/metrics" >"$work/scrape.txt"
if ! promtool check metrics <"$work/scrape.txt" >"$work/promtool.txt" 2>&1 || [[ -s "$work/promtool.txt" ]]; then
  echo "promtool complained:" >&2; cat "$work/promtool.txt" >&2; exit 1
fi
echo "promtool: no complaints about $(grep -c '^# TYPE' "$work/scrape.txt") metric families"

echo "== Prometheus scraping crunchd"
prom_port="$(free_port)"
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: crunch
    static_configs:
      - targets: ["127.0.0.1:$port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
traffic 8 &
traffic_pid=$!

query() {  # prints the number of series in the answer to a PromQL query
  curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="success"; r=d["data"]["result"]; print(len(r)); [print("   ", x["metric"], x["value"][1], file=sys.stderr) for x in r[:4]]'
}

ok=""
for _ in $(seq 40); do  # up to ~20 s for enough samples to arrive
  sleep 0.5
  rate="$(query 'sum by (route) (rate(crunch_http_requests_total[5s]))' 2>/dev/null || echo 0)"
  lag="$(query 'histogram_quantile(0.99, sum by (le) (rate(crunch_event_loop_lag_seconds_bucket[5s])))' 2>/dev/null || echo 0)"
  if [[ "$rate" -gt 0 && "$lag" -gt 0 ]]; then ok=1; break; fi
done
wait "$traffic_pid" || true
if [[ -z "$ok" ]]; then
  echo "Prometheus returned no data (rate series: ${rate:-0}, lag series: ${lag:-0})" >&2
  tail -20 "$work/prometheus.log" >&2
  exit 1
fi
echo "request rate by route:"; query 'sum by (route) (rate(crunch_http_requests_total[5s]))' >/dev/null
echo "loop lag p99 (seconds):"; query 'histogram_quantile(0.99, sum by (le) (rate(crunch_event_loop_lag_seconds_bucket[5s])))' >/dev/null
keda_query="$(sed -n 's/^ *query: *//p' "$root/docker/k8s/jobs-on-redis/scaledobject.yaml")"
[[ -n "$keda_query" ]] || { echo "no query in docker/k8s/jobs-on-redis/scaledobject.yaml" >&2; exit 1; }
echo "the ScaledObject's backlog query, $keda_query:"
[[ "$(query "$keda_query")" -eq 1 ]] || { echo "Prometheus has no single value for the ScaledObject's query" >&2; exit 1; }
echo "Prometheus check passed"
