#!/usr/bin/env bash
# The Node.js client (clients/node): its generated types match api/openapi.json; its tests pass
# against a real crunchd (node --test); and, as a user would take it, `npm pack`, installed in a
# fresh directory, hashes, verifies, thumbnails, compresses and decompresses from a plain .mjs
# file and from a TypeScript file checked and compiled by tsc against the shipped declarations.
#   ./scripts/node_client_check.sh [BUILD_DIR=build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
source "$root/scripts/deps.sh"
crunch_install_node
[[ -x "$build/crunchd" && -x "$build/make_image" ]] || cmake --build "$build" --target crunchd make_image >/dev/null
work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; return 0; }
trap cleanup EXIT

cd "$root/clients/node"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
npm run --silent types:check
npm run --silent build
echo "== node --test against a real crunchd"
CRUNCH_BUILD="$build" node --test test/ 2>&1 | tee "$work/test.log" | grep -E '^# (tests|pass|fail)|^not ok|^# \\#'
grep -q '^# fail 0' "$work/test.log" || { cat "$work/test.log" >&2; exit 1; }

echo "== npm pack, installed in a fresh directory"
tarball="$(npm pack --silent --pack-destination "$work")"
mkdir "$work/app"
cd "$work/app"
npm init -y >/dev/null
npm pkg set type=module
npm install --no-audit --no-fund --loglevel=error "$work/$tarball" >/dev/null
"$build/make_image" 320 240 jpeg 85 "$work/app/photo.jpg" >/dev/null
cat >use.mjs <<'JS'
import { readFileSync } from "node:fs";
import { Crunch } from "crunch-client";
const crunch = new Crunch({ url: process.env.CRUNCH_URL });
const hash = await crunch.password.hash("correct horse battery staple");
const { match } = await crunch.password.verify(hash, "correct horse battery staple");
const { data, info } = await crunch.image.thumbnail(readFileSync("photo.jpg"), { width: 64, format: "webp" });
const text = Buffer.from("hello, crunch ".repeat(1000));
const back = await crunch.zstd.decompress(await crunch.zstd.compress(text));
if (!match || info.width !== 64 || data.length !== info.size || !back.equals(text)) throw new Error("wrong answers");
console.log(`mjs: hash ${hash.slice(0, 30)}..., verify ${match}, thumbnail ${info.format} ${info.width}x${info.height}, zstd round trip ${back.length} bytes`);
JS
cat >use.ts <<'TS'
import { readFileSync } from "node:fs";
import { Crunch, CrunchError, type ThumbnailResult } from "crunch-client";
const crunch = new Crunch({ url: process.env.CRUNCH_URL });
const hash: string = await crunch.password.hash("correct horse battery staple");
const verdict: { match: boolean; needsRehash: boolean } = await crunch.password.verify(hash, "correct horse battery staple");
const thumb: ThumbnailResult = await crunch.image.thumbnail(readFileSync("photo.jpg"), { width: 48, format: "png" });
const packed: Buffer = await crunch.zstd.compress(Buffer.from("typed ".repeat(500)), { level: 3 });
const unpacked: Buffer = await crunch.zstd.decompress(packed);
// The declarations catch a wrong type (never called):
// @ts-expect-error a width is a number
const wrong = () => crunch.image.thumbnail(Buffer.alloc(1), { width: "48" });
void wrong;
try {
  await crunch.fib(93);
} catch (e) {
  if (!(e instanceof CrunchError) || e.status !== 400) throw e;
}
if (!verdict.match || thumb.info.width !== 48 || unpacked.length !== 3000) throw new Error("wrong answers");
console.log(`ts: verify ${verdict.match}, thumbnail ${thumb.contentType} ${thumb.info.width}x${thumb.info.height}, zstd ${packed.length} -> ${unpacked.length} bytes`);
TS
cat >tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
    "types": ["node"], "typeRoots": ["ROOT/clients/node/node_modules/@types"], "outDir": "out"
  },
  "files": ["use.ts"]
}
JSON
sed -i "s|ROOT|$root|" tsconfig.json
tsc="$root/clients/node/node_modules/.bin/tsc"
"$tsc" --noEmit -p tsconfig.json
"$tsc" -p tsconfig.json
"$build/crunchd" --address 127.0.0.1 --port 0 --workers 2 >"$work/crunchd.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 600); do
  port="$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$work/crunchd.log")"
  [[ -n "$port" ]] && break
  sleep 0.05
done
[[ -n "$port" ]] || { echo "crunchd did not start" >&2; cat "$work/crunchd.log" >&2; exit 1; }
CRUNCH_URL="http://127.0.0.1:$port" node use.mjs
CRUNCH_URL="http://127.0.0.1:$port" node out/use.js
echo "node client check passed"
