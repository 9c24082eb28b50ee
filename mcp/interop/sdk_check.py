#!/usr/bin/env python3
"""Interoperability check of our MCP servers with a client we did not write.

The client is the official Python MCP SDK (PyPI `mcp`, pinned in
requirements.txt next to this file). The script:

  * starts `sre-fleet` on a free loopback port, waits for /healthz and
    injects the `oom-kill` scenario;
  * for each of mapping-mcp, observability-mcp and remediation-mcp, over
    stdio (the SDK spawns the binary) and over streamable HTTP (this script
    starts the binary with `--transport http`), connects with the SDK's
    default `Client` (mode "auto": a `server/discover` probe that falls back
    to the `initialize` handshake), lists the tools, checks their names and
    input schemas, calls every tool with valid arguments and one with bad
    arguments, passes `_meta.trace_id` and looks for it in the server's log;
  * checks idempotency: two `restart-pod` calls with the same idempotencyKey
    leave exactly one entry for that key in the fleet ledger;
  * connects once more per server and transport with mode "legacy" (the
    plain `initialize` handshake older clients use).

Every wait is bounded, every child process is stopped at the end, one line
is printed per check and the last line is `N passed, M failed`. The exit
code is 0 only if every check passed.

Usage (from the repository root):
    python3 mcp/interop/sdk_check.py --bin-dir target/debug
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

SERVERS = ("mapping-mcp", "observability-mcp", "remediation-mcp")
TRANSPORTS = ("stdio", "http")
NEEDS_FLEET = {"observability-mcp", "remediation-mcp"}

# Tool name -> (documented argument names, arguments that must be required).
EXPECTED_TOOLS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "mapping-mcp": {
        "map-alert-to-service": (("alertType",), ("alertType",)),
        "get-runbook": (("serviceName",), ("serviceName",)),
    },
    "observability-mcp": {
        "get-logs": (("serviceName", "timeRange"), ("serviceName",)),
        "get-metrics": (("serviceName",), ("serviceName",)),
    },
    "remediation-mcp": {
        "restart-pod": (("podName", "idempotencyKey"), ("podName",)),
        "send-notification": (("message", "severity", "idempotencyKey"), ("message", "severity")),
    },
}
OPTIONAL_ARGS = {"idempotencyKey"}

SERVICE = "checkout-api"
ALERT = "CheckoutApiOOMKilled"


# --------------------------------------------------------------------------- report


class Report:
    """Prints one line per check and counts them."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL {name}: {detail}", flush=True)

    def check(self, name: str, cond: bool, fail_detail: str, ok_detail: str = "") -> bool:
        if cond:
            self.ok(name, ok_detail)
        else:
            self.fail(name, fail_detail)
        return cond


