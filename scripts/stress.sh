#!/usr/bin/env bash
# Stress: the sequence that once corrupted crunchd's heap (issue 31) — a /healthz probe every 2 ms,
# password hashes, four connections posting a 12 MP JPEG for WebP thumbnails, clients that vanish
# mid-upload and mid-job — round after round, each against a fresh crunchd, under a checker.
# Bounded in time: it stops starting rounds once STRESS_SECONDS have passed.
#
#   ./scripts/stress.sh                                  plain Release build, 120 s
#   STRESS_MODE=malloc-check STRESS_SECONDS=1800 ./scripts/stress.sh
#
#   STRESS_MODE     plain         build/crunchd as it is
#                   malloc-check  glibc's checking malloc (libc_malloc_debug, glibc.malloc.check=3)
#                                 and MALLOC_PERTURB_, which fills freed and new memory
#                   valgrind      memcheck on crunchd, its helpers native (slow: long rounds)
#                   asan          build-asan/crunchd (CRUNCH_SANITIZE=address,undefined ./scripts/test.sh)
#                   tsan          build-tsan/crunchd (CRUNCH_SANITIZE=thread ./scripts/test.sh); libvips's
#                                 threads are not instrumented
#   STRESS_SECONDS  the budget, in seconds (default 120)
#   ROUND_SECONDS   load per round (default 3; 20 under valgrind)
#   CRUNCHD         another crunchd binary to stress (an older build, say)
#
# A round fails when the load saw a refused connection or an answer other than 200, 503 or 504,
# when crunchd is not up after it, when it does not drain and exit 0 on SIGTERM, or when its log
# shows a checker's report, a fatal signal or a helper that died. The failing round's log is kept
# in the output directory and the script exits 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/loopback.sh"

mode="${STRESS_MODE:-plain}"
budget="${STRESS_SECONDS:-120}"
case "$mode" in
  plain|malloc-check) build="$root/build"; round="${ROUND_SECONDS:-3}" ;;
  valgrind)           build="$root/build"; round="${ROUND_SECONDS:-20}" ;;
  asan)               build="$root/build-asan"; round="${ROUND_SECONDS:-5}" ;;
  tsan)               build="$root/build-tsan"; round="${ROUND_SECONDS:-5}" ;;
  *) echo "STRESS_MODE must be plain, malloc-check, valgrind, asan or tsan" >&2; exit 2 ;;
esac
crunchd="${CRUNCHD:-$build/crunchd}"
[[ -x "$crunchd" ]] || { echo "no $crunchd: build it first (./scripts/test.sh)" >&2; exit 2; }
out="${STRESS_OUT:-$root/build/stress}"
mkdir -p "$out"
photo="$out/photo.jpg"
if [[ ! -s "$photo" ]]; then
  maker="$root/build/make_image"
  [[ -x "$maker" ]] || cmake --build "$root/build" --target make_image >/dev/null
  "$maker" 4000 3000 jpeg 88 "$photo" >/dev/null
fi

wrapper=()
env_for=()
case "$mode" in
  malloc-check)
    debug_malloc="$(ldconfig -p | awk '/libc_malloc_debug.so.0/ && !found {print $NF; found = 1}')"
    [[ -n "$debug_malloc" ]] || { echo "no libc_malloc_debug.so.0 (glibc >= 2.34)" >&2; exit 2; }
    env_for=(LD_PRELOAD="$debug_malloc" GLIBC_TUNABLES=glibc.malloc.check=3 MALLOC_PERTURB_=165) ;;
  valgrind)
    command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
    # crunchd under memcheck; its helpers run natively (valgrind cannot start inside their sandbox:
    # the libvips call itself is checked with `valgrind build/thumbnail_single`, in one process).
    wrapper=(valgrind --tool=memcheck --error-exitcode=99 --trace-children=no
             --suppressions="$root/tests/valgrind.supp" --num-callers=30) ;;
  asan)
    env_for=(ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:intercept_tls_get_addr=0"
             UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1") ;;
  tsan)
    env_for=(TSAN_OPTIONS="halt_on_error=1:suppressions=$root/tests/tsan.supp") ;;
esac

# What in a log means something went wrong, whatever the checker.
trouble='malloc\(\)|malloc_consolidate|free\(\)|corrupted|double free|AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:|Invalid (read|write|free)|uninitialised|fatal_signal|helper_died|"level":"fatal"'

started=$SECONDS
rounds=0
jobs_done=0
vanished=0
pid=""
cleanup() { [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null; return 0; }
trap cleanup EXIT
echo "stress: mode $mode, $crunchd, rounds of ${round} s for ${budget} s"
while (( SECONDS - started < budget )); do
  rounds=$((rounds + 1))
  log="$out/round-$mode.log"
  port="$(free_port)"
  env "${env_for[@]}" "${wrapper[@]}" "$crunchd" --address 127.0.0.1 --port "$port" --workers 2 \
      --log-level warn >"$log" 2>&1 &
  pid=$!
  if ! wait_healthz "$port" 2>/dev/null; then
    echo "round $rounds: crunchd did not start" >&2; cat "$log" >&2; exit 1
  fi
  result=0
  summary="$(python3 "$root/scripts/stress_round.py" "$port" "$photo" "$round")" || result=$?
  alive=1
  curl -sf -m 5 -o /dev/null "http://127.0.0.1:$port/healthz" || alive=0
  kill -TERM "$pid" 2>/dev/null || true
  status=0
  wait "$pid" || status=$?
  pid=""
  if (( result != 0 || alive == 0 || status != 0 )) || grep -Eq "$trouble" "$log"; then
    cp "$log" "$out/failed-round-$mode-$rounds.log"
    echo "round $rounds FAILED: load exit $result, up after it: $alive, crunchd exit $status" >&2
    echo "$summary" >&2
    grep -E "$trouble" "$log" | head -20 >&2 || true
    echo "log: $out/failed-round-$mode-$rounds.log" >&2
    exit 1
  fi
  jobs_done=$((jobs_done + $(python3 -c 'import json,sys; c=json.loads(sys.argv[1])["counts"]; print(c.get("thumbnail_200",0)+c.get("hash_200",0)+c.get("verify_200",0)+c.get("info_200",0))' "$summary")))
  vanished=$((vanished + $(python3 -c 'import json,sys; c=json.loads(sys.argv[1])["counts"]; print(c.get("vanished_mid_upload",0)+c.get("vanished_mid_job",0))' "$summary")))
  (( rounds % 10 == 0 )) && echo "  $rounds rounds, $((SECONDS - started)) s: $jobs_done jobs answered 200, $vanished clients vanished"
done
echo "stress: $mode: $rounds rounds in $((SECONDS - started)) s, each against a fresh crunchd: $jobs_done jobs answered 200, $vanished clients vanished mid-upload or mid-job, no failure"
