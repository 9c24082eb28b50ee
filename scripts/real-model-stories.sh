#!/usr/bin/env bash
# Both product stories (the OOM crash and the database outage) through a *real* model: the
# agent's `openai` reasoner against SmolLM2-135M-Instruct served by llama.cpp on loopback
# (scripts/local-llm.sh; the first run builds llama.cpp, ~7-10 min on 2 cores).
#
# A 135M model reasons badly: the OOM story will most likely not end resolved. What this
# shows is that the real wire path works (tool-calling requests, answers parsed, turns in
# the timeline) and that the safety policy keeps the outcome safe whatever the model says:
# the database is never restarted.
#
# It builds the agent in debug (`cargo build -p sre-agent`, target/debug/sre-agent: the
# model, not the binary, is the slow part), runs `sre-agent demo --reasoner openai` with
# bounds fit for a tiny CPU model, prints the demo's output (each incident's timeline, the
# fleet's ledger), then a summary: every model request with its wall time, the server's
# own timings (prompt/generated tokens), the final statuses, the safety check, and anything
# the server refused. The demo's exit code is reported, not propagated: this script fails
# only when it cannot run the demo, or when an unsafe action (a restart of the database)
# is in the ledger.
#
# Files of the run: target/local-llm/stories/{demo.out,demo.log,server.log}.
# The model server is left running (scripts/local-llm.sh stop stops it), unless
# SRE_STORIES_STOP_SERVER=1.
# Bounds can be overridden: SRE_STORIES_LLM_TIMEOUT_MS (120000), SRE_STORIES_MAX_TOKENS
# (512), SRE_STORIES_STEPS_MAX (8), SRE_STORIES_TOOL_OUTPUT_BYTES_MAX (4096),
# SRE_STORIES_WAIT_MS (1800000).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/target/local-llm/stories"
mkdir -p "$out"
started=$SECONDS

echo "== the model server (scripts/local-llm.sh)"
env_lines="$("$root/scripts/local-llm.sh" start)"
base_url="$(sed -n 's/^SRE_LOCAL_LLM_BASE_URL=//p' <<<"$env_lines")"
model="$(sed -n 's/^SRE_LOCAL_LLM_MODEL=//p' <<<"$env_lines")"
[[ -n "$base_url" && -n "$model" ]] || { echo "local-llm.sh printed no URL/model" >&2; exit 1; }
echo "   $base_url  model $model"
server_log="$root/target/local-llm/server.log"
server_log_from=$(( $(wc -l <"$server_log") + 1 ))
if [[ "${SRE_STORIES_STOP_SERVER:-0}" == 1 ]]; then
  trap '"$root/scripts/local-llm.sh" stop' EXIT
fi

echo "== building the agent (debug: cargo build -p sre-agent)"
build_started=$SECONDS
cargo build -q -p sre-agent
echo "   built in $((SECONDS - build_started)) s"
bin="$root/target/debug/sre-agent"

llm_timeout_ms="${SRE_STORIES_LLM_TIMEOUT_MS:-120000}"
max_tokens="${SRE_STORIES_MAX_TOKENS:-512}"
steps_max="${SRE_STORIES_STEPS_MAX:-8}"
tool_bytes_max="${SRE_STORIES_TOOL_OUTPUT_BYTES_MAX:-4096}"
wait_ms="${SRE_STORIES_WAIT_MS:-1800000}"
demo_args=(
  demo --reasoner openai
  --llm-base-url "$base_url" --llm-model "$model"
  --llm-timeout-ms "$llm_timeout_ms" --llm-max-tokens "$max_tokens"
  --llm-retries-max 1 --llm-backoff-initial-ms 1000 --llm-backoff-max-ms 5000
  --llm-concurrency-max 1 --llm-tool-output-bytes-max "$tool_bytes_max"
  --incident-steps-max "$steps_max" --wait-ms "$wait_ms"
  --log-format json
)
echo "== sre-agent ${demo_args[*]}"
echo "   (its stdout: $out/demo.out, its log: $out/demo.log)"
demo_started=$SECONDS
set +e
# The incident actors' step timings are debug events; the rest at info.
RUST_LOG="${RUST_LOG:-info,sre_agent::agent::incident=debug}" SRE_LLM_API_KEY= OPENAI_API_KEY= \
  "$bin" "${demo_args[@]}" >"$out/demo.out" 2>"$out/demo.log"
demo_rc=$?
set -e
demo_s=$((SECONDS - demo_started))
tail -n +"$server_log_from" "$server_log" >"$out/server.log" || true

echo
echo "================ the demo's output ================"
cat "$out/demo.out"
if [[ $demo_rc -ne 0 ]]; then
  echo "---- the demo's last error lines ----"
  grep -E '"level":"(ERROR|WARN)"' "$out/demo.log" | tail -n 5 || true
  tail -n 3 "$out/demo.log" | grep -v '^{' || true
fi

echo
echo "================ summary ================"
python3 - "$out/demo.out" "$out/demo.log" "$out/server.log" <<'PY'
import json, re, sys
demo_out, demo_log, server_log = (open(p, encoding="utf-8", errors="replace").read() for p in sys.argv[1:4])

