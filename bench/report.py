#!/usr/bin/env python3
"""Turns bench/results/latest.json into bench/results/report.md and PNG plots (gnuplot).

usage: report.py RESULTS_DIR [BASELINE_JSON]

A scenario that failed, or whose figures are missing, is shown as FAILED with its reason; the rest
of the report is still written. With a baseline (a latest.json kept from an earlier run; bench/
baseline.json by default) the report also compares the key figures with it, so that a change that
makes crunch slower shows as such.
"""
import json
import os
import subprocess
import sys

out = sys.argv[1]
with open(os.path.join(out, "latest.json")) as f:
    r = json.load(f)
scenarios = r["scenarios"]
baseline_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(out)), "baseline.json")


def gnuplot(script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, cwd=out)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"gnuplot failed: {e}", file=sys.stderr)
        return False


def scenario(name):
    """The scenario's results, or None when it failed or did not run."""
    s = scenarios.get(name)
    return None if s is None or "failed" in s else s


def failure(name):
    s = scenarios.get(name)
    reason = "did not run" if s is None else s["failed"]
    return "**FAILED**: " + " ".join(reason.split())[:300]


def us(v):
    return "—" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")


def others(c):
    if not c:
        return "—"
    return (f"{c['others_s']:.2f} s (+ {c['unattributed_s']:.2f} s interrupts and short-lived processes) "
            f"of {c['machine_busy_s']:.2f} s busy")


def row(name, title, render, target):
    """One table row; a failed scenario, or one whose figures cannot be read, is shown as such."""
    s = scenario(name)
    if s is None:
        return f"| {title} | {failure(name)} | {target} | — |"
    try:
        return f"| {title} | {render(s)} | {target} | {others(s.get('cpu'))} |"
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return f"| {title} | **FAILED**: figures unreadable ({e!r}) | {target} | — |"


variants = ["batch", "idle", "normal", "inline"]
resp = {v: scenario("responsiveness_" + v) for v in variants}
limit_s = scenario("limit")
after = scenario("limit_after")


def single_time(found):
    """fib_single 30's time, the faster of before and after: a measurement disturbed by something
    else on the machine can only make fib slower, and the faster time gives the stricter limit."""
    times = [s["fib30_single"]["median_s"] for s in (found.get("limit"), found.get("limit_after"))
             if s and "failed" not in s]
    return min(times) if times else None


single_s = single_time(scenarios) if limit_s else None
limit = r["cores"] / single_s if single_s else None

# Headline: /healthz latency under full CPU load, per worker priority and inline (log scale).
headline = False
if any(resp.values()):
    with open(os.path.join(out, "healthz_under_load.dat"), "w") as f:
        for v in variants:
            if resp[v]:
                p = resp[v]["open_loop"]["latency_us"]
                f.write(f"{v} {p['p50']} {p['p99']} {resp[v]['wrk_paced']['latency_us']['p99']} "
                        f"{resp[v]['lag_open_loop']['p99_us'] or 1}\n")
    headline = gnuplot("""
set terminal pngcairo size 900,480 font "sans,11"
set output "healthz_under_load.png"
set title "/healthz while every worker computes /fib/32"
set style data histograms
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [10:20000]
set ylabel "microseconds (log scale)"
set key top left
set grid ytics
plot "healthz_under_load.dat" using 2:xtic(1) title "open-loop p50", \
     "" using 3 title "open-loop p99", \
     "" using 4 title "wrk paced p99", \
     "" using 5 title "event-loop lag p99"
""")

# Scaling: throughput per worker against the single-thread ideal.
scaling = scenario("scaling") or []
ideal = 1.0 / single_s if single_s else None
scaling_plot = False
if scaling and ideal:
    with open(os.path.join(out, "scaling.dat"), "w") as f:
        for s in scaling:
            f.write(f"{s['workers']} {s['rps'] / s['workers']:.1f} {ideal:.1f}\n")
    scaling_plot = gnuplot(f"""
set terminal pngcairo size 640,400 font "sans,11"
set output "scaling.png"
set title "/fib/30 throughput per worker"
set xlabel "workers"
set ylabel "requests/s per worker"
set xtics 1
set yrange [0:{ideal * 1.15:.0f}]
set grid
set key bottom right
plot "scaling.dat" using 1:2 with linespoints lw 2 pt 7 title "measured", \
     "" using 1:3 with lines dt 2 lw 2 title "one core's single-thread fib(30) rate"
""")


