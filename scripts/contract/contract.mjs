// The contract test: calls every operation of api/openapi.json on real crunchd processes — its
// success and each documented error — and checks every answer (status, headers, body) against the
// document. It fails on an answer the document does not describe, on a documented status that no
// call produced, and on a path whose 405 Allow header differs from the methods documented for it.
//   node scripts/contract/contract.mjs build/crunchd [api/openapi.json]
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import readline from "node:readline";
import Ajv2020 from "ajv/dist/2020.js";

const crunchd = process.argv[2];
const docPath = process.argv[3] ?? new URL("../../api/openapi.json", import.meta.url).pathname;
const doc = JSON.parse(fs.readFileSync(docPath, "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
ajv.addSchema(doc, "openapi");
const problems = [];
const covered = new Set(); // "METHOD /path status"
let calls = 0;

// --- crunchd processes ------------------------------------------------------------------------

const servers = [];

// Starts crunchd on a free loopback port; resolves with { port, process } once it listens.
function start(args, { addressSpaceKiB } = {}) {
  const argv = ["--address", "127.0.0.1", "--port", "0", ...args];
  const child = addressSpaceKiB
    ? spawn("sh", ["-c", `ulimit -v ${addressSpaceKiB} && exec "$0" "$@"`, crunchd, ...argv])
    : spawn(crunchd, argv);
  servers.push(child);
  child.stderr.on("data", (d) => process.stderr.write(`crunchd: ${d}`));
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      try {
        const event = JSON.parse(line);
        if (event.event === "listening") resolve({ port: event.port, process: child });
      } catch {
        // not JSON: ignore
      }
    });
    child.on("exit", (code) => reject(new Error(`crunchd ${args.join(" ")} exited ${code} before listening`)));
  });
}

function stopAll() {
  for (const s of servers) s.kill("SIGKILL");
}

// --- a raw HTTP/1.1 client --------------------------------------------------------------------

