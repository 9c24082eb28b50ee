//! [`PrometheusMetrics`]: `get-metrics` read from a Prometheus server, with the series that
//! kube-state-metrics, cAdvisor, the kubelet and an instrumented HTTP server export.
//!
//! A service's namespace, tier and pod-name patterns come from the catalog. Each family of
//! [`Queries`] is one PromQL instant query, all evaluated at the same instant and run
//! concurrently; the answers are joined on the `pod` label into a [`ServiceMetrics`]. A
//! family that answers nothing leaves its fields at 0 or none and is named in
//! `not_measured`: a missing series is not a reading of zero.
//!
//! Architecture Invariant: values put into a query (namespace, pod regex, service) are
//! escaped for a PromQL string literal, and a template may only place them inside one; no
//! catalog entry can change the shape of a query.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::BackendError;
use crate::catalog::Catalog;
use crate::fleet::model::{PodStatus, ServiceMetrics};

/// Largest answer read from Prometheus, in bytes; a longer one is refused as unavailable.
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest error text of Prometheus repeated to the caller, in characters.
pub const ERROR_CHARS_MAX: usize = 300;
/// Longest connect phase of a request, in milliseconds (within `timeout_ms`).
pub const CONNECT_TIMEOUT_MS_MAX: u64 = 2_000;
/// The placeholders a query template may use, each inside a double-quoted string.
pub const PLACEHOLDERS: [&str; 3] = ["namespace", "pod_regex", "service"];

/// Where Prometheus is and what to ask it.
#[derive(Clone, Debug)]
pub struct PrometheusConfig {
    /// Base URL of the server, like `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Bound of each query, connection included.
    pub timeout_ms: u64,
    pub queries: Queries,
}

/// PromQL templates, one per family of fields, with defaults for the names
/// kube-state-metrics, cAdvisor, the kubelet, postgres_exporter and blackbox_exporter give
/// and for an HTTP server instrumented the usual way. `{namespace}`, `{pod_regex}` and
/// `{service}` are substituted, escaped for a PromQL string literal; they may only stand
/// inside double quotes. Per-pod families must answer with a `pod` label; service families
/// with one value. An empty template is not queried: its fields are not measured.
/// `deploy/prometheus/queries.toml` holds the defaults, documented.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queries {
    /// One series per pod, with its `uid`: which pods exist.
    pub pod_info: String,
    /// Per pod: creation, Unix seconds.
    pub pod_created_seconds: String,
    /// Per pod: its phase, as the `phase` label of the series with value 1.
    pub pod_phase: String,
    /// Per pod: why a container waits (`reason` label), which overrides `Running`.
    pub container_waiting_reason: String,
    /// Per pod: 1 when ready.
    pub pod_ready: String,
    /// Per pod: container restarts.
    pub container_restarts: String,
    /// Per pod: why the previous container ended (`reason` label).
    pub last_terminated_reason: String,
    pub last_terminated_exit_code: String,
    /// Per pod: when the previous container ended, Unix seconds.
    pub last_terminated_seconds: String,
    /// Per pod: when the current container started, Unix seconds.
    pub container_started_seconds: String,
    pub memory_working_set_bytes: String,
    pub memory_limit_bytes: String,
    /// Per pod: CPU in use, in cores.
    pub cpu_cores: String,
    /// Per pod: fraction of CFS periods throttled (0–1).
    pub cpu_throttled_ratio: String,
    /// Per pod: fraction of its volume in use (0–1).
    pub disk_used_ratio: String,
    /// Desired replicas; absent, the number of pods found.
    pub replicas: String,
    /// Fraction of requests failing (0–1).
    pub error_ratio: String,
    pub latency_p99_seconds: String,
    pub connections: String,
    pub replication_lag_seconds: String,
    /// When the serving certificate expires, Unix seconds.
    pub certificate_expiry_seconds: String,
}

/// The pods of the service: `namespace` and `pod` matchers every default query uses.
const POD_SELECTOR: &str = r#"namespace="{namespace}",pod=~"{pod_regex}""#;

