// What a Node.js user writes to offload thumbnails with sharp: an HTTP server that answers
// POST /thumbnail?width=N with a WebP (sharp runs libvips on libuv's thread pool) and GET /healthz.
// Defaults throughout, as a new user would have them.  usage: node server.mjs PORT
import http from "node:http";
import sharp from "sharp";

const port = Number(process.argv[2] ?? 0);
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (req.method === "GET" && url.pathname === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end('{"status":"ok"}');
  }
  if (req.method !== "POST" || url.pathname !== "/thumbnail") {
    res.writeHead(404);
    return res.end();
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    try {
      const out = await sharp(Buffer.concat(chunks)).rotate().resize(Number(url.searchParams.get("width") ?? 400))
        .webp({ quality: Number(url.searchParams.get("quality") ?? 80) }).toBuffer();
      res.writeHead(200, { "Content-Type": "image/webp" });
      res.end(out);
    } catch (e) {
      res.writeHead(400, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: String(e) }));
    }
  });
});
server.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ listening: server.address().port,
  sharp: sharp.versions.sharp, vips: sharp.versions.vips, webp: sharp.versions.webp, concurrency: sharp.concurrency() })));