// Sends `raw` on a new connection and resolves with the first final answer:
// { status, headers (lower-case names), body, raw }. Interim 1xx answers are skipped. `head`: the
// answer has no body whatever its Content-Length.
function exchange(port, raw, { head = false, timeoutMs = 30000, socketOut } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    if (socketOut) socketOut.socket = socket;
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms to ${JSON.stringify(String(raw).slice(0, 80))}`));
    }, timeoutMs);
    const done = (answer) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    socket.on("connect", () => socket.write(raw));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      reject(new Error(`connection closed without an answer to ${JSON.stringify(String(raw).slice(0, 80))}`));
    });
    socket.on("data", (chunk) => {
      data = Buffer.concat([data, chunk]);
      for (;;) {
        const end = data.indexOf("\r\n\r\n");
        if (end < 0) return;
        const lines = data.subarray(0, end).toString("latin1").split("\r\n");
        const status = Number(lines[0].split(" ")[1]);
        const headers = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(":");
          headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
        }
        if (status >= 100 && status < 200) {
          data = data.subarray(end + 4);
          continue;
        }
        const length = head ? 0 : Number(headers["content-length"] ?? 0);
        if (data.length < end + 4 + length) return;
        const body = data.subarray(end + 4, end + 4 + length).toString("utf8");
        return done({ status, headers, body });
      }
    });
  });
}

const host = "Host: 127.0.0.1\r\n";
const get = (method, target, extra = "") => `${method} ${target} HTTP/1.1\r\n${host}${extra}\r\n`;
const post = (target, type, body, extra = "") =>
  `POST ${target} HTTP/1.1\r\n${host}Content-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

// --- checking an answer against the document --------------------------------------------------

function resolveRef(node) {
  while (node && node.$ref) {
    node = node.$ref.slice(2).split("/").reduce((n, key) => n[key.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
  }
  return node;
}

// Validates `value` against an inline schema that may $ref the document's components.
function matches(schema, value) {
  const wrapped = JSON.parse(JSON.stringify(schema).replace(/"\$ref":"#\//g, '"$ref":"openapi#/'));
  const check = ajv.compile(wrapped);
  return check(value) ? null : ajv.errorsText(check.errors);
}

function checkAnswer(name, path, method, answer) {
  ++calls;
  const where = `${name}: ${method} ${path} → ${answer.status}`;
  const op = doc.paths[path]?.[method.toLowerCase()];
  if (!op) return problems.push(`${where}: the document has no such operation`);
  const response = resolveRef(op.responses[String(answer.status)]);
  if (!response) return problems.push(`${where}: status not documented for this operation (body ${answer.body})`);
  for (const [header, spec] of Object.entries(response.headers ?? {})) {
    const h = resolveRef(spec);
    const value = answer.headers[header.toLowerCase()];
    if (value === undefined) {
      if (h.required) problems.push(`${where}: header ${header} missing`);
      continue;
    }
    const why = matches(h.schema, value);
    if (why) problems.push(`${where}: header ${header}: ${value}: ${why}`);
  }
  if (method !== "HEAD") {
    const content = response.content ?? {};
    const type = content[answer.headers["content-type"]] ? answer.headers["content-type"] : "*/*";
    if (!content[type]) {
      problems.push(`${where}: Content-Type ${type} not documented (${Object.keys(content).join(", ")})`);
    } else {
      let value = answer.body;
      if (type.startsWith("application/json")) {
        try {
          value = JSON.parse(answer.body);
        } catch {
          problems.push(`${where}: body is not JSON: ${answer.body.slice(0, 200)}`);
          return;
        }
      }
      const why = matches(content[type].schema, value);
      if (why) problems.push(`${where}: body ${answer.body.slice(0, 200)}: ${why}`);
    }
  }
  covered.add(`${method} ${path} ${answer.status}`);
}

async function call(name, port, path, method, raw, expectStatus, options = {}) {
  let answer;
  try {
    answer = await exchange(port, raw, { head: method === "HEAD", ...options });
  } catch (e) {
    problems.push(`${name}: ${e.message}`);
    return;
  }
  if (expectStatus !== undefined && answer.status !== expectStatus) {
    problems.push(`${name}: expected ${expectStatus}, got ${answer.status}: ${answer.body.slice(0, 200)}`);
  }
  checkAnswer(name, path, method, answer);
  return answer;
}

// --- the calls --------------------------------------------------------------------------------

const operations = [];
for (const [path, item] of Object.entries(doc.paths)) {
  for (const method of Object.keys(item)) {
    operations.push({ path, method: method.toUpperCase(), target: path.replace(/\{[^}]*\}/g, "10") });
  }
}
// Job operations are generated from their kinds' declarations: their bodies, limits and examples
// (x-crunch-examples) say how to call them, so a new kind is checked without a line here.
const jobOps = operations.filter((op) => opOf(op)["x-crunch-examples"] !== undefined);
const imageOp = "/v1/image/thumbnail";
// A 1600x1200 JPEG made by build/make_image (scripts/contract_check.sh passes its path).
const image = fs.readFileSync(process.env.CONTRACT_IMAGE);
const postImage = (target, type, body) =>
  Buffer.concat([Buffer.from(`POST ${target} HTTP/1.1\r\n${host}Content-Type: ${type}\r\nContent-Length: ${body.length}\r\n\r\n`), body]);

function opOf(op) {
  return doc.paths[op.path][op.method.toLowerCase()];
}
// The media types an operation's body may have ([] for none).
function bodyTypes(op) {
  return Object.keys(opOf(op).requestBody?.content ?? {});
}
// An example as a raw request: its target with `query` merged in, its body, and `type` for its own.
function exampleRequest(op, example, { query = {}, type, body } = {}) {
  const url = new URL(example.target, "http://x");
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const target = url.pathname + url.search;
  let bytes = body ?? (example.body_base64 !== undefined ? Buffer.from(example.body_base64, "base64")
                                                        : Buffer.from(example.body ?? "", "utf8"));
  if (body === undefined && example.repeat) bytes = Buffer.concat(Array(example.repeat).fill(bytes));
  const types = bodyTypes(op);
  if (types.length === 0) return get(op.method, target);
  const contentType = type ?? example.content_type ?? types[0];
  return Buffer.concat([Buffer.from(`${op.method} ${target} HTTP/1.1\r\n${host}Content-Type: ${contentType}\r\n` +
                                    `Content-Length: ${bytes.length}\r\n\r\n`), bytes]);
}
const firstSuccess = (op) => (opOf(op)["x-crunch-examples"] ?? []).find((e) => e.status === 200);
// A request each operation accepts (a job operation's first example that succeeds).
function goodRequest(op) {
  const example = firstSuccess(op);
  return example ? exampleRequest(op, example) : get(op.method, op.target);
}
// Its limit, from the running server's /v1/kinds (filled in by main()).
const bodyLimits = {};

// What every operation can get before its route is even looked at, or from its head alone.
function transportErrors(op) {
  const m = op.method;
  const limit = (bodyLimits[`${op.method} ${op.path}`] ?? 65536) + 1;
  const type = bodyTypes(op).length ? `Content-Type: ${bodyTypes(op)[0]}\r\n` : "";
  return [
    ["malformed head", 400, `${m} ${op.target} HTTP/1.1\r\n${host}Bad Header Line\r\n\r\n`],
    ["body over the limit", 413, `${m} ${op.target} HTTP/1.1\r\n${host}${type}Content-Length: ${limit}\r\n\r\n`],
    ["unknown expectation", 417, get(m, op.target, "Expect: telepathy\r\n")],
    ["headers over the limit", 431, get(m, op.target, `X-Filler: ${"a".repeat(9000)}\r\n`)],
  ];
}

async function main() {
  const mainServer = await start(["--workers", "1", "--password-m-cost", "1024", "--password-t-cost", "1"]);
  const port = mainServer.port;

  // Successes.
  await call("healthz", port, "/healthz", "GET", get("GET", "/healthz"), 200);
  await call("readyz", port, "/readyz", "GET", get("GET", "/readyz"), 200);
  await call("metrics", port, "/metrics", "GET", get("GET", "/metrics"), 200);
  await call("kinds", port, "/v1/kinds", "GET", get("GET", "/v1/kinds"), 200);
  // api/openapi.json is what a crunchd at the defaults serves (the main server's bounds differ).
  const defaults = await start(["--workers", "1"]);
  const served = await call("openapi", defaults.port, "/openapi.json", "GET", get("GET", "/openapi.json"), 200);
  if (served && served.body !== fs.readFileSync(docPath, "utf8")) problems.push("/openapi.json is not api/openapi.json");
  defaults.process.kill("SIGKILL");
  for (const path of ["/healthz", "/readyz", "/metrics", "/v1/kinds", "/openapi.json"]) {
    await call(`${path} head`, port, path, "HEAD", get("HEAD", path), 200);
  }
  // The live view: its page and files, one snapshot, and the stream (whose events must be snapshots).
  for (const path of ["/", "/ui/live.js", "/ui/live.css", "/ui/uPlot.iife.min.js", "/ui/uPlot.min.css", "/v1/stats"]) {
    await call(`live ${path}`, port, path, "GET", get("GET", path), 200);
    await call(`live ${path} head`, port, path, "HEAD", get("HEAD", path), 200);
  }
  const events = await call("events", port, "/v1/events", "GET", get("GET", "/v1/events"), 200);
  if (events && events.headers["content-length"] !== undefined) problems.push("events: a stream has a Content-Length");
  const stream = await openStream(port);
  const why = matches({ $ref: "#/components/schemas/LiveSnapshot" }, JSON.parse(stream.data));
  if (why) problems.push(`events: an event is not a LiveSnapshot: ${why}: ${stream.data.slice(0, 200)}`);
  stream.socket.destroy();

  // Every job operation, from its declaration: its examples answer as they say (a 200, or a 504
  // for one too slow for its deadline); an integer above its maximum, in the path, the query or a
  // JSON body, a timeout_ms above the server's, broken JSON and an unknown field are 400s; a body
  // of another media type is a 415.
  const kinds = JSON.parse((await exchange(port, get("GET", "/v1/kinds"))).body);
  for (const kind of kinds.kinds) {
    for (const r of kind.routes) if (r.max_body_bytes) bodyLimits[`${r.method} ${r.path}`] = r.max_body_bytes;
  }
  const maxTimeout = resolveRef(doc.components.parameters.TimeoutMs).schema.maximum;
  for (const op of jobOps) {
    const where = `${op.method} ${op.path}`;
    for (const example of opOf(op)["x-crunch-examples"]) {
      // One that succeeds is given the longest deadline: a kind's first job may calibrate the kind
      // first (calibrate_on_first_job), on a worker that a loaded CI machine starves.
      const patient = example.status === 200 && !/[?&]timeout_ms=/.test(example.target);
      const query = patient ? { timeout_ms: String(maxTimeout) } : {};
      await call(`${where} example "${example.name}"`, port, op.path, op.method, exampleRequest(op, example, { query }),
        example.status);
    }
    const example = firstSuccess(op);
    if (!example) {
      problems.push(`${where}: no example that succeeds`);
      continue;
    }
    const search = new URL(example.target, "http://x").search;
    for (const p of (opOf(op).parameters ?? []).map(resolveRef)) {
      if (p.schema?.type !== "integer" || p.name === "timeout_ms") continue;
      const over = String(p.schema.maximum + 1);
      const raw = p.in === "path"
        ? exampleRequest(op, { ...example, target: op.path.replace(`{${p.name}}`, over) + search })
        : exampleRequest(op, example, { query: { [p.name]: over } });
      await call(`${where} ${p.name} above its maximum`, port, op.path, op.method, raw, 400);
    }
    await call(`${where} timeout_ms above the maximum`, port, op.path, op.method,
      exampleRequest(op, example, { query: { timeout_ms: String(maxTimeout + 1) } }), 400);
    const schema = opOf(op).requestBody?.content?.["application/json"]?.schema;
    if (schema?.type === "object") {  // a JSON body of fields, not a file that may be JSON
      for (const [name, property] of Object.entries(schema.properties ?? {})) {
        if (property.type !== "integer") continue;
        const body = { ...JSON.parse(example.body), [name]: property.maximum + 1 };
        await call(`${where} ${name} above its maximum`, port, op.path, op.method,
          exampleRequest(op, example, { body: Buffer.from(JSON.stringify(body)) }), 400);
      }
      await call(`${where} broken JSON`, port, op.path, op.method, exampleRequest(op, example, { body: Buffer.from('{"') }), 400);
      const unknown = JSON.stringify({ ...JSON.parse(example.body), no_such_field: 1 });
      await call(`${where} unknown field`, port, op.path, op.method, exampleRequest(op, example, { body: Buffer.from(unknown) }), 400);
    }
    if (bodyTypes(op).length) {
      await call(`${where} another media type`, port, op.path, op.method, exampleRequest(op, example, { type: "text/x-nothing" }), 415);
    }
  }

  // What examples cannot say: a hash verifies against its password.
  const password = "correct horse battery staple";
  const hashed = await call("hash", port, "/v1/password/hash", "POST",
    post("/v1/password/hash", "application/json", JSON.stringify({ password })), 200);
  const hash = hashed ? JSON.parse(hashed.body).hash : "";
  const verified = await call("verify", port, "/v1/password/verify", "POST",
    post("/v1/password/verify", "application/json", JSON.stringify({ password, hash })), 200);
  if (verified && JSON.parse(verified.body).match !== true) problems.push("verify: the password did not match its hash");
  // What the image examples cannot show: info missing its deadline, and format=auto choosing AVIF
  // for a browser's Accept. A GIF of 300,000 one-pixel frames: the loader walks every frame to
  // read the header, which the kind's model prices far above the 1 ms it is given — a 504 at once,
  // whatever the machine's speed (when it was run against the clock, a fast machine met it).
  const infoOp = "/v1/image/info";
  const frame = Buffer.from([0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 1, 0]);
  const frames = Buffer.concat([Buffer.from("GIF89a"), Buffer.from([1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255]),
    Buffer.alloc(frame.length * 300000).fill(frame), Buffer.from([0x3b])]);
  await call("info deadline", port, infoOp, "POST", postImage(`${infoOp}?timeout_ms=1`, "image/gif", frames), 504);
  const avif = await call("thumbnail auto", port, imageOp, "POST",
    Buffer.concat([Buffer.from(`POST ${imageOp}?width=120&format=auto HTTP/1.1\r\n${host}Accept: image/avif,image/webp,*/*\r\n` +
      `Content-Type: image/jpeg\r\nContent-Length: ${image.length}\r\n\r\n`), image]), 200);
  if (avif && (avif.headers["content-type"] !== "image/avif" || avif.headers["vary"] !== "Accept, Prefer")) {
    problems.push("thumbnail auto: not an AVIF that varies by Accept");
  }
  const thumb = await call("thumbnail", port, imageOp, "POST",
    postImage(`${imageOp}?width=200&format=webp`, "image/jpeg", image), 200);
  if (thumb && thumb.headers["content-type"] !== "image/webp") problems.push("thumbnail: not a WebP");
  await call("thumbnail png", port, imageOp, "POST", postImage(`${imageOp}?width=64&height=64&fit=cover&format=png`, "image/jpeg", image), 200);
  await call("thumbnail jpeg", port, imageOp, "POST", postImage(`${imageOp}?height=50`, "image/jpeg", image), 200);
  await call("thumbnail no size", port, imageOp, "POST", postImage(imageOp, "image/jpeg", image), 400);
  await call("thumbnail not an image", port, imageOp, "POST", postImage(`${imageOp}?width=10`, "image/png", Buffer.from("hello")), 400);
  await call("thumbnail mislabelled", port, imageOp, "POST", postImage(`${imageOp}?width=10`, "image/png", image), 400);
  await call("thumbnail truncated", port, imageOp, "POST",
    postImage(`${imageOp}?width=10`, "image/jpeg", image.subarray(0, image.length >> 1)), 400);
  await call("thumbnail text/plain", port, imageOp, "POST", postImage(`${imageOp}?width=10`, "text/plain", image), 415);
  await call("thumbnail deadline", port, imageOp, "POST", postImage(`${imageOp}?width=1000&timeout_ms=1`, "image/jpeg", image), 504);
  await call("verify malformed hash", port, "/v1/password/verify", "POST",
    post("/v1/password/verify", "application/json", '{"password":"x","hash":"$argon2id$v=19$x"}'), 400);

  // Asynchronous jobs and idempotency keys, on every job operation (after the calls above: its
  // tiny AVIF examples teach the image kind's rate a per-pixel cost that its large thumbnails'
  // default deadline would not meet): 202 with Location; the status
  // (a long poll) and the result, which is the synchronous answer; the same key twice is one job,
  // the key with another request a 422. The job routes: HEAD, an unknown id's 404, a result asked
  // for too early (409), a DELETE.
  const withHeaders = (raw, headers) => {
    const bytes = Buffer.from(raw);
    const line = bytes.indexOf("\r\n") + 2;
    return Buffer.concat([bytes.subarray(0, line), Buffer.from(headers), bytes.subarray(line)]);
  };
  let keyCount = 0;
  for (const op of jobOps) {
    const example = firstSuccess(op);
    if (!example) continue;
    const where = `${op.method} ${op.path}`;
    const request = exampleRequest(op, example, { query: { timeout_ms: String(maxTimeout) } });
    const sync = await exchange(port, request);
    const key = `Idempotency-Key: "contract-${++keyCount}"\r\n`;
    const accepted = await call(`${where} asynchronous`, port, op.path, op.method,
      withHeaders(request, `Prefer: respond-async\r\n${key}`), 202);
    if (!accepted) continue;
    const again = await call(`${where} asynchronous again`, port, op.path, op.method,
      withHeaders(request, `Prefer: respond-async\r\n${key}`), 202);
    if (again && again.headers.location !== accepted.headers.location) problems.push(`${where}: one key, two jobs`);
    await call(`${where} the key with another request`, port, op.path, op.method,
      withHeaders(exampleRequest(op, example, { query: { timeout_ms: String(maxTimeout - 1) } }), key), 422);
    const location = accepted.headers.location;
    const status = await call(`${where} job status`, port, "/v1/jobs/{id}", "GET", get("GET", location, "Prefer: wait=60\r\n"), 200);
    if (status && JSON.parse(status.body).status !== "succeeded") problems.push(`${where}: job ${status.body}`);
    await call(`${where} job status head`, port, "/v1/jobs/{id}", "HEAD", get("HEAD", location), 200);
    const result = await call(`${where} job result`, port, "/v1/jobs/{id}/result", "GET", get("GET", `${location}/result`), 200);
    if (result && (result.status !== sync.status || result.headers["content-type"] !== sync.headers["content-type"])) {
      problems.push(`${where}: the result is ${result.status} ${result.headers["content-type"]}, ` +
                    `the synchronous answer ${sync.status} ${sync.headers["content-type"]}`);
    }
    await call(`${where} job result head`, port, "/v1/jobs/{id}/result", "HEAD", get("HEAD", `${location}/result`), 200);
  }
  const noJob = "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA";
  await call("unknown job", port, "/v1/jobs/{id}", "GET", get("GET", noJob), 404);
  await call("unknown job head", port, "/v1/jobs/{id}", "HEAD", get("HEAD", noJob), 404);
  await call("unknown job cancelled", port, "/v1/jobs/{id}", "DELETE", get("DELETE", noJob), 404);
  await call("unknown job result", port, "/v1/jobs/{id}/result", "GET", get("GET", `${noJob}/result`), 404);
  await call("unknown job result head", port, "/v1/jobs/{id}/result", "HEAD", get("HEAD", `${noJob}/result`), 404);
  // A job that runs for seconds: its result is asked for too early, then it is cancelled.
  const longJob = await call("long asynchronous fib", port, "/fib/{n}", "GET", get("GET", "/fib/50", "Prefer: respond-async\r\n"), 202);
  if (longJob) {
    await waitFor(port, "crunch_workers_busy 1");
    await call("result too early", port, "/v1/jobs/{id}/result", "GET", get("GET", `${longJob.headers.location}/result`), 409);
    // Meanwhile, on every job operation, a synchronous request holding its key (queued behind the
    // long job) makes a parallel one with the same key a 409.
    for (const op of jobOps) {
      const example = firstSuccess(op);
      if (!example) continue;
      const where = `${op.method} ${op.path}`;
      const key = `Idempotency-Key: "contract-held-${++keyCount}"\r\n`;
      const request = withHeaders(exampleRequest(op, example, { query: { timeout_ms: String(maxTimeout) } }), key);
      const held = {};
      const first = exchange(port, request, { socketOut: held }).catch(() => {});
      await waitFor(port, "crunch_job_queue_depth 1");
      await call(`${where} its key held by a running request`, port, op.path, op.method, request, 409);
      held.socket.destroy();  // the client leaves: its job leaves the queue, the key is free again
      await first;
      await waitFor(port, "crunch_job_queue_depth 0");
    }
    const cancelled = await call("cancel", port, "/v1/jobs/{id}", "DELETE", get("DELETE", longJob.headers.location), 200);
    if (cancelled && JSON.parse(cancelled.body).status !== "cancelled") problems.push(`cancel: ${cancelled.body}`);
  }

  // Transport errors, on every operation.
  for (const op of operations) {
    for (const [what, status, raw] of transportErrors(op)) {
      await call(`${op.method} ${op.path} ${what}`, port, op.path, op.method, raw, status);
    }
  }

  // Overload: fib(50) — about 13 s of work — runs; jobs that must be done in 100 ms are refused at once.
  const background = {};
  const long = exchange(port, get("GET", "/fib/50?timeout_ms=60000"), { socketOut: background }).catch(() => {});
  await waitFor(port, "crunch_workers_busy 1");
  for (const op of jobOps) {
    if (!firstSuccess(op)) continue;
    await call(`${op.method} ${op.path} overload`, port, op.path, op.method,
      exampleRequest(op, firstSuccess(op), { query: { timeout_ms: "100" } }), 503);
  }
  background.socket.destroy(); // the client leaves: its job stops
  await long;

  // Methods a path does not document: 405, with exactly the documented ones in Allow.
  for (const [path, item] of Object.entries(doc.paths)) {
    const target = path.replace("{n}", "10");
    const documented = Object.keys(item).map((m) => m.toUpperCase()).sort();
    for (const method of ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
      if (documented.includes(method)) continue;
      const answer = await exchange(port, get(method, target, "Content-Length: 0\r\n"), { head: method === "HEAD" });
      ++calls;
      const allow = (answer.headers.allow ?? "").split(",").map((m) => m.trim()).filter(Boolean).sort();
      if (answer.status !== 405) problems.push(`${method} ${path}: expected 405, got ${answer.status}`);
      else if (allow.join() !== documented.join()) problems.push(`${method} ${path}: Allow ${allow} but documented ${documented}`);
      if (method !== "HEAD") {
        const why = matches({ $ref: "#/components/schemas/Error" }, JSON.parse(answer.body));
        if (why) problems.push(`${method} ${path} 405: ${why}`);
      }
    }
  }
  const unknown = await exchange(port, get("GET", "/nope"));
  ++calls;
  if (unknown.status !== 404) problems.push(`GET /nope: expected 404, got ${unknown.status}`);

  // Too many connections, on every operation: a server that takes two holds two.
  const tight = await start(["--workers", "1", "--max-connections", "2"]);
  const held = [net.connect(tight.port, "127.0.0.1"), net.connect(tight.port, "127.0.0.1")];
  await waitFor(tight.port, "crunch_connections_open 2", { viaRefusal: true });
  for (const op of operations) {
    const body = goodRequest(op);
    await call(`${op.method} ${op.path} too many connections`, tight.port, op.path, op.method, body, 503);
  }
  held.forEach((s) => s.destroy());

  // API keys: without one, every operation that documents a 401 gets it from its head (a POST's
  // body is announced and never sent); with one, /v1/flows answers.
  const keyFile = `${os.tmpdir()}/crunch-contract-keys-${process.pid}`;
  const key = "contract-0123456789abcdef";
  fs.writeFileSync(keyFile, `contract:${key}\n`);
  const keyed = await start(["--workers", "1", "--api-keys", keyFile, "--protect-metrics", "true"]);
  fs.rmSync(keyFile);
  for (const op of operations) {
    if (doc.paths[op.path][op.method.toLowerCase()].responses["401"] === undefined) continue;
    const type = bodyTypes(op)[0] ?? "application/json";
    const raw = op.method === "POST"
      ? `POST ${op.target} HTTP/1.1\r\n${host}Content-Type: ${type}\r\nContent-Length: 1000\r\n\r\n`
      : get(op.method, op.target, "Authorization: Bearer not-the-key-0123456789\r\n");
    await call(`${op.method} ${op.path} without a key`, keyed.port, op.path, op.method, raw, 401);
  }
  const auth = `Authorization: Bearer ${key}\r\n`;
  await call("fib with a key", keyed.port, "/fib/{n}", "GET", get("GET", "/fib/20", auth), 200);
  await call("flows", keyed.port, "/v1/flows", "GET", get("GET", "/v1/flows", auth), 200);
  await call("flows head", keyed.port, "/v1/flows", "HEAD", get("HEAD", "/v1/flows", auth), 200);

  // Streams over --max-event-streams: 503.
  const oneStream = await start(["--workers", "1", "--max-event-streams", "1"]);
  const held_stream = await openStream(oneStream.port);
  await call("events over the limit", oneStream.port, "/v1/events", "GET", get("GET", "/v1/events"), 503);
  held_stream.socket.destroy();

  // A hash whose memory cannot be had (the budget says yes, the address space no): 500. The
  // limit is what a started crunchd maps at its peak (libraries, thread stacks, the image kind's
  // calibration) plus 128 MiB: room for everything but a 256 MiB hash.
  const sizing = await start(["--workers", "1", "--password-m-cost", "1024"]);
  const peakKiB = Number(/VmPeak:\s+(\d+)/.exec(fs.readFileSync(`/proc/${sizing.process.pid}/status`, "utf8"))[1]);
  sizing.process.kill("SIGKILL");
  const starved = await start(["--workers", "1", "--password-m-cost", "1024"], { addressSpaceKiB: peakKiB + 128 * 1024 });
  await call("hash without memory", starved.port, "/v1/password/hash", "POST",
    post("/v1/password/hash", "application/json", JSON.stringify({ password: "x", m_cost_kib: 262144 })), 500);

  // A helper that dies with its job: 502, on every operation that documents it (the isolated
  // kinds'). Deterministic: the idle helper is stopped (SIGSTOP), the job sent, and once crunchd's
  // worker is waiting for it in poll(2) the helper is killed.
  const isolated = await start(["--workers", "1"]);
  for (const op of jobOps) {
    if (opOf(op).responses["502"] === undefined) continue;
    const where = `${op.method} ${op.path}`;
    await call(`${where} starts its helper`, isolated.port, op.path, op.method, goodRequest(op), 200);
    const helper = helpersOf(isolated.process.pid).find((h) => h.kind === kindOf(op.path, kinds));
    if (!helper) {
      problems.push(`${where}: no helper of its kind after a job`);
      continue;
    }
    process.kill(helper.pid, "SIGSTOP");
    const answer = call(`${where} its helper killed`, isolated.port, op.path, op.method, goodRequest(op), 502);
    await waitForWorkerInPoll(isolated.process.pid);
    process.kill(helper.pid, "SIGKILL");
    await answer;
  }

  // Draining: what cannot finish within the drain timeout is answered 503, and /readyz says so.
  // The running job must outlast the two scrapes that see it run and the other wait (fib(47) is
  // seconds here; fib(44) was 0.6 s, and a loaded CI machine once let it finish in between), and
  // finish within the drain timeout. The queued one, fib(51), is 6.9 times as long: within its
  // own 60 s deadline (admission refuses a job that cannot meet it even alone) on machines from
  // half to twice this one's speed, and beyond the 10 s drain on all of them.
  const draining = await start(["--workers", "1", "--drain-timeout", "10s"]);
  const first = exchange(draining.port, get("GET", "/fib/47?timeout_ms=60000"));
  await waitFor(draining.port, "crunch_workers_busy 1");
  const cut = exchange(draining.port, get("GET", "/fib/51?timeout_ms=60000"));
  await waitFor(draining.port, "crunch_job_queue_depth 1");
  draining.process.kill("SIGTERM");
  const cutAnswer = await cut;
  if (cutAnswer.status !== 503) problems.push(`draining: the queued job got ${cutAnswer.status}, expected 503`);
  checkAnswer("draining fib", "/fib/{n}", "GET", cutAnswer);
  const finished = await first;
  if (finished.status !== 200) problems.push(`draining: the running job got ${finished.status}, expected 200`);

  // Coverage: every documented status was produced.
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      for (const status of Object.keys(op.responses)) {
        const key = `${method.toUpperCase()} ${path} ${status}`;
        if (!covered.has(key)) problems.push(`${key}: documented, but no call produced it`);
      }
    }
  }
}

// The helper processes of the crunchd `pid`: [{ pid, kind }], from /proc.
function helpersOf(pid) {
  const helpers = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent !== pid) continue;
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (args[1] === "--crunch-helper") helpers.push({ pid: Number(entry), kind: args[2] });
    } catch {
      // gone meanwhile
    }
  }
  return helpers;
}

