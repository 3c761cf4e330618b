#!/usr/bin/env bash
# Builds the real Dockerfile with podman and checks the image as a user would run it:
#   ./scripts/container_check.sh
# No registry is reachable, so the base images are made here: debootstrap a minimal bookworm from
# the mirror apt already uses, and import it as debian:bookworm and debian:bookworm-slim.
# Then: /healthz and /fib/30 answer through a loopback port, a password is hashed and an image
# thumbnailed (the image's size and library list are printed and bounded), crunchd runs as
# non-root, two floods under --memory 64m end without an OOM kill, the worker
# pool follows --cpus, and SIGTERM during a job drains it and exits 0 within the drain timeout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_packages=(podman runc debootstrap podman-compose golang-github-containernetworking-plugin-dnsname curl python3 wrk)
crunch_install_deps

# runc instead of crun, and ulimits these machines accept (see the file); nothing goes to /etc.
export CONTAINERS_CONF="$root/docker/podman/containers.conf"
image=crunch:check
name="crunch-check-$$"
work="$(mktemp -d)"
project="crunchci$$"
export CRUNCH_API_KEYS_FILE="$work/api_keys"  # the compose file's secret, written before compose runs
compose=(podman-compose -p "$project" -f "$root/docker/compose.yaml" -f "$root/docker/compose.ci.yaml")
cleanup() {
  podman rm -f -i -t 0 "$name" "$name-cpus" "$name-mem" "$name-hooks" >/dev/null 2>&1 || true
  "${compose[@]}" down -t 2 >/dev/null 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The peak memory of a running container's cgroup, in bytes (v1 or v2).
cgroup_peak() {  # container
  local pid v1 v2
  pid="$(podman inspect --format '{{.State.Pid}}' "$1")"
  v1="$(awk -F: '$2 == "memory" { print $3 }' "/proc/$pid/cgroup")"
  v2="$(awk -F: '$1 == "0" { print $3 }' "/proc/$pid/cgroup")"
  if [[ -n "$v1" && -r "/sys/fs/cgroup/memory$v1/memory.max_usage_in_bytes" ]]; then
    cat "/sys/fs/cgroup/memory$v1/memory.max_usage_in_bytes"
  else
    cat "/sys/fs/cgroup$v2/memory.peak"
  fi
}

wait_ready() {  # port
  wait_healthz "$1" || { podman logs "$name" >&2 || true; return 1; }
}

if podman image exists debian:bookworm && podman image exists debian:bookworm-slim; then
  echo "== base images: already here"
else
  mirror="$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' | awk '$1 == "bookworm" && !found { print $2; found = 1 }')"
  [[ -n "$mirror" ]] || { echo "no bookworm mirror in the apt sources" >&2; exit 1; }
  echo "== base images: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # As Debian's own images do: no downloaded packages or indexes in the image.
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | podman import - debian:bookworm >/dev/null
  rm -rf "$work/rootfs"/usr/share/{doc,man,info,locale}
  tar -C "$work/rootfs" -c . | podman import - debian:bookworm-slim >/dev/null
  rm -rf "$work/rootfs"
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep debian
fi

echo "== podman build (the Dockerfile: build stage compiles Release and runs the tests)"
start=$SECONDS
podman build --pull=never --format docker -t "$image" "$root"  # docker format keeps HEALTHCHECK
echo "built in $((SECONDS - start)) s; image size $(podman image inspect "$image" --format '{{.Size}}' | awk '{ printf "%.1f MiB", $1 / 1048576 }')"

echo "== run"
port="$(free_port)"
podman run -d --health-interval disable --name "$name" -p "127.0.0.1:$port:8080" -e CRUNCH_DRAIN_TIMEOUT=5s "$image" >/dev/null
wait_ready "$port"
body="$(curl -sf "http://127.0.0.1:$port/fib/30")"
echo "/fib/30 -> $body"
[[ "$body" == *'"result":832040'* ]] || { echo "unexpected /fib/30 answer" >&2; exit 1; }
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
# Read from the host: the image has no shell or id to ask inside.
host_pid="$(podman inspect --format '{{.State.Pid}}' "$name")"
uid="$(awk '/^Uid:/ { print $2 }' "/proc/$host_pid/status")"
echo "PID 1 of the container is $(cat "/proc/$host_pid/comm"), uid $uid"
[[ "$uid" != 0 ]] || { echo "the container runs as root" >&2; exit 1; }
[[ "$(cat "/proc/$host_pid/comm")" == crunchd ]] || { echo "PID 1 is not crunchd: SIGTERM would not reach it" >&2; exit 1; }
podman healthcheck run "$name" && echo "HEALTHCHECK (crunchd --probe): healthy"

echo "== a password hashed and verified through the image (libsodium, linked in)"
hashed="$(curl -sf -H 'Content-Type: application/json' -d '{"password":"correct horse battery staple"}' \
  "http://127.0.0.1:$port/v1/password/hash")"
echo "hash -> $hashed"
[[ "$hashed" == *'"hash":"$argon2id$v=19$m=19456,t=2,p=1$'* ]] || { echo "unexpected hash answer" >&2; exit 1; }
verified="$(python3 -c 'import json,sys; print(json.dumps({"password": "correct horse battery staple", "hash": json.loads(sys.argv[1])["hash"]}))' "$hashed" \
  | curl -sf -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$port/v1/password/verify")"