def runs(m):
    return ", ".join(f"{x['rps']:.0f}" for x in m["runs"])


def throughput(s):
    m = s["wrk"]["median"]
    return (f"{m['rps']:.0f} req/s = **{m['rps'] / limit:.3f}** of the limit (3 runs: {runs(s['wrk'])}), "
            f"{sum(m['errors'].values())} errors")


def against_inline(phase):
    """Renders a /healthz p99 of one measurement phase, how much worse inline mode was, and what
    the same measurement gives with no CPU load at all (the floor of the method)."""
    def render(s):
        p99 = s[phase]["latency_us"]["p99"]
        text = f"**{us(p99)}**" + (f" at {s[phase]['rps']:.0f} req/s" if "rps" in s[phase] else "")
        inline = resp["inline"]
        if inline:
            i99 = inline[phase]["latency_us"]["p99"]
            text += f"; inline {us(i99)} = {i99 / p99:.0f}× worse"
        idle = scenario("http_overhead")
        if idle and "no_load" in idle:
            text += f"; the same with no CPU load: {us(idle['no_load'][phase]['latency_us']['p99'])}"
        return text
    return render


def lag(s):
    idle = resp["idle"]
    return f"{us(s['lag_open_loop']['p99_us'])}" + (f" / {us(idle['lag_open_loop']['p99_us'])}" if idle else " / —")


def overhead(s):
    on, off = s["access_log"], s["log_warn"]
    return (f"median {on['median']['rps']:.0f} req/s with access log (runs {runs(on)}), "
            f"{off['median']['rps']:.0f} without (runs {runs(off)}); p99 {us(on['median']['latency_us']['p99'])}")


def overload(s):
    w = s["wrk"]
    return (f"accepted {w['accepted_rps']:.0f}/s, refused {w['rejected_rps']:.0f}/s, "
            f"socket errors {sum(w['socket_errors'].values())}; accepted p99 {w['accepted_server_ms']['p99']:.0f} ms; "
            f"/healthz p99 {us(s['healthz_open_loop']['latency_us']['p99'])}; "
            + (f"RSS after start {s['idle_rss_kib'] / 1024:.1f} MiB, " if "idle_rss_kib" in s else "")
            + f"peak RSS {s['peak_rss_kib'] / 1024:.1f} MiB; "
            f"CPU 1–2 s after: {s['cpu_seconds_after']} s")


def password_ratio(s):
    """Hashes/s ÷ the limit (workers × the faster one-thread rate), ÷ the library on as many threads."""
    single = max(s["single_before"]["hashes_per_s"], s["single_after"]["hashes_per_s"])
    side = max(s["side_by_side_before"]["hashes_per_s"], s["side_by_side_after"]["hashes_per_s"])
    return s["wrk"]["rps"] / (s["workers"] * single), s["wrk"]["rps"] / side, single, side


def password(s):
    ratio, ratio_side, single, side = password_ratio(s)
    return (f"{s['wrk']['rps']:.1f} hashes/s = **{ratio:.3f}** of the limit ({s['workers']} × {single:.1f}/s, the same "
            f"libsodium call on one thread) and **{ratio_side:.3f}** of {side:.1f}/s, the call on {s['workers']} threads at "
            f"once; /healthz open-loop p99 **{us(s['healthz_open_loop']['latency_us']['p99'])}**; 503s "
            f"{s['wrk']['status_503']}, other {s['wrk']['other']}")


def password_flood(s):
    w = s["wrk"]
    return (f"peak RSS **{s['peak_rss_kib'] / 1024:.0f} MiB** with a {s['budget_kib'] / 1024:.0f} MiB budget (idle "
            f"{s['idle_rss_kib'] / 1024:.0f} MiB); {w['ok']} hashed, {w['status_503']} refused at once (503), "
            f"{w['status_504']} late (504), socket errors {sum(w['socket_errors'].values())}; /healthz p99 "
            f"{us(s['healthz_open_loop']['latency_us']['p99'])}")


