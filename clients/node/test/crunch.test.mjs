// crunch-client against a real crunchd, started here on a free port (the binary from the build:
// CRUNCHD, else ../../build/crunchd). Run with `npm test` (node --test).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { once } from "node:events";
import { Crunch, CrunchError } from "../dist/index.js";

const root = new URL("../../..", import.meta.url).pathname;
const build = process.env.CRUNCH_BUILD ?? path.join(root, "build");
const crunchd = process.env.CRUNCHD ?? path.join(build, "crunchd");
const work = mkdtempSync(path.join(tmpdir(), "crunch-client-"));
const servers = [];

// Starts crunchd with `args` on a free port; resolves to its URL once it listens.
async function start(args = []) {
  const child = spawn(crunchd, ["--address", "127.0.0.1", "--port", "0", "--log-level", "info", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  servers.push(child);
  let log = "";
  const port = await new Promise((resolve, reject) => {
    const look = (chunk) => {
      log += chunk;
      const m = /"port":(\d+)/.exec(log);
      if (m) resolve(Number(m[1]));
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.once("exit", (code) => reject(new Error(`crunchd exited ${code}: ${log}`)));
  });
  child.stdout.resume();
  child.stderr.resume();
  return `http://127.0.0.1:${port}`;
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

let url;
let crunch;
let jpeg;
before(async () => {
  url = await start(["--workers", "2"]);
  crunch = new Crunch({ url });
  const file = path.join(work, "photo.jpg");
  execFileSync(path.join(build, "make_image"), ["640", "480", "jpeg", "85", file]);
  jpeg = readFileSync(file);
});

after(async () => {
  for (const child of servers) {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  }
  rmSync(work, { recursive: true, force: true });
});

test("fib answers exactly, as a bigint", async () => {
  assert.equal(await crunch.fib(30), 832040n);
  assert.equal(await crunch.fib(0), 0n);
});

test("password: hash, verify in node-argon2's order, needsRehash from the hash", async () => {
  const hash = await crunch.password.hash("correct horse");
  assert.match(hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  assert.deepEqual(await crunch.password.verify(hash, "correct horse"), { match: true, needsRehash: false });
  assert.deepEqual(await crunch.password.verify(hash, "wrong horse"), { match: false, needsRehash: false });
  assert.equal(crunch.password.needsRehash(hash), false);
  assert.equal(crunch.password.needsRehash("$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaA"), true);
  assert.equal(crunch.password.needsRehash("not a hash"), true);
});

test("image.thumbnail from a Buffer answers as sharp's resolveWithObject", async () => {
  const webp = await crunch.image.thumbnail(jpeg, { width: 64, format: "webp" });
  assert.equal(webp.contentType, "image/webp");
  assert.deepEqual({ ...webp.info, channels: undefined }, { format: "webp", width: 64, height: 48, size: webp.data.length, channels: undefined });
  assert.equal(webp.data.toString("latin1", 8, 12), "WEBP");
  const png = await crunch.image.thumbnail(new Uint8Array(jpeg), { width: 32, height: 32, fit: "cover", format: "png" });
  assert.deepEqual(png.info, { format: "png", width: 32, height: 32, size: png.data.length, channels: 3 });
  const avif = await crunch.image.thumbnail(jpeg, { height: 30, format: "avif" });
  assert.equal(avif.info.width, 40);
  assert.equal(avif.info.height, 30);
  const same = await crunch.image.thumbnail(jpeg, { width: 100 });
  assert.deepEqual([same.contentType, same.info.width, same.info.height, same.info.channels], ["image/jpeg", 100, 75, 3]);
});

test("image.thumbnail from a stream, in chunks", async () => {
  const chunks = [];
  for (let at = 0; at < jpeg.length; at += 4096) chunks.push(jpeg.subarray(at, at + 4096));
  const result = await crunch.image.thumbnail(Readable.from(chunks), { width: 50, contentType: "image/jpeg" });
  assert.equal(result.info.width, 50);
  await assert.rejects(crunch.image.thumbnail(Readable.from(chunks), { width: 50 }), TypeError);
});

test("image.info reads the header", async () => {
  const info = await crunch.image.info(jpeg);
  assert.equal(info.format, "jpeg");
  assert.equal(info.width, 640);
  assert.equal(info.height, 480);
});

test("zstd: compress from an async iterable, decompress to a Buffer and to a stream", async () => {
  const text = Buffer.from("crunch takes CPU-heavy work off the event loop. ".repeat(5000));
  async function* pieces() {
    for (let at = 0; at < text.length; at += 10000) yield text.subarray(at, at + 10000);
  }
  const packed = await crunch.zstd.compress(pieces(), { level: 9 });
  assert.ok(packed.length < text.length / 20, `${packed.length} bytes`);
  assert.deepEqual(await crunch.zstd.decompress(packed), text);
  const out = await crunch.zstd.decompressStream(packed);
  const parts = [];
  for await (const part of out) parts.push(part);
  assert.deepEqual(Buffer.concat(parts), text);
});

test("run: any route by kind and name, from /v1/kinds", async () => {
  const r = await crunch.run("fib", "fib", undefined, { params: { n: 20 } });
  assert.equal(r.status, 200);
  assert.equal(r.json.result, 6765);
  await assert.rejects(crunch.run("fib", "nope"), (e) => e instanceof CrunchError && e.code === "no_such_route");
  await assert.rejects(crunch.run("fib", "fib"), TypeError);  // no n
});

test("errors are CrunchError with crunch's code, status and request id", async () => {
  await assert.rejects(crunch.fib(93), (e) => {
    assert.ok(e instanceof CrunchError);
    assert.equal(e.code, "invalid_argument");
    assert.equal(e.status, 400);
    assert.match(e.requestId, /.+/);
    return true;
  });
  await assert.rejects(crunch.image.thumbnail(Buffer.from("not an image at all"), { width: 10, contentType: "image/png" }), (e) => {
    assert.ok(e instanceof CrunchError);
    assert.equal(e.status, 400);
    return true;
  });
  await assert.rejects(crunch.zstd.decompress(Buffer.from("junk")), (e) => e instanceof CrunchError && e.status === 400);
  const nowhere = new Crunch({ url: "http://127.0.0.1:1" });
  await assert.rejects(nowhere.fib(3), (e) => e instanceof CrunchError && e.code === "connection_failed" && e.status === 0);
});

test("an aborted call closes its connection: crunch cancels the job and frees the worker", async () => {
  const before = await metric(url, 'crunch_jobs_total{outcome="cancelled_client_gone"}');
  const controller = new AbortController();
  const call = crunch.fib(45, { signal: controller.signal, timeoutMs: 60000 });
  // Aborted once the job runs.
  for (let i = 0; i < 400 && (await metric(url, "crunch_workers_busy")) === 0; ++i) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  const aborted = Date.now();
  await assert.rejects(call, (e) => e.name === "AbortError");
  let freed;
  for (;;) {
    if ((await metric(url, "crunch_workers_busy")) === 0) {
      freed = Date.now() - aborted;
      break;
    }
    assert.ok(Date.now() - aborted < 5000, "the worker is still busy 5 s after the abort");
  }
  assert.equal(await metric(url, 'crunch_jobs_total{outcome="cancelled_client_gone"}'), before + 1);
  console.log(`# worker free ${freed} ms after the abort`);
});

test("503: retried after Retry-After within the deadline; never past it", async () => {
  const small = await start(["--workers", "1", "--queue-limit", "1"]);
  const client = new Crunch({ url: small });
  // A burst of 8 on one worker and a queue of one: most are refused 503 at first.
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: 8 }, () => client.fib(30, { timeoutMs: 10000 })));
  assert.deepEqual(results, Array(8).fill(832040n));
  const refused = await fetch(`${small}/metrics`).then((r) => r.text());
  const r503 = [...refused.matchAll(/crunch_http_requests_total\{route="fib",code="503"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  assert.ok(r503 > 0, "crunch refused none: the burst did not test retries");
  console.log(`# 8 calls, ${r503} refusals retried, all answered in ${Date.now() - started} ms`);
  // With a deadline shorter than Retry-After (1 s) the refusal is thrown, not waited out.
  // Once a fib(44) (~1 s) holds the one worker, a job with 500 ms to live is refused at once:
  // the queue is full, or the work ahead would make it miss its deadline.
  const holds = [client.fib(44, { timeoutMs: 60000 }).catch(() => {}), client.fib(44, { timeoutMs: 60000 }).catch(() => {})];
  for (let i = 0; i < 1000 && (await metric(small, "crunch_workers_busy")) === 0; ++i) await new Promise((r) => setTimeout(r, 5));
  const t0 = Date.now();
  await assert.rejects(client.fib(25, { timeoutMs: 500 }), (e) => e instanceof CrunchError && e.status === 503 && e.retryAfter >= 1);
  assert.ok(Date.now() - t0 < 500, `thrown after ${Date.now() - t0} ms, past the 500 ms deadline`);
  await Promise.all(holds);
});

test("jobs: submit, get with a long poll, result, cancel", async () => {
  const job = await crunch.jobs.submit("fib", "fib", undefined, { params: { n: 25 } });
  assert.match(job.id, /^[A-Za-z0-9_-]{22}$/);
  const done = await crunch.jobs.get(job.id, { waitSeconds: 10 });
  assert.equal(done.status, "succeeded");
  const result = await crunch.jobs.result(job.id);
  assert.equal(result.json.result, 75025);
  const long = await crunch.jobs.submit("fib", "fib", undefined, { params: { n: 46 }, timeoutMs: 120000 });
  for (let i = 0; i < 400 && (await crunch.jobs.get(long.id)).status !== "running"; ++i) await new Promise((r) => setTimeout(r, 10));
  const cancelled = await crunch.jobs.cancel(long.id);
  assert.equal(cancelled.status, "cancelled");
  await assert.rejects(crunch.jobs.result(long.id), (e) => e instanceof CrunchError && e.status === 409 && e.code === "job_cancelled");
  await assert.rejects(crunch.jobs.get("AAAAAAAAAAAAAAAAAAAAAA"), (e) => e instanceof CrunchError && e.status === 404);
});
