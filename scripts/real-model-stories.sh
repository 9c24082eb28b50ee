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
# is in the ledger (exit 3).
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
# The demo's own verdict (its last stderr line, not JSON) when it failed.
grep -v '^{' "$out/demo.log" | tail -n 3 || true

echo
echo "================ summary ================"
python3 - "$out/demo.out" "$out/demo.log" "$out/server.log" <<'PY'
import json, re, sys
demo_out, demo_log, server_log = (open(p, encoding="utf-8", errors="replace").read() for p in sys.argv[1:4])
events = []
for line in demo_log.splitlines():
    try:
        events.append(json.loads(line))
    except ValueError:
        pass
names = dict((i, a) for a, i in re.findall(r"^posted (\S+)\s+→ incident (\S+)", demo_out, re.M))

# Every HTTP request the agent made to the model, from its `model_request` span.
print("model requests (agent side: wall time of each HTTP request; one model slot, so")
print("the two incidents' requests queue behind each other):")
answered, total_ms, failures = 0, 0, {}
for e in events:
    span, msg = e.get("span") or {}, e.get("message", "")
    if span.get("name") == "model_request":
        answered += 1
        ms = int(span.get("duration_ms", 0) or 0)
        total_ms += ms
        extra = f" ({e['calls']} call(s))" if "calls" in e else ""
        print(f"  {e.get('timestamp', '')[11:23]}  HTTP {span.get('status', '-')}  {ms / 1000:>6.1f} s  {msg}{extra}")
    elif msg in ("model request failed; retrying", "reasoner step failed",
                 "the model did not conclude within its step budget"):
        key = (msg, str(e.get("error", ""))[:600])
        failures[key] = failures.get(key, 0) + 1
if answered:
    print(f"  {answered} answered, {total_ms / 1000:.1f} s in all, {total_ms / answered / 1000:.1f} s on average")
for (msg, err), count in failures.items():
    print(f"  {count}× {msg}: {err}")

by = {}
for e in events:
    if e.get("message") == "reasoner step" and "duration_ms" in e:
        inc = (e.get("span") or {}).get("incident_id", "?")
        by.setdefault(inc, []).append(int(e["duration_ms"]) / 1000)
if by:
    print("reasoner steps per incident (s; waiting for the model slot included):")
    for inc, l in by.items():
        print(f"  {names.get(inc, inc)}: {len(l)} step(s), {sum(l):.1f} s: {', '.join(f'{x:.1f}' for x in l)}")

# The server's view: llama.cpp's timings (one chat request in tool mode is 2-3 completions)
# and everything it refused.
prompt = [(float(a), int(b)) for a, b in re.findall(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", server_log)]
gen = [(float(a), int(b)) for a, b in re.findall(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", server_log)]
tot = [float(a) for a in re.findall(r"total time =\s*([\d.]+) ms /\s*\d+ tokens", server_log)]
if tot:
    print(f"llama.cpp: {len(tot)} completions, {sum(tot) / 1000:.1f} s in all; "
          f"prompt tokens evaluated {sum(p[1] for p in prompt)} in {sum(p[0] for p in prompt) / 1000:.1f} s; "
          f"tokens generated {sum(g[1] for g in gen)} in {sum(g[0] for g in gen) / 1000:.1f} s")
    if prompt:
        print(f"  largest prompt evaluated at once: {max(p[1] for p in prompt)} tokens")
    sizes = re.findall(r'"prompt_tokens":\s*(\d+)', server_log)
statuses = re.findall(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})', server_log)
if statuses:
    print("server answers to POST /v1/chat/completions: "
          + ", ".join(f"{s}×{statuses.count(s)}" for s in sorted(set(statuses))))
# A refused message is checked against every message type of a union; keep only the
# errors about the type its role names (the others are noise).
details = {}
for l in server_log.splitlines():
    s = l.strip()
    if s.startswith("{'type':"):
        if "'literal_error'" in s and "'role')" in s:
            continue
        kind = re.search(r"'ChatCompletionRequest(\w+?)Message'", s)
        role = re.search(r"'role': '(\w+)'", s)
        if kind and role and kind.group(1).lower() != role.group(1):
            continue
        s = re.sub(r"'input': (.{120}).*", r"'input': \1…", s)
    elif not re.match(r"^[\w.]*(Error|Exception): ", s) or s.startswith("fastapi.exceptions"):
        continue
    details[s] = details.get(s, 0) + 1
if details:
    print("what the server refused (distinct lines of its log, with counts):")
    for s, c in details.items():
        print(f"  {c}× {s[:400]}")

print("incidents:")
for block in demo_out.split("━━ ")[1:]:
    head = block.splitlines()[0]
    status = re.search(r"status (\S+)", block)
    rows = re.findall(r"^\s+(\d+)\s+[+-]\d+\s+(\S+)\s+(.*)$", block, re.M)
    turns = [r[2] for r in rows if r[1] == "reasoner" and "reasoner turn" in r[2]]
    print(f"  {head.strip()}: {status.group(1) if status else '?'} after "
          f"{int(rows[-1][0]) / 1000 if rows else 0:.1f} s, {len(turns)} reasoner turn(s)")
    for r in rows:
        if r[1] in ("reasoner", "tool_call") and ("reasoner turn" in r[2] or "(the agent's own check)" not in r[2]):
            print(f"    {r[2][:200]}")
    for a in re.findall(r"^\s+(?:action .*|root cause .*)$", block, re.M):
        print(f"    {a.strip()[:200]}")
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
# 3, not 1: a failed install or build (set -e) must not read as an unsafe action.
exit "$((unsafe ? 3 : 0))"
