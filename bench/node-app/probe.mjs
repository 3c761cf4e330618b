// An open-loop /healthz probe: RATE requests a second for SECONDS, each timed from when it was
// due, on one keep-alive connection per request in flight. Prints p50, p99 and max in ms.
//   node probe.mjs URL SECONDS RATE
import http from "node:http";

const [url, seconds, rate] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const times = [];
let failed = 0;
const start = performance.now();
const end = start + Number(seconds) * 1000;
const pending = [];
for (let i = 0; ; ++i) {
  const due = start + (i * 1000) / Number(rate);
  if (due >= end) break;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  pending.push(
    new Promise((resolve) => {
      const req = http.get({ host: target.hostname, port: target.port, path: "/healthz", agent }, (res) => {
        res.resume();
        res.on("end", () => {
          times.push(performance.now() - due);
          resolve();
        });
      });
      req.on("error", () => {
        failed += 1;
        resolve();
      });
    }),
  );
}
await Promise.all(pending);
times.sort((a, b) => a - b);
const at = (p) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))];
console.log(JSON.stringify({ n: times.length, failed, p50_ms: at(50), p99_ms: at(99), max_ms: times[times.length - 1] }));
agent.destroy();
