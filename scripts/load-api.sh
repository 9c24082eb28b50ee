#!/usr/bin/env bash
# Load figures for the HTTP API: POST /incidents and GET /incidents on SQLite, and on
# PostgreSQL when DATABASE_URL_PG (default: the local test database) answers.
# Needs wrk (Debian: apt-get install wrk). Prints wrk's figures; changes nothing else.
# Usage: scripts/load-api.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conns="${2:-32}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p sre-agent
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"checkout-api pod OOMKilled","severity":"critical","alert_type":"CheckoutApiOOMKilled","service":"checkout-api","labels":{"pod":"checkout-api-7d9f-x2k"},"coalesce":false}'
LUA
run() { # name database_url port
  RUST_LOG=warn DATABASE_URL="$2" SRE_LISTEN="127.0.0.1:$3" target/release/sre-agent serve &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$3/readyz" >/dev/null && break; sleep 0.1; done
  echo "== $1: POST /incidents (${secs}s, $conns connections)"
  wrk -t2 -c"$conns" -d"${secs}s" -s "$work/post.lua" --latency "http://127.0.0.1:$3/incidents" \
    | grep -E "Requests/sec|  50%|  99%|Non-2xx|Socket errors"
  echo "== $1: GET /incidents?limit=50"
  wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$3/incidents?limit=50" \
    | grep -E "Requests/sec|  50%|  99%|Non-2xx|Socket errors"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run sqlite "sqlite://$work/load.db" 18180
pg="${DATABASE_URL_PG:-postgres://postgres@127.0.0.1:5432/test}"
if command -v psql >/dev/null && psql "$pg" -qc "select 1" >/dev/null 2>&1; then
  schema="sre_load_$$"
  psql "$pg" -qc "create schema $schema"
  run postgres "$pg?options%5Bsearch_path%5D=$schema" 18181
  psql "$pg" -qc "drop schema $schema cascade" 2>/dev/null
else
  echo "== postgres: not reachable at $pg, skipped"
fi
