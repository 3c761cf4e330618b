#!/usr/bin/env python3
"""Turns bench/results/latest.json into bench/results/report.md and PNG plots (gnuplot).

usage: report.py RESULTS_DIR
"""
import json
import os
import subprocess
import sys

out = sys.argv[1]
with open(os.path.join(out, "latest.json")) as f:
    r = json.load(f)


def gnuplot(script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, cwd=out)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"gnuplot failed: {e}", file=sys.stderr)
        return False


def us(v):
    return "—" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")


def others(name):
    c = r.get("cpu", {}).get(name)
    if not c:
        return "—"
    return (f"{c['others_s']:.2f} s (+ {c['unattributed_s']:.2f} s interrupts and short-lived processes) "
            f"of {c['machine_busy_s']:.2f} s busy")


variants = ["batch", "idle", "normal", "inline"]
probe = r["healthz_under_load_open_loop"]
wrk = r["healthz_under_load_wrk"]
lag = r["loop_lag_open_loop_phase"]

# Headline: /healthz latency under full CPU load, per worker priority and inline (log scale).
with open(os.path.join(out, "healthz_under_load.dat"), "w") as f:
    for v in variants:
        p = probe[v]["latency_us"]
        f.write(f"{v} {p['p50']} {p['p99']} {p['p999']} {lag[v]['p99_us'] or 1}\n")
headline = gnuplot("""
set terminal pngcairo size 900,480 font "sans,11"
set output "healthz_under_load.png"
set title "/healthz while every worker computes /fib/32 (open loop, 500 req/s)"
set style data histograms
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [10:20000]
set ylabel "microseconds (log scale)"
set key top left
set grid ytics
plot "healthz_under_load.dat" using 2:xtic(1) title "p50", \
     "" using 3 title "p99", \
     "" using 4 title "p99.9", \
     "" using 5 title "event-loop lag p99"
""")

# Scaling: throughput per worker against the single-thread ideal.
scaling = r.get("scaling", [])
ideal = 1.0 / r["fib30_single"]["median_s"]
with open(os.path.join(out, "scaling.dat"), "w") as f:
    for s in scaling:
        f.write(f"{s['workers']} {s['rps'] / s['workers']:.1f} {ideal:.1f}\n")
scaling_plot = bool(scaling) and gnuplot(f"""
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

limit = r["limit_rps"]
after = r.get("fib30_single_after")
thr = r["fib30_load"]
alone = r["healthz_alone"]
quiet = r["healthz_alone_log_warn"]
over = r["overload"]
ow = over["wrk"]
lines = [
    "# crunch benchmark report",
    "",
    f"- machine: {r['machine']}",
    f"- commit: `{r['commit']}`; {r['duration_s']} s per load; loopback only; wrk on the same cores",
    f"- physical limit: fib_single 30 median {r['fib30_single']['median_s'] * 1000:.3f} ms before the run"
    + (f", {after['median_s'] * 1000:.3f} ms after" if after else "")
    + f" → {r['cores']} cores ÷ that = **{limit:.0f} req/s**",
    "",
    "CPU used by others: CPU time of processes other than crunchd, wrk, the probe and curl during the"
    " scenario; kernel interrupt work for loopback traffic is charged to no process and shown apart.",
    "",
    "| scenario | result | target | CPU used by others |",
    "| --- | --- | --- | --- |",
    f"| CPU throughput `wrk -t2 -c16 /fib/30` | {thr['rps']:.0f} req/s = **{thr['rps'] / limit:.3f}** of the limit, "
    f"{sum(thr['errors'].values())} errors | ≥ 0.90 | {others('throughput')} |",
    f"| /healthz under CPU load, open-loop p99 (batch) | **{us(probe['batch']['latency_us']['p99'])}**; inline "
    f"{us(probe['inline']['latency_us']['p99'])} = {probe['inline']['latency_us']['p99'] / probe['batch']['latency_us']['p99']:.0f}× worse"
    f" | ≤ 1 ms, ≥ 100× better than inline | {others('responsiveness_batch')} |",
    f"| same, closed-loop `wrk -t1 -c4` p99 (batch) | {us(wrk['batch']['latency_us']['p99'])} | ≤ 1 ms | |",
    f"| event-loop lag p99 under load (batch / idle) | {us(lag['batch']['p99_us'])} / {us(lag['idle']['p99_us'])} | ≤ 0.2 ms | |",
    f"| /healthz alone `wrk -t2 -c64` | {alone['rps']:.0f} req/s with access log, {quiet['rps']:.0f} without; "
    f"p99 {us(alone['latency_us']['p99'])} | ≥ 90,000 req/s | {others('http_overhead')} |",
    f"| overload `wrk -t2 -c256 /fib/35` | accepted {ow['accepted_rps']:.0f}/s, refused {ow['rejected_rps']:.0f}/s, "
    f"socket errors {sum(ow['socket_errors'].values())}; accepted p99 {ow['accepted_server_ms']['p99']:.0f} ms; "
    f"/healthz p99 {us(over['healthz_open_loop']['latency_us']['p99'])}; peak RSS {over['peak_rss_kib'] / 1024:.1f} MiB; "
    f"CPU 1–2 s after: {over['cpu_seconds_after']} s | 0 errors, ≤ 16 MiB, none after | {others('overload')} |",
    "",
]
if headline:
    lines += ["![/healthz under load](healthz_under_load.png)", ""]
lines += ["## /healthz under full CPU load", "",
          "| workers | open-loop p50 | p99 | p99.9 | loop-lag p99 | wrk p99 | wrk req/s |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
for v in variants:
    p = probe[v]["latency_us"]
    lines.append(f"| {v} | {us(p['p50'])} | {us(p['p99'])} | {us(p['p999'])} | {us(lag[v]['p99_us'])} | "
                 f"{us(wrk[v]['latency_us']['p99'])} | {wrk[v]['rps']:.0f} |")
lines.append("")
if scaling:
    lines += ["## Scaling", "", "| workers | req/s | per worker | per worker ÷ single-thread rate |",
              "| --- | --- | --- | --- |"]
    for s in scaling:
        lines.append(f"| {s['workers']} | {s['rps']:.0f} | {s['rps'] / s['workers']:.0f} | "
                     f"{s['rps'] / s['workers'] / ideal:.3f} |")
    lines.append("")
    if scaling_plot:
        lines += ["![scaling](scaling.png)", ""]
with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(lines))
print(f"wrote {os.path.join(out, 'report.md')}")