// The kind whose route has this path, from /v1/kinds.
function kindOf(path, kinds) {
  return kinds.kinds.find((k) => k.routes.some((r) => r.path === path))?.name;
}

// Resolves once a worker thread of the crunchd `pid` (crunch-worker-N) is blocked in poll(2):
// waiting for its helper's answer. /proc/PID/task/TID/syscall starts with the call's number.
async function waitForWorkerInPoll(pid, attempts = 5000) {
  const poll = 7;  // x86_64
  for (let i = 0; i < attempts; ++i) {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
        const call = Number(fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, "utf8").split(" ")[0]);
        if (name.startsWith("crunch-worker") && call === poll) return;
      } catch {
        // gone meanwhile
      }
    }
    await new Promise((r) => setImmediate(r));
  }
  problems.push(`no worker of crunchd ${pid} waited for its helper`);
}

// Opens a /v1/events stream; resolves with its socket, still open, and the data of its first event.
function openStream(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("no event within 10 s on /v1/events"));
    }, 10000);
    socket.on("connect", () => socket.write(get("GET", "/v1/events")));
    socket.on("error", () => {});
    socket.on("data", (chunk) => {
      data += chunk.toString("utf8");
      const head = data.indexOf("\r\n\r\n");
      const end = head < 0 ? -1 : data.indexOf("\n\n", head + 4);
      if (end < 0) return;
      clearTimeout(timer);
      const event = data.slice(head + 4, end);
      resolve({ socket, data: event.slice(event.indexOf("data: ") + 6) });
    });
  });
}

// Scrapes /metrics until `line` appears (at most ~10 s).
async function waitFor(port, line, { viaRefusal = false } = {}) {
  let last = "";
  for (let i = 0; i < 500; ++i) {
    try {
      const m = await exchange(port, get("GET", "/metrics"), { timeoutMs: 2000 });
      last = m.body.split("\n").filter((l) => /^crunch_(job_queue_depth|workers_busy|jobs_total)/.test(l)).join("; ");
      if (m.body.includes(`\n${line}\n`) || (viaRefusal && m.status === 503)) return;
    } catch {
      // refused while full: try again
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`waited in vain for ${line}; last: ${last}`);
}

try {
  await main();
} catch (e) {
  problems.push(`contract test stopped: ${e.stack}`);
} finally {
  stopAll();
}
if (problems.length) {
  console.error(problems.join("\n"));
  console.error(`contract: ${problems.length} problem(s) in ${calls} calls`);
  process.exit(1);
}
console.log(`contract: ${calls} calls, ${covered.size} documented answers produced and valid`);
