#!/usr/bin/env bash
# The job store on Redis across replicas, with a real redis-server (Debian's): three crunchd on one
# Redis, 300 asynchronous jobs across them, one replica killed with SIGKILL while it runs jobs —
# every job ends once, with its synchronous answer; then Redis restarted with AOF on, and the jobs
# that were queued survive (scripts/redis_check.py).
#   ./scripts/redis_check.sh [BUILD_DIR=build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
source "$root/scripts/deps.sh"
crunch_install_deps
# crunchd's run_service with the tests' own kind (tests/work_kind.hpp): the jobs are /work/{ms} and
# /v1/work/echo, whichever product kinds are built.
[[ -x "$build/tests/crunch_test_service" ]] || cmake --build "$build" --target crunch_test_service crunch-callback >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CRUNCH_CALLBACK_HELPER="$build/crunch-callback"  # beside crunchd, not beside the test service
python3 "$root/scripts/redis_check.py" "$build/tests/crunch_test_service" "$work"
echo "redis check passed"
