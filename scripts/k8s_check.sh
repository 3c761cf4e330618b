#!/usr/bin/env bash
# Validates docker/k8s against the Kubernetes API schemas (kubernetes-models, from npm) and checks
# that the manifests fit together and with crunchd (probes, grace period vs drain, selectors).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/deps.sh"
crunch_install_node
cd "$root/scripts/k8s"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
node validate.mjs "$root/docker/k8s"
