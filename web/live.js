// The live view: charts of /v1/events snapshots (one per interval) and of /healthz as timed from
// this page, plus a form for each route of each kind, built from /v1/kinds. No framework and no build step; uPlot
// draws the charts. `window.crunchLive` exposes what the page has seen, for the browser check.
"use strict";
(() => {
  const windowSeconds = 60;
  const healthzEveryMs = 250;
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const $ = (id) => document.getElementById(id);

  const seen = { snapshots: 0, last: null, healthzMs: [], errors: [] };
  window.crunchLive = seen;

  // --- charts ----------------------------------------------------------------------------------

  const charts = [];
  function chart(id, series, { digits = 2, min = 0 } = {}) {
    const el = $(id);
    const data = [[], ...series.map(() => [])];
    const fmt = (u, v) => (v == null ? "–" : v.toFixed(digits));
    const plot = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 200,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, lo, hi) => [min, Math.max(hi * 1.1, min + 1e-3)] } },
        axes: [
          { stroke: color("--muted"), grid: { stroke: color("--grid") }, ticks: { stroke: color("--grid") } },
          { stroke: color("--muted"), grid: { stroke: color("--grid") }, ticks: { stroke: color("--grid") }, size: 56 },
        ],
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: color(s.color), width: 1.5, dash: s.dash, value: fmt, spanGaps: true }))],
      },
      data,
      el,
    );
    const c = { plot, data, el, dirty: false };
    charts.push(c);
    return c;
  }
  function push(c, t, values) {
    c.data[0].push(t);
    values.forEach((v, i) => c.data[i + 1].push(v));
    const cutoff = t - windowSeconds;
    let drop = 0;
    while (drop < c.data[0].length && c.data[0][drop] < cutoff) ++drop;
    if (drop) c.data.forEach((a) => a.splice(0, drop));
    c.dirty = true;
  }
  function redraw() {
    for (const c of charts) {
      if (c.dirty) c.plot.setData(c.data);
      c.dirty = false;
    }
    requestAnimationFrame(redraw);
  }
  requestAnimationFrame(redraw);
  new ResizeObserver(() => charts.forEach((c) => c.plot.setSize({ width: Math.max(200, c.el.clientWidth), height: 200 }))).observe(document.body);

  const lag = chart("c-lag", [
    { label: "p50", color: "--s1" },
    { label: "p99", color: "--s2" },
    { label: "max", color: "--s3", dash: [4, 3] },
  ], { digits: 3 });
  const healthz = chart("c-healthz", [{ label: "round trip", color: "--s4" }], { digits: 2 });
  const workers = chart("c-workers", [
    { label: "busy", color: "--s3" },
    { label: "workers", color: "--s6", dash: [4, 3] },
    { label: "queued", color: "--s1" },
    { label: "queue limit", color: "--s5", dash: [4, 3] },
  ], { digits: 0 });
  const outcomes = chart("c-outcomes", [
    { label: "completed", color: "--s4" },
    { label: "refused", color: "--s2" },
    { label: "deadline exceeded", color: "--s3" },
    { label: "cancelled", color: "--s6" },
    { label: "failed", color: "--s5" },
  ], { digits: 1 });
  let kinds = null; // made on the first snapshot, which names the kinds
  let kindNames = [];

  // --- the stream --------------------------------------------------------------------------------

  const ms = (v) => (v == null ? "–" : v < 1 ? `${(v * 1000).toFixed(0)} µs` : `${v.toFixed(2)} ms`);
  function show(s) {
    const j = s.jobs_per_s;
    const refused = j.rejected_queue_full + j.rejected_would_miss_deadline + j.rejected_memory + j.drained;
    const t = s.time_ms / 1000;
    push(lag, t, [s.loop_lag_ms.p50, s.loop_lag_ms.p99, s.loop_lag_ms.max]);
    push(workers, t, [s.workers.busy, s.workers.total, s.queue.depth, s.queue.limit]);
    // A job whose helper process died failed too (a 502 rather than a 500).
    push(outcomes, t, [j.completed, refused, j.deadline_exceeded, j.cancelled_client_gone, j.failed + (j.helper_crashed ?? 0)]);
    if (!kinds) {
      kindNames = Object.keys(s.jobs_run_per_s);
      kinds = chart("c-kinds", kindNames.map((k, i) => ({ label: k, color: `--s${(i % 6) + 1}` })), { digits: 1 });
    }
    push(kinds, t, kindNames.map((k) => s.jobs_run_per_s[k] ?? null));

    $("f-lag").textContent = ms(s.loop_lag_ms.p99);
    $("f-workers").textContent = `${s.workers.busy} / ${s.workers.total}`;
    $("f-queue").textContent = `${s.queue.depth} / ${s.queue.limit}`;
    $("f-backlog").textContent = s.backlog.jobs === 0 ? "0" : `${s.backlog.jobs} · ${s.backlog.seconds.toFixed(1)} s`;
    $("f-completed").textContent = j.completed.toFixed(1);
    $("f-refused").textContent = refused.toFixed(1);
    $("f-requests").textContent = s.requests_per_s.toFixed(0);
    $("f-memory").textContent = `${(s.memory.in_use_bytes / 1048576).toFixed(0)} / ${(s.memory.budget_bytes / 1048576).toFixed(0)} MiB`;
    seen.snapshots += 1;
    seen.last = s;
  }

  // The API key, when the server has keys: kept for this tab only, sent as a Bearer credential.
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem("crunch-api-key") ?? "";
  const auth = () => (keyInput.value ? { Authorization: `Bearer ${keyInput.value}` } : {});

  // The stream, read with fetch rather than EventSource, which cannot send a key (with
  // --protect-metrics, /v1/events needs one). Reconnects after a second when it ends.
  const status = $("status");
  const leaving = new AbortController();
  window.addEventListener("pagehide", () => leaving.abort());
  let keyChanged = () => {};
  keyInput.addEventListener("change", () => {
    sessionStorage.setItem("crunch-api-key", keyInput.value);
    keyChanged();
  });
  async function stream() {
    while (!leaving.signal.aborted) {
      try {
        const r = await fetch("/v1/events", { headers: auth(), cache: "no-store", signal: leaving.signal });
        if (r.status === 401) {
          status.textContent = "needs an API key";
          status.className = "status down";
          await new Promise((resolve) => (keyChanged = resolve));
          continue;
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        status.textContent = "live";
        status.className = "status live";
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let pending = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += value;
          for (let end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
            const event = pending.slice(0, end);
            pending = pending.slice(end + 2);
            for (const line of event.split("\n")) {
              if (!line.startsWith("data: ")) continue;
              try {
                show(JSON.parse(line.slice(6)));
              } catch (err) {
                seen.errors.push(String(err));
              }
            }
          }
        }
      } catch {
        if (leaving.signal.aborted) return;
      }
      status.textContent = "reconnecting…";
      status.className = "status down";
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  stream();

  // --- /healthz, timed from here -----------------------------------------------------------------

  // The round trip as the browser's network stack saw it (Resource Timing): from the fetch's start
  // to the last byte of the answer, without the time the page's own thread took to notice. An
  // entry may be missing (the buffer was full) or unfinished (responseEnd 0 while it is still
  // being written): then the page's own clock, around the fetch, is the measure.
  async function probe() {
    const url = `/healthz?probe=${++probes}`;
    try {
      const started = performance.now();
      const r = await fetch(url, { cache: "no-store" });
      await r.arrayBuffer();
      const ended = performance.now();
      const entry = performance.getEntriesByName(new URL(url, location.href).href).pop();
      performance.clearResourceTimings();
      const timed = entry && entry.responseEnd > 0 && entry.responseEnd >= entry.startTime;
      const took = timed ? entry.responseEnd - entry.startTime : ended - started;
      push(healthz, Date.now() / 1000, [took]);
      seen.healthzMs.push(took);
      if (seen.healthzMs.length > 1000) seen.healthzMs.shift();
      $("f-healthz").textContent = ms(took);
    } catch {
      push(healthz, Date.now() / 1000, [null]);
    }
    setTimeout(probe, healthzEveryMs);
  }
  let probes = 0;
  probe();

  // --- run one job: a form for every route of every kind, built from /v1/kinds ---------------------

  const result = $("result");
  function say(title, response, bodyNode) {
    result.replaceChildren();
    const head = document.createElement("p");
    head.textContent = `${title} → ${response.status} ${response.statusText}`;
    const timing = document.createElement("p");
    timing.className = "timing";
    timing.textContent = `Server-Timing: ${response.headers.get("Server-Timing") ?? "–"}`;
    result.append(head, bodyNode, timing);
    result.dataset.status = String(response.status);
  }
  function text(t) {
    const pre = document.createElement("pre");
    pre.textContent = t;
    return pre;
  }
  // An answer that is neither text nor an image (a zstd frame): its size, and a link to it.
  function download(blob, type) {
    const p = document.createElement("p");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "answer";
    a.textContent = `${blob.size} bytes of ${type || "data"}`;
    p.append(a);
    return p;
  }
  async function run(title, request) {
    result.textContent = `${title}…`;
    try {
      const response = await request();
      const type = response.headers.get("Content-Type") ?? "";
      if (type.startsWith("image/")) {
        const img = document.createElement("img");
        const blob = await response.blob();
        img.src = URL.createObjectURL(blob);
        img.alt = `thumbnail, ${blob.size} bytes`;
        say(title, response, img);
      } else if (type.startsWith("text/") || type.includes("json")) {
        say(title, response, text(await response.text()));
      } else {
        say(title, response, download(await response.blob(), type));
      }
    } catch (err) {
      result.textContent = `${title}: ${err}`;
    }
  }

  // The values a route's example request gives its parameters: "/fib/30" against "/fib/{n}" is
  // n = 30; its query's keys; a JSON body's fields.
  function exampleValues(route) {
    const values = {};
    const e = route.example;
    if (!e) return values;
    const [path, query = ""] = e.target.split("?");
    const at = route.path.indexOf("{");
    if (at >= 0) values[route.path.slice(at + 1, route.path.indexOf("}", at))] = decodeURIComponent(path.slice(at));
    for (const [k, v] of new URLSearchParams(query)) values[k] = v;
    if (route.content_type === "application/json" && e.body) {
      try {
        Object.assign(values, JSON.parse(e.body));
      } catch {
        // not an object: the form starts empty
      }
    }
    return values;
  }

  // A labelled input for one parameter, as its declaration bounds it; `secret`: the route's body
  // holds a secret, and its text fields are hidden as they are typed.
  function field(p, value, secret) {
    const label = document.createElement("label");
    label.append(`${p.name} `);
    let el;
    if (p.enum) {
      el = document.createElement("select");
      if (!p.required) el.append(new Option("", ""));
      for (const v of p.enum) el.append(new Option(v, v));
    } else {
      el = document.createElement("input");
      if (p.type === "integer") {
        el.type = "number";
        el.min = String(p.minimum);
        el.max = String(p.maximum);
      } else {
        el.type = secret && p.in === "body" ? "password" : "text";
        el.autocomplete = "off";
        if (p.max_bytes) el.maxLength = p.max_bytes;
      }
    }
    el.name = p.name;
    el.required = p.required;
    el.title = p.description ?? "";
    const v = value ?? p.default;
    if (v !== undefined) el.value = String(v);
    label.append(el);
    return label;
  }

  // The request a route's form describes: its target and fetch's init.
  function request(route, form, params) {
    let path = route.path;
    const query = new URLSearchParams();
    const json = {};
    for (const p of params) {
      const value = form.elements.namedItem(p.name)?.value ?? "";
      if (value === "") continue;
      if (p.in === "path") path = path.replace(`{${p.name}}`, encodeURIComponent(value));
      else if (p.in === "query") query.set(p.name, value);
      else json[p.name] = p.type === "integer" ? Number(value) : value;
    }
    const q = query.toString();
    const init = { method: route.method, headers: auth() };
    if (route.content_type === "application/json") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (route.content_types) {
      const file = form.elements.namedItem("file")?.files?.[0];
      if (file) {
        init.body = file;
        init.headers["Content-Type"] = file.type || route.content_types[0];
      } else {
        init.body = form.elements.namedItem("text")?.value ?? "";
        init.headers["Content-Type"] = route.content_types.includes("text/plain") ? "text/plain" : route.content_types[0];
      }
    }
    return { target: q ? `${path}?${q}` : path, init };
  }

  // One form: the parameters its example sets or it needs, the others under "more", and for a
  // file body a file input (and a text box, when the route takes text).
  function routeForm(route) {
    const form = document.createElement("form");
    form.id = `run-${route.name}`;
    form.className = "card";
    const title = document.createElement("p");
    title.className = "route";
    title.textContent = `${route.method} ${route.path}`;
    title.title = route.summary;
    form.append(title);
    const values = exampleValues(route);
    const params = route.parameters.filter((p) => p.name !== "timeout_ms");
    const shown = (p) => p.required || p.name in values;
    for (const p of params.filter(shown)) form.append(field(p, values[p.name], route.sensitive));
    if (route.content_types) {
      const takesText = route.content_types.some((t) => t.startsWith("text/") || t === "application/json");
      if (takesText) {
        const label = document.createElement("label");
        label.append("text ");
        const area = document.createElement("textarea");
        area.name = "text";
        area.rows = 2;
        area.value = route.example?.body ?? "";
        label.append(area);
        form.append(label);
      }
      const label = document.createElement("label");
      label.append(takesText ? "or a file " : "file ");
      const file = document.createElement("input");
      file.type = "file";
      file.name = "file";
      file.accept = route.content_types.join(",");
      file.required = !takesText;
      label.append(file);
      form.append(label);
    }
    const others = params.filter((p) => !shown(p));
    if (others.length) {
      const more = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "more";
      more.append(summary, ...others.map((p) => field(p, undefined, route.sensitive)));
      form.append(more);
    }
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Run";
    form.append(button);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const { target, init } = request(route, form, params);
      run(`${route.method} ${target}`, () => fetch(target, init));
    });
    return form;
  }

  const forms = $("forms");
  async function buildForms() {
    try {
      const r = await fetch("/v1/kinds", { headers: auth() });
      if (!r.ok) {
        forms.replaceChildren(text(`/v1/kinds answered ${r.status}: the forms need it (an API key?)`));
        return;
      }
      const { kinds } = await r.json();
      forms.replaceChildren(...kinds.flatMap((k) => k.routes.map(routeForm)));
      seen.forms = kinds.flatMap((k) => k.routes.map((route) => route.name));
    } catch (err) {
      forms.replaceChildren(text(`/v1/kinds: ${err}`));
    }
  }
  buildForms();
  keyInput.addEventListener("change", buildForms);
})();
