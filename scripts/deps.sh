#!/usr/bin/env bash
# Installs the Debian packages crunch needs to build and test, if any are missing.
# Sourced by serve.sh and test.sh; safe to run again.
set -euo pipefail

crunch_packages=(g++ cmake ninja-build ccache pkg-config
                 libboost1.81-dev nlohmann-json3-dev libgtest-dev libsodium-dev libseccomp-dev libssl-dev libhiredis-dev libvips-dev
                 redis-server
                 curl)
# And what each kind says it needs (kinds/<name>/debian-packages: names, one or more a line).
for list in "$(dirname "${BASH_SOURCE[0]}")"/../kinds/*/debian-packages; do
  [[ -f "$list" ]] && read -r -a more <<<"$(tr '\n' ' ' <"$list")" && crunch_packages+=("${more[@]}")
done

crunch_install_deps() {
  local missing=()
  for p in "${crunch_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then return 0; fi
  echo "crunch: installing ${missing[*]}" >&2
  local sudo=()
  if ((EUID != 0)); then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What the Node.js tools need alone: Debian's nodejs and npm (Node 18 runs them), unless a node
# is on the PATH already.
crunch_install_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  crunch_packages=(nodejs npm)
  crunch_install_deps
}
