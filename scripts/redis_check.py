#!/usr/bin/env python3
"""Three crunchd replicas on one Redis (--jobs-store redis://): 300 asynchronous jobs submitted
across them, one replica killed with SIGKILL while it runs jobs; every job must end succeeded,
exactly as its synchronous answer, seen from any replica. Then Redis restarts with AOF on and the
jobs still queued survive.
    redis_check.py CRUNCHD WORKDIR"""
import json, os, signal, socket, subprocess, sys, time, urllib.request

crunchd, work = sys.argv[1], sys.argv[2]

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
    assert wait_line(p, "Ready to accept connections"), "redis did not start"
    return p

def start_crunchd(redis_port, claim_after="1s"):
    port = free_port()
    p = subprocess.Popen([crunchd, "--address", "127.0.0.1", "--port", str(port), "--workers", "1",
                          "--jobs-store", f"redis://127.0.0.1:{redis_port}/0", "--jobs-claim-after", claim_after,
                          "--log-level", "warn"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1); break
        except Exception: time.sleep(0.05)
    return p, port

def http(port, path, headers=None, timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e: return e.code, e.read(), dict(e.headers)

FIB = [0, 1]
for _ in range(100): FIB.append(FIB[-1] + FIB[-2])

redis_port = free_port()
redis = start_redis(redis_port, aof=False)
replicas = [start_crunchd(redis_port) for _ in range(3)]
jobs = {}
for i in range(300):
    n = 24 + i % 6
    port = replicas[i % 3][1]
    status, body, headers = http(port, f"/fib/{n}", {"Prefer": "respond-async"})
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
        assert s == 200 and json.loads(result)["result"] == FIB[n], (s, result)
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
# Holds the worker for 5 s; once taken over after the restart its deadline has passed, so it ends
# at once (expired) instead of holding the new replica's one worker.
status, body, _ = http(port, "/fib/60?timeout_ms=5000", {"Prefer": "respond-async"})
for n in range(20, 25):
    status, body, _ = http(port, f"/fib/{n}", {"Prefer": "respond-async"})
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
            if json.loads(result)["result"] == FIB[n]: del left[job_id]
    time.sleep(0.1)
print(f"redis check: AOF restart: {len(queued) - len(left)} of {len(queued)} queued jobs survived and succeeded")
ok = ok and not left
replica.kill(); replica.wait(); redis.kill(); redis.wait()
sys.exit(0 if ok else 1)