echo "verify -> $verified"
[[ "$verified" == '{"match":true,"needs_rehash":false}' ]] || { echo "unexpected verify answer" >&2; exit 1; }

echo "== an image thumbnailed through the image (libvips, built lean in the Dockerfile)"
[[ -x "$root/build/make_image" ]] || cmake --build "$root/build" --target make_image >/dev/null
"$root/build/make_image" 4000 3000 jpeg 88 "$work/photo.jpg"
code="$(curl -s -o "$work/thumb.webp" -w '%{http_code} %{content_type}' -H 'Content-Type: image/jpeg' \
  --data-binary @"$work/photo.jpg" "http://127.0.0.1:$port/v1/image/thumbnail?width=400&format=webp")"
echo "4000x3000 JPEG -> $code, $(stat -c %s "$work/thumb.webp") bytes"
[[ "$code" == "200 image/webp" && "$(head -c 4 "$work/thumb.webp")" == RIFF ]] || { echo "no WebP thumbnail" >&2; exit 1; }
code="$(curl -s -o "$work/thumb.avif" -w '%{http_code} %{content_type}' -H 'Content-Type: image/jpeg' \
  -H 'Accept: image/avif,image/webp,*/*' --data-binary @"$work/photo.jpg" \
  "http://127.0.0.1:$port/v1/image/thumbnail?width=400&format=auto")"
echo "4000x3000 JPEG, format=auto for a browser that takes AVIF -> $code, $(stat -c %s "$work/thumb.avif") bytes"
[[ "$code" == "200 image/avif" && "$(head -c 12 "$work/thumb.avif" | tail -c 8)" == ftypavif ]] || {
  echo "no AVIF thumbnail" >&2; exit 1; }
# The thumbnails ran in sandboxed helpers, nested inside podman's own seccomp filter.
helpers="$(pgrep -P "$host_pid" || true)"
[[ -n "$helpers" ]] || { echo "no helper process under crunchd: the codecs did not run isolated" >&2; exit 1; }
for helper in $helpers; do
  fields="$(awk '/^(Uid|Seccomp|NoNewPrivs):/ { printf "%s %s ", $1, $2 }' "/proc/$helper/status")"
  echo "helper $helper ($(tr '\0' ' ' <"/proc/$helper/cmdline" | cut -d' ' -f2-4)): $fields"
  [[ "$fields" == *"Seccomp: 2"* && "$fields" == *"NoNewPrivs: 1"* && "$fields" != *"Uid: 0 "* ]] || {
    echo "a helper runs without its sandbox, or as root" >&2; exit 1; }
done
# Callback attempts run in /crunch-callback, beside crunchd: it must run with the image's OpenSSL,
# and crunchd must find it (it does not start with --callback-allow otherwise).
said="$(podman exec "$name" /crunch-callback --tls hooks.example.com 127.0.0.1:9 </dev/null)"
echo "crunch-callback in the image, to a closed port: $said"
[[ "$said" == '{"failed":"connect: Connection refused"}' ]] || { echo "crunch-callback does not run in the image" >&2; exit 1; }
echo "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" >"$work/whsec" && chmod 644 "$work/whsec"
port_hooks="$(free_port)"
podman run -d --health-interval disable --name "$name-hooks" -p "127.0.0.1:$port_hooks:8080" \
  -v "$work/whsec:/run/whsec:ro" "$image" --callback-allow https://hooks.example.com/ --webhook-secret-file /run/whsec >/dev/null
