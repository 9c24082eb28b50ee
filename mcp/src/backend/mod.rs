//! What the observability and remediation tools need from the world, as two traits, and
//! the backends that implement them: [`fleet`] (the simulated fleet, every part), the
//! Kubernetes API ([`kubernetes`]: pods, logs and events, restarts), Prometheus
//! ([`prometheus`]: metrics) and notification channels ([`notify`]: Slack-compatible and
//! generic JSON webhooks). [`select`] builds the combination the configuration names; the
//! tools do not change.

use std::future::Future;

use crate::fleet::model::{LogPage, Receipt, RestartOutcome, ServiceMetrics};
use crate::timerange::TimeRange;

pub mod fleet;
pub mod kubernetes;
pub mod notify;
pub mod prometheus;
pub mod select;

pub use fleet::FleetClient;

/// Why a backend call failed. Everything but `Unavailable` is the caller's to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The backend's authorization refused the call (Kubernetes RBAC: 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A safety mechanism of the backend held the action (a PodDisruptionBudget: 429 on an
    /// eviction). Not retried blindly: the budget frees up when the service is healthier.
    #[error("{0}")]
    Blocked(String),
    #[error("backend unavailable, retry later: {0}")]
    Unavailable(String),
}

impl BackendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Reads the state of services: metrics and logs.
pub trait Observability: Send + Sync + 'static {
    fn metrics(
        &self,
        service: &str,
        trace_id: Option<&str>,
    ) -> impl Future<Output = Result<ServiceMetrics, BackendError>> + Send;

    /// The newest `limit` log lines of `service` in `range`.
    fn logs(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
        trace_id: Option<&str>,
    ) -> impl Future<Output = Result<LogPage, BackendError>> + Send;
}

/// Changes the world: restarts pods, sends notifications. Both honour idempotency keys.
pub trait Remediation: Send + Sync + 'static {
    /// `expected_uid`: the pod instance the caller diagnosed. When given, only that instance
    /// is restarted; a pod of the same name that is another instance is not touched.
    fn restart_pod(
        &self,
        pod: &str,
        expected_uid: Option<&str>,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> impl Future<Output = Result<RestartOutcome, BackendError>> + Send;

    fn notify(
        &self,
        message: &str,
        severity: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> impl Future<Output = Result<Receipt, BackendError>> + Send;
}
