#!/usr/bin/env bash
# Helpers for the scripts that start servers on loopback. Sourced, not run.

# A TCP port that was free on 127.0.0.1 a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until http://127.0.0.1:PORT/healthz answers 200, for at most 30 s; 1 if it never does.
wait_healthz() {  # PORT
  # Up to 30 s: a crunchd calibrates its job kinds at the workers' low priority before it
  # listens, which takes seconds on a machine whose CPUs are busy with anything else.
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return 0
    sleep 0.05
  done
  echo "nothing answered /healthz on 127.0.0.1:$1 within 30 s" >&2
  return 1
}
