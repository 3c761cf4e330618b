#!/usr/bin/env bash
# The live view in a real browser: Debian's headless Chromium, driven by puppeteer-core (npm, pinned
# in scripts/ui/package-lock.json), against a real crunchd on loopback (scripts/ui/live_check.mjs).
# Also writes the README's screenshot, taken while wrk saturates the workers:
#   ./scripts/live_view_check.sh [BUILD_DIR] [SCREENSHOT.png]      (default build/, no screenshot)
#   ./scripts/live_view_check.sh build docs/live_view.png          (regenerates the README's image)
# CRUNCHD_ARGS adds flags to the crunchd it starts (e.g. "--worker-priority idle").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
screenshot="${2:-}"
[[ -n "$screenshot" ]] && screenshot="$(realpath -m "$screenshot")"
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_packages=(chromium wrk fonts-dejavu-core)
command -v node >/dev/null && command -v npm >/dev/null || crunch_packages+=(nodejs npm)
crunch_install_deps
work="$(mktemp -d)"
crunchd_pid=""
cleanup() {
  [[ -n "$crunchd_pid" ]] && kill -TERM "$crunchd_pid" 2>/dev/null && wait "$crunchd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root/scripts/ui" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
[[ -x "$build/make_image" ]] || cmake --build "$build" --target make_image >/dev/null
"$build/make_image" 1600 1200 jpeg 85 "$work/photo.jpg" >/dev/null

port="$(free_port)"
"$build/crunchd" --address 127.0.0.1 --port "$port" ${CRUNCHD_ARGS:-} >"$work/crunchd.log" 2>&1 &
crunchd_pid=$!
wait_healthz "$port" || { cat "$work/crunchd.log" >&2; exit 1; }

args=(--port "$port" --chromium "$(command -v chromium)" --wrk "$(command -v wrk)" --image "$work/photo.jpg")
[[ -n "$screenshot" ]] && args+=(--screenshot "$screenshot")
node "$root/scripts/ui/live_check.mjs" "${args[@]}"
[[ -n "$screenshot" ]] && echo "screenshot: $screenshot"
exit 0
