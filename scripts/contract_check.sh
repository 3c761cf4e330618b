#!/usr/bin/env bash
# The API contract: lints api/openapi.json with @redocly/cli, then calls every operation of it on
# real crunchd processes and checks each answer against it (scripts/contract/contract.mjs).
#   ./scripts/contract_check.sh [BUILD_DIR]      (default build/, as scripts/test.sh leaves it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
source "$root/scripts/deps.sh"
crunch_install_node
cd "$root/scripts/contract"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
npx --no-install redocly lint --config redocly.yaml "$root/api/openapi.json" --format=summary
# A photo-like JPEG for the image route, made by the build's own tool.
[[ -x "$build/make_image" ]] || cmake --build "$build" --target make_image >/dev/null
image="$(mktemp --suffix=.jpg)"
trap 'rm -f "$image"' EXIT
"$build/make_image" 1600 1200 jpeg 85 "$image" >/dev/null
CONTRACT_IMAGE="$image" node contract.mjs "$build/crunchd" "$root/api/openapi.json"