impl Default for Queries {
    fn default() -> Self {
        let pods = |template: &str| template.replace("{pods}", POD_SELECTOR);
        Queries {
            pod_info: pods("kube_pod_info{{pods}}"),
            pod_created_seconds: pods("kube_pod_created{{pods}}"),
            pod_phase: pods("kube_pod_status_phase{{pods}} == 1"),
            container_waiting_reason: pods("kube_pod_container_status_waiting_reason{{pods}} == 1"),
            pod_ready: pods(r#"kube_pod_status_ready{{pods},condition="true"}"#),
            container_restarts: pods(
                "sum by (namespace, pod) (kube_pod_container_status_restarts_total{{pods}})",
            ),
            last_terminated_reason: pods(
                "kube_pod_container_status_last_terminated_reason{{pods}} == 1",
            ),
            last_terminated_exit_code: pods(
                "kube_pod_container_status_last_terminated_exitcode{{pods}}",
            ),
            last_terminated_seconds: pods(
                "kube_pod_container_status_last_terminated_timestamp{{pods}}",
            ),
            container_started_seconds: pods(
                "max by (namespace, pod) (kube_pod_container_state_started{{pods}})",
            ),
            memory_working_set_bytes: pods(
                r#"sum by (namespace, pod) (container_memory_working_set_bytes{{pods},container!="",container!="POD"})"#,
            ),
            memory_limit_bytes: pods(
                r#"sum by (namespace, pod) (kube_pod_container_resource_limits{{pods},resource="memory"})"#,
            ),
            cpu_cores: pods(
                r#"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{pods},container!="",container!="POD"}[1m]))"#,
            ),
            cpu_throttled_ratio: pods(
                "sum by (namespace, pod) (rate(container_cpu_cfs_throttled_periods_total{{pods}}[1m])) / sum by (namespace, pod) (rate(container_cpu_cfs_periods_total{{pods}}[1m]))",
            ),
            disk_used_ratio: pods(
                "max by (namespace, pod) (kubelet_volume_stats_used_bytes / kubelet_volume_stats_capacity_bytes * on (namespace, persistentvolumeclaim) group_left (pod) kube_pod_spec_volumes_persistentvolumeclaims_info{{pods}})",
            ),
            replicas: r#"sum(kube_deployment_spec_replicas{namespace="{namespace}",deployment="{service}"}) or sum(kube_statefulset_replicas{namespace="{namespace}",statefulset="{service}"})"#.to_owned(),
            error_ratio: pods(
                r#"sum(rate(http_requests_total{{pods},code=~"5.."}[1m])) / sum(rate(http_requests_total{{pods}}[1m]))"#,
            ),
            latency_p99_seconds: pods(
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{pods}}[1m])))",
            ),
            connections: r#"sum(pg_stat_activity_count{namespace="{namespace}",service="{service}"})"#.to_owned(),
            replication_lag_seconds: r#"max(pg_replication_lag_seconds{namespace="{namespace}",service="{service}"})"#.to_owned(),
            certificate_expiry_seconds: r#"min(probe_ssl_earliest_cert_expiry{namespace="{namespace}",service="{service}"})"#.to_owned(),
        }
    }
}

/// The families, in the order [`Queries::families`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    PodInfo,
    PodCreated,
    PodPhase,
    WaitingReason,
    PodReady,
    Restarts,
    LastReason,
    LastExitCode,
    LastTerminated,
    Started,
    MemoryUsed,
    MemoryLimit,
    Cpu,
    Throttled,
    Disk,
    Replicas,
    ErrorRatio,
    Latency,
    Connections,
    ReplicationLag,
    CertificateExpiry,
}

impl Queries {
    /// Parses a TOML file of templates: unknown keys are refused, missing ones keep their
    /// default, and each template is checked.
    pub fn from_toml(text: &str) -> Result<Queries, String> {
        let queries: Queries =
            toml::from_str(text).map_err(|e| format!("prometheus queries: {e}"))?;
        queries.check()?;
        Ok(queries)
    }

    /// Checks that every template uses only known placeholders, each inside a string.
    pub fn check(&self) -> Result<(), String> {
        for (key, _, template) in self.families() {
            substitute(template, &[]).map_err(|e| format!("prometheus query {key}: {e}"))?;
        }
        Ok(())
    }

    fn families(&self) -> [(&'static str, Family, &str); 21] {
        [
            ("pod_info", Family::PodInfo, &self.pod_info),
            (
                "pod_created_seconds",
                Family::PodCreated,
                &self.pod_created_seconds,
            ),
            ("pod_phase", Family::PodPhase, &self.pod_phase),
            (
                "container_waiting_reason",
                Family::WaitingReason,
                &self.container_waiting_reason,
            ),
            ("pod_ready", Family::PodReady, &self.pod_ready),
            (
                "container_restarts",
                Family::Restarts,
                &self.container_restarts,
            ),
            (
                "last_terminated_reason",
                Family::LastReason,
                &self.last_terminated_reason,
            ),
            (
                "last_terminated_exit_code",
                Family::LastExitCode,
                &self.last_terminated_exit_code,
            ),
            (
                "last_terminated_seconds",
                Family::LastTerminated,
                &self.last_terminated_seconds,
            ),
            (
                "container_started_seconds",
                Family::Started,
                &self.container_started_seconds,
            ),
            (
                "memory_working_set_bytes",
                Family::MemoryUsed,
                &self.memory_working_set_bytes,
            ),
            (
                "memory_limit_bytes",
                Family::MemoryLimit,
                &self.memory_limit_bytes,
            ),
            ("cpu_cores", Family::Cpu, &self.cpu_cores),
            (
                "cpu_throttled_ratio",
                Family::Throttled,
                &self.cpu_throttled_ratio,
            ),
            ("disk_used_ratio", Family::Disk, &self.disk_used_ratio),
            ("replicas", Family::Replicas, &self.replicas),
            ("error_ratio", Family::ErrorRatio, &self.error_ratio),
            (
                "latency_p99_seconds",
                Family::Latency,
                &self.latency_p99_seconds,
            ),
            ("connections", Family::Connections, &self.connections),
            (
                "replication_lag_seconds",
                Family::ReplicationLag,
                &self.replication_lag_seconds,
            ),
            (
                "certificate_expiry_seconds",
                Family::CertificateExpiry,
                &self.certificate_expiry_seconds,
            ),
        ]
    }
}

/// A value escaped for a double-quoted PromQL string literal.
pub fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The RE2 regular expression matching any of `globs` (`*`: any run of characters,
/// everything else literal). Prometheus anchors a matcher's regex at both ends.
pub fn glob_regex(globs: &[String]) -> String {
    let alternatives: Vec<String> = globs
        .iter()
        .map(|glob| {
            let mut re = String::with_capacity(glob.len() + 8);
            for c in glob.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '\\' | '.' | '+' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^'
                    | '$' => {
                        re.push('\\');
                        re.push(c);
                    }
                    c => re.push(c),
                }
            }
            re
        })
        .collect();
    match alternatives.as_slice() {
        [one] => one.clone(),
        _ => alternatives
            .iter()
            .map(|a| format!("(?:{a})"))
            .collect::<Vec<_>>()
            .join("|"),
    }
}

