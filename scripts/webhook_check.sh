#!/usr/bin/env bash
# Signed callbacks as a receiver sees them: a Node.js receiver built on the Standard Webhooks
# reference library (npm `standardwebhooks`, locked in scripts/webhooks/) answers crunchd's first
# two deliveries with 503 and verifies every signature; the third delivery must verify and be
# the job's status, with a secret rotated in on SIGHUP before the job was submitted. Then over
# HTTPS: a receiver with a certificate from an authority crunchd is given (--callback-ca-file)
# takes its delivery; one crunchd has no authority for is never sent the message.
#   ./scripts/webhook_check.sh [BUILD_DIR=build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
if command -v node >/dev/null && command -v npm >/dev/null; then
  crunch_packages=()
else
  crunch_packages=(nodejs npm)
fi
command -v openssl >/dev/null || crunch_packages+=(openssl)
crunch_install_deps
[[ -x "$build/crunchd" ]] || cmake --build "$build" --target crunchd >/dev/null
(cd "$root/scripts/webhooks" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

work="$(mktemp -d)"
pid=""
receiver=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  [[ -n "$receiver" ]] && kill "$receiver" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
secret() { echo "whsec_$(head -c 32 /dev/urandom | base64 -w0)"; }
secret > "$work/secrets"
# Rotation: the new secret first, the old one after it. crunchd starts with the old one alone and
# is given both on SIGHUP; the receiver knows only the new one.
{ secret; cat "$work/secrets"; } > "$work/secrets.next"

node "$root/scripts/webhooks/receiver.mjs" "$work/secrets.next" "$work/receiver.port" 2 > "$work/receiver.log" 2>&1 &
receiver=$!
port="$(free_port)"
"$build/crunchd" --address 127.0.0.1 --port "$port" --workers 1 --callback-allow http://127.0.0.1: \
  --callback-allow-private true --webhook-secret-file "$work/secrets" >"$work/crunchd.log" 2>&1 &
pid=$!
wait_healthz "$port" || { cat "$work/crunchd.log" >&2; exit 1; }
for _ in $(seq 100); do [[ -s "$work/receiver.port" ]] && break; sleep 0.1; done
hook="http://127.0.0.1:$(cat "$work/receiver.port")/hooks/crunch"

cp "$work/secrets.next" "$work/secrets"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q webhook_secrets_reloaded "$work/crunchd.log" && break; sleep 0.1; done
grep -q '"secrets":2' "$work/crunchd.log" || { echo "webhook check FAILED: the secrets were not reloaded" >&2; exit 1; }

fail() { echo "webhook check FAILED: $*" >&2; cat "$work/receiver.log" >&2; tail -5 "$work/crunchd.log" >&2; exit 1; }
accepted="$(curl -s -w ' %{http_code}' -H 'Prefer: respond-async' \
  "http://127.0.0.1:$port/fib/25?callback_url=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$hook")")"
[[ "$accepted" == *" 202" ]] || fail "the job was not accepted: $accepted"
wait "$receiver" || fail "the receiver did not take a verified delivery"
receiver=""
cat "$work/receiver.log"
grep -q 'delivery 3 verified and taken: .*"type":"job.succeeded"' "$work/receiver.log" || fail "not the job's status"
grep -q '"result":{"bytes":' "$work/receiver.log" || fail "the message has no result"
# crunchd logs the delivery once its crunch-callback has exited, a moment after the receiver answered.
for _ in $(seq 100); do grep -q '"event":"callback"' "$work/crunchd.log" && break; sleep 0.1; done
grep -q '"event":"callback".*"attempts":3.*"outcome":"delivered"' "$work/crunchd.log" || fail "crunchd logged no delivery"

# HTTPS: an authority, and a certificate it signed for 127.0.0.1.
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=crunch-test-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -extfile <(echo "subjectAltName=IP:127.0.0.1") -out "$work/tls.pem" 2>/dev/null
https_round() {  # CA_FILE_FLAGS... : starts a receiver and a crunchd, submits a job with a callback
  rm -f "$work/receiver.port"
  TLS_KEY="$work/tls.key" TLS_CERT="$work/tls.pem" \
    node "$root/scripts/webhooks/receiver.mjs" "$work/secrets.next" "$work/receiver.port" 0 > "$work/receiver.log" 2>&1 &
  receiver=$!
  port="$(free_port)"
  "$build/crunchd" --address 127.0.0.1 --port "$port" --workers 1 --callback-allow https://127.0.0.1: \
    --callback-allow-private true --webhook-secret-file "$work/secrets" --callback-retry-for 0s "$@" \
    >"$work/crunchd.log" 2>&1 &
  pid=$!
  wait_healthz "$port" || { cat "$work/crunchd.log" >&2; exit 1; }
  for _ in $(seq 100); do [[ -s "$work/receiver.port" ]] && break; sleep 0.1; done
  hook="https://127.0.0.1:$(cat "$work/receiver.port")/hooks/crunch"
  curl -sf -o /dev/null -H 'Prefer: respond-async' \
    "http://127.0.0.1:$port/fib/25?callback_url=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$hook")"
  for _ in $(seq 100); do grep -q '"event":"callback"' "$work/crunchd.log" && break; sleep 0.1; done
}
https_round --callback-ca-file "$work/ca.pem"
wait "$receiver" || fail "the HTTPS receiver did not take a verified delivery"
receiver=""
grep -q '"event":"callback".*"outcome":"delivered"' "$work/crunchd.log" || fail "no delivery over HTTPS"
echo "https: delivered to a receiver whose certificate chains to --callback-ca-file"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
https_round
grep '"event":"callback"' "$work/crunchd.log" | grep 'certificate verify failed.*"outcome":"gave_up"' >/dev/null ||
  fail "a receiver with an unknown authority was not refused"
grep -q "delivery" "$work/receiver.log" && fail "the receiver with an unknown authority got the message"
echo "https: a receiver whose authority crunchd does not know never gets the message"
echo "webhook check passed"
