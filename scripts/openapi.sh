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
# The Node.js client's types follow the document (its CI check fails when they are stale).
if [[ -x "$root/clients/node/node_modules/.bin/openapi-typescript" ]]; then
  (cd "$root/clients/node" && npm run --silent types >/dev/null 2>&1) && echo "wrote clients/node/src/openapi.ts"
else
  echo "clients/node/src/openapi.ts: run npm ci and npm run types in clients/node"
fi
