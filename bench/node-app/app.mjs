// A Node app with the two CPU-heavy routes teams offload: POST /login (verify a password) and
// POST /avatar (thumbnail an upload), done one of three ways (MODE):
//   inproc   node-argon2 and sharp in this process (their native code on libuv's thread pool)
//   piscina  the same libraries on Piscina worker threads
//   crunch   crunch-client against a crunchd (CRUNCH_URL)
// GET /healthz answers from the event loop; GET /stats gives the loop's delay since the last
// /stats (perf_hooks.monitorEventLoopDelay, 1 ms resolution), and resets it.
import http from "node:http";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const mode = process.env.MODE ?? "inproc";
const hash = process.env.HASH;  // the stored password hash /login checks against
const thumbnailWidth = 256;

let login;
let avatar;
let close = async () => {};
if (mode === "inproc") {
  const argon2 = (await import("argon2")).default;
  const sharp = (await import("sharp")).default;
  login = (password) => argon2.verify(hash, password);
  avatar = (body) => sharp(body).resize(thumbnailWidth).webp({ quality: 80 }).toBuffer();
} else if (mode === "piscina") {
  const { Piscina } = await import("piscina");
  const pool = new Piscina({ filename: fileURLToPath(new URL("./worker.mjs", import.meta.url)), maxThreads: Number(process.env.THREADS ?? 2) });
  login = (password) => pool.run({ op: "login", hash, password });
  avatar = (body) => pool.run({ op: "avatar", body, width: thumbnailWidth }).then((b) => Buffer.from(b));
  close = () => pool.destroy();
} else if (mode === "crunch") {
  const { Crunch } = await import("crunch-client");
  const crunch = new Crunch({ url: process.env.CRUNCH_URL });
  login = async (password) => (await crunch.password.verify(hash, password)).match;
  avatar = async (body) => (await crunch.image.thumbnail(body, { width: thumbnailWidth, format: "webp", quality: 80 })).data;
} else {
  throw new Error(`MODE must be inproc, piscina or crunch, not ${mode}`);
}

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();

function body(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on("data", (p) => parts.push(p));
    req.on("end", () => resolve(Buffer.concat(parts)));
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === "GET" && req.url === "/healthz") return res.end("ok");
    if (req.method === "GET" && req.url === "/stats") {
      const stats = { p50_ms: delay.percentile(50) / 1e6, p99_ms: delay.percentile(99) / 1e6, max_ms: delay.max / 1e6, mode };
      delay.reset();
      res.setHeader("Content-Type", "application/json");
      return res.end(JSON.stringify(stats));
    }
    if (req.method === "POST" && req.url === "/login") {
      const { password } = JSON.parse((await body(req)).toString("utf8"));
      const ok = await login(password);
      res.statusCode = ok ? 200 : 401;
      return res.end();
    }
    if (req.method === "POST" && req.url === "/avatar") {
      const out = await avatar(await body(req));
      res.setHeader("Content-Type", "image/webp");
      return res.end(out);
    }
    res.statusCode = 404;
    res.end();
  } catch (e) {
    res.statusCode = 500;
    res.end(String(e?.message ?? e));
  }
});
server.keepAliveTimeout = 30_000;
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: server.address().port, mode })));
process.on("SIGTERM", async () => {
  server.close();
  server.closeAllConnections();
  await close();
  process.exit(0);
});