/// `template` with each `{name}` placeholder replaced by its value from `values`, escaped
/// for a string literal. A placeholder outside a double-quoted string, or not one of
/// [`PLACEHOLDERS`], is refused; with `values` empty, only the template is checked. Braces
/// that are not a placeholder (label matchers) are kept.
fn substitute(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut in_string = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if in_string && c == '\\' {
            let escaped: String = rest.chars().take(2).collect();
            out.push_str(&escaped);
            rest = &rest[escaped.len()..];
            continue;
        }
        if c == '"' {
            in_string = !in_string;
        }
        if c == '{'
            && let Some(end) = rest.find('}')
            && rest[1..end]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
            && end > 1
        {
            let name = &rest[1..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}: known are {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
            if !in_string {
                return Err(format!(
                    "placeholder {{{name}}} stands outside a double-quoted string"
                ));
            }
            if let Some((_, value)) = values.iter().find(|(k, _)| *k == name) {
                out.push_str(&escape_string(value));
            }
            rest = &rest[end + 1..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if in_string {
        return Err("a double-quoted string is not closed".into());
    }
    Ok(out)
}

/// One series of an instant vector: its labels and value.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// At most [`ERROR_CHARS_MAX`] characters of `text`.
fn clip(text: &str) -> String {
    text.chars().take(ERROR_CHARS_MAX).collect()
}

/// Prometheus's answer (`status` an HTTP status, `body` its bytes) to an instant query, as
/// its samples: a vector's series, or a scalar as one series without labels. Non-finite
/// values are dropped: they are no reading.
fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<Sample>, BackendError> {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let refused = |a: &Answer| {
        format!(
            "{}: {}",
            clip(a.error_type.as_deref().unwrap_or("error")),
            clip(a.error.as_deref().unwrap_or("no reason given"))
        )
    };
    match (status, &answer) {
        (200, Some(a)) if a.status == "success" => {}
        (400 | 422, Some(a)) if a.status == "error" => {
            return Err(BackendError::Invalid(format!(
                "prometheus refused the query: {}",
                refused(a)
            )));
        }
        (_, Some(a)) if a.status == "error" => {
            return Err(BackendError::Unavailable(format!(
                "prometheus answered {status}: {}",
                refused(a)
            )));
        }
        (200, _) => {
            return Err(BackendError::Unavailable(
                "unreadable prometheus answer".into(),
            ));
        }
        _ => {
            return Err(BackendError::Unavailable(format!(
                "prometheus answered {status}"
            )));
        }
    }
    let data = answer
        .and_then(|a| a.data)
        .ok_or_else(|| BackendError::Unavailable("prometheus answer without data".into()))?;
    let unreadable = |e: serde_json::Error| {
        BackendError::Unavailable(format!("unreadable prometheus {}: {e}", data.result_type))
    };
    let samples = match data.result_type.as_str() {
        "vector" => serde_json::from_value::<Vec<VectorSample>>(data.result.clone())
            .map_err(unreadable)?
            .into_iter()
            .map(|s| (s.metric, s.value.1))
            .collect(),
        "scalar" => {
            let (_, value) =
                serde_json::from_value::<(f64, String)>(data.result.clone()).map_err(unreadable)?;
            vec![(BTreeMap::new(), value)]
        }
        other => {
            return Err(BackendError::Invalid(format!(
                "a prometheus query answered a {}, not an instant vector",
                clip(other)
            )));
        }
    };
    Ok(samples
        .into_iter()
        .filter_map(|(labels, value): (BTreeMap<String, String>, String)| {
            let value: f64 = value.parse().ok()?;
            value.is_finite().then_some(Sample { labels, value })
        })
        .collect())
}

/// `get-metrics` from a Prometheus server.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    /// The query endpoint, `<url>/api/v1/query`.
    query_url: reqwest::Url,
    http: reqwest::Client,
    queries: Arc<Queries>,
    catalog: Arc<Catalog>,
}

impl PrometheusMetrics {
    /// Checks the configuration: an http(s) URL with a host, and the query templates.
    pub fn new(config: PrometheusConfig, catalog: Arc<Catalog>) -> Result<Self, String> {
        let base = reqwest::Url::parse(&config.url)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && !u.cannot_be_a_base()
            })
            .ok_or_else(|| {
                format!(
                    "--prometheus-url {:?} is not an http(s) URL with a host",
                    clip(&config.url)
                )
            })?;
        let mut query_url = base;
        query_url
            .path_segments_mut()
            .map_err(|()| "--prometheus-url cannot take a path".to_owned())?
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
        config.queries.check()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(
                config.timeout_ms.min(CONNECT_TIMEOUT_MS_MAX),
            ))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(PrometheusMetrics {
            query_url,
            http,
            queries: Arc::new(config.queries),
            catalog,
        })
    }

    /// The service's pods and their state as Prometheus sees them now.
    pub async fn metrics(
        &self,
        service: &str,
        trace_id: Option<&str>,
    ) -> Result<ServiceMetrics, BackendError> {
        let entry = self.catalog.service(service).ok_or_else(|| {
            BackendError::NotFound(format!("no service named {} in the catalog", clip(service)))
        })?;
        let default_globs = [format!("{service}-*")];
        let globs = match entry.pod_patterns() {
            [] => &default_globs[..],
            globs => globs,
        };
        let pod_regex = glob_regex(globs);
        let values = [
            ("namespace", entry.namespace.as_str()),
            ("pod_regex", pod_regex.as_str()),
            ("service", service),
        ];
        let now = Utc::now();
        let time = format!("{:.3}", now.timestamp_millis() as f64 / 1000.0);
        let mut tasks = tokio::task::JoinSet::new();
        for (key, family, template) in self.queries.families() {
            if template.trim().is_empty() {
                continue;
            }
            let query = substitute(template, &values)
                .map_err(|e| BackendError::Invalid(format!("prometheus query {key}: {e}")))?;
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("query", &query)
                .append_pair("time", &time)
                .finish();
            let mut request = self
                .http
                .post(self.query_url.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form);
            if let Some(t) = trace_id {
                request = request.header("x-trace-id", t);
            }
            tasks.spawn(async move { (family, query_once(request).await) });
        }
        let mut answers = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (family, answer) = joined.map_err(|e| {
                BackendError::Unavailable(format!("a prometheus query did not finish: {e}"))
            })?;
            answers.insert(family, answer?);
        }
        // The pod patterns of two services can overlap (`payments-*`, `payments-db-*`): a
        // pod is listed only under the service it belongs to most specifically, so another
        // service's pod never stands as this one's (and inherits its tier's autonomy).
        if let Some(infos) = answers.get_mut(&Family::PodInfo) {
            infos.retain(|s| {
                s.labels.get("pod").is_some_and(|pod| {
                    self.catalog.pod_owner(&entry.namespace, pod) == Some(service)
                })
            });
        }
        let selector = format!(
            "namespace=\"{}\", pod=~\"{}\"",
            escape_string(&entry.namespace),
            escape_string(&pod_regex)
        );
        assemble(
            service,
            &entry.namespace,
            entry.tier.as_str(),
            &selector,
            &answers,
            now,
        )
    }
}

