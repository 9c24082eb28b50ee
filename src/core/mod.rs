//! The pure core: every decision the agent makes, as functions of data. Nothing here does
//! IO, awaits, spawns, reads a clock it was not given, or touches the database; the actors
//! (`crate::agent`) gather facts, call these, and persist what they return.
//!
//! - [`alerts`]: alerts and the incident they join (one failure, one incident); what
//!   still fires.
//! - [`approval`]: a human's decision on a proposal: what it binds to, when it may be given.
//! - [`evidence`]: observations with provenance (platform, metrics, log) and freshness;
//!   the platform conditions that alone may grant autonomy.
//! - [`diagnosis`]: a runbook's signals matched against fresh metrics and logs; the RCA;
//!   recovery.
//! - [`rules`]: the offline reasoner's recipe (map, runbook, diagnostics, diagnosis).
//! - [`policy`]: what may run alone, what needs a human, what is denied, and why.
//! - [`workflow`]: legal status moves, the plan, verification, reconciliation, the end.
//! - [`page`]: the notification, written from the decisions.
//! - [`findings`]: what a tool call found, as one line of the timeline.
//! - [`text`]: untrusted text made safe to show.

pub mod alerts;
pub mod approval;
pub mod diagnosis;
pub mod evidence;
pub mod findings;
pub mod page;
pub mod policy;
pub mod rules;
pub mod text;
pub mod workflow;
