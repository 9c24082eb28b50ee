//! # sre-agent
//!
//! An AI site-reliability agent. An incident comes in over the HTTP API ([`api`]), is
//! committed to the store ([`store`]) with a trace id ([`trace`]), and is handled by its own
//! supervised actor ([`agent`]) that asks a reasoner ([`reasoner`]) what to do and calls
//! tools on three MCP servers ([`mcp_client`]), within a safety policy ([`core::policy`]) that
//! lives outside the model.
//!
//! Map of the crate (see `ARCHITECTURE.md` for the invariants):
//!
//! - [`config`]: command-line flags with environment fallbacks; every bound has a unit.
//! - [`incident`]: the domain, pure: vocabularies, parsing at the edge, record shapes.
//! - [`trace`]: W3C trace ids.
//! - [`core`]: the pure decision core (evidence, diagnosis, the rules recipe, policy,
//!   workflow, pages, findings, text hygiene): no IO, nothing async.
//! - [`lane`]: runtimes on threads of their own: the front lane (the API's connections,
//!   the database writers), a storm's clients.
//! - [`locks`]: one async lock per key (a service's restart plan, a failure's alerts).
//! - [`store`]: the only module that touches the database (`entity`, `migration`).
//! - [`intake`]: alerts in (Alertmanager's webhook, reports): routed to their failure,
//!   recorded on its open incident or opening one.
//! - [`api`]: axum routes, problem+json errors.
//! - [`app`]: `Application::build(config)` and `run_until_stopped(shutdown)`.
//! - [`reasoner`]: the `Reasoner` trait, the transcript, `rules` and `openai`.
//! - [`agent`]: the actors: supervisor, incident actors, the LLM actor, tool routing.
//! - [`mcp_client`]: `McpClientActor`, one long-lived client per MCP server.
//! - [`mcp_server`]: the three MCP servers served from this binary (`sre-agent mcp …`).
//! - [`metrics`]: the agent's own metrics (`GET /metrics`, OpenMetrics text).
//! - [`embedded`]: the simulated fleet and the agent in this process (demo, eval, storm).
//! - [`demo`]: `sre-agent demo`, both stories end to end.
//! - [`eval`]: `sre-agent eval`, scenario cases through any reasoner, scored on the fleet's
//!   ledger (cases and scoring: pure; running them: IO).
//! - [`storm`]: `sre-agent storm`, a storm of alerts with figures (plan, metrics text,
//!   summary: pure; the embedded service and the clients: IO).

pub mod agent;
pub mod api;
pub mod app;
pub mod config;
pub mod core;
pub mod demo;
pub mod embedded;
pub mod eval;
pub mod incident;
pub mod intake;
pub mod lane;
pub mod locks;
pub mod mcp_client;
pub mod mcp_server;
pub mod metrics;
pub mod reasoner;
pub mod store;
pub mod storm;
pub mod trace;
