#!/usr/bin/env python3
"""Three crunchd replicas on one Redis (--jobs-store redis://). First what a job gets wherever it
was submitted: a binary result equal to the synchronous answer (body, type, headers), wait=, an
Idempotency-Key used on two replicas (one job; a different body 422; another key's owner 404),
DELETE of a running job from another replica, a signed callback from whichever replica ran the
job, and the backlog in /metrics. Then 300 asynchronous jobs submitted across them, one replica
killed with SIGKILL while it runs jobs; every job must end succeeded, exactly as its synchronous
answer, seen from any replica. Then Redis restarts with AOF on and the jobs still queued survive.
    redis_check.py CRUNCHD WORKDIR"""
import atexit, base64, hashlib, hmac, json, os, signal, socket, subprocess, sys, threading, time
import urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

crunchd, work = sys.argv[1], sys.argv[2]
children = []  # killed at exit, whatever the outcome: a failed check leaves no server behind

@atexit.register
def kill_children():
    for p in children:
        if p.poll() is None: p.kill(); p.wait()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_line(proc, text, seconds=20):
    end = time.time() + seconds
    for line in proc.stdout:
        if text in line: return True
        if time.time() > end: break
    return False

def start_redis(port, aof):
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", work, "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "always", "--loglevel", "notice"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    children.append(p)
    assert wait_line(p, "Ready to accept connections"), "redis did not start"
    return p

SECRET = base64.b64encode(os.urandom(32)).decode()
with open(os.path.join(work, "secrets"), "w") as f: f.write(f"whsec_{SECRET}\n")
KEYS = os.path.join(work, "keys")
with open(KEYS, "w") as f: f.write("alice:alice-key-0123456789abcdef\nbob:bob-key-0123456789abcdef0123\n")
ALICE = {"Authorization": "Bearer alice-key-0123456789abcdef"}
BOB = {"Authorization": "Bearer bob-key-0123456789abcdef0123"}
deliveries = []

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        deliveries.append((dict(self.headers), body))
        self.send_response(204); self.end_headers()
    def log_message(self, *args): pass

receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
receiver_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"

