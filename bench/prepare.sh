# Sourced by the bench scripts after they set $root: installs what is missing (the build tools,
# wrk, gnuplot, python3), loads the loopback helpers, and builds the given targets in Release into
# $build.
source "$root/scripts/deps.sh"
source "$root/scripts/loopback.sh"
crunch_packages+=(wrk gnuplot-nox python3 golang-go)
build="$root/build"

bench_build() {  # TARGET...
  crunch_install_deps
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target "$@" >/dev/null
}
