//! # mcp
//!
//! The three MCP servers of the sre-agent and the simulated fleet behind them.
//!
//! - [`catalog`]: alert → service mapping and runbooks (data, validated at load).
//! - [`timerange`]: the `timeRange` argument.
//! - [`fleet`]: the simulated cluster (pure simulation, scenarios, wire types, HTTP service).
//! - [`backend`]: the traits the tools call (observability, remediation) and the HTTP client
//!   that implements them against `sre-fleet`; real backends (Prometheus, Kubernetes) plug in
//!   here without touching the tools.
//! - [`servers`]: the rmcp servers `mapping-mcp`, `observability-mcp`, `remediation-mcp`
//!   and what they share (transports, trace ids, argument errors as tool errors).
//! - [`data`]: the embedded data files, or a folder given with `--data-dir`.
//! - [`telemetry`]: logging to stderr for every binary of the project.
//! - [`process`]: the stop signal and exit codes of every binary.

pub mod backend;
pub mod catalog;
pub mod data;
pub mod fleet;
pub mod process;
pub mod servers;
pub mod telemetry;
pub mod timerange;