wait_healthz "$port_hooks" || { podman logs "$name-hooks" >&2; exit 1; }
podman rm -f -t 0 "$name-hooks" >/dev/null
echo "crunchd with --callback-allow https://... starts in the image (it found /crunch-callback)"
podman cp "$name:/opt/vips/libraries.txt" "$work/libraries.txt"
size="$(podman image inspect "$image" --format '{{.Size}}')"
echo "image: $((size / 1048576)) MiB, $(wc -l <"$work/libraries.txt") shared libraries:" $(xargs -n1 basename <"$work/libraries.txt")
(( size < 40 * 1048576 )) || { echo "the image is over 40 MiB" >&2; exit 1; }
if grep -Eq 'libX11|libcurl|libkrb5|libldap|libicu|libpoppler|libOpenEXR|libMagick|libx265|libde265|libdav1d' "$work/libraries.txt"; then
  echo "the image carries libraries a thumbnailer does not need" >&2; exit 1
fi

echo "== --memory 64m, as compose and the manifests give a replica: a flood of the largest hashes, no OOM"
port_mem="$(free_port)"
podman run -d --health-interval disable --name "$name-mem" --memory 64m --memory-swap 64m \
  -p "127.0.0.1:$port_mem:8080" -e CRUNCH_LOG_LEVEL=warn "$image" >/dev/null
wait_ready "$port_mem"
budget="$(curl -sf "http://127.0.0.1:$port_mem/metrics" | awk '$1 == "crunch_memory_budget_bytes" { print $2 }')"
echo "memory budget under --memory 64m: $((budget / 1048576)) MiB"
(( budget == 48 * 1048576 )) || { echo "expected a 48 MiB budget (64 MiB less the 16 MiB reserve)" >&2; exit 1; }
# The largest hash the budget holds: its blocks in whole 2 MiB (the worker keeps them for the next
# hash, and they are charged as kept), plus 64 KiB.
m_cost=$(( (budget - 65536) / 2097152 * 2048 ))
BODY="{\"password\":\"x\",\"m_cost_kib\":$m_cost,\"t_cost\":6}" wrk -t2 -c256 -d10s --timeout 20s \
  -s "$root/bench/post.lua" "http://127.0.0.1:$port_mem/v1/password/hash" >"$work/flood.txt"
flood="$(tail -1 "$work/flood.txt")"
peak="$(cgroup_peak "$name-mem")"
state="$(podman inspect --format '{{.State.Running}} {{.State.OOMKilled}}' "$name-mem")"
echo "flood of m_cost_kib=$m_cost t_cost=6 from 256 connections for 10 s: $flood"
echo "container running, OOM-killed: $state; the cgroup's peak memory: $((peak / 1048576)) MiB of 64"
[[ "$state" == "true false" ]] || { echo "the container did not survive the flood" >&2; exit 1; }
curl -sf "http://127.0.0.1:$port_mem/healthz" >/dev/null || { echo "/healthz does not answer after the flood" >&2; exit 1; }
[[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$flood")" != 0 ]] || { echo "nothing was hashed" >&2; exit 1; }
podman rm -f -i -t 0 "$name-mem" >/dev/null

echo "== --memory 64m: 64 connections uploading the 4000x3000 JPEG ($(( $(stat -c %s "$work/photo.jpg") / 1024 )) KiB) at once, no OOM"
podman run -d --health-interval disable --name "$name-mem" --memory 64m --memory-swap 64m \
  -p "127.0.0.1:$port_mem:8080" -e CRUNCH_LOG_LEVEL=warn "$image" >/dev/null
wait_ready "$port_mem"
BODY_FILE="$work/photo.jpg" CONTENT_TYPE=image/jpeg wrk -t2 -c64 -d10s --timeout 20s -s "$root/bench/post.lua" \
  "http://127.0.0.1:$port_mem/v1/image/thumbnail?width=400&format=webp" >"$work/images.txt"
flood="$(tail -1 "$work/images.txt")"
peak="$(cgroup_peak "$name-mem")"
state="$(podman inspect --format '{{.State.Running}} {{.State.OOMKilled}}' "$name-mem")"
echo "thumbnails from 64 connections for 10 s: $flood"
echo "container running, OOM-killed: $state; the cgroup's peak memory: $((peak / 1048576)) MiB of 64"
[[ "$state" == "true false" ]] || { echo "the container did not survive the uploads" >&2; exit 1; }
[[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$flood")" != 0 ]] || { echo "nothing was thumbnailed" >&2; exit 1; }
podman rm -f -i -t 0 "$name-mem" >/dev/null

