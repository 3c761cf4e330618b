#!/usr/bin/env bash
# Builds the libFuzzer target (clang, ASan + UBSan) and runs it for a bounded time:
#   ./scripts/fuzz.sh                 one minute
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh
# It starts from the seed corpus in tests/fuzz/corpus and the kinds' declared examples
# (scripts/fuzz_seeds.py), both left untouched: new inputs go to a temporary folder. A crash, sanitizer report or hang fails the run; the input that did it is
# printed, and belongs in tests/fuzz/corpus as a regression case once fixed. (The harness itself
# allows 5 s for an answer once the server's kernel has the request; -timeout is only the
# backstop for the transport stalls it waits out.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
crunch_packages+=(clang libclang-rt-14-dev python3)
crunch_install_deps

seconds="${FUZZ_SECONDS:-60}"
build="$root/build-fuzz"
CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_WERROR=ON \
  -DCRUNCH_FUZZ=ON -DCRUNCH_SANITIZE=address,undefined -DCRUNCH_TESTS=OFF >/dev/null
cmake --build "$build" --target request_fuzzer

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts" "$work/seeds"
# Beside the hand-made seeds, every kind's declared examples, and its paths, parameters and media
# types as dictionary words.
cp "$root/tests/fuzz/http.dict" "$work/fuzz.dict"
python3 "$root/scripts/fuzz_seeds.py" "$root/api/openapi.json" "$work/seeds" "$work/fuzz.dict"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:intercept_tls_get_addr=0"  # see scripts/test.sh
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
set +e
"$build/request_fuzzer" -max_total_time="$seconds" -timeout=90 -rss_limit_mb=2048 -print_final_stats=1 \
  -dict="$work/fuzz.dict" -artifact_prefix="$work/artifacts/" \
  "$work/corpus" "$root/tests/fuzz/corpus" "$work/seeds" >"$work/fuzz.log" 2>&1
rc=$?
set -e
grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|^#[0-9]+.*(pulse|DONE)' "$work/fuzz.log" | tail -4
echo "corpus: $(ls "$root/tests/fuzz/corpus" | wc -l) seeds, $(ls "$work/corpus" | wc -l) new inputs found in ${seconds}s"
if (( rc != 0 )); then
  tail -60 "$work/fuzz.log" >&2
  for a in "$work"/artifacts/*; do
    [[ -e "$a" ]] || continue
    echo "--- $(basename "$a") (base64):" >&2
    base64 "$a" >&2
  done
  exit "$rc"
fi