def short(value: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(e: BaseException) -> str:
    """One-line account of an exception, naming timeouts as such."""
    if isinstance(e, TimeoutError):
        return f"timed out ({type(e).__name__}{': ' + str(e) if str(e) else ''})"
    text = f"{type(e).__name__}: {e}"
    error = getattr(e, "error", None)
    if error is not None and getattr(error, "data", None) is not None:
        text += f" data={short(error.data)}"
    return text


def strings_in(value: Any):
    """Every string (keys and values) inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


def mentions(value: Any, needle: str, *, exact: bool = True) -> bool:
    needle_l = needle.lower()
    for s in strings_in(value):
        if (s == needle) if exact else (needle_l in s.lower()):
            return True
    return False


# --------------------------------------------------------------------------- processes


class Processes:
    """Child processes this script started itself; all are stopped in stop_all()."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[str, str] = {}

    def log_path(self, label: str) -> str:
        path = os.path.join(self.log_dir, label.replace(" ", "_") + ".log")
        self.logs[label] = path
        return path

    def start(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_path(label), "wb")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        finally:
            log.close()
        self.children.append((label, proc))
        return proc

    def stop_all(self, grace: float = 3.0) -> None:
        for _, proc in self.children:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    proc.kill()
                    proc.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        self.children.clear()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(data[-lines:])


def log_contains(path: str, needle: str) -> bool:
    try:
        with open(path, "rb") as f:
            return needle.encode() in f.read()
    except OSError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def http_json(method: str, url: str, timeout: float, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """None when 127.0.0.1:port accepts connections, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before listening"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return None
        except OSError:
            time.sleep(0.1)
    return f"not listening on 127.0.0.1:{port} after {timeout:.0f}s"


def wait_for_healthz(proc: subprocess.Popen[bytes], url: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode}"
        try:
            status, _ = http_json("GET", url, timeout=1.0)
            if status == 200:
                return None
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.1)
    return f"{url} not 200 after {timeout:.0f}s (last: {last})"


# --------------------------------------------------------------------------- the checks


@dataclass
class Ctx:
    args: argparse.Namespace
    report: Report
    procs: Processes
    fleet_url: str = ""
    http_urls: dict[str, str] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)
    oom_pods: list[str] = field(default_factory=list)
    restarts_done: int = 0

    def binary(self, name: str) -> str:
        return os.path.join(self.args.bin_dir, name)

    def server_args(self, name: str) -> list[str]:
        return ["--fleet-url", self.fleet_url] if name in NEEDS_FLEET else []


def tool_result_facts(res: Any) -> tuple[bool, Any, list[str]]:
    """(is_error, structured content, texts) of a CallToolResult."""
    texts = [getattr(c, "text", None) for c in (res.content or [])]
    return bool(res.is_error), res.structured_content, [t for t in texts if isinstance(t, str)]


def check_structured(ctx: Ctx, name: str, res: Any) -> Any:
    """Common checks on a successful call; returns the structured content or None."""
    is_error, sc, texts = tool_result_facts(res)
    if not ctx.report.check(f"{name}: not isError", not is_error, f"isError=true, content={short(texts)}"):
        return None
    if not ctx.report.check(
        f"{name}: structuredContent is a JSON object", isinstance(sc, dict) and bool(sc), f"structuredContent={short(sc)}"
    ):
        return None
    parsed = []
    for t in texts:
        try:
            parsed.append(json.loads(t))
        except ValueError:
            pass
    ctx.report.check(
        f"{name}: text content carries the same JSON",
        sc in parsed,
        f"no text block parses to the structuredContent; texts={short(texts, 200)}",
    )
    return sc


async def exercise(ctx: Ctx, server: str, transport: str) -> None:
    """Full check of one server over one transport with the SDK's default client."""
    import anyio
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    args, report = ctx.args, ctx.report
    label = f"{server} {transport}"
    trace_id = secrets.token_hex(16)
    errlog = None
    if transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        log_path = ctx.procs.log_path(f"{server}-stdio")
        errlog = open(log_path, "w")
        params = StdioServerParameters(command=ctx.binary(server), args=ctx.server_args(server))
        target: Any = stdio_client(params, errlog=errlog)
    else:
        log_path = ctx.procs.logs[f"{server}-http"]
        target = ctx.http_urls[server]

    async def call(name: str, tool: str, arguments: dict[str, Any], **kw: Any) -> Any:
        """call_tool bounded by the op timeout; None (and a FAIL line) on exception."""
        try:
            with anyio.fail_after(args.op_timeout):
                return await client.call_tool(tool, arguments, **kw)
        except MCPError as e:
            report.fail(name, f"JSON-RPC error {e.error.code}: {e.error.message} data={short(e.error.data)}")
        except Exception as e:  # noqa: BLE001 - any failure is a finding to print
            report.fail(name, describe(e))
        return None

    async def bad_call(tool: str, arguments: dict[str, Any], why: str) -> None:
        name = f"{label}: {tool} with {why} -> isError"
        res = await call(name, tool, arguments)
        if res is not None:
            is_error, sc, texts = tool_result_facts(res)
            report.check(name, is_error, f"isError=false, structuredContent={short(sc)}", short(texts, 120))

    try:
        with anyio.fail_after(args.session_timeout):
            client = Client(target, read_timeout_seconds=args.op_timeout)
            async with client:
                report.ok(
                    f"{label}: connect (SDK default mode)",
                    f"protocol {client.protocol_version}, server {getattr(client.server_info, 'name', None)}",
                )

                # tools/list: exact names, documented argument names.
                with anyio.fail_after(args.op_timeout):
                    listing = await client.list_tools()
                tools = {t.name: t for t in listing.tools}
                expected = EXPECTED_TOOLS[server]
                report.check(
                    f"{label}: tools/list names",
                    set(tools) == set(expected),
                    f"got {sorted(tools)}, expected {sorted(expected)}",
                    ", ".join(sorted(tools)),
                )
                for tname, (props, required) in expected.items():
                    tool = tools.get(tname)
                    schema = tool.input_schema if tool else None
                    problems = []
                    if not isinstance(schema, dict):
                        problems.append("no input schema")
                    else:
                        if schema.get("type") != "object":
                            problems.append(f"type={schema.get('type')!r}")
                        have = set((schema.get("properties") or {}).keys())
                        req = set(schema.get("required") or [])
                        if missing := [p for p in props if p not in have]:
                            problems.append(f"properties lack {missing} (have {sorted(have)})")
                        if not_req := [p for p in required if p not in req]:
                            problems.append(f"not required: {not_req}")
                        if wrongly := sorted(req & OPTIONAL_ARGS):
                            problems.append(f"documented optional but required: {wrongly}")
                    report.check(f"{label}: {tname} input schema", not problems, "; ".join(problems), ", ".join(props))

                # Valid calls; the first carries _meta.trace_id.
                meta = {"trace_id": trace_id}
                if server == "mapping-mcp":
                    name = f"{label}: map-alert-to-service {ALERT}"
                    res = await call(name, "map-alert-to-service", {"alertType": ALERT}, meta=meta)
                    if res is not None and (sc := check_structured(ctx, name, res)) is not None:
                        report.check(f"{name}: names {SERVICE}", mentions(sc, SERVICE), f"structuredContent={short(sc)}")
                    name = f"{label}: get-runbook {SERVICE}"
                    res = await call(name, "get-runbook", {"serviceName": SERVICE})
                    if res is not None and (sc := check_structured(ctx, name, res)) is not None:
                        report.check(f"{name}: names {SERVICE}", mentions(sc, SERVICE), f"structuredContent={short(sc)}")
                    await bad_call("get-runbook", {"serviceName": "no-such-service"}, "unknown service")

                elif server == "observability-mcp":
                    name = f"{label}: get-logs {SERVICE} 15m"
                    res = await call(name, "get-logs", {"serviceName": SERVICE, "timeRange": "15m"}, meta=meta)
                    if res is not None and (sc := check_structured(ctx, name, res)) is not None:
                        report.check(
                            f"{name}: logs show the memory trouble",
                            mentions(sc, "OutOfMemory", exact=False) or mentions(sc, "OOM", exact=False),
                            f"neither 'OutOfMemory' nor 'OOM' in structuredContent={short(sc)}",
                        )
                    name = f"{label}: get-metrics {SERVICE}"
                    res = await call(name, "get-metrics", {"serviceName": SERVICE})
                    if res is not None and (sc := check_structured(ctx, name, res)) is not None:
                        pods = sc.get("pods")
                        keys = ("name", "phase", "restarts", "last_termination_reason")
                        ok = isinstance(pods, list) and bool(pods) and all(
                            isinstance(p, dict) and all(k in p for k in keys) for p in pods
                        )
                        if report.check(f"{name}: pods carry {', '.join(keys)}", ok, f"pods={short(pods)}"):
                            oom = [p["name"] for p in pods if p.get("last_termination_reason") == "OOMKilled"]
                            report.check(
                                f"{name}: an OOMKilled pod after oom-kill",
                                bool(oom),
                                f"pods={short(pods)}",
                                ", ".join(oom),
                            )
                            ctx.pods = ctx.pods or [p["name"] for p in pods]
                            ctx.oom_pods = ctx.oom_pods or oom
                    await bad_call("get-logs", {"serviceName": SERVICE, "timeRange": "banana"}, "bad time range")

                else:  # remediation-mcp
                    candidates = ctx.oom_pods + [p for p in ctx.pods if p not in ctx.oom_pods]
                    if not candidates:
                        report.fail(f"{label}: restart-pod", "no pod name known (get-metrics failed earlier)")
                    else:
                        pod = candidates[ctx.restarts_done % len(candidates)]
                        ctx.restarts_done += 1
                        key = f"interop-{transport}-{secrets.token_hex(6)}"
                        name = f"{label}: restart-pod {pod} (1st, key {key})"
                        res1 = await call(name, "restart-pod", {"podName": pod, "idempotencyKey": key}, meta=meta)
                        ok1 = res1 is not None and check_structured(ctx, name, res1) is not None
                        name = f"{label}: restart-pod {pod} (2nd, same key)"
                        res2 = await call(name, "restart-pod", {"podName": pod, "idempotencyKey": key})
                        sc2 = check_structured(ctx, name, res2) if res2 is not None else None
                        ok2 = sc2 is not None
                        if ok2 and "replayed" in sc2:
                            report.check(f"{name}: answer says replayed", sc2["replayed"] is True, f"structuredContent={short(sc2)}")
                        if ok1 and ok2:
                            status, body = await anyio.to_thread.run_sync(
                                lambda: http_json("GET", ctx.fleet_url + "/v1/ledger", args.op_timeout)
                            )
                            entries = body.get("entries") if isinstance(body, dict) else None
                            name = f"{label}: ledger has exactly one entry for key {key}"
                            if not isinstance(entries, list):
                                report.fail(name, f"GET /v1/ledger -> HTTP {status} {short(body)}")
                            else:
                                mine = [e for e in entries if mentions(e, key)]
                                if report.check(
                                    name,
                                    len(mine) == 1 and mentions(mine, "restart", exact=False),
                                    f"{len(mine)} entries: {short(mine)}",
                                    short(mine[0], 200) if mine else "",
                                ):
                                    report.check(
                                        f"{label}: ledger entry carries the _meta.trace_id of the call",
                                        mentions(mine[0], trace_id),
                                        f"trace_id {trace_id} not in {short(mine[0])}",
                                    )
                    name = f"{label}: send-notification info"
                    res = await call(
                        name,
                        "send-notification",
                        {
                            "message": f"sdk interop check over {transport}",
                            "severity": "info",
                            "idempotencyKey": f"interop-note-{secrets.token_hex(6)}",
                        },
                    )
                    if res is not None:
                        check_structured(ctx, name, res)
                    await bad_call("send-notification", {"message": "", "severity": "info"}, "empty message")

                if transport == "http":
                    report.check(
                        f"{label}: server logged _meta.trace_id",
                        await anyio.to_thread.run_sync(
                            lambda: wait_until(lambda: log_contains(log_path, trace_id), args.op_timeout / 2)
                        ),
                        f"trace_id {trace_id} not in the server's stderr",
                    )
    except MCPError as e:
        report.fail(f"{label}: session", f"JSON-RPC error {e.error.code}: {e.error.message} data={short(e.error.data)}")
        return
    except Exception as e:  # noqa: BLE001
        report.fail(f"{label}: session", describe(e))
        return
    finally:
        if errlog is not None:
            errlog.close()

    if transport == "stdio":
        # The SDK has stopped the server process: its stderr is complete.
        report.check(
            f"{label}: server logged _meta.trace_id",
            log_contains(log_path, trace_id),
            f"trace_id {trace_id} not in the server's stderr",
        )


async def legacy_handshake(ctx: Ctx, server: str, transport: str) -> None:
    """Connect with mode='legacy' (plain initialize), list tools, call one tool."""
    import anyio
    from mcp import Client
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

    args, report = ctx.args, ctx.report
    label = f"{server} {transport} legacy handshake"
    errlog = None
    if transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        errlog = open(ctx.procs.log_path(f"{server}-stdio-legacy"), "w")
        target: Any = stdio_client(
            StdioServerParameters(command=ctx.binary(server), args=ctx.server_args(server)), errlog=errlog
        )
    else:
        target = ctx.http_urls[server]
    calls = {
        "mapping-mcp": ("map-alert-to-service", {"alertType": ALERT}),
        "observability-mcp": ("get-metrics", {"serviceName": SERVICE}),
        "remediation-mcp": (
            "send-notification",
            {"message": "sdk interop legacy check", "severity": "info", "idempotencyKey": f"interop-{secrets.token_hex(6)}"},
        ),
    }
    try:
        with anyio.fail_after(args.session_timeout):
            async with Client(target, mode="legacy", read_timeout_seconds=args.op_timeout) as client:
                version = client.protocol_version
                report.check(
                    f"{label}: initialize",
                    version in HANDSHAKE_PROTOCOL_VERSIONS,
                    f"negotiated {version!r}",
                    f"protocol {version}",
                )
                with anyio.fail_after(args.op_timeout):
                    listing = await client.list_tools()
                names = sorted(t.name for t in listing.tools)
                report.check(f"{label}: tools/list names", set(names) == set(EXPECTED_TOOLS[server]), f"got {names}")
                tool, arguments = calls[server]
                with anyio.fail_after(args.op_timeout):
                    res = await client.call_tool(tool, arguments, meta={"trace_id": secrets.token_hex(16)})
                is_error, sc, texts = tool_result_facts(res)
                report.check(
                    f"{label}: {tool}",
                    not is_error and isinstance(sc, dict),
                    f"isError={is_error}, structuredContent={short(sc)}, text={short(texts, 120)}",
                )
    except Exception as e:  # noqa: BLE001
        report.fail(f"{label}: session", describe(e))
    finally:
        if errlog is not None:
            errlog.close()


async def run_checks(ctx: Ctx) -> None:
    import anyio

    args, report, procs = ctx.args, ctx.report, ctx.procs

    def start_fleet() -> bool:
        port = free_port()
        ctx.fleet_url = f"http://127.0.0.1:{port}"
        proc = procs.start("sre-fleet", [ctx.binary("sre-fleet"), "--listen", f"127.0.0.1:{port}"])
        why = wait_for_healthz(proc, ctx.fleet_url + "/healthz", args.startup_timeout)
        if not report.check("sre-fleet: /healthz answers 200", why is None, str(why)):
            return False
        status, body = http_json("POST", ctx.fleet_url + "/v1/scenarios/oom-kill", args.op_timeout)
        return report.check(
            "sre-fleet: inject oom-kill", 200 <= status < 300, f"HTTP {status} {short(body)}", f"HTTP {status}"
        )

    if not await anyio.to_thread.run_sync(start_fleet):
        return

    servers = [s for s in SERVERS if s in args.servers]
    transports = [t for t in TRANSPORTS if t in args.transports]

    if "http" in transports:
        started = {}
        for server in servers:
            port = free_port()
            argv = [ctx.binary(server), "--transport", "http", "--listen", f"127.0.0.1:{port}", *ctx.server_args(server)]
            started[server] = (procs.start(f"{server}-http", argv), port)
        for server, (proc, port) in started.items():
            why = await anyio.to_thread.run_sync(lambda: wait_for_port(proc, port, args.startup_timeout))
            if report.check(f"{server} http: listening", why is None, str(why), f"127.0.0.1:{port}"):
                ctx.http_urls[server] = f"http://127.0.0.1:{port}/mcp"

    # Servers in this order: get-metrics (observability) must see the OOMKilled
    # pod before any restart-pod (remediation) runs.
    for server in servers:
        for transport in transports:
            if transport == "http" and server not in ctx.http_urls:
                report.fail(f"{server} http: session", "server did not start")
                continue
            await exercise(ctx, server, transport)
            await legacy_handshake(ctx, server, transport)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Check our MCP servers with the official Python MCP SDK as the client.")
    p.add_argument("--bin-dir", required=True, help="directory holding sre-fleet, mapping-mcp, observability-mcp, remediation-mcp")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of servers (default: all)")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated subset of stdio,http (default: both)")
    p.add_argument("--op-timeout", type=float, default=10.0, help="seconds for one request (default 10)")
    p.add_argument("--session-timeout", type=float, default=30.0, help="seconds for one client session (default 30)")
    p.add_argument("--startup-timeout", type=float, default=15.0, help="seconds for a server to start (default 15)")
    p.add_argument("--total-timeout", type=float, default=100.0, help="seconds for the whole run (default 100)")
    p.add_argument("--log-dir", help="keep the servers' stderr logs here (default: a temporary directory, removed on success)")
    args = p.parse_args(argv)
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [s for s in args.servers if s not in SERVERS] + [t for t in args.transports if t not in TRANSPORTS]
    if bad:
        p.error(f"unknown server or transport: {', '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()

    missing = [
        n for n in ("sre-fleet", *args.servers) if not os.access(os.path.join(args.bin_dir, n), os.X_OK)
    ]
    if missing:
        for n in missing:
            report.fail(f"binary {n}", f"not found or not executable in --bin-dir {args.bin_dir}")
        print(f"{report.passed} passed, {report.failed} failed", flush=True)
        return 1
    try:
        import anyio
        import mcp  # noqa: F401
    except ImportError as e:
        report.fail("python mcp SDK importable", str(e))
        print(f"{report.passed} passed, {report.failed} failed", flush=True)
        return 1

    keep_logs = args.log_dir is not None
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="mcp-interop-")
    os.makedirs(log_dir, exist_ok=True)
    procs = Processes(log_dir)
    ctx = Ctx(args=args, report=report, procs=procs)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()

    async def bounded() -> None:
        try:
            with anyio.fail_after(args.total_timeout):
                await run_checks(ctx)
        except TimeoutError:
            report.fail("whole run", f"did not finish within --total-timeout {args.total_timeout:.0f}s")

    try:
        anyio.run(bounded)
    except (KeyboardInterrupt, SystemExit) as e:
        report.fail("run", f"stopped early ({type(e).__name__} {getattr(e, 'code', '') or ''})".replace(" )", ")"))
    except Exception as e:  # noqa: BLE001
        report.fail("run", describe(e))
    finally:
        procs.stop_all()
        if report.failed:
            for label, path in sorted(procs.logs.items()):
                tail = log_tail(path)
                if tail:
                    print(f"--- last lines of {label} stderr ---\n{tail}", file=sys.stderr)
            if not keep_logs:
                print(f"server logs kept in {log_dir}", file=sys.stderr)
        elif not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)

    print(f"took {time.monotonic() - started:.1f}s", file=sys.stderr)
    if report.passed + report.failed == 0:
        report.fail("run", "no check ran")
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
