#!/usr/bin/env python3
"""What one job costs the machine, per kind, and where the I/O thread waits meanwhile.

    python3 bench/per_job.py [CRUNCHD ...]        (default: build/crunchd; SECONDS=3 per window)

For each crunchd given (e.g. a build before a change and one after, alternately in the same run),
and for an idle server and each kind under load (fib /fib/30, password hash and verify at the
defaults, a 12 MP JPEG to a 400 px WebP), over one window of SECONDS: minor page faults,
mmap/munmap calls and function-call interrupts (where TLB shootdowns land on this VM: its TLB
row stays 0) per job — per second when idle — from /proc and `perf stat`, and the I/O thread's
wake-up-to-running delay (p99 / max) from `perf sched`. Loopback only; every load is bounded.
Prints a Markdown table. Needs perf, wrk and the bench binaries (bench/prepare.sh builds them).
"""
import json, os, re, signal, socket, subprocess, sys, tempfile, time, urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
seconds = float(os.environ.get("SECONDS_PER_WINDOW", os.environ.get("SECONDS", "3")))
binaries = sys.argv[1:] or [os.path.join(root, "build", "crunchd")]
photo = os.path.join(root, "bench", "results", "photo-4000x3000.jpg")
os.makedirs(os.path.dirname(photo), exist_ok=True)
if not os.path.exists(photo):
    subprocess.run([os.path.join(root, "build", "make_image"), "4000", "3000", "jpeg", "88", photo], check=True,
                   stdout=subprocess.DEVNULL)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()

def completed(port):
    m = re.search(r'^crunch_jobs_total\{outcome="completed"\} (\S+)', get(port, "/metrics"), re.M)
    return float(m.group(1)) if m else 0.0

def interrupts(name):
    for line in open("/proc/interrupts"):
        if line.split(":")[0].strip() == name:
            return sum(int(x) for x in line.split(":")[1].split() if x.isdigit())
    return 0

def minflt(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])

def io_delays(data, io_tid):
    out = subprocess.run(["perf", "sched", "timehist", "-i", data], capture_output=True, text=True).stdout
    d = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and re.match(r"^\d+\.\d+$", parts[0]) and f"[{io_tid}]" in line and "/" not in parts[2]:
            try: d.append(float(parts[-2]))
            except ValueError: pass
    d.sort()
    if not d: return (0.0, 0.0)
    return (d[min(len(d) - 1, int(0.99 * len(d)))], d[-1])

# Hashes are made once, for the verify load.
def loads(port):
    hashed = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/password/hash", data=b'{"password":"correct horse battery staple"}',
        headers={"Content-Type": "application/json"}), timeout=30).read())["hash"]
    return [
        ("idle", None, {}),
        ("fib /fib/30", ["-c8", f"http://127.0.0.1:{port}/fib/30"], {}),
        ("password hash", ["-c8", "-s", os.path.join(root, "bench", "post.lua"), f"http://127.0.0.1:{port}/v1/password/hash"],
         {"BODY": '{"password":"correct horse battery staple"}'}),
        ("password verify", ["-c8", "-s", os.path.join(root, "bench", "post.lua"), f"http://127.0.0.1:{port}/v1/password/verify"],
         {"BODY": json.dumps({"password": "correct horse battery staple", "hash": hashed})}),
        ("thumbnail", ["-c4", "-s", os.path.join(root, "bench", "post.lua"),
                       f"http://127.0.0.1:{port}/v1/image/thumbnail?width=400&format=webp"],
         {"BODY_FILE": photo, "CONTENT_TYPE": "image/jpeg"}),
    ]

rows = []
for binary in binaries:
    port = free_port()
    server = subprocess.Popen([binary, "--address", "127.0.0.1", "--port", str(port), "--workers", "2", "--log-level", "warn"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            get(port, "/healthz"); break
        except OSError:
            time.sleep(0.1)
    for name, wrk_args, env in loads(port):
        wrk = None
        if wrk_args:
            wrk = subprocess.Popen(["wrk", "-t1", f"-d{int(seconds + 4)}s", "--timeout", "10s"] + wrk_args,
                                   env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "sched.data")
            # perf sched records around the window; the counts are read just before and after perf
            # stat's own `sleep`, so that every figure covers the same SECONDS.
            sched = subprocess.Popen(["perf", "sched", "record", "-q", "-o", data, "--", "sleep", str(seconds + 1)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            jobs0, f0, cal0, t0 = completed(port), minflt(server.pid), interrupts("CAL"), time.monotonic()
            stat = subprocess.run(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_munmap,syscalls:sys_enter_mmap",
                                   "-p", str(server.pid), "--", "sleep", str(seconds)], capture_output=True, text=True).stderr
            jobs, faults, cal = completed(port) - jobs0, minflt(server.pid) - f0, interrupts("CAL") - cal0
            window = time.monotonic() - t0
            sched.wait()
            counts = {l.split(",")[2].split(":")[-1]: float(l.split(",")[0]) for l in stat.splitlines()
                      if l.count(",") >= 2 and l.split(",")[0].replace(".", "").isdigit()}
            p99, worst = io_delays(data, server.pid)
        if wrk:
            wrk.wait()
        per = jobs if jobs > 0 else window
        unit = "job" if jobs > 0 else "s"
        rows.append((os.path.relpath(binary, root) if binary.startswith(root) else binary, name, jobs / window,
                     f"{faults / per:.1f}/{unit}", f"{counts.get('sys_enter_munmap', 0) / per:.2f}/{unit}",
                     f"{counts.get('sys_enter_mmap', 0) / per:.2f}/{unit}", f"{cal / per:.1f}/{unit}",
                     f"{p99:.3f} / {worst:.3f}"))
    server.send_signal(signal.SIGTERM)
    server.wait()

print("| crunchd | load | jobs/s | minor faults | munmap | mmap | function-call interrupts | I/O thread wake-up to running, p99 / max (ms) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {r[7]} |")
