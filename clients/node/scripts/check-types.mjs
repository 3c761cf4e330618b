// Fails when src/openapi.ts is not what openapi-typescript makes of api/openapi.json today:
// run `npm run types` and commit the result.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const here = new URL("..", import.meta.url).pathname;
const work = mkdtempSync(path.join(tmpdir(), "crunch-types-"));
try {
  const fresh = path.join(work, "openapi.ts");
  execFileSync(path.join(here, "node_modules/.bin/openapi-typescript"), [path.join(here, "../../api/openapi.json"), "-o", fresh], {
    stdio: "ignore",
  });
  if (readFileSync(fresh, "utf8") !== readFileSync(path.join(here, "src/openapi.ts"), "utf8")) {
    console.error("clients/node/src/openapi.ts is stale: api/openapi.json changed. Run `npm run types` in clients/node.");
    process.exit(1);
  }
  console.log("clients/node/src/openapi.ts matches api/openapi.json");
} finally {
  rmSync(work, { recursive: true, force: true });
}
