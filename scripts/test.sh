#!/usr/bin/env bash
# Installs what is missing, builds everything with warnings as errors, and runs the whole suite.
#   ./scripts/test.sh                          Release build in build/
#   CRUNCH_SANITIZE=address,undefined ./scripts/test.sh    in build-asan/
#   CRUNCH_SANITIZE=thread ./scripts/test.sh               in build-tsan/
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
crunch_install_deps

sanitize="${CRUNCH_SANITIZE:-}"
case "$sanitize" in
  "")                 dir="$root/build";      type=Release ;;
  address,undefined)  dir="$root/build-asan"; type=RelWithDebInfo ;;
  thread)             dir="$root/build-tsan"; type=RelWithDebInfo ;;
  *) echo "CRUNCH_SANITIZE must be empty, address,undefined or thread" >&2; exit 2 ;;
esac

cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DCRUNCH_WERROR=ON \
      -DCRUNCH_SANITIZE="$sanitize" >/dev/null
cmake --build "$dir"

# intercept_tls_get_addr=0: GCC 12's sanitizer runtime takes a dynamic TLS block (glib's, once
# crunchd has dlopen'ed the image module) for glibc 2.19's layout, reads a bogus range from it and
# LeakSanitizer's tracer dies at exit (google/sanitizers#1322; fixed after GCC 13 and LLVM 16).
# Static TLS is still scanned, and no leak is hidden: without it the tracer reports nothing at all.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:intercept_tls_get_addr=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp"
cd "$dir"
ctest --output-on-failure --timeout 300
