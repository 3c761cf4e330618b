#!/usr/bin/env python3
"""One load per example of every kind a running crunchd serves, read from its own declarations.

  bench/examples.py PORT SECONDS BUILD_DIR OUT_JSON

Each route's examples that succeed (x-crunch-examples with status 200 in /openapi.json; the kind
that owns the route from /v1/kinds) are sent by wrk, 2 connections for SECONDS, while
latency_probe asks /healthz open-loop every 2 ms: the kind's throughput and latency, and what its
load does to the loop. A kind added through the library gets its scenario with no line here.
Writes {"kinds": {kind: [{route, example, wrk, healthz}]}} and prints a line per example.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

port, seconds, build, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_json(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.load(r)


owner = {}  # (method, path) -> kind
for kind in get_json("/v1/kinds")["kinds"]:
    for route in kind["routes"]:
        owner[(route["method"].lower(), route["path"])] = kind["name"]

results = {}
with tempfile.TemporaryDirectory() as work:
    for path, operations in get_json("/openapi.json")["paths"].items():
        for method, op in operations.items():
            kind = owner.get((method, path))
            if kind is None:
                continue  # a fixed route (/healthz, /v1/jobs/...): not a kind's
            for n, ex in enumerate(e for e in op.get("x-crunch-examples", []) if e["status"] == 200):
                url = f"http://127.0.0.1:{port}{ex['target']}"
                env = dict(os.environ)
                if method == "get":
                    script = os.path.join(root, "bench", "report.lua")
                else:
                    script = os.path.join(root, "bench", "post.lua")
                    body = base64.b64decode(ex["body_base64"]) if "body_base64" in ex else ex.get("body", "").encode()
                    body_file = os.path.join(work, f"{op['operationId']}-{n}")
                    with open(body_file, "wb") as f:
                        f.write(body * ex.get("repeat", 1))
                    env["BODY_FILE"] = body_file
                    env["CONTENT_TYPE"] = ex.get("content_type", "application/json")
                probe = subprocess.Popen([os.path.join(build, "latency_probe"), port, "/healthz", str(seconds), "2000"],
                                         stdout=subprocess.PIPE, text=True)
                wrk = subprocess.run(["wrk", "-t1", "-c2", f"-d{seconds}s", "--timeout", "10s", "-s", script, url],
                                     env=env, capture_output=True, text=True, timeout=seconds + 60)
                healthz = json.loads(probe.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1])
                line = wrk.stdout.strip().splitlines()[-1] if wrk.stdout.strip() else ""
                if not line.startswith("{"):
                    raise SystemExit(f"wrk printed no result for {ex['target']}: {wrk.stderr.strip()}")
                load = json.loads(line)
                failed = load.get("other", 0) + load.get("status_503", 0) + load.get("status_504", 0) \
                    if "ok" in load else load["errors"]["non_2xx"]
                results.setdefault(kind, []).append(
                    {"route": op["operationId"], "example": ex["name"], "target": ex["target"], "wrk": load,
                     "not_200": failed, "healthz": healthz})
                print(f"    {kind} {op['operationId']} \"{ex['name']}\": {load['rps']:.0f} req/s, "
                      f"p99 {load['latency_us']['p99'] / 1000:.2f} ms, {failed} not 200; "
                      f"/healthz p99 {healthz['latency_us']['p99'] / 1000:.2f} ms meanwhile", flush=True)

if not results:
    raise SystemExit("no kind declared an example that succeeds")
with open(out, "w") as f:
    json.dump({"kinds": results}, f)
