//! # sre-agent
//!
//! An AI site-reliability agent. An incident comes in over the HTTP API ([`api`]), is
//! committed to the store ([`store`]) with a trace id ([`trace`]), and (in later milestones)
//! is handled by its own supervised actor that asks a reasoner what to do and calls tools on
//! three MCP servers, within a safety policy that lives outside the model.
//!
//! Map of the crate (see `ARCHITECTURE.md` for the invariants):
//!
//! - [`config`]: command-line flags with environment fallbacks; every bound has a unit.
//! - [`incident`]: the domain, pure: vocabularies, parsing at the edge, record shapes.
//! - [`trace`]: W3C trace ids.
//! - [`diagnosis`]: runbook signals matched against metrics and logs; the RCA. Pure.
//! - [`policy`]: the safety policy, pure: what may run on its own, what needs a human.
//! - [`workflow`]: the incident's decisions, pure: legal moves, plan, verify, reconcile.
//! - [`store`]: the only module that touches the database (`entity`, `migration`).
//! - [`api`]: axum routes, problem+json errors.
//! - [`app`]: `Application::build(config)` and `run_until_stopped(shutdown)`.

pub mod agent;
pub mod api;
pub mod app;
pub mod config;
pub mod demo;
pub mod diagnosis;
pub mod incident;
pub mod mcp_client;
pub mod mcp_server;
pub mod policy;
pub mod reasoner;
pub mod store;
pub mod trace;
pub mod workflow;
