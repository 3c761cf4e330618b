#!/usr/bin/env bash
# The kind seam, the other way: with a kind's folder and its line in kinds/CMakeLists.txt removed
# (and api/openapi.json regenerated, as for any change of kinds), crunch still builds (warnings as errors) and every test left -- the core's and the other kinds'
# -- passes. Works on a copy of this tree (what git tracks, and new files not yet added).
#   ./scripts/without_kind_check.sh image
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:?usage: without_kind_check.sh KIND}"
[[ -d "$root/kinds/$kind" ]] || { echo "no kind called $kind" >&2; exit 2; }

# A fixed place: the test programs carry their paths, and the cache of the last run then holds.
work="/tmp/crunch-without-$kind"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work")
rm -rf "${work:?}/kinds/$kind"
sed -i -E "s/^(set\(crunch_builtin_kinds .*)\b$kind\b ?/\1/; s/ \)$/)/" "$work/kinds/CMakeLists.txt"
grep -q "^set(crunch_builtin_kinds" "$work/kinds/CMakeLists.txt"
if grep -E "^set\(crunch_builtin_kinds.*\b$kind\b" "$work/kinds/CMakeLists.txt"; then
  echo "could not take $kind out of kinds/CMakeLists.txt" >&2
  exit 1
fi
echo "kinds left: $(grep '^set(crunch_builtin_kinds' "$work/kinds/CMakeLists.txt")"

# The same ccache as the other builds: with paths relative to each tree's root (CMakeLists.txt sets
# CCACHE_BASEDIR), only what the kind's absence changes is compiled again.
cmake -S "$work" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCRUNCH_WERROR=ON >/dev/null
cmake --build "$work/build"
# What removing a kind also changes: the OpenAPI document crunchd serves, regenerated.
"$work/scripts/openapi.sh" "$work/build"
cd "$work/build"
ctest --output-on-failure --timeout 300 >"$work/ctest.log" 2>&1 || { tail -80 "$work/ctest.log"; exit 1; }
tail -3 "$work/ctest.log"
echo "without the $kind kind: built and $(grep -o '[0-9]* tests failed out of [0-9]*' "$work/ctest.log")"
