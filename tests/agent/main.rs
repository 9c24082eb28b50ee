//! The agent end to end: incidents posted to the real API are handled by their actors,
//! through the three MCP servers (spawned over stdio) and a reasoner, over a simulated fleet.
//! Outcomes are read from the API (status, RCA, actions, timeline) and from the fleet's
//! ledger, never from log text.

mod admission;
mod adversarial;
mod alerts;
mod cluster;
#[path = "../support/db.rs"]
mod db;
#[path = "../support/fake_openai.rs"]
mod fake_openai;
mod helpers;
mod metrics;
mod postgres;
mod prometheus;
mod reliability;
mod restart;
mod small_model;
mod stories;
mod storm;
#[path = "../support/tcp_proxy.rs"]
mod tcp_proxy;
