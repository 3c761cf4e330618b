// The live view in a real browser: headless Chromium (Debian's), driven by puppeteer-core, against
// a running crunchd. Fails on a console error, on any request that leaves the host, on charts that
// get no data, on a form job without its answer, on a /healthz line that is not flat while wrk
// saturates the workers, and on a stream the server still holds once the page is closed. Saves a
// screenshot taken under load.
//   node live_check.mjs --port P --chromium /usr/bin/chromium --wrk /usr/bin/wrk --image photo.jpg \
//        [--screenshot out.png] [--load-seconds 8]
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

const { values: opt } = parseArgs({
  options: {
    port: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    wrk: { type: "string", default: "wrk" },
    image: { type: "string" },
    screenshot: { type: "string" },
    "load-seconds": { type: "string", default: "8" },
  },
});
const origin = `http://127.0.0.1:${opt.port}`;
const loadSeconds = Number(opt["load-seconds"]);
const problems = [];
const check = (ok, what) => {
  if (!ok) problems.push(what);
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
};

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] : NaN;
};
const stats = async () => (await fetch(`${origin}/v1/stats`)).json();
async function until(what, predicate, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  check(false, `${what} (waited ${timeoutMs} ms)`);
  return false;
}

const browser = await puppeteer.launch({
  executablePath: opt.chromium,
  headless: true,
  // CI runs as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-default-apps", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1100 });
  const consoleErrors = [];
  const foreign = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.setRequestInterception(true);
  page.on("request", (r) => {
    const url = r.url();
    if (url.startsWith(`${origin}/`) || url.startsWith("data:") || url.startsWith("blob:")) return r.continue();
    foreign.push(url);
    return r.abort();
  });

  await page.goto(`${origin}/`, { waitUntil: "load" });
  await page.waitForFunction(() => window.crunchLive && window.crunchLive.snapshots >= 5, { timeout: 15000 });
  const seen = await page.evaluate(() => ({
    snapshots: window.crunchLive.snapshots,
    healthz: window.crunchLive.healthzMs.length,
    badHealthz: window.crunchLive.healthzMs.filter((t) => !Number.isFinite(t) || t < 0),
    canvases: document.querySelectorAll(".uplot canvas").length,
    status: document.getElementById("status").textContent,
  }));
  check(seen.snapshots >= 5, `the page received ${seen.snapshots} snapshots from /v1/events`);
  check(seen.healthz >= 3, `the page timed /healthz ${seen.healthz} times`);
  check(seen.badHealthz.length === 0, `every /healthz time is a number of 0 ms or more (bad: ${seen.badHealthz})`);
  check(seen.canvases >= 5, `${seen.canvases} charts drawn`);
  check(seen.status === "live", `status says "${seen.status}"`);

  // A form for each route, built from /v1/kinds, and one job of each kind run from its form.
  await page.waitForFunction(() => window.crunchLive.forms && window.crunchLive.forms.length > 0, { timeout: 15000 });
  const forms = await page.evaluate(() => window.crunchLive.forms);
  const declared = (await (await fetch(`${origin}/v1/kinds`)).json()).kinds.flatMap((k) => k.routes.map((r) => r.name));
  for (const route of declared) check(forms.includes(route), `a form for ${route} (forms: ${forms.join(", ")})`);
  const runForm = async (form, expect) => {
    await page.$eval("#result", (el) => delete el.dataset.status);
    await page.click(`${form} button[type=submit]`);
    await page.waitForFunction(() => document.getElementById("result").dataset.status, { timeout: 20000 });
    const r = await page.$eval("#result", (el) => ({ status: el.dataset.status, text: el.innerText, img: !!el.querySelector("img") }));
    check(r.status === "200" && expect(r), `${form}: ${r.text.split("\n")[0]}`);
    check(/compute;dur=/.test(r.text), `${form}: Server-Timing shown`);
    return r;
  };
  await page.$eval("#run-fib input[name=n]", (el) => (el.value = "25"));
  await runForm("#run-fib", (r) => r.text.includes('"result":75025'));
  await runForm("#run-password_hash", (r) => r.text.includes("$argon2id$"));
  // zstd: a text typed into its form, compressed; the answer is a frame (shown as its size).
  await page.$eval("#run-zstd_compress textarea[name=text]", (el) => (el.value = "crunch ".repeat(200)));
  await runForm("#run-zstd_compress", (r) => /\d+ bytes of application\/zstd/.test(r.text));
  if (opt.image) {
    await page.$eval("#run-image_thumbnail input[name=width]", (el) => (el.value = "320"));
    await page.$eval("#run-image_thumbnail select[name=format]", (el) => (el.value = "webp"));
    const input = await page.$("#run-image_thumbnail input[type=file]");
    await input.uploadFile(opt.image);
    await runForm("#run-image_thumbnail", (r) => r.img);
  }

  // Idle first, for comparison.
  await page.waitForFunction(() => window.crunchLive.healthzMs.length >= 20, { timeout: 15000 });
  const idle = (await page.evaluate(() => window.crunchLive.healthzMs)).slice(4);
  console.log(`(/healthz from the page, idle: ${idle.length} probes, p50 ${quantile(idle, 0.5).toFixed(2)} ms, p90 ${quantile(idle, 0.9).toFixed(2)} ms)`);

  // Under load: wrk keeps every worker busy for loadSeconds.
  const before = await page.evaluate(() => window.crunchLive.healthzMs.length);
  const wrk = spawn(opt.wrk, ["-t1", "-c8", `-d${loadSeconds}s`, `${origin}/fib/32`], { stdio: ["ignore", "pipe", "inherit"] });
  let wrkOut = "";
  wrk.stdout.on("data", (d) => (wrkOut += d));
  const wrkDone = new Promise((resolve) => wrk.on("exit", resolve));
  await new Promise((r) => setTimeout(r, 1000)); // the load builds up
  const busySamples = [];
  const sampleUntil = Date.now() + (loadSeconds - 2) * 1000;
  let shot = false;
  const fromNode = [];
  const lagP99 = [];
  while (Date.now() < sampleUntil) {
    const t0 = performance.now();
    await (await fetch(`${origin}/healthz`)).arrayBuffer();
    fromNode.push(performance.now() - t0);
    const s = await page.evaluate(() => window.crunchLive.last);
    busySamples.push(s.workers.busy / s.workers.total);
    if (s.loop_lag_ms.p99 != null) lagP99.push(s.loop_lag_ms.p99);
    if (!shot && opt.screenshot && Date.now() > sampleUntil - 2000) {
      await page.screenshot({ path: opt.screenshot, fullPage: true });
      shot = true;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const healthz = (await page.evaluate(() => window.crunchLive.healthzMs)).slice(before + 4);
  await wrkDone;
  console.log(`(node's own /healthz meanwhile: p50 ${quantile(fromNode, 0.5).toFixed(2)} ms, p90 ${quantile(fromNode, 0.9).toFixed(2)} ms)`);
  const completed = /Requests\/sec:\s+([\d.]+)/.exec(wrkOut)?.[1];
  const pinned = busySamples.filter((b) => b === 1).length / busySamples.length;
  check(pinned >= 0.8, `workers all busy in ${(pinned * 100).toFixed(0)} % of snapshots under load (wrk: ${completed} fib(32)/s)`);
  // The page's fetch goes through Chromium's network service, another process on the same two
  // cores as the workers, wrk and the renderer: its floor here is a few ms even when idle. What must
  // hold is that the line stays where it was idle, and low; bench/ has the server's own figures.
  const p50 = quantile(healthz, 0.5);
  const p90 = quantile(healthz, 0.9);
  const idleP50 = quantile(idle, 0.5);
  check(healthz.length >= 10 && p50 < 15 && p50 <= idleP50 + 3,
    `/healthz from the page under load: ${healthz.length} probes, p50 ${p50.toFixed(2)} ms (idle ${idleP50.toFixed(2)} ms), ` +
    `p90 ${p90.toFixed(2)} ms, max ${Math.max(...healthz).toFixed(2)} ms`);
  // Shown, not judged: the loop shares the two cores with Chromium's software rendering, wrk and
  // node, all at the I/O thread's own priority (the workers yield to all of them), so here its lag
  // measures the harness as much as crunch. bench/ and the test suite judge the loop.
  console.log(`(the loop's lag under load, per snapshot: p99 median ${quantile(lagP99, 0.5).toFixed(3)} ms, ` +
    `worst ${Math.max(...lagP99).toFixed(3)} ms)`);

  check(consoleErrors.length === 0, `no console errors${consoleErrors.length ? `: ${consoleErrors.join(" | ")}` : ""}`);
  check(foreign.length === 0, `no request left the host${foreign.length ? `: ${foreign.join(", ")}` : ""}`);

  // A phone's width, in the dark: nothing wider than the screen, and the dark palette applied.
  await page.setViewport({ width: 390, height: 844, isMobile: true });
  await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: "dark" }]);
  await new Promise((r) => setTimeout(r, 500)); // a resize and a redraw
  const phone = await page.evaluate(() => ({
    width: document.documentElement.scrollWidth,
    background: getComputedStyle(document.body).backgroundColor,
  }));
  check(phone.width <= 390, `on a 390 px wide phone the page is ${phone.width} px wide`);
  const [r, g, b] = phone.background.match(/\d+/g).map(Number);
  check(r + g + b < 150, `dark mode: background ${phone.background}`);

  // Closing the page frees its stream on the server.
  const open = (await stats()).event_streams;
  await page.close();
  await until(`the page's stream freed on the server (was ${open})`, async () => (await stats()).event_streams === 0);
  if ((await stats()).event_streams === 0) check(true, `stream count back to 0 after the page closed (was ${open})`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(`live view: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log("live view: every check passed");