/// Sends one query and reads its answer, at most [`RESPONSE_BYTES_MAX`] of it.
async fn query_once(request: reqwest::RequestBuilder) -> Result<Vec<Sample>, BackendError> {
    let unavailable = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "failed"
        };
        BackendError::Unavailable(format!("prometheus query {what}: {e}"))
    };
    let mut response = request.send().await.map_err(unavailable)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(BackendError::Unavailable(format!(
                "prometheus answer longer than {RESPONSE_BYTES_MAX} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    parse_answer(status, &body)
}

/// The value of a service-level family: its first sample's.
fn single(answers: &BTreeMap<Family, Vec<Sample>>, family: Family) -> Option<f64> {
    answers.get(&family)?.first().map(|s| s.value)
}

/// The field names a family fills, as `not_measured` names them.
fn field_names(family: Family) -> &'static [&'static str] {
    match family {
        Family::PodInfo => &["pods"],
        Family::PodCreated => &["pods.created_at"],
        Family::PodPhase => &["pods.phase"],
        Family::WaitingReason => &[],
        Family::PodReady => &["pods.ready", "ready_replicas"],
        Family::Restarts => &["pods.restarts"],
        Family::LastReason => &[],
        Family::LastExitCode => &[],
        Family::LastTerminated => &[],
        Family::Started => &["pods.started_at"],
        Family::MemoryUsed => &["pods.memory_used_bytes"],
        Family::MemoryLimit => &["pods.memory_limit_bytes"],
        Family::Cpu => &["pods.cpu_millicores"],
        Family::Throttled => &["pods.cpu_throttled_ratio"],
        Family::Disk => &["pods.disk_used_ratio"],
        Family::Replicas => &[],
        Family::ErrorRatio => &["error_rate"],
        Family::Latency => &["latency_p99_ms"],
        Family::Connections => &["connections"],
        Family::ReplicationLag => &["replication_lag_secs"],
        Family::CertificateExpiry => &["certificate_expires_at"],
    }
}

/// Unix seconds as an instant; none for a value out of range.
fn instant(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || secs.abs() > 1e12 {
        return None;
    }
    DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
}

/// A reading as a non-negative whole number, saturating at `u64::MAX`.
fn to_u64(value: f64) -> u64 {
    // `as` saturates; NaN gives 0.
    value.max(0.0).round() as u64
}

/// A reading as a non-negative whole number, saturating at `u32::MAX`.
fn to_u32(value: f64) -> u32 {
    value.max(0.0).round() as u32
}

/// The [`ServiceMetrics`] the families' `answers` make, evaluated at `now`. Pods are those
/// of `pod_info`; none at all is `NotFound`, naming `selector`.
fn assemble(
    service: &str,
    namespace: &str,
    tier: &str,
    selector: &str,
    answers: &BTreeMap<Family, Vec<Sample>>,
    now: DateTime<Utc>,
) -> Result<ServiceMetrics, BackendError> {
    // The uid of each pod; when a pod name shows two instances, the later created.
    let created: Vec<&Sample> = answers
        .get(&Family::PodCreated)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let created_of = |pod: &str, uid: Option<&str>| -> Option<f64> {
        created
            .iter()
            .filter(|s| s.labels.get("pod").map(String::as_str) == Some(pod))
            .filter(|s| {
                uid.is_none() || s.labels.get("uid").is_none_or(|u| Some(u.as_str()) == uid)
            })
            .map(|s| s.value)
            .reduce(f64::max)
    };
    let mut pods: BTreeMap<String, (String, Option<f64>)> = BTreeMap::new();
    for s in answers.get(&Family::PodInfo).into_iter().flatten() {
        let Some(pod) = s.labels.get("pod") else {
            continue;
        };
        let uid = s.labels.get("uid").cloned().unwrap_or_default();
        let at = created_of(pod, Some(&uid));
        let newer = pods
            .get(pod)
            .is_none_or(|(_, known)| at.unwrap_or(f64::MIN) > known.unwrap_or(f64::MIN));
        if newer {
            pods.insert(pod.clone(), (uid, at));
        }
    }
    if pods.is_empty() {
        return Err(BackendError::NotFound(format!(
            "prometheus has no kube_pod_info series for service {service}: the selector {selector} matched nothing"
        )));
    }
    let unmeasured = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let missing = |family: Family| {
        unmeasured.borrow_mut().insert(family);
    };
    // Per pod: the value of `family` and, for label families, the label `label`.
    let per_pod = |family: Family, pod: &str, uid: &str| -> Option<&Sample> {
        let samples = answers.get(&family)?;
        samples
            .iter()
            .filter(|s| s.labels.get("pod").map(String::as_str) == Some(pod))
            .find(|s| s.labels.get("uid").is_none_or(|u| u == uid))
    };
    let mut statuses = Vec::with_capacity(pods.len());
    for (name, (uid, created_secs)) in &pods {
        let value = |family: Family| -> Option<f64> {
            let v = per_pod(family, name, uid).map(|s| s.value);
            if v.is_none() {
                missing(family);
            }
            v
        };
        let created_at = created_secs.and_then(instant);
        if created_at.is_none() {
            missing(Family::PodCreated);
        }
        let ready = value(Family::PodReady).is_some_and(|v| v >= 1.0);
        let restarts = value(Family::Restarts).map_or(0, to_u32);
        let started_at = value(Family::Started).and_then(instant);
        let memory_used_bytes = value(Family::MemoryUsed).map_or(0, to_u64);
        let memory_limit_bytes = value(Family::MemoryLimit).map_or(0, to_u64);
        let cpu_millicores = value(Family::Cpu).map_or(0, |cores| to_u32(cores * 1000.0));
        let cpu_throttled_ratio = value(Family::Throttled).map_or(0.0, |r| r.clamp(0.0, 1.0));
        let disk_used_ratio = value(Family::Disk).map_or(0.0, |r| r.clamp(0.0, 1.0));
        let label = |family: Family, key: &str| {
            per_pod(family, name, uid).and_then(|s| s.labels.get(key).cloned())
        };
        let phase = label(Family::PodPhase, "phase");
        if phase.is_none() {
            missing(Family::PodPhase);
        }
        let waiting = label(Family::WaitingReason, "reason");
        let phase = match (phase, waiting) {
            (Some(p), Some(reason)) if p == "Running" => reason,
            (Some(p), _) => p,
            (None, _) => "Unknown".to_owned(),
        };
        let last_exit_code = per_pod(Family::LastExitCode, name, uid)
            .map(|s| s.value)
            .filter(|v| (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(v))
            .map(|v| v as i32);
        let last_terminated_at =
            per_pod(Family::LastTerminated, name, uid).and_then(|s| instant(s.value));
        let created_at = created_at.unwrap_or(DateTime::UNIX_EPOCH);
        statuses.push(PodStatus {
            name: name.clone(),
            uid: uid.clone(),
            created_at,
            phase,
            ready,
            restarts,
            last_termination_reason: label(Family::LastReason, "reason"),
            last_exit_code,
            last_terminated_at,
            memory_used_bytes,
            memory_limit_bytes,
            cpu_millicores,
            cpu_throttled_ratio,
            disk_used_ratio,
            started_at: started_at.unwrap_or(created_at),
        });
    }
    let service_value = |family: Family| {
        let v = single(answers, family);
        if v.is_none() {
            missing(family);
        }
        v
    };
    let error_rate = service_value(Family::ErrorRatio).map_or(0.0, |r| r.clamp(0.0, 1.0));
    let latency_p99_ms = service_value(Family::Latency).map_or(0, |secs| to_u64(secs * 1000.0));
    let connections = service_value(Family::Connections).map(to_u32);
    let replication_lag_secs = service_value(Family::ReplicationLag).map(|l| l.max(0.0));
    let certificate_expires_at = service_value(Family::CertificateExpiry).and_then(instant);
    let replicas = single(answers, Family::Replicas).map_or(statuses.len() as u32, to_u32);
    Ok(ServiceMetrics {
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        tier: tier.to_owned(),
        replicas,
        ready_replicas: statuses.iter().filter(|p| p.ready).count() as u32,
        error_rate,
        latency_p99_ms,
        connections,
        replication_lag_secs,
        certificate_expires_at,
        pods: statuses,
        observed_at: now,
        not_measured: unmeasured
            .into_inner()
            .into_iter()
            .flat_map(|f| field_names(f).iter().map(|n| (*n).to_owned()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Arc<Catalog> {
        Arc::new(crate::data::load_catalog(None).expect("the embedded catalog loads"))
    }

    /// A vector answer of `series`: each its labels and value.
    fn vector(series: &[(&[(&str, &str)], f64)]) -> Vec<u8> {
        let result: Vec<serde_json::Value> = series
            .iter()
            .map(|(labels, value)| {
                let metric: BTreeMap<&str, &str> = labels.iter().copied().collect();
                json!({"metric": metric, "value": [1_700_000_000.5, value.to_string()]})
            })
            .collect();
        serde_json::to_vec(
            &json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
        )
        .unwrap()
    }

    fn samples(series: &[(&[(&str, &str)], f64)]) -> Vec<Sample> {
        parse_answer(200, &vector(series)).unwrap()
    }

    const OLD_UID: &str = "00000000-0000-4000-8000-000000000001";
    const UID: &str = "00000000-0000-4000-8000-000000000002";

    /// What Prometheus answers for checkout-api with one crash-looping pod, `checkout-api-a`,
    /// whose previous instance (`OLD_UID`) still shows in `kube_pod_info`, and one healthy pod.
    fn crash_looping() -> BTreeMap<Family, Vec<Sample>> {
        let a = [("pod", "checkout-api-a"), ("uid", UID)];
        let old = [("pod", "checkout-api-a"), ("uid", OLD_UID)];
        let b = [("pod", "checkout-api-b"), ("uid", "uid-b")];
        let mut answers = BTreeMap::new();
        answers.insert(
            Family::PodInfo,
            samples(&[(&old, 1.0), (&a, 1.0), (&b, 1.0)]),
        );
        answers.insert(
            Family::PodCreated,
            samples(&[
                (&old, 1_600_000_000.0),
                (&a, 1_700_000_000.0),
                (&b, 1_650_000_000.0),
            ]),
        );
        answers.insert(
            Family::PodPhase,
            samples(&[
                (
                    &[
                        ("pod", "checkout-api-a"),
                        ("uid", UID),
                        ("phase", "Running"),
                    ],
                    1.0,
                ),
                (
                    &[
                        ("pod", "checkout-api-b"),
                        ("uid", "uid-b"),
                        ("phase", "Running"),
                    ],
                    1.0,
                ),
            ]),
        );
        answers.insert(
            Family::WaitingReason,
            samples(&[
                (
                    &[
                        ("pod", "checkout-api-a"),
                        ("uid", UID),
                        ("reason", "CrashLoopBackOff"),
                    ],
                    1.0,
                ),
                // The old instance's series does not belong to the pod now.
                (
                    &[
                        ("pod", "checkout-api-b"),
                        ("uid", OLD_UID),
                        ("reason", "ErrImagePull"),
                    ],
                    1.0,
                ),
            ]),
        );
        answers.insert(Family::PodReady, samples(&[(&a, 0.0), (&b, 1.0)]));
        answers.insert(
            Family::Restarts,
            samples(&[
                (&[("pod", "checkout-api-a")], 4.0),
                (&[("pod", "checkout-api-b")], 0.0),
            ]),
        );
        answers.insert(
            Family::LastReason,
            samples(&[(
                &[
                    ("pod", "checkout-api-a"),
                    ("uid", UID),
                    ("reason", "OOMKilled"),
                ],
                1.0,
            )]),
        );
        answers.insert(Family::LastExitCode, samples(&[(&a, 137.0)]));
        answers.insert(Family::LastTerminated, samples(&[(&a, 1_700_000_100.0)]));
        answers.insert(
            Family::Started,
            samples(&[(&[("pod", "checkout-api-a")], 1_700_000_120.0)]),
        );
        answers.insert(
            Family::MemoryUsed,
            samples(&[(&[("pod", "checkout-api-b")], 1e8)]),
        );
        answers.insert(
            Family::MemoryLimit,
            samples(&[
                (&[("pod", "checkout-api-a")], 536_870_912.0),
                (&[("pod", "checkout-api-b")], 536_870_912.0),
            ]),
        );
        answers.insert(
            Family::Cpu,
            samples(&[(&[("pod", "checkout-api-b")], 0.2504)]),
        );
        answers.insert(Family::Throttled, Vec::new());
        answers.insert(Family::Replicas, samples(&[(&[], 3.0)]));
        answers.insert(Family::ErrorRatio, samples(&[(&[], 0.04)]));
        answers.insert(Family::Latency, samples(&[(&[], 0.48)]));
        answers.insert(
            Family::CertificateExpiry,
            samples(&[(&[], 1_800_000_000.0)]),
        );
        answers
    }

    #[test]
    fn captured_answers_make_the_service_metrics_the_fleet_would_show() {
        let now = DateTime::from_timestamp(1_700_000_200, 0).unwrap();
        let m = assemble(
            "checkout-api",
            "shop",
            "stateless",
            "sel",
            &crash_looping(),
            now,
        )
        .unwrap();
        assert_eq!((m.replicas, m.ready_replicas, m.observed_at), (3, 1, now));
        assert_eq!((m.error_rate, m.latency_p99_ms), (0.04, 480));
        assert_eq!(
            m.certificate_expires_at,
            DateTime::from_timestamp(1_800_000_000, 0)
        );
        assert_eq!((m.connections, m.replication_lag_secs), (None, None));
        let [a, b] = m.pods.as_slice() else {
            panic!("two pods: {:?}", m.pods)
        };
        assert_eq!((a.name.as_str(), a.uid.as_str()), ("checkout-api-a", UID));
        assert_eq!(
            a.created_at,
            DateTime::from_timestamp(1_700_000_000, 0).unwrap()
        );
        assert_eq!(
            (a.phase.as_str(), a.ready, a.restarts),
            ("CrashLoopBackOff", false, 4)
        );
        assert_eq!(a.last_termination_reason.as_deref(), Some("OOMKilled"));
        assert_eq!(a.last_exit_code, Some(137));
        assert_eq!(
            a.last_terminated_at,
            DateTime::from_timestamp(1_700_000_100, 0)
        );
        assert_eq!(
            a.started_at,
            DateTime::from_timestamp(1_700_000_120, 0).unwrap()
        );
        assert_eq!(a.memory_limit_bytes, 536_870_912);
        assert_eq!(
            (b.phase.as_str(), b.ready, b.cpu_millicores),
            ("Running", true, 250)
        );
        assert_eq!(
            (b.memory_used_bytes, b.last_termination_reason.clone()),
            (100_000_000, None)
        );
        // b has no start series: its creation stands in, and the gap is said.
        assert_eq!(b.started_at, b.created_at);
        assert_eq!(
            m.not_measured,
            [
                "pods.started_at",
                "pods.memory_used_bytes",
                "pods.cpu_millicores",
                "pods.cpu_throttled_ratio",
                "pods.disk_used_ratio",
                "connections",
                "replication_lag_secs",
            ]
        );
    }

    #[test]
    fn a_service_whose_selector_matches_no_pod_is_not_found_with_the_selector_named() {
        let mut answers = crash_looping();
        answers.insert(Family::PodInfo, Vec::new());
        let e = assemble(
            "checkout-api",
            "shop",
            "stateless",
            r#"namespace="shop""#,
            &answers,
            Utc::now(),
        )
        .unwrap_err();
        let BackendError::NotFound(message) = e else {
            panic!("{e:?}")
        };
        assert!(
            message.contains(r#"namespace="shop""#) && message.contains("matched nothing"),
            "{message}"
        );
    }

    #[test]
    fn without_replica_series_the_pods_found_are_the_replicas() {
        let mut answers = crash_looping();
        answers.remove(&Family::Replicas);
        let m = assemble(
            "checkout-api",
            "shop",
            "stateless",
            "",
            &answers,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(m.replicas, 2);
    }

    #[test]
    fn prometheus_answers_are_read_and_its_errors_mapped() {
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#;
        assert_eq!(parse_answer(200, scalar).unwrap()[0].value, 0.25);
        let nan = vector(&[(&[("pod", "p")], f64::NAN), (&[("pod", "q")], 2.0)]);
        assert_eq!(
            parse_answer(200, &nan).unwrap().len(),
            1,
            "NaN is no reading"
        );

        let refused = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#;
        match parse_answer(400, refused) {
            Err(BackendError::Invalid(m)) => {
                assert!(m.contains("bad_data: invalid parameter"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let long =
            json!({"status": "error", "errorType": "execution", "error": "x".repeat(10_000)});
        match parse_answer(422, &serde_json::to_vec(&long).unwrap()) {
            Err(BackendError::Invalid(m)) => assert!(m.len() < 2 * ERROR_CHARS_MAX, "bounded"),
            other => panic!("{other:?}"),
        }
        let busy = br#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#;
        assert!(matches!(
            parse_answer(503, busy),
            Err(BackendError::Unavailable(_))
        ));
        assert!(matches!(
            parse_answer(502, b"<html>"),
            Err(BackendError::Unavailable(_))
        ));
        assert!(matches!(
            parse_answer(200, b"{not json"),
            Err(BackendError::Unavailable(_))
        ));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            parse_answer(200, matrix),
            Err(BackendError::Invalid(_))
        ));
        let odd =
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":"x"}]}}"#;
        assert!(matches!(
            parse_answer(200, odd),
            Err(BackendError::Unavailable(_))
        ));
    }

    #[test]
    fn pod_globs_become_an_anchored_regex_with_everything_but_the_star_literal() {
        assert_eq!(glob_regex(&["checkout-api-*".into()]), "checkout-api-.*");
        assert_eq!(glob_regex(&["a.b+c(d)|e*".into()]), r"a\.b\+c\(d\)\|e.*");
        assert_eq!(
            glob_regex(&["db-*".into(), "db.replica-?".into()]),
            r"(?:db-.*)|(?:db\.replica-\?)"
        );
    }

    /// Goal: nothing the catalog holds can leave the string it is put in. Method: hostile
    /// values substituted into a selector; the output's unescaped quotes are the template's.
    #[test]
    fn hostile_values_stay_inside_their_string_literal() {
        let template = r#"up{namespace="{namespace}",pod=~"{pod_regex}",service="{service}"}"#;
        let hostile = r#"x"} or vector(1) or up{a="\"#;
        let out = substitute(
            template,
            &[
                ("namespace", hostile),
                ("pod_regex", "a\\\nb"),
                ("service", "\""),
            ],
        )
        .unwrap();
        let unescaped_quotes = |s: &str| {
            let mut n = 0;
            let mut escaped = false;
            for c in s.chars() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => n += 1,
                    _ => {}
                }
            }
            n
        };
        assert_eq!(unescaped_quotes(&out), unescaped_quotes(template), "{out}");
        assert!(
            out.contains(r#"namespace="x\"} or vector(1) or up{a=\"\\""#),
            "{out}"
        );
        assert!(out.contains(r#"pod=~"a\\\nb""#), "{out}");
        assert!(!out.contains('\n'));
    }

    #[test]
    fn the_example_file_holds_the_defaults() {
        let text = include_str!("../../../deploy/prometheus/queries.toml");
        assert_eq!(Queries::from_toml(text).unwrap(), Queries::default());
        assert_eq!(Queries::from_toml("").unwrap(), Queries::default());
        Queries::default().check().unwrap();
    }

    #[test]
    fn query_files_with_unknown_keys_or_placeholders_are_refused() {
        let refused = [
            ("pod_infos = 'up'", "unknown field"),
            (
                r#"pod_info = 'up{pod="{pod}"}'"#,
                "unknown placeholder {pod}",
            ),
            (
                "pod_info = 'up{namespace}'",
                "outside a double-quoted string",
            ),
            (r#"pod_info = 'up{a="{namespace}}'"#, "not closed"),
            ("pod_info = 3", "invalid type"),
        ];
        for (text, reason) in refused {
            let e = Queries::from_toml(text).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
        let q = Queries::from_toml("connections = ''\nreplicas = 'count(up)'").unwrap();
        assert_eq!(
            (q.connections.as_str(), q.replicas.as_str()),
            ("", "count(up)")
        );
    }

    #[test]
    fn the_url_must_be_http_with_a_host() {
        for url in [
            "",
            "localhost:9090",
            "ftp://x",
            "http://",
            "unix:/run/p.sock",
        ] {
            let config = PrometheusConfig {
                url: url.into(),
                timeout_ms: 1_000,
                queries: Queries::default(),
            };
            let e = PrometheusMetrics::new(config, catalog()).unwrap_err();
            assert!(e.contains("--prometheus-url"), "{url}: {e}");
        }
        let bad = Queries {
            pod_info: "up{namespace}".into(),
            ..Queries::default()
        };
        let config = PrometheusConfig {
            url: "http://p:9090".into(),
            timeout_ms: 1_000,
            queries: bad,
        };
        assert!(PrometheusMetrics::new(config, catalog()).is_err());
    }

    /// A stand-in Prometheus on a loopback port: answers every query with `answer` (status,
    /// body) and records the queries and `x-trace-id` headers it got.
    async fn stand_in(
        answer: (u16, Vec<u8>),
    ) -> (String, Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>) {
        use axum::http::{HeaderMap, StatusCode};
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/prom/api/v1/query",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let record = record.clone();
                let answer = answer.clone();
                async move {
                    let query = url::form_urlencoded::parse(body.as_bytes())
                        .find(|(k, _)| k == "query")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    let trace = headers
                        .get("x-trace-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record.lock().unwrap().push((query, trace));
                    (StatusCode::from_u16(answer.0).unwrap(), answer.1)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/prom", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn backend(url: &str) -> PrometheusMetrics {
        let config = PrometheusConfig {
            url: url.into(),
            timeout_ms: 2_000,
            queries: Queries::default(),
        };
        PrometheusMetrics::new(config, catalog()).unwrap()
    }

    #[tokio::test]
    async fn every_family_is_asked_once_with_the_trace_id_and_the_service_selector() {
        let body = vector(&[(
            &[
                ("pod", "checkout-api-x"),
                ("uid", "u"),
                ("phase", "Running"),
            ],
            1.0,
        )]);
        let (url, seen) = stand_in((200, body)).await;
        let m = backend(&url)
            .metrics("checkout-api", Some("trace-7"))
            .await
            .unwrap();
        assert_eq!(m.pods.len(), 1);
        assert_eq!(m.pods[0].phase, "Running");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), Queries::default().families().len());
        assert!(seen.iter().all(|(_, t)| t.as_deref() == Some("trace-7")));
        let info = seen
            .iter()
            .find(|(q, _)| q.starts_with("kube_pod_info"))
            .unwrap();
        assert_eq!(
            info.0,
            r#"kube_pod_info{namespace="shop",pod=~"checkout-api-.*"}"#
        );

        let e = backend(&url)
            .metrics("no-such-service", None)
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::NotFound(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_refused_query_is_invalid_and_a_dead_server_unavailable() {
        let refused = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let (url, _) = stand_in((400, refused.to_vec())).await;
        let e = backend(&url)
            .metrics("checkout-api", None)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            BackendError::Invalid("prometheus refused the query: bad_data: parse error".into())
        );

        let (url, _) = stand_in((200, vec![b' '; RESPONSE_BYTES_MAX + 1])).await;
        let e = backend(&url)
            .metrics("checkout-api", None)
            .await
            .unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("longer than"),
            "{e}"
        );

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = backend(&format!("http://127.0.0.1:{port}"))
            .metrics("checkout-api", None)
            .await
            .unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("prometheus"),
            "{e}"
        );
    }
}