def thumbnail_ratio(s):
    """Thumbnails/s ÷ the limit (workers × the faster one-thread rate), ÷ libvips on as many threads."""
    single = max(s["single_before"]["per_s"], s["single_after"]["per_s"])
    side = max(s["side_by_side_before"]["per_s"], s["side_by_side_after"]["per_s"])
    return s["wrk"]["rps"] / (s["workers"] * single), s["wrk"]["rps"] / side, single, side


def thumbnail(s):
    ratio, ratio_side, single, side = thumbnail_ratio(s)
    f = s["flood_64"]
    return (f"{s['wrk']['rps']:.1f} thumbnails/s = **{ratio:.3f}** of the limit ({s['workers']} × {single:.1f}/s, the same "
            f"libvips call on one thread) and **{ratio_side:.3f}** of {side:.1f}/s on {s['workers']} threads at once; "
            f"/healthz open-loop p99 **{us(s['healthz_open_loop']['latency_us']['p99'])}**; 64 uploads at once under a "
            f"48 MiB budget: peak RSS **{f['peak_rss_kib'] / 1024:.0f} MiB**, {f['wrk']['ok']} done, "
            f"{f['wrk']['status_503']} refused (503)")


def thumbnail_avif(s):
    ratio, ratio_side, single, side = thumbnail_ratio(s)
    return (f"{s['wrk']['rps']:.2f} thumbnails/s = **{ratio:.3f}** of the limit ({s['workers']} × {single:.2f}/s, the same "
            f"libvips call on one thread) and **{ratio_side:.3f}** of {side:.2f}/s on {s['workers']} threads at once; "
            f"/healthz open-loop p99 **{us(s['healthz_open_loop']['latency_us']['p99'])}**")


def json_body(s):
    worst4 = max((k for k in s if k.startswith("4k_")), key=lambda k: s[k])
    worst64 = max((k for k in s if k.startswith("64k_")), key=lambda k: s[k])
    return (f"typical body {s['typical']:.1f} µs; worst at the password routes' 4 KiB: {s[worst4]:.0f} µs "
            f"({worst4[3:]}); at 64 KiB: {s[worst64]:.0f} µs ({worst64[4:]}); 64 KiB of `[`: {s['64k_brackets']:.1f} µs")


def event_streams(s):
    def of(n):
        runs = [x for x in s["runs"] if x["streams"] == n]
        rps = ", ".join(f"{x['healthz_alone']['rps']:.0f}" for x in runs)
        p99 = ", ".join(us(x["open_loop_under_load"]["latency_us"]["p99"]) for x in runs)
        return f"{rps} req/s, p99 {p99}"
    return f"no streams: {of(0)}; **50 streams**: {of(50)}"


def noisy_neighbour(s):
    runs = {x["fair_key"]: x for x in s["runs"]}
    fair, fifo = runs["header:X-Client-Id"], runs["none"]
    def b(x):
        refused = sum(n for code, n in x["b"]["status"].items() if code != "200")
        ok = x["b"]["ok_latency_us"]
        return (f"B refused {refused} of {x['b']['requests']}, 200s p50 {us(ok['p50'])} p99 {us(ok['p99'])}"
                if ok else f"B refused {refused} of {x['b']['requests']}, none answered 200")
    alone = sum(x["accepted_rps"] for x in s["a_alone"]) / len(s["a_alone"])
    ratio = (fifo["b"]["ok_latency_us"]["p99"] / fair["b"]["ok_latency_us"]["p99"]
             if fifo["b"]["ok_latency_us"] and fair["b"]["ok_latency_us"] else float("nan"))
    return (f"**fair**: {b(fair)}, A {fair['a']['accepted_rps']:.1f}/s ({fair['a']['accepted_rps'] / alone:.2f} of alone); "
            f"**none**: {b(fifo)}, A {fifo['a']['accepted_rps']:.1f}/s; B's p99 {ratio:.1f}× lower with fair queuing")


