// What a Node.js user writes to offload password hashing with node-argon2: an HTTP server that
// answers POST /hash {"password": "..."} with {"hash": "$argon2id$..."} (node-argon2 hashes on
// libuv's thread pool: UV_THREADPOOL_SIZE threads) and GET /healthz. The parameters are crunch's
// defaults, OWASP's first Argon2id choice: m=19456 KiB, t=2, p=1.  usage: node server.mjs PORT
import http from "node:http";
import argon2 from "argon2";

const port = Number(process.argv[2] ?? 0);
const options = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end('{"status":"ok"}');
  }
  if (req.method !== "POST" || req.url !== "/hash") {
    res.writeHead(404);
    return res.end();
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    try {
      const { password } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      const hash = await argon2.hash(password, options);
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ hash }));
    } catch (e) {
      res.writeHead(400, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: String(e) }));
    }
  });
});
server.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ listening: server.address().port,
  threadpool: Number(process.env.UV_THREADPOOL_SIZE ?? 4) })));
