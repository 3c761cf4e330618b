#!/usr/bin/env bash
# Writes api/openapi.json: the OpenAPI document crunchd serves at /openapi.json for its built-in
# kinds at the default configuration (api/openapi-base.json plus each job route's operation,
# generated from its declaration). tests/openapi_test.cpp fails when the two differ.
#   ./scripts/openapi.sh [BUILD_DIR]      (default build/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
cmake --build "$build" --target crunchd >/dev/null
env -i "$build/crunchd" --openapi > "$root/api/openapi.json"
echo "wrote api/openapi.json"
