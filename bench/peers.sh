#!/usr/bin/env bash
# crunch against the libraries a user would pick instead, in one command: node-argon2 for password
# hashing (bench/argon2-node/compare.sh) and sharp for thumbnails (bench/sharp/compare.sh), each
# installed with npm from its lockfile and alternated with crunch in the same run. Loopback only,
# every load bounded in time.   ./bench/peers.sh   (DURATION=10 s per load, ROUNDS=3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/argon2-node/compare.sh"
"$here/sharp/compare.sh"
