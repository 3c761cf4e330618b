#!/usr/bin/env python3
"""One round of scripts/stress.sh against a running crunchd: the sequence that once corrupted its heap
(issue 31), with clients that vanish, all bounded in time.

  stress_round.py PORT PHOTO SECONDS

At once, for SECONDS:
  probe      GET /healthz every 2 ms on one kept-alive connection
  hashes     14 password hashes one after another, then a hash and a verify every 100 ms
  thumbnails 4 kept-alive connections posting PHOTO to /v1/image/thumbnail?width=400&format=webp
  vanishing  clients that close mid-upload (part of the body sent) and mid-job (all of it sent,
             gone before the answer), one after another
  info       /v1/image/info of the photo now and then
  async      thumbnails submitted asynchronously (Prefer: respond-async), some with a repeated
             Idempotency-Key, each cancelled at once, cancelled mid-job, or waited for (a long poll)
             and its result checked

Prints one JSON line of counts. Exits 1 when crunchd stopped answering, or answered anything but
200, 503 (overloaded) or 504 (deadline) to a well-formed request.
"""
import json
import random
import socket
import sys
import threading
import time

port = int(sys.argv[1])
photo = open(sys.argv[2], "rb").read()
seconds = float(sys.argv[3])
end = time.monotonic() + seconds
lock = threading.Lock()
counts = {}
failures = []


def count(name, n=1):
    with lock:
        counts[name] = counts.get(name, 0) + n


def fail(what):
    with lock:
        failures.append(what)


def connect(timeout=30.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, buffer):
    """Reads one response with a Content-Length; returns (status, body, rest of the buffer)."""
    while b"\r\n\r\n" not in buffer:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(max(65536, length - len(rest)))
        if not chunk:
            raise ConnectionError("closed inside a response body")
        rest += chunk
    return status, rest[:length], rest[length:]


def request(method, target, body=b"", content_type=None, extra=""):
    head = f"{method} {target} HTTP/1.1\r\nHost: stress\r\n{extra}"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def expect(status, body, what):
    if status in (503, 504):
        count(f"{what}_{status}")
        return
    if status != 200:
        fail(f"{what}: {status} {body[:200]!r}")
    count(f"{what}_200")


def probe():
    s, buffer = connect(), b""
    slowest = 0.0
    due = time.monotonic()
    while time.monotonic() < end:
        due += 0.002
        started = time.monotonic()
        s.sendall(request("GET", "/healthz"))
        status, body, buffer = read_response(s, buffer)
        slowest = max(slowest, time.monotonic() - started)
        if status != 200:
            fail(f"/healthz: {status}")
        count("healthz")
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            due = time.monotonic()
    with lock:
        counts["healthz_slowest_ms"] = round(slowest * 1000, 2)


def hashes():
    s, buffer = connect(), b""
    body = json.dumps({"password": "correct horse battery staple"}).encode()
    for _ in range(14):
        s.sendall(request("POST", "/v1/password/hash", body, "application/json"))
        status, answer, buffer = read_response(s, buffer)
        expect(status, answer, "hash")
        if time.monotonic() > end:
            return
    stored = None
    while time.monotonic() < end:
        s.sendall(request("POST", "/v1/password/hash", body, "application/json"))
        status, answer, buffer = read_response(s, buffer)
        expect(status, answer, "hash")
        if status == 200:
            stored = json.loads(answer)["hash"]
        if stored:
            check = json.dumps({"password": "correct horse battery staple", "hash": stored}).encode()
            s.sendall(request("POST", "/v1/password/verify", check, "application/json"))
            status, answer, buffer = read_response(s, buffer)
            expect(status, answer, "verify")
            if status == 200 and not json.loads(answer)["match"]:
                fail("verify: the password did not match its own hash")
        time.sleep(0.1)


def thumbnails():
    s, buffer = connect(), b""
    message = request("POST", "/v1/image/thumbnail?width=400&format=webp", photo, "image/jpeg")
    while time.monotonic() < end:
        s.sendall(message)
        status, answer, buffer = read_response(s, buffer)
        expect(status, answer, "thumbnail")
        if status == 200 and not (answer[:4] == b"RIFF" and answer[8:12] == b"WEBP"):
            fail("thumbnail: the answer is not a WebP file")


def info():
    message = request("POST", "/v1/image/info", photo, "image/jpeg")
    while time.monotonic() < end:
        s, buffer = connect(), b""
        s.sendall(message)
        status, answer, buffer = read_response(s, buffer)
        expect(status, answer, "info")
        s.close()
        time.sleep(0.25)


def vanishing():
    rng = random.Random(31)
    thumbnail = request("POST", "/v1/image/thumbnail?width=400&format=webp", photo, "image/jpeg")
    while time.monotonic() < end:
        s = connect()
        if rng.random() < 0.5:
            s.sendall(thumbnail[: rng.randrange(64, len(thumbnail))])  # mid-upload
            count("vanished_mid_upload")
        else:
            s.sendall(thumbnail)  # mid-job: gone before the answer
            time.sleep(rng.uniform(0, 0.15))
            count("vanished_mid_job")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        s.close()


def asynchronous():
    rng = random.Random(32)
    s, buffer = connect(), b""
    keys = 0
    while time.monotonic() < end:
        if rng.random() < 0.7:
            keys += 1
        extra = f"Prefer: respond-async\r\nIdempotency-Key: stress-{keys}\r\n"
        s.sendall(request("POST", "/v1/image/thumbnail?width=300&format=webp", photo, "image/jpeg", extra))
        status, answer, buffer = read_response(s, buffer)
        if status == 503:
            count("async_503")
            time.sleep(0.05)
            continue
        if status != 202:
            fail(f"async submit: {status} {answer[:200]!r}")
            continue
        count("async_202")
        job = "/v1/jobs/" + json.loads(answer)["id"]
        fate = rng.random()
        if fate < 0.25:
            s.sendall(request("DELETE", job))  # at once: queued or just started
        elif fate < 0.5:
            time.sleep(rng.uniform(0, 0.1))
            s.sendall(request("DELETE", job))  # mid-job, or after it
        else:
            s.sendall(request("GET", job, extra="Prefer: wait=30\r\n"))
        status, answer, buffer = read_response(s, buffer)
        if status != 200:
            fail(f"async {job}: {status} {answer[:200]!r}")
            continue
        state = json.loads(answer)["status"]
        count(f"async_{state}")
        s.sendall(request("GET", job + "/result"))
        status, answer, buffer = read_response(s, buffer)
        if state == "succeeded":
            if status != 200 or not (answer[:4] == b"RIFF" and answer[8:12] == b"WEBP"):
                fail(f"async result of a succeeded job: {status} {answer[:80]!r}")
        elif status != 409:
            fail(f"async result of a job {state}: {status} {answer[:200]!r}")


def guarded(work):
    def run():
        try:
            work()
        except Exception as e:  # a refused or broken connection: crunchd may be gone
            fail(f"{work.__name__}: {type(e).__name__}: {e}")
    return run


threads = [threading.Thread(target=guarded(w)) for w in
           [probe, hashes, thumbnails, thumbnails, thumbnails, thumbnails, vanishing, info, asynchronous]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"counts": counts, "failures": failures[:10]}, sort_keys=True))
sys.exit(1 if failures else 0)