def tiny_jobs(s):
    runs = s["runs"]
    med = lambda key: sorted(x[key]["rps"] for x in runs)[len(runs) // 2]
    cpu = lambda key: sorted(x["crunch_cpu_us_per_request"][key] for x in runs)[len(runs) // 2]
    return (f"crunchd /fib/1 **{med('crunch_fib1'):.0f}** req/s vs Go **{med('go_fib1'):.0f}** "
            f"({med('crunch_fib1') / med('go_fib1'):.2f}×); /healthz {med('crunch_healthz'):.0f} vs Go {med('go_healthz'):.0f}; "
            f"crunchd CPU per request /fib/1 {cpu('fib1'):.1f} µs, /healthz {cpu('healthz'):.1f} µs (medians of {len(runs)})")


limit_line = (f"- physical limit: fib_single 30 median {limit_s['fib30_single']['median_s'] * 1000:.3f} ms before the run"
              + (f", {after['fib30_single']['median_s'] * 1000:.3f} ms after" if after else ", after: " + failure("limit_after"))
              + f" → {r['cores']} cores ÷ the faster = **{limit:.0f} req/s**") if limit_s else "- physical limit: " + failure("limit")
failed = [n for n, s in scenarios.items() if "failed" in s]
lines = [
    "# crunch benchmark report",
    "",
    f"- machine: {r['machine']}",
    f"- commit: `{r['commit']}`; {r['duration_s']} s per load (half that per phase or repeated run); loopback only; "
    "wrk on the same cores",
    limit_line,
]
if failed:
    lines.append(f"- **FAILED scenarios: {', '.join(failed)}** (reasons in the rows below)")
lines += [
    "",
    "CPU used by others: CPU time of processes other than crunchd, wrk, the probe and curl during the"
    " scenario; kernel interrupt work for loopback traffic is charged to no process and shown apart.",
    "",
    "| scenario | result | target | CPU used by others |",
    "| --- | --- | --- | --- |",
    row("throughput", "CPU throughput `wrk -t2 -c16 /fib/30`", throughput if limit else None, "≥ 0.90"),
    row("responsiveness_batch", "/healthz under CPU load, open-loop 500 req/s, p99 (batch)", against_inline("open_loop"),
        "≤ 1 ms, ≥ 100× better than inline"),
    row("responsiveness_batch", "same, `wrk -t1 -c4 --latency` paced 1 ms per connection, p99 (batch)",
        against_inline("wrk_paced"),
        "≤ 1 ms, ≥ 100× better than inline"),
    row("responsiveness_batch", "same, `wrk -t1 -c4` flat out, p99 (batch; wrk takes a core)",
        lambda s: f"{us(s['wrk_flat_out']['latency_us']['p99'])} at {s['wrk_flat_out']['rps']:.0f} req/s", "—"),
    row("responsiveness_batch", "event-loop lag p99 under load (batch / idle)", lag, "≤ 0.2 ms"),
    row("http_overhead", "/healthz alone `wrk -t2 -c64`, 3 runs", overhead, "≥ 90,000 req/s"),
    row("overload", "overload `wrk -t2 -c256 /fib/35`", overload, "0 errors, ≤ 16 MiB, none after"),
    row("password", "Argon2id hashing `POST /v1/password/hash`, defaults, `wrk -t2 -c8`", password,
        "≥ 0.90; /healthz p99 ≤ 1 ms"),
    row("password_flood", "max-parameter hashes (256 MiB, t=6) from 256 connections", password_flood,
        "peak RSS within the budget"),
    row("json_body", "reading a JSON body on the I/O thread", json_body, "a few tens of µs at the route's limit"),
    row("thumbnail", "thumbnails: 4000×3000 JPEG → 400 px WebP, `wrk -t2 -c8`", thumbnail,
        "≥ 0.85; /healthz p99 ≤ 1 ms; RSS within the budget"),
    row("thumbnail_avif", "AVIF thumbnails: 4000×3000 JPEG → 400 px AVIF (q50, effort 4), `wrk -t2 -c4`", thumbnail_avif,
        "/healthz p99 ≤ 1 ms"),
    row("event_streams", "live-view streams: /healthz alone and its open-loop p99 under /fib/32, 0 vs 50 streams",
        event_streams, "within noise"),
    row("noisy_neighbour", "noisy neighbour: A floods `/fib/35` (64 conns), B sends `/fib/30` 2/s open loop",
        noisy_neighbour, "B never refused; B's p99 ≥ 5× lower than with `none`; A within 5 % of alone"),
    row("tiny_jobs", "tiny jobs `wrk -t1 -c64`: crunchd against Go's net/http computing in its handler", tiny_jobs,
        "/fib/1 ≥ Go's; /healthz no worse"),
    "",
]
if headline:
    lines += ["![/healthz under load](healthz_under_load.png)", ""]
lines += ["## /healthz under full CPU load", "",
          "| workers | open-loop p50 | p99 | p99.9 | loop-lag p99 | wrk paced p99 | wrk flat-out p99 (req/s) |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
for v in variants:
    s = resp[v]
    if not s:
        lines.append(f"| {v} | {failure('responsiveness_' + v)} | | | | | |")
        continue
    p = s["open_loop"]["latency_us"]
    lines.append(f"| {v} | {us(p['p50'])} | {us(p['p99'])} | {us(p['p999'])} | {us(s['lag_open_loop']['p99_us'])} | "
                 f"{us(s['wrk_paced']['latency_us']['p99'])} | {us(s['wrk_flat_out']['latency_us']['p99'])} "
                 f"({s['wrk_flat_out']['rps']:.0f}) |")
lines.append("")

# Every kind, from its declaration's examples (bench/examples.py).
lines += ["## Every kind, from its examples", "",
          "Each example of each route that succeeds, in the OpenAPI document crunchd serves, sent by "
          "`wrk -t1 -c2`, with /healthz asked open-loop every 2 ms meanwhile.", ""]
kinds_s = scenario("kinds")
if kinds_s is None:
    lines += [failure("kinds"), ""]
else:
    lines += ["| kind | route | example | req/s | p50 | p99 | not 200 | /healthz p99 meanwhile |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, examples in sorted(kinds_s["kinds"].items()):
        for e in examples:
            w = e["wrk"]["latency_us"]
            lines.append(f"| {kind} | {e['route']} | {e['example']} | {e['wrk']['rps']:.0f} | {us(w['p50'])} | "
                         f"{us(w['p99'])} | {e['not_200']} | {us(e['healthz']['latency_us']['p99'])} |")
    lines.append("")


def key_figures(run):
    """The figures a change must not make worse: (name, value or None, unit, higher is better,
    the run-to-run noise on this kind of machine as a fraction)."""
    sc = run["scenarios"]

    def get(name, *path):
        try:
            v = sc[name]
            for k in path:
                v = v[k]
            return float(v)
        except (KeyError, TypeError, ValueError):
            return None

    single = single_time(sc)
    rps = get("throughput", "wrk", "median", "rps")

    # latency_probe times requests from when they were due since the noisy-neighbour change; the
    # baseline's p99 were timed from when each was sent. Compare like with like: from send.
    def probe_p99(name, key):
        sent = get(name, key, "sent_latency_us", "p99")
        return sent if sent is not None else get(name, key, "latency_us", "p99")

    return [
        ("CPU throughput ÷ limit", rps * single / run["cores"] if rps and single else None, "", True, 0.05),
        # Tails under full load move a lot between runs: a p99 over ~1,000 samples sits where the
        # rare wake-up that waits for the scheduler tick (4 ms at HZ=250) begins.
        ("/healthz p99 under load, open loop (from send)", probe_p99("responsiveness_batch", "open_loop"), "µs",
         False, 1.0),
        ("/healthz p99 under load, wrk paced", get("responsiveness_batch", "wrk_paced", "latency_us", "p99"), "µs",
         False, 1.0),
        ("loop-lag p99 under load", get("responsiveness_batch", "lag_open_loop", "p99_us"), "µs", False, 4.0),
        ("/healthz alone, access log", get("http_overhead", "access_log", "median", "rps"), "req/s", True, 0.1),
        ("/healthz alone, --log-level warn", get("http_overhead", "log_warn", "median", "rps"), "req/s", True, 0.1),
        ("overload: accepted", get("overload", "wrk", "accepted_rps"), "req/s", True, 0.1),
        ("overload: RSS after start", get("overload", "idle_rss_kib"), "KiB", False, 0.2),
        ("overload: peak RSS", get("overload", "peak_rss_kib"), "KiB", False, 0.2),
        ("password hashing ÷ limit", password_ratio(sc["password"])[0] if get("password", "wrk", "rps") else None, "",
         True, 0.05),
        ("/healthz p99 while hashing (from send)", probe_p99("password", "healthz_open_loop"), "µs", False, 1.0),
        ("hash flood: peak RSS", get("password_flood", "peak_rss_kib"), "KiB", False, 0.2),
        ("thumbnails ÷ limit", thumbnail_ratio(sc["thumbnail"])[0] if get("thumbnail", "wrk", "rps") else None, "",
         True, 0.05),
        ("/healthz p99 while thumbnailing (from send)", probe_p99("thumbnail", "healthz_open_loop"), "µs", False, 1.0),
        ("64 uploads: peak RSS", get("thumbnail", "flood_64", "peak_rss_kib"), "KiB", False, 0.2),
    ]


def figure(v, unit):
    if v is None:
        return "—"
    return f"{v:.3f}" if not unit else f"{v:,.0f} {unit}"


worse_than_baseline = None
base = None
if os.path.exists(baseline_path):
    with open(baseline_path) as f:
        base = json.load(f)
    if base["duration_s"] != r["duration_s"]:
        # Shorter loads give other figures (warm-up, fewer samples): no like-for-like comparison.
        not_compared = (f"not compared with the baseline: its loads ran {base['duration_s']} s, this run's "
                        f"{r['duration_s']} s")
        lines += ["## Against the baseline", "", not_compared[0].upper() + not_compared[1:] + ".", ""]
        print(f"against {baseline_path}: {not_compared}")
        base = None
if base:
    worse_than_baseline = []
    shown = os.path.relpath(baseline_path, os.path.dirname(os.path.dirname(os.path.abspath(out))))
    lines += [f"## Against the baseline (`{shown}`, commit `{base['commit']}`)", "",
              "Worse by more than the run-to-run noise of this kind of machine is marked **worse**; the"
              " baseline was measured on: " + base["machine"] + ".", "",
              "| figure | baseline | this run | change | noise (run to run) |", "| --- | --- | --- | --- | --- |"]
    for (name, was, unit, higher, noise), (_, now, _, _, _) in zip(key_figures(base), key_figures(r)):
        change = "—"
        if was and now is not None:
            delta = now / was - 1
            worse = -delta if higher else delta
            change = f"{delta:+.0%}"
            if worse > noise:
                change += " **worse**"
                worse_than_baseline.append(f"{name} {change.split()[0]}")
        lines.append(f"| {name} | {figure(was, unit)} | {figure(now, unit)} | {change} | {noise:.0%} |")
    lines.append("")

lines += ["## Scaling", ""]
if scaling and ideal:
    lines += ["| workers | req/s | per worker | per worker ÷ single-thread rate |", "| --- | --- | --- | --- |"]
    for s in scaling:
        lines.append(f"| {s['workers']} | {s['rps']:.0f} | {s['rps'] / s['workers']:.0f} | "
                     f"{s['rps'] / s['workers'] / ideal:.3f} |")
    lines.append("")
    if scaling_plot:
        lines += ["![scaling](scaling.png)", ""]
else:
    lines += [failure("scaling") if not scenario("scaling") else "**FAILED**: no physical limit to compare with", ""]
with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(lines))
print(f"wrote {os.path.join(out, 'report.md')}")
if worse_than_baseline is not None:
    print(f"against {baseline_path}: " + ("worse beyond run-to-run noise: " + ", ".join(worse_than_baseline)
                                         if worse_than_baseline else "nothing worse beyond run-to-run noise"))
