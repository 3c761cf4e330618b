#!/usr/bin/env bash
# crunch as a library, as a team would use it: installs the build (cmake --install) into a scratch
# prefix, builds examples/own-kind out of tree against it (find_package(crunch), crunch::core),
# starts the service on loopback, and checks that it serves its own kind beside crunch's: the
# kind's answer, its own flag (--primes-max-n, in --help too), /v1/kinds listing it, a callback
# through the installed crunch-callback, a thumbnail through the installed image module, and a
# clean exit on SIGTERM. Every wait is bounded; what it starts is stopped on exit.
#   ./scripts/example_check.sh [BUILD_DIR=build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_install_deps
build="$(cd "${1:-$root/build}" && pwd)"
work="$(mktemp -d)"
pid=""
receiver=""
cleanup() {
  [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  if [[ -n "$receiver" ]]; then kill "$receiver" 2>/dev/null; wait "$receiver" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
echo "installed: $(cd "$work/prefix" && find . -type f | sort | tr '\n' ' ')"
# The API and nothing else: what a kind and a service include (and all that they include).
headers="$(cd "$work/prefix/include/crunch" && ls | tr '\n' ' ')"
expected="arguments.hpp config.hpp cpu_pacer.hpp isolation.hpp jobs.hpp kinds.hpp log.hpp memory_lease.hpp scheduling.hpp server.hpp service.hpp wiping.hpp worker_memory.hpp "
[[ "$headers" == "$expected" ]] || { echo "installed headers: $headers; expected: $expected" >&2; exit 1; }
cmake -S "$root/examples/own-kind" -B "$work/own" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/own" >/dev/null
echo "built examples/own-kind against it: $(stat -c %s "$work/own/primes-service") bytes"

# Installed somewhere other than the prefix it was configured for, the image module is named.
port="$(free_port)"
# So is the program callbacks run in, which a service finds beside itself or at the configured prefix.
helper="$work/prefix/libexec/crunch/crunch-callback"
[[ -x "$helper" ]] || { echo "cmake --install put no crunch-callback in libexec/crunch/" >&2; exit 1; }
echo "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" >"$work/whsec"
# A receiver for one callback: answers 200 and says what it got.
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        print(self.headers["webhook-id"], body.decode(), flush=True)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()' >"$work/receiver.out" 2>&1 &
receiver=$!
for _ in $(seq 100); do [[ -s "$work/receiver.out" ]] && break; sleep 0.05; done
receiver_port="$(head -1 "$work/receiver.out")"
CRUNCH_IMAGE_LIBRARY="$(find "$work/prefix" -name libcrunch_vips.so)" \
  "$work/own/primes-service" --address 127.0.0.1 --port "$port" --primes-max-n 1000000 \
  --callback-allow http://127.0.0.1: --callback-allow-private true --webhook-secret-file "$work/whsec" \
  --callback-helper "$helper" >"$work/service.log" 2>&1 &
pid=$!
wait_healthz "$port" || { cat "$work/service.log" >&2; exit 1; }

fail() { echo "example check FAILED: $*" >&2; tail -5 "$work/service.log" >&2; exit 1; }
answer="$(curl -sf "http://127.0.0.1:$port/v1/primes/1000000")"
[[ "$answer" == '{"n":1000000,"primes":78498}' ]] || fail "/v1/primes/1000000 answered $answer"
echo "/v1/primes/1000000 -> $answer"
# Its own kind is asynchronous for free: 202 with a Location, whose result is the same answer.
location="$(curl -sf -D- -o /dev/null -H 'Prefer: respond-async' "http://127.0.0.1:$port/v1/primes/1000000" |
  tr -d '\r' | sed -n 's/^Location: //p')"
[[ "$location" == /v1/jobs/* ]] || fail "Prefer: respond-async gave no Location"
curl -sf -o /dev/null -H 'Prefer: wait=30' "http://127.0.0.1:$port$location"
async="$(curl -sf "http://127.0.0.1:$port$location/result")"
[[ "$async" == "$answer" ]] || fail "the asynchronous result is $async"
echo "Prefer: respond-async -> $location -> $async"
# And its jobs call back, through the installed crunch-callback.
id="$(curl -sf -H 'Prefer: respond-async' \
  "http://127.0.0.1:$port/v1/primes/1000?callback_url=http://127.0.0.1:$receiver_port/hook" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
for _ in $(seq 200); do grep -q "^$id " "$work/receiver.out" && break; sleep 0.05; done
grep -q "^$id .*job.succeeded" "$work/receiver.out" || fail "no callback for job $id: $(cat "$work/receiver.out")"
echo "a callback for job $id came through $helper"
kinds="$(curl -sf "http://127.0.0.1:$port/v1/kinds" | python3 -c 'import json,sys; print(" ".join(k["name"] for k in json.load(sys.stdin)["kinds"]))')"
[[ " $kinds " == *" primes "* && " $kinds " == *" fib "* ]] || fail "/v1/kinds lists: $kinds"
echo "/v1/kinds lists: $kinds"
status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/primes/2000000")"
[[ "$status" == 400 ]] || fail "n above --primes-max-n answered $status"
echo "/v1/primes/2000000 above --primes-max-n 1000000 -> $status"
"$work/own/primes-service" --help | grep -- '--primes-max-n N.*\[CRUNCH_PRIMES_MAX_N\]' >/dev/null || fail "--help lists no --primes-max-n"
"$build/make_image" 320 240 jpeg 85 "$work/photo.jpg" >/dev/null
thumb="$(curl -s -o /dev/null -w '%{http_code} %{content_type}' -H 'Content-Type: image/jpeg' \
  --data-binary @"$work/photo.jpg" "http://127.0.0.1:$port/v1/image/thumbnail?width=100&format=webp")"
[[ "$thumb" == "200 image/webp" ]] || fail "a thumbnail answered $thumb"
echo "a thumbnail through the installed image module: $thumb"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
[[ "$rc" == 0 ]] || fail "exit code $rc after SIGTERM"
echo "example check passed"
