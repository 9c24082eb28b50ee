#!/usr/bin/env bash
# A storm of incidents against the real service, with figures. Builds the release binaries,
# starts the simulated fleet (oom-kill and db-outage injected) and `sre-agent serve` (rules
# reasoner, MCP servers over stdio, a fresh SQLite file, or DATABASE_URL when set), posts
# N incidents from C concurrent clients (a third each: OOM, database outage, an alert
# nobody maps), waits until every one is finished, and prints: POST rate and latency, the
# time until the last incident finished, the final statuses, the restarts in the fleet's
# ledger, and the agent's peak resident memory. Loopback only; every wait is bounded.
#
# Usage: scripts/storm.sh [incidents=2000] [clients=64]
set -euo pipefail
cd "$(dirname "$0")/.."
incidents="${1:-2000}"
clients="${2:-64}"

cargo build --release -q -p sre-agent -p mcp
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fleet_port="$(free_port)"
api_port="$(free_port)"
target/release/sre-fleet --listen "127.0.0.1:$fleet_port" --inject oom-kill,db-outage \
  2>"$work/fleet.log" &
pids+=($!)
RUST_LOG=warn target/release/sre-agent serve --listen "127.0.0.1:$api_port" \
  --database-url "${DATABASE_URL:-sqlite://$work/storm.db}" \
  --fleet-url "http://127.0.0.1:$fleet_port" --db-max-connections 16 \
  --incidents-live-max "${SRE_INCIDENTS_LIVE_MAX:-1000}" 2>"$work/agent.log" &
agent_pid=$!
pids+=("$agent_pid")

python3 - "$api_port" "$fleet_port" "$incidents" "$clients" "$agent_pid" <<'PY'
import json, sys, threading, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

api, fleet = f"http://127.0.0.1:{sys.argv[1]}", f"http://127.0.0.1:{sys.argv[2]}"
n, clients, agent_pid = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")

deadline = time.time() + 60
while True:
    try:
        if call("GET", f"{api}/readyz")[0] == 200:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("the agent did not become ready within 60 s")
    time.sleep(0.2)

peak = {"kib": 0}
stop = threading.Event()
def watch_memory():
    while not stop.is_set():
        try:
            for line in open(f"/proc/{agent_pid}/status"):
                if line.startswith("VmHWM:"):
                    peak["kib"] = int(line.split()[1])
        except OSError:
            pass
        stop.wait(0.5)
threading.Thread(target=watch_memory, daemon=True).start()

kinds = [("CheckoutApiOOMKilled", "checkout-api"), ("PaymentsDbDown", "payments-db"),
         ("SomethingNobodyMapped", "mystery")]
def post(i):
    alert, service = kinds[i % 3]
    t = time.time()
    status, body = call("POST", f"{api}/incidents", {
        "title": f"storm {i}: {alert}", "severity": "high",
        "alert_type": alert, "service": service, "coalesce": False})
    assert status == 202, (status, body)
    return time.time() - t

begun = time.time()
with ThreadPoolExecutor(clients) as pool:
    latencies = sorted(pool.map(post, range(n)))
posted = time.time() - begun

def remaining():
    return sum(len(call("GET", f"{api}/incidents?status={s}&limit=200")[1]["items"])
               for s in ("new", "analyzing", "remediating"))
deadline = time.time() + 600
while remaining():
    if time.time() > deadline:
        sys.exit(f"incidents still unfinished after 600 s: {remaining()}+")
    time.sleep(0.2)
finished = time.time() - begun
stop.set()

statuses, cursor, seen = {}, None, 0
while True:
    url = f"{api}/incidents?limit=200" + (f"&cursor={cursor}" if cursor else "")
    page = call("GET", url)[1]
    for item in page["items"]:
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
        seen += 1
    cursor = page.get("next_cursor")
    if not cursor:
        break
ledger = call("GET", f"{fleet}/v1/ledger")[1]["entries"]
restarts = [e["target"] for e in ledger if e["action"] == "restart-pod"]
keys = [e["idempotency_key"] for e in ledger if e.get("idempotency_key")]

pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
print(f"incidents posted: {n} from {clients} clients in {posted:.2f} s "
      f"({n / posted:.0f}/s); POST latency p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms")
print(f"all {seen} finished {finished:.2f} s after the first POST; statuses: {statuses}")
print(f"fleet ledger: {len(ledger)} entries, restarts {restarts}, "
      f"duplicate idempotency keys: {len(keys) - len(set(keys))}")
print(f"agent peak resident memory (VmHWM): {peak['kib'] / 1024:.1f} MiB")
PY
