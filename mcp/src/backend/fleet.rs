//! [`FleetClient`]: the simulated fleet (`sre-fleet`) over HTTP, as every backend at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::{BackendError, Observability, Remediation};
use crate::fleet::model::{
    AppLogRequest, LogLine, LogPage, NotificationRequest, Receipt, RestartOutcome, RestartRequest,
    ServiceMetrics,
};
use crate::timerange::TimeRange;

/// The `sre-fleet` HTTP API as a backend.
#[derive(Clone, Debug)]
pub struct FleetClient {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl FleetClient {
    /// `base` like `http://127.0.0.1:9400`; every request is bounded by `timeout_ms`.
    /// A base that is not an http(s) URL is refused here, at start, not on every call.
    pub fn new(base: &str, timeout_ms: u64) -> Result<Self, String> {
        let base = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| format!("fleet URL {base:?} is not an http(s) URL"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms.min(2_000)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(FleetClient { base, http })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, BackendError> {
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("fleet at {}: {e}", self.base)))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| BackendError::Unavailable(format!("unreadable fleet answer: {e}")));
        }
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("fleet answered {status}"));
        Err(match status.as_u16() {
            404 => BackendError::NotFound(message),
            400 | 422 => BackendError::Invalid(message),
            409 => BackendError::Conflict(message),
            _ => BackendError::Unavailable(message),
        })
    }

    /// Writes an application line to `service`'s log (`POST /v1/services/{name}/logs`):
    /// text from outside reaching the service, for tests and demos. Not part of
    /// [`Observability`]: a real backend cannot write logs.
    pub async fn write_app_log(
        &self,
        service: &str,
        pod: Option<&str>,
        level: &str,
        message: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<LogLine, BackendError> {
        let body = AppLogRequest {
            pod: pod.map(str::to_owned),
            level: Some(level.to_owned()),
            message: message.to_owned(),
            at,
        };
        let request = self
            .http
            .post(self.url(&["v1", "services", service, "logs"]))
            .json(&body);
        self.send(request).await
    }

    /// `base` followed by `segments`, each percent-encoded (they come from tool arguments).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

impl Observability for FleetClient {
    async fn metrics(
        &self,
        service: &str,
        trace_id: Option<&str>,
    ) -> Result<ServiceMetrics, BackendError> {
        let request = self
            .http
            .get(self.url(&["v1", "services", service, "metrics"]));
        self.send(with_trace(request, trace_id)).await
    }

    async fn logs(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
        trace_id: Option<&str>,
    ) -> Result<LogPage, BackendError> {
        let mut request = self
            .http
            .get(self.url(&["v1", "services", service, "logs"]))
            .query(&[("limit", limit.to_string())]);
        request = match range {
            TimeRange::Last(d) => request.query(&[("last_secs", d.num_seconds().to_string())]),
            TimeRange::Between(w) => {
                request.query(&[("start", w.start.to_rfc3339()), ("end", w.end.to_rfc3339())])
            }
        };
        self.send(with_trace(request, trace_id)).await
    }
}

impl Remediation for FleetClient {
    async fn restart_pod(
        &self,
        pod: &str,
        expected_uid: Option<&str>,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<RestartOutcome, BackendError> {
        let body = RestartRequest {
            expected_uid: expected_uid.map(str::to_owned),
            idempotency_key: idempotency_key.map(str::to_owned),
            trace_id: trace_id.map(str::to_owned),
        };
        let request = self
            .http
            .post(self.url(&["v1", "pods", pod, "restart"]))
            .json(&body);
        self.send(with_trace(request, trace_id)).await
    }

    async fn notify(
        &self,
        message: &str,
        severity: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Receipt, BackendError> {
        let body = NotificationRequest {
            message: message.to_owned(),
            severity: severity.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            trace_id: trace_id.map(str::to_owned),
        };
        let request = self
            .http
            .post(self.url(&["v1", "notifications"]))
            .json(&body);
        self.send(with_trace(request, trace_id)).await
    }
}

fn with_trace(request: reqwest::RequestBuilder, trace_id: Option<&str>) -> reqwest::RequestBuilder {
    match trace_id {
        Some(t) => request.header("x-trace-id", t),
        None => request,
    }
}
