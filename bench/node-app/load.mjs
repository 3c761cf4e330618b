// Open-loop load on app.mjs: logins and avatar uploads sent on a schedule (RATE per second each),
// whatever the answers are doing, each timed from when it was due. Prints one JSON line: what
// was answered 2xx per second, and the latency percentiles.
//   node load.mjs URL SECONDS LOGINS_PER_S AVATARS_PER_S IMAGE PASSWORD
import http from "node:http";
import { readFileSync } from "node:fs";

const [url, seconds, loginRate, avatarRate, imagePath, password] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
const image = readFileSync(imagePath);
const loginBody = Buffer.from(JSON.stringify({ password }));
const results = { login: [], avatar: [] };
const failed = { login: 0, avatar: 0 };

function send(kind, path, type, payload, due) {
  return new Promise((resolve) => {
    const req = http.request(
      { host: target.hostname, port: target.port, path, method: "POST", agent, headers: { "Content-Type": type, "Content-Length": payload.length } },
      (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode >= 200 && res.statusCode < 300) results[kind].push(performance.now() - due);
          else failed[kind] += 1;
          resolve();
        });
      },
    );
    req.on("error", () => {
      failed[kind] += 1;
      resolve();
    });
    req.end(payload);
  });
}

function schedule(kind, rate, fire) {
  const pending = [];
  if (!(rate > 0)) return pending;
  const start = performance.now();
  const end = start + Number(seconds) * 1000;
  return new Promise((resolve) => {
    let i = 0;
    const tick = () => {
      const now = performance.now();
      // Everything due by now goes out now, timed from when it was due.
      while (start + (i * 1000) / rate <= now && start + (i * 1000) / rate < end) {
        pending.push(fire(start + (i * 1000) / rate));
        i += 1;
      }
      if (start + (i * 1000) / rate >= end) return resolve(Promise.all(pending));
      setTimeout(tick, Math.max(0, start + (i * 1000) / rate - performance.now()));
    };
    tick();
  });
}

const percentile = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const started = performance.now();
await Promise.all([
  schedule("login", Number(loginRate), (due) => send("login", "/login", "application/json", loginBody, due)),
  schedule("avatar", Number(avatarRate), (due) => send("avatar", "/avatar", "image/jpeg", image, due)),
]);
const took = (performance.now() - started) / 1000;
const summary = {};
for (const kind of ["login", "avatar"]) {
  summary[kind] = {
    per_s: results[kind].length / took,
    failed: failed[kind],
    p50_ms: percentile(results[kind], 50),
    p99_ms: percentile(results[kind], 99),
  };
}
console.log(JSON.stringify(summary));
agent.destroy();