echo "== --cpus 1: the worker pool follows the CPU quota"
port_cpus="$(free_port)"
podman run -d --health-interval disable --name "$name-cpus" --cpus 1 -p "127.0.0.1:$port_cpus:8080" "$image" >/dev/null
wait_ready "$port_cpus"
workers="$(curl -sf "http://127.0.0.1:$port_cpus/metrics" | awk '$1 == "crunch_workers" { print $2 }')"
host_workers="$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "crunch_workers" { print $2 }')"
echo "workers: $host_workers without a quota (host has $(nproc) CPUs), $workers with --cpus 1"
[[ "$workers" == 1 ]] || { echo "expected 1 worker under --cpus 1" >&2; exit 1; }

echo "== --cpus 1 under full load: the quota never stops the I/O thread, and the jobs still get it"
# /fib/32 from wrk -t1 -c4 for 10 s, /healthz probed open-loop every 2 ms meanwhile (timed from
# when each was due). Without the pacer every period ended throttled and the probe's p99 was
# 1.8-2.9 ms (issue 14); the targets are p99 <= 1 ms and p99.9 <= 3 ms, checked here with room.
probe_bin="$root/build/latency_probe"
if [[ ! -x "$probe_bin" ]]; then
  cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build" --target latency_probe >/dev/null
fi
curl -sf "http://127.0.0.1:$port_cpus/metrics" >"$work/cpus-m0.txt"
start_ns="$(date +%s%N)"
wrk -t1 -c4 -d10s --timeout 10s "http://127.0.0.1:$port_cpus/fib/32" >"$work/cpus-wrk.txt" 2>&1 &
load=$!
sleep 1
"$probe_bin" "$port_cpus" /healthz 8 2000 >"$work/cpus-probe.json"
wait "$load"
curl -sf "http://127.0.0.1:$port_cpus/metrics" >"$work/cpus-m1.txt"
end_ns="$(date +%s%N)"
python3 - "$work" "$start_ns" "$end_ns" <<'PY'
import json, sys
work, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def metrics(name):
    values = {}
    for line in open(f"{work}/{name}"):
        if not line.startswith("#") and " " in line:
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values
m0, m1 = metrics("cpus-m0.txt"), metrics("cpus-m1.txt")
d = lambda key: m1.get(key, 0) - m0.get(key, 0)
wall = (end - start) / 1e9
p = json.load(open(f"{work}/cpus-probe.json"))["latency_us"]
periods, throttled = d("crunch_cpu_quota_periods_total"), d("crunch_cpu_quota_throttled_periods_total")
cpu = d("process_cpu_seconds_total") / wall
jobs = d('crunch_jobs_total{outcome="completed"}') / wall
print(f"/healthz open-loop p50 {p['p50'] / 1000:.2f} ms, p99 {p['p99'] / 1000:.2f} ms, p99.9 {p['p999'] / 1000:.2f} ms, "
      f"max {p['max'] / 1000:.2f} ms; throttled {throttled:.0f} of {periods:.0f} periods; crunchd used {cpu:.2f} of "
      f"its 1-CPU quota, {jobs:.0f} /fib/32 a second; workers paced {d('crunch_workers_paced_seconds_total'):.2f} s")
failed = []
if p["p99"] > 2000: failed.append("p99 over 2 ms")
if p["p999"] > 10000: failed.append("p99.9 over 10 ms")
if periods == 0 or throttled > 0.1 * periods: failed.append("more than 10 % of the periods throttled (or none counted)")
if cpu < 0.8: failed.append("crunchd used less than 80 % of its quota")
if failed:
    print("; ".join(failed), file=sys.stderr)
    sys.exit(1)
PY
podman rm -f -i -t 0 "$name-cpus" >/dev/null

echo "== SIGTERM while a job runs: it is answered, then crunchd exits 0 within the drain timeout"
curl -s -o "$work/inflight.json" -w '%{http_code}' "http://127.0.0.1:$port/fib/42" >"$work/inflight.code" &
inflight=$!
for _ in $(seq 100); do  # until the job is on a worker
  busy="$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "crunch_workers_busy" { print $2 }')"
  [[ "$busy" == 0 ]] || break
  sleep 0.02