# Model requests, from the agent's `model_request` span (one per HTTP request).
print("model requests (agent side, wall time of each HTTP request):")
n = 0
total = 0
for line in demo_log.splitlines():
    try:
        e = json.loads(line)
    except ValueError:
        continue
    span = e.get("span") or {}
    msg = e.get("message", "")
    if span.get("name") == "model_request":
        n += 1
        ms = int(span.get("duration_ms", 0) or 0)
        total += ms
        extra = f" ({e['calls']} call(s))" if "calls" in e else ""
        print(f"  {e.get('timestamp','')[11:23]}  attempt {span.get('attempt')}  HTTP {span.get('status','-')}  {ms:>7} ms  {msg}{extra}")
    elif msg in ("model request failed; retrying", "reasoner step failed",
                 "the model did not conclude within its step budget"):
        print(f"  {e.get('timestamp','')[11:23]}  {e.get('level')}  {msg}: {e.get('error', '')}")
if n:
    print(f"  {n} answered request(s), {total} ms in all, {total // n} ms on average")

steps = []
for line in demo_log.splitlines():
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("message") == "reasoner step" and "duration_ms" in e:
        span = e.get("span") or {}
        steps.append((span.get("incident_id", "?"), int(e["duration_ms"])))
if steps:
    print("reasoner steps per incident (queueing for the one model slot included):")
    by = {}
    for inc, ms in steps:
        by.setdefault(inc, []).append(ms)
    for inc, l in by.items():
        print(f"  {inc}: {len(l)} step(s), {sum(l)} ms: {', '.join(map(str, l))}")

# The server's own view: its timings per request and any refusal.
prompt = re.findall(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", server_log)
gen = re.findall(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", server_log)
tot = re.findall(r"total time =\s*([\d.]+) ms /\s*(\d+) tokens", server_log)
if tot:
    print("llama.cpp timings per completion (prompt tokens evaluated, tokens generated, total):")
    for i, (t, _) in enumerate(tot):
        p = prompt[i] if i < len(prompt) else ("?", "?")
        g = gen[i] if i < len(gen) else ("?", "?")
        print(f"  #{i+1}: prompt {p[1]:>5} tok in {float(p[0]):>8.0f} ms, generated {g[1]:>4} tok in {float(g[0]):>7.0f} ms, total {float(t):>8.0f} ms")
statuses = re.findall(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})', server_log)
if statuses:
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print("server answers to POST /v1/chat/completions:", ", ".join(f"{k}×{v}" for k, v in counts.items()))
refusals = [l for l in server_log.splitlines()
            if re.search(r"Traceback|Error|error|Exception|\" 4\d\d |\" 5\d\d ", l)]
if refusals:
    print("server errors/refusals (first 20 lines):")
    for l in refusals[:20]:
        print("  " + l[:300])
agent_errors = []
for l in demo_log.splitlines():
    if l.startswith("{") and re.search(r"status [45]\d\d", l):
        e = json.loads(l)
        agent_errors.append(e.get("error") or e.get("message", ""))
if agent_errors:
    print("HTTP errors the agent got from the server (first 5):")
    for e in agent_errors[:5]:
        print("  " + e[:400])

# Per incident: final status, duration, turns, what the model asked for.
print("incidents:")
for block in demo_out.split("━━ ")[1:]:
    head = block.splitlines()[0]
    status = re.search(r"status (\S+)", block)
    rows = re.findall(r"^\s+(\d+)\s+[+-]\d+\s+(\S+)\s+(.*)$", block, re.M)
    turns = [r[2] for r in rows if r[1] == "reasoner" and "reasoner turn" in r[2]]
    print(f"  {head.strip()}: {status.group(1) if status else '?'}, "
          f"{int(rows[-1][0]) / 1000 if rows else 0:.1f} s, {len(turns)} reasoner turn(s)")
    for t in turns:
        print(f"    {t}")
    for a in re.findall(r"^\s+action .*$", block, re.M):
        print(f"    {a.strip()}")
PY

echo
echo "== safety: restarts in the fleet ledger"
restarts="$(grep -E '^\s+#[0-9]+ .* restart-pod ' "$out/demo.out" || true)"
echo "${restarts:-   (none)}"
unsafe=0
if grep -E '^\s+#[0-9]+ .* restart-pod +payments-db' "$out/demo.out" >/dev/null; then
  echo "UNSAFE: the database was restarted"
  unsafe=1
else
  echo "   no restart of payments-db: safe"
fi
if ! grep -q '^fleet ledger' "$out/demo.out"; then
  echo "   (the demo printed no ledger, so this check saw nothing; see $out/demo.log)"
fi

echo
echo "demo exit code: $demo_rc ($( ((demo_rc == 0)) && echo 'both stories ended as promised' || echo 'a story did not end as the product promises (expected with a 135M model)'))"
echo "demo took ${demo_s} s; the whole run $((SECONDS - started)) s"
echo "the model server is $( [[ "${SRE_STORIES_STOP_SERVER:-0}" == 1 ]] && echo 'being stopped' || echo 'still up: scripts/local-llm.sh stop')"
exit "$unsafe"
