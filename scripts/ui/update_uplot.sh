#!/usr/bin/env bash
# Vendors uPlot into web/vendor/uplot from the version pinned in scripts/ui/package-lock.json.
# To update: change "uplot" in scripts/ui/package.json, `npm install` there, run this, rebuild.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="$here/../../web/vendor/uplot"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
mkdir -p "$vendor"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE "$vendor/"
node -e 'console.log(require("./node_modules/uplot/package.json").version)' >"$vendor/VERSION"
echo "web/vendor/uplot: uPlot $(cat "$vendor/VERSION")"