def start_crunchd(redis_port, claim_after="1s", extra=()):
    port = free_port()
    p = subprocess.Popen([crunchd, "--address", "127.0.0.1", "--port", str(port), "--workers", "1",
                          "--jobs-store", f"redis://127.0.0.1:{redis_port}/0", "--jobs-claim-after", claim_after,
                          "--log-level", "warn", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children.append(p)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1); break
        except Exception: time.sleep(0.05)
    return p, port

def http(port, path, headers=None, timeout=30, data=None, method=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e: return e.code, e.read(), dict(e.headers)


def metric(port, name):
    _, text, _ = http(port, "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "): return float(line.split()[1])
    return None

def until_ended(port, job_id, headers, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        s, body, _ = http(port, f"/v1/jobs/{job_id}", headers)
        doc = json.loads(body)
        if doc["status"] not in ("queued", "running"): return doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")

redis_port = free_port()
redis = start_redis(redis_port, aof=False)
with_keys = ["--api-keys", KEYS, "--webhook-secret-file", os.path.join(work, "secrets"),
             "--callback-allow", "http://127.0.0.1:", "--callback-allow-private", "true"]
first = [start_crunchd(redis_port, extra=with_keys) for _ in range(3)]
(a, pa), (b, pb), (c, pc) = first

# A binary result, submitted on one replica and read on another, is the synchronous answer.
text = bytes(range(256)) * 400
sync = http(pa, "/v1/work/echo?ms=5", {**ALICE, "Content-Type": "application/octet-stream"}, data=text)
status, body, headers = http(pa, "/v1/work/echo?ms=5",
                             {**ALICE, "Content-Type": "application/octet-stream", "Prefer": "respond-async"}, data=text)
assert status == 202 and headers["Location"].startswith("/v1/jobs/"), (status, body)
zid = json.loads(body)["id"]
assert until_ended(pb, zid, ALICE)["status"] == "succeeded"
result = http(pb, f"/v1/jobs/{zid}/result", ALICE)
assert result[0] == sync[0] == 200 and result[1] == sync[1], "the async result differs from the sync answer"
assert result[2]["Content-Type"] == sync[2]["Content-Type"] == "application/octet-stream", (result[2], sync[2])
per_request = ("Date", "X-Request-Id", "Server-Timing", "Vary")  # Vary: the sync answer depends on Prefer
same = lambda h: {k: v for k, v in h.items() if k not in per_request}
assert same(result[2]) == same(sync[2]), (result[2], sync[2])
assert http(pc, f"/v1/jobs/{zid}", BOB)[0] == 404, "bob sees alice's job"
assert http(pc, f"/v1/jobs/{zid}/result", BOB)[0] == 404, "bob sees alice's result"
# wait=: a short job answers as the synchronous form does.
s, body, h = http(pc, "/work/2", {**ALICE, "Prefer": "respond-async, wait=10"})
assert s == 200 and json.loads(body)["ms"] == 2, (s, body)
print("redis check: a binary result read on another replica equals the synchronous answer "
      f"({len(sync[1])} bytes, {sync[2]['Content-Type']}); wait= answered 200; another key's owner gets 404")

# One Idempotency-Key on two replicas: one job; a different request with it gets 422.
accepted_before = sum(metric(p, "crunch_shared_jobs_accepted_total") for p in (pa, pb, pc))
key = {**ALICE, "Prefer": "respond-async", "Idempotency-Key": "album-42"}
s1, b1, h1 = http(pa, "/work/3", key)
s2, b2, h2 = http(pb, "/work/3", key)
s3, b3, _ = http(pc, "/work/4", key)
s4, b4, h4 = http(pc, "/work/3", {**BOB, "Prefer": "respond-async", "Idempotency-Key": "album-42"})
accepted = sum(metric(p, "crunch_shared_jobs_accepted_total") for p in (pa, pb, pc)) - accepted_before
assert s1 == s2 == 202 and h1["Location"] == h2["Location"], (s1, s2, h1.get("Location"), h2.get("Location"))
assert s3 == 422 and json.loads(b3)["error"]["code"] == "idempotency_key_reused", (s3, b3)
assert s4 == 202 and h4["Location"] != h1["Location"], "bob's key is not alice's"
assert accepted == 2, f"{accepted} jobs accepted for alice's two requests and bob's one, expected 2"
print("redis check: one Idempotency-Key on two replicas: one job; another body 422; another owner's key its own job")

# DELETE of a running job, sent to another replica: stopped, and the worker free again. The job
# (held=1) waits for a gate nothing opens: it runs until it is stopped.
s, body, h = http(pa, "/work/1?held=1&timeout_ms=120000", {**ALICE, "Prefer": "respond-async"})
long_id = json.loads(body)["id"]
for _ in range(400):
    s, body, _ = http(pb, f"/v1/jobs/{long_id}", ALICE)
    if json.loads(body)["status"] == "running": break
    time.sleep(0.05)
runner = {"status": json.loads(body)["status"], "replica": json.loads(body).get("replica")}
assert runner["status"] == "running", runner
asked = time.time()
s, body, _ = http(pc, f"/v1/jobs/{long_id}", {**ALICE}, method="DELETE")
took = time.time() - asked
doc = json.loads(body)
assert s == 200 and doc["status"] == "cancelled", (s, body)
s, body, _ = http(pc, f"/v1/jobs/{long_id}/result", ALICE)
assert s == 409 and json.loads(body)["error"]["code"] == "job_cancelled", (s, body)
# The worker notices the stop at its next checkpoint, just after the job's end was stored.
for _ in range(100):
    busy = [metric(p, "crunch_workers_busy") for p in (pa, pb, pc)]
    if busy == [0, 0, 0]: break
    time.sleep(0.01)
freed = time.time() - asked
assert busy == [0, 0, 0], f"workers still busy a second after the DELETE: {busy}"
print(f"redis check: DELETE on another replica stopped a running job in {took * 1000:.0f} ms; "
      f"every worker free {freed * 1000:.0f} ms after it was sent")

# A callback: signed, from whichever replica ran the job.
s, body, h = http(pb, "/work/1?callback_url=" + urllib.parse.quote(receiver_url, safe=""),
                  {**ALICE, "Prefer": "respond-async"})
assert s == 202, (s, body)
cid = json.loads(body)["id"]
for _ in range(200):
    if deliveries: break
    time.sleep(0.05)
assert deliveries, "no callback"
hdrs, payload = deliveries[0]
signed = f"{hdrs['webhook-id']}.{hdrs['webhook-timestamp']}.".encode() + payload
expected = base64.b64encode(hmac.new(base64.b64decode(SECRET), signed, hashlib.sha256).digest()).decode()
assert hdrs["webhook-id"] == cid, hdrs
assert f"v1,{expected}" in hdrs["webhook-signature"].split(" "), "bad signature"
message = json.loads(payload)
assert message["type"] == "job.succeeded" and message["data"]["id"] == cid, message
print("redis check: the callback came signed (Standard Webhooks v1) from replica " + message["data"].get("replica", "?"))

# The backlog in /metrics, the same on every replica: jobs waiting behind three long ones.
for p in (pa, pb, pc):
    http(p, "/work/2000", {**ALICE, "Prefer": "respond-async"})  # 2 s: longer than two backlog refreshes
for n in range(10):
    http(pa, f"/work/{1 + n}", {**ALICE, "Prefer": "respond-async"})
seen = 0
for _ in range(100):
    seen = min(metric(p, "crunch_async_backlog_jobs") for p in (pa, pb, pc))
    if seen >= 5: break
    time.sleep(0.1)
oldest = metric(pa, "crunch_async_backlog_oldest_seconds")
assert seen >= 5 and oldest > 0, (seen, oldest)
assert metric(pa, "crunch_shared_store_up") == 1
print(f"redis check: /metrics on each replica: {seen:.0f} jobs waiting, the oldest {oldest:.1f} s")
# DELETE of a job whose replica then died: the replica that takes it over ends it, unrun.
for p in (pa, pb, pc):  # the backlog above drains first
    for _ in range(600):
        if metric(p, "crunch_async_backlog_jobs") == 0 and metric(p, "crunch_workers_busy") == 0: break
        time.sleep(0.05)
s, body, _ = http(pa, "/work/1?held=1&timeout_ms=120000", {**ALICE, "Prefer": "respond-async"})
orphan = json.loads(body)["id"]
for _ in range(400):
    doc = json.loads(http(pb, f"/v1/jobs/{orphan}", ALICE)[1])
    if doc["status"] == "running": break
    time.sleep(0.05)
assert doc["status"] == "running", doc
runner_pid = int(doc["replica"].rsplit(":", 1)[1])
runner = next((p, port) for p, port in first if p.pid == runner_pid)
runner[0].send_signal(signal.SIGKILL); runner[0].wait()
other = next(port for p, port in first if p.pid != runner_pid)
asked = time.time()
s, body, _ = http(other, f"/v1/jobs/{orphan}", ALICE, method="DELETE", timeout=60)
doc = json.loads(body)
# Ended, and never started again: the last replica to start it is still the dead one.
assert s == 200 and doc["status"] == "cancelled" and doc["replica"].endswith(f":{runner_pid}"), (s, body)
print(f"redis check: DELETE of a job whose replica was killed: ended cancelled {time.time() - asked:.1f} s later, "
      "by the replica that took it over, without running it")
for p, _ in first:
    p.kill(); p.wait()
    log = p.stdout.read()
    if "Sanitizer" in log or "fatal_signal" in log:
        print("redis check: a replica reported:\n" + log[-3000:]); sys.exit(1)
redis.kill(); redis.wait()
redis = start_redis(redis_port, aof=False)

replicas = [start_crunchd(redis_port) for _ in range(3)]
jobs = {}
for i in range(300):
    n = 10 + i % 6  # ms: the replica killed below is running one
    port = replicas[i % 3][1]
    status, body, headers = http(port, f"/work/{n}", {"Prefer": "respond-async"})
    assert status == 202, (status, body)
    jobs[json.loads(body)["id"]] = n
# Kill one replica while it runs jobs.
victim, victim_port = replicas[1]
for _ in range(200):
    s, b, _ = http(victim_port, "/metrics")
    if b"\ncrunch_workers_busy 1\n" in b: break
victim.send_signal(signal.SIGKILL); victim.wait()
survivors = [replicas[0], replicas[2]]
start = time.time()
pending = dict(jobs)
while pending and time.time() - start < 120:
    for job_id, n in list(pending.items()):
        port = survivors[hash(job_id) % 2][1]
        status, body, _ = http(port, f"/v1/jobs/{job_id}")
        assert status == 200, (status, body)
        doc = json.loads(body)
        if doc["status"] in ("queued", "running"): continue
        assert doc["status"] == "succeeded", doc
        s, result, _ = http(port, f"/v1/jobs/{job_id}/result")
        assert s == 200 and json.loads(result)["ms"] == n, (s, result)
        del pending[job_id]
    time.sleep(0.1)
print(f"redis check: 300 jobs across 3 replicas, one killed: {300 - len(pending)} succeeded "
      f"with their synchronous answers in {time.time() - start:.1f} s, {len(pending)} missing")
ok = not pending
for p, _ in survivors:
    if p.poll() is not None:
        print(f"redis check: a surviving replica exited by itself ({p.returncode})"); ok = False
    p.kill(); p.wait()
    log = p.stdout.read()
    if "Sanitizer" in log or "fatal_signal" in log:
        print("redis check: a replica reported:\n" + log[-3000:]); ok = False
redis.kill(); redis.wait()

# AOF: queued jobs survive a Redis restart.
redis = start_redis(redis_port, aof=True)
queued = []
# Submitted through a replica whose one worker is held by a long job, so that they stay queued;
# the replica is then killed, and Redis stopped and started again.
replica, port = start_crunchd(redis_port)
# Holds the worker until its deadline, 5 s (held=1: it waits for a gate nothing opens); taken
# over after the restart, its deadline has passed, so it ends at once (expired) instead of
# holding the new replica's one worker.
status, body, _ = http(port, "/work/1?held=1&timeout_ms=5000", {"Prefer": "respond-async"})
for n in range(1, 6):
    status, body, _ = http(port, f"/work/{n}", {"Prefer": "respond-async"})
    queued.append((json.loads(body)["id"], n))
replica.kill(); replica.wait()
redis.send_signal(signal.SIGTERM); redis.wait()
redis = start_redis(redis_port, aof=True)
replica, port = start_crunchd(redis_port, claim_after="300ms")
start = time.time()
left = dict(queued)
while left and time.time() - start < 60:
    for job_id, n in list(left.items()):
        s, body, _ = http(port, f"/v1/jobs/{job_id}")
        if s == 200 and json.loads(body)["status"] == "succeeded":
            s, result, _ = http(port, f"/v1/jobs/{job_id}/result")
            if json.loads(result)["ms"] == n: del left[job_id]
    time.sleep(0.1)
print(f"redis check: AOF restart: {len(queued) - len(left)} of {len(queued)} queued jobs survived and succeeded")
ok = ok and not left
replica.kill(); replica.wait(); redis.kill(); redis.wait()
sys.exit(0 if ok else 1)
