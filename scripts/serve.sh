#!/usr/bin/env bash
# Installs what is missing, builds crunchd (Release) and starts it on :8080.
# Any arguments go to crunchd, e.g. ./scripts/serve.sh --workers 2 --port 9000
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
crunch_install_deps

cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" --target crunchd
exec "$root/build/crunchd" "$@"
