#!/usr/bin/env bash
# Interop check of the MCP servers with the official Python MCP SDK.
# Creates (or reuses) a venv under target/interop-venv, installs
# mcp/interop/requirements.txt into it, then runs sdk_check.py against the
# binaries in target/debug (override with INTEROP_BIN_DIR). Extra arguments go
# to sdk_check.py. Exit code is the script's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="target/interop-venv"
REQ="mcp/interop/requirements.txt"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" </dev/null
fi

# Reinstall only when requirements.txt changed since the last good install.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install \
        --quiet --no-input -r "$REQ" </dev/null
    echo "$WANT" >"$STAMP"
fi

set +e
"$VENV/bin/python" mcp/interop/sdk_check.py --bin-dir "${INTEROP_BIN_DIR:-target/debug}" "$@" </dev/null
rc=$?
set -e
exit "$rc"