done
start_ms="$(date +%s%3N)"
podman kill --signal TERM "$name" >/dev/null
code="$(timeout 20 podman wait "$name")"
took_ms=$(( $(date +%s%3N) - start_ms ))
wait "$inflight" || true
echo "exit code $code ${took_ms} ms after SIGTERM; the job in flight got HTTP $(cat "$work/inflight.code")"
podman logs "$name" 2>&1 | tail -3
[[ "$code" == 0 ]] || { echo "crunchd exited $code" >&2; exit 1; }
(( took_ms <= 6000 )) || { echo "took longer than the 5 s drain timeout (+1 s grace)" >&2; exit 1; }
[[ "$(cat "$work/inflight.code")" == 200 ]] || { echo "the job in flight was not answered 200" >&2; exit 1; }
echo "== docker/compose.yaml with podman-compose: three replicas behind nginx, their jobs on one Redis"
# The same compose file users run; only the balancer's and Redis's images are local
# (docker/compose.ci.yaml): Debian's nginx and redis-server.
printf 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*\nCMD ["nginx", "-g", "daemon off;"]\n' \
  | podman build --pull=never -q -t crunch-ci-nginx:latest - >/dev/null
printf 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/* && mkdir -p /data\nCMD ["redis-server"]\n' \
  | podman build --pull=never -q -t crunch-ci-redis:latest - >/dev/null
podman tag "$image" crunch:latest
lb_port="$(free_port)"
# The API keys go in as a compose secret file, as the README makes them.
key="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
(umask 022 && printf 'ci:%s\n' "$key" >"$work/api_keys")
CRUNCH_LB_PORT="$lb_port" "${compose[@]}" up -d --no-build >"$work/compose.log" 2>&1 || { cat "$work/compose.log" >&2; exit 1; }
wait_ready "$lb_port"
unauthorized="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$lb_port/fib/25")"
[[ "$unauthorized" == 401 ]] || { echo "without a key through nginx: $unauthorized, expected 401" >&2; exit 1; }
codes="$(for _ in $(seq 30); do curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer $key" "http://127.0.0.1:$lb_port/fib/25"; done)"
answered=()
for i in 1 2 3; do answered+=("$(podman logs "${project}_crunch${i}_1" 2>&1 | grep -c '"target":"/fib/25"' || true)"); done
echo "30 requests through nginx, answers by status: $(tr ' ' '\n' <<<"$codes" | grep . | sort | uniq -c | xargs); answered by the replicas: ${answered[*]}"
bad="$(awk '{ for (i = 1; i <= NF; i++) if ($i != 200) n++ } END { print n + 0 }' <<<"$codes")"
(( bad == 0 )) || { echo "not every answer was 200: $codes" >&2; exit 1; }
for n in "${answered[@]}"; do (( n > 0 )) || { echo "a replica answered nothing" >&2; exit 1; }; done
for i in 1 2 3; do
  logs="$(podman logs "${project}_crunch${i}_1" 2>&1)"
  if grep -qF "$key" <<<"$logs"; then echo "crunch$i logged the API key" >&2; exit 1; fi
  grep -qF '"client":"ci"' <<<"$logs" || { echo "crunch$i did not log the key's name" >&2; exit 1; }
done
echo "keys from a compose secret file: 401 without one; the key's name in the access lines, never the key"
# Asynchronous jobs through nginx: each submitted to one replica and asked after on the others.
auth=(-H "Authorization: Bearer $key")
ids=()
for n in 20 21 22 23 24 25; do
  ids+=("$(curl -sf "${auth[@]}" -H 'Prefer: respond-async' "http://127.0.0.1:$lb_port/fib/$n" |
           python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
done
succeeded=0
for id in "${ids[@]}"; do
  for _ in $(seq 100); do
    status="$(curl -s "${auth[@]}" "http://127.0.0.1:$lb_port/v1/jobs/$id" |
              python3 -c 'import json,sys; print(json.load(sys.stdin).get("status", "missing"))' 2>/dev/null || echo missing)"
    [[ "$status" == succeeded ]] && { succeeded=$((succeeded + 1)); break; }
    [[ "$status" == queued || "$status" == running ]] || { echo "job $id through nginx: $status" >&2; exit 1; }
    sleep 0.1
  done
done
(( succeeded == ${#ids[@]} )) || { echo "$succeeded of ${#ids[@]} asynchronous jobs succeeded through nginx" >&2; exit 1; }
replicas_ran="$(for i in 1 2 3; do curl -s "${auth[@]}" "http://127.0.0.1:$lb_port/metrics" | sed -n 's/^crunch_shared_store_up //p'; done | sort -u | xargs)"
[[ "$replicas_ran" == 1 ]] || { echo "crunch_shared_store_up through nginx: $replicas_ran" >&2; exit 1; }
echo "${#ids[@]} asynchronous jobs through nginx, each asked after on every replica: all succeeded; Redis up for each"
"${compose[@]}" down -t 12 >/dev/null 2>&1

echo "container check passed"
