//! `sre-fleet`: the simulated fleet as an HTTP service (axum). The observability and
//! remediation servers talk to it through [`crate::backend::FleetClient`]; tests read its
//! ledger and inbox; a Prometheus can scrape `/metrics`, which shows the fleet's own
//! `fleet_*` series and, under their real names, the kube-state-metrics and `pg_up` series
//! that community alert rules read (`deploy/prometheus/alerts.yml`). Scenarios are injected
//! with `POST /v1/scenarios/{name}` and ended, as an operator's fix by hand, with
//! `DELETE`. Time runs with the wall clock, and `POST /v1/clock/advance` moves it ahead for
//! tests and demos. The same fleet answers as a Kubernetes API server under `/api` and
//! `/apis` ([`super::kube_api`]).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::model::{
    AppLogRequest, Inbox, Ledger, NotificationRequest, PodStatus, RestartRequest, ServiceMetrics,
};
use super::sim::{Fleet, FleetError, LATENCY_BUCKETS_SECONDS, PodCounters};
use crate::catalog::Tier;

/// Most log lines one request may return.
pub const LOG_LINES_PER_REQUEST_MAX: usize = 1_000;
/// Furthest one `advance` call may move the clock.
pub const ADVANCE_SECS_MAX: i64 = 24 * 3600;
/// Capacity of every pod's volume (`kubelet_volume_stats_capacity_bytes`).
pub const VOLUME_CAPACITY_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// The fleet and how far its clock runs ahead of the wall clock.
struct Clocked {
    fleet: Fleet,
    offset: Duration,
    /// What the Kubernetes façade holds besides the fleet (budgets, RBAC refusals).
    kube: super::kube_api::KubeObjects,
}

#[derive(Clone)]
pub struct FleetState(Arc<Mutex<Clocked>>);

impl FleetState {
    pub fn new(fleet: Fleet) -> Self {
        let offset = fleet.now() - Utc::now();
        FleetState(Arc::new(Mutex::new(Clocked {
            fleet,
            offset,
            kube: Default::default(),
        })))
    }

    /// Runs `f` on the fleet brought up to the current simulated instant.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Fleet) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Utc::now() + guard.offset;
        guard.fleet.advance(now);
        f(&mut guard.fleet)
    }

    /// Runs `f` on the Kubernetes façade's own objects.
    pub(crate) fn with_kube<T>(&self, f: impl FnOnce(&mut super::kube_api::KubeObjects) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard.kube)
    }
}

struct ApiError(StatusCode, String);

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        let status = match e {
            FleetError::NotFound(_) => StatusCode::NOT_FOUND,
            FleetError::Invalid(_) => StatusCode::BAD_REQUEST,
            FleetError::Conflict(_) => StatusCode::CONFLICT,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Serves `fleet` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    fleet: Fleet,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(FleetState::new(fleet)))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn router(state: FleetState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(prometheus))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}/metrics", get(service_metrics))
        .route(
            "/v1/services/{name}/logs",
            get(service_logs).post(write_app_log),
        )
        .route("/v1/pods/{pod}/restart", post(restart_pod))
        .route("/v1/notifications", post(notify).get(inbox))
        .route("/v1/ledger", get(ledger))
        .route("/v1/scenarios", get(scenarios))
        .route("/v1/scenarios/{name}", post(inject).delete(end_scenario))
        .route("/v1/clock/advance", post(advance))
        .merge(super::kube_api::router())
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

async fn services(State(s): State<FleetState>) -> Json<serde_json::Value> {
    Json(s.with(|f| json!({ "services": f.service_names().collect::<Vec<_>>() })))
}

async fn service_metrics(State(s): State<FleetState>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(s.with(|f| f.metrics(&name))?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// Look back this many seconds from the fleet's now.
    last_secs: Option<i64>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    limit: Option<usize>,
}

async fn service_logs(
    State(s): State<FleetState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(200).clamp(1, LOG_LINES_PER_REQUEST_MAX);
    let page = s.with(|f| {
        let now = f.now();
        let (start, end) = match (q.last_secs, q.start, q.end) {
            (Some(secs), None, None) if secs > 0 => (now - Duration::seconds(secs), now),
            (None, Some(start), Some(end)) if start < end => (start, end),
            _ => {
                return Err(FleetError::Invalid(
                    "give last_secs > 0, or start < end (RFC 3339)".into(),
                ));
            }
        };
        f.logs(&name, start, end, limit)
    })?;
    Ok(Json(page).into_response())
}

/// Writes an application line to a service's log (text from outside reaching it); 201 with
/// the line.
async fn write_app_log(
    State(s): State<FleetState>,
    Path(name): Path<String>,
    body: Result<Json<AppLogRequest>, JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let line = s.with(|f| {
        f.write_app_log(
            &name,
            req.pod.as_deref(),
            req.level.as_deref().unwrap_or("info"),
            &req.message,
            req.at,
        )
    })?;
    Ok((StatusCode::CREATED, Json(line)).into_response())
}

async fn restart_pod(
    State(s): State<FleetState>,
    Path(pod): Path<String>,
    body: Option<Json<RestartRequest>>,
) -> ApiResult {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    let outcome = s.with(|f| {
        f.restart_pod_instance(
            &pod,
            req.expected_uid.as_deref(),
            req.idempotency_key.as_deref(),
            req.trace_id.as_deref(),
        )
    })?;
    tracing::info!(
        pod = %pod,
        trace_id = req.trace_id.as_deref().unwrap_or("-"),
        replayed = outcome.replayed,
        "restart-pod"
    );
    Ok(Json(outcome).into_response())
}

async fn notify(State(s): State<FleetState>, Json(req): Json<NotificationRequest>) -> ApiResult {
    let receipt = s.with(|f| {
        f.notify(
            &req.message,
            &req.severity,
            req.idempotency_key.as_deref(),
            req.trace_id.as_deref(),
        )
    })?;
    tracing::info!(
        severity = %req.severity,
        trace_id = req.trace_id.as_deref().unwrap_or("-"),
        replayed = receipt.replayed,
        "send-notification"
    );
    Ok(Json(receipt).into_response())
}

async fn inbox(State(s): State<FleetState>) -> Json<Inbox> {
    Json(s.with(|f| Inbox {
        notifications: f.notifications().to_vec(),
    }))
}

async fn ledger(State(s): State<FleetState>) -> Json<Ledger> {
    Json(s.with(|f| Ledger {
        entries: f.ledger().to_vec(),
    }))
}

async fn scenarios(State(s): State<FleetState>) -> Json<serde_json::Value> {
    Json(s.with(|f| {
        json!({
            "available": f.scenario_names().collect::<Vec<_>>(),
            "active": f.active_scenarios(),
        })
    }))
}

async fn inject(State(s): State<FleetState>, Path(name): Path<String>) -> ApiResult {
    s.with(|f| f.inject(&name))?;
    tracing::info!(scenario = %name, "scenario injected");
    Ok((StatusCode::CREATED, Json(json!({ "injected": name }))).into_response())
}

/// Ends an active scenario as if an operator fixed it by hand (see [`Fleet::end`]); 404
/// for a scenario that is unknown or not active.
async fn end_scenario(State(s): State<FleetState>, Path(name): Path<String>) -> ApiResult {
    s.with(|f| f.end(&name))?;
    tracing::info!(scenario = %name, "scenario ended");
    Ok(Json(json!({ "ended": name })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

async fn advance(State(s): State<FleetState>, Json(a): Json<Advance>) -> ApiResult {
    if !(1..=ADVANCE_SECS_MAX).contains(&a.seconds) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("seconds must be from 1 to {ADVANCE_SECS_MAX}"),
        ));
    }
    let mut guard = s.0.lock().unwrap_or_else(|p| p.into_inner());
    guard.offset += Duration::seconds(a.seconds);
    let now = Utc::now() + guard.offset;
    guard.fleet.advance(now);
    Ok(Json(json!({ "now": now })).into_response())
}

/// A metric family: name, type, help, and how to read it.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// A metric family that only some services have.
type OptionalFamily<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);

const POD_FAMILIES: [Family<PodStatus>; 6] = [
    (
        "fleet_pod_ready",
        "gauge",
        "1 when the pod passes readiness",
        |p| f64::from(u8::from(p.ready)),
    ),
    (
        "fleet_pod_restarts_total",
        "counter",
        "container restarts of the pod",
        |p| f64::from(p.restarts),
    ),
    (
        "fleet_pod_memory_used_bytes",
        "gauge",
        "memory in use",
        |p| p.memory_used_bytes as f64,
    ),
    (
        "fleet_pod_memory_limit_bytes",
        "gauge",
        "memory limit",
        |p| p.memory_limit_bytes as f64,
    ),
    (
        "fleet_pod_disk_used_ratio",
        "gauge",
        "fraction of the pod volume in use",
        |p| p.disk_used_ratio,
    ),
    (
        "fleet_pod_cpu_throttled_ratio",
        "gauge",
        "fraction of CPU periods in which the pod was throttled",
        |p| p.cpu_throttled_ratio,
    ),
];

const SERVICE_FAMILIES: [Family<ServiceMetrics>; 2] = [
    (
        "fleet_service_error_ratio",
        "gauge",
        "fraction of requests failing",
        |m| m.error_rate,
    ),
    (
        "fleet_service_latency_p99_seconds",
        "gauge",
        "99th percentile latency",
        |m| m.latency_p99_ms as f64 / 1000.0,
    ),
];

const OPTIONAL_SERVICE_FAMILIES: [OptionalFamily<ServiceMetrics>; 3] = [
    (
        "fleet_service_connections",
        "gauge",
        "open client connections",
        |m| m.connections.map(f64::from),
    ),
    (
        "fleet_service_replication_lag_seconds",
        "gauge",
        "how far the replicas lag behind the primary",
        |m| m.replication_lag_secs,
    ),
    (
        "fleet_service_certificate_expiry_timestamp_seconds",
        "gauge",
        "when the serving TLS certificate expires, in Unix seconds",
        |m| m.certificate_expires_at.map(|t| t.timestamp() as f64),
    ),
];

/// The fleet in the Prometheus text exposition format (version 0.0.4).
async fn prometheus(State(s): State<FleetState>) -> Response {
    let body = s.with(|f| {
        let names: Vec<String> = f.service_names().map(str::to_owned).collect();
        let services: Vec<ServiceMetrics> =
            names.iter().filter_map(|n| f.metrics(n).ok()).collect();
        let labels =
            |m: &ServiceMetrics| format!("service=\"{}\",namespace=\"{}\"", m.service, m.namespace);
        let mut out = String::new();
        for (name, kind, help, read) in POD_FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in &services {
                for p in &m.pods {
                    let _ = writeln!(
                        out,
                        "{name}{{{},pod=\"{}\"}} {}",
                        labels(m),
                        p.name,
                        read(p)
                    );
                }
            }
        }
        for (name, kind, help, read) in SERVICE_FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in &services {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(m), read(m));
            }
        }
        for (name, kind, help, read) in OPTIONAL_SERVICE_FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in &services {
                if let Some(value) = read(m) {
                    let _ = writeln!(out, "{name}{{{}}} {value}", labels(m));
                }
            }
        }
        kube_state_metrics(&mut out, &services);
        let counters: Vec<Vec<PodCounters>> = services
            .iter()
            .map(|m| f.pod_counters(&m.service).unwrap_or_default())
            .collect();
        pod_details(&mut out, &services, &counters);
        let name = "fleet_ledger_entries_total";
        let _ = writeln!(
            out,
            "# HELP {name} mutating calls recorded\n# TYPE {name} counter"
        );
        for action in ["restart-pod", "send-notification"] {
            let n = f.ledger().iter().filter(|e| e.action == action).count();
            let _ = writeln!(out, "{name}{{action=\"{action}\"}} {n}");
        }
        out
    });
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// Said in the HELP of every kube-state-metrics family the fleet shows.
const SERVICE_LABEL_NOTE: &str =
    "service is the app label of the pod or deployment, as a relabel rule copying it would give";

/// The phases kube-state-metrics reports a pod in, one series each.
const KUBE_POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// The readiness conditions kube-state-metrics reports, one series each.
const KUBE_READY_CONDITIONS: [&str; 3] = ["true", "false", "unknown"];

/// The Kubernetes pod phase of a fleet pod: a crash-looping pod is `Running` (its container
/// waits in `CrashLoopBackOff`), as Kubernetes reports it.
fn kube_phase(phase: &str) -> &'static str {
    match phase {
        "Running" | "CrashLoopBackOff" => "Running",
        "Pending" => "Pending",
        "Succeeded" => "Succeeded",
        "Failed" => "Failed",
        _ => "Unknown",
    }
}

/// What kube-state-metrics, and postgres_exporter's `pg_up`, would report of the fleet,
/// under their real names, types and labels, so that community alert rules run on it
/// unchanged. Every series also carries `service`: in a real cluster, a relabel rule
/// copying the pod's `app` label gives it (kube-state-metrics itself shows pod labels only
/// on `kube_pod_labels`). A pod's one container is named after its service; every service
/// is reported as a Deployment, including the stateful ones a real cluster would run as
/// StatefulSets.
fn kube_state_metrics(out: &mut String, services: &[ServiceMetrics]) {
    let pods: Vec<(&ServiceMetrics, &PodStatus)> = services
        .iter()
        .flat_map(|m| m.pods.iter().map(move |p| (m, p)))
        .collect();
    let name = "kube_pod_container_status_restarts_total";
    family(
        out,
        name,
        "counter",
        "The number of container restarts per container",
    );
    for (m, p) in &pods {
        sample(
            out,
            name,
            &container_labels(m, p, None),
            f64::from(p.restarts),
        );
    }
    let name = "kube_pod_container_status_last_terminated_reason";
    family(
        out,
        name,
        "gauge",
        "Describes the last reason the container was in terminated state",
    );
    for (m, p) in &pods {
        if let Some(reason) = p.last_termination_reason.as_deref() {
            sample(
                out,
                name,
                &container_labels(m, p, Some(("reason", reason))),
                1.0,
            );
        }
    }
    let name = "kube_pod_container_status_waiting_reason";
    family(
        out,
        name,
        "gauge",
        "Describes the reason the container is currently in waiting state",
    );
    for (m, p) in &pods {
        if p.phase == "CrashLoopBackOff" {
            let labels = container_labels(m, p, Some(("reason", "CrashLoopBackOff")));
            sample(out, name, &labels, 1.0);
        }
    }
    let name = "kube_pod_status_ready";
    family(
        out,
        name,
        "gauge",
        "Describes whether the pod is ready to serve requests",
    );
    for (m, p) in &pods {
        let ready = if p.ready { "true" } else { "false" };
        for condition in KUBE_READY_CONDITIONS {
            let value = f64::from(u8::from(condition == ready));
            sample(
                out,
                name,
                &pod_labels(m, p, ("condition", condition)),
                value,
            );
        }
    }
    let name = "kube_pod_status_phase";
    family(out, name, "gauge", "The pods current phase");
    for (m, p) in &pods {
        let current = kube_phase(&p.phase);
        for phase in KUBE_POD_PHASES {
            let value = f64::from(u8::from(phase == current));
            sample(out, name, &pod_labels(m, p, ("phase", phase)), value);
        }
    }
    let deployment = |m: &ServiceMetrics| {
        vec![
            ("namespace", m.namespace.clone()),
            ("deployment", m.service.clone()),
            ("service", m.service.clone()),
        ]
    };
    let name = "kube_deployment_spec_replicas";
    family(
        out,
        name,
        "gauge",
        "Number of desired pods for a deployment",
    );
    for m in services {
        sample(out, name, &deployment(m), f64::from(m.replicas));
    }
    let name = "kube_deployment_status_replicas_available";
    family(
        out,
        name,
        "gauge",
        "The number of available replicas per deployment",
    );
    for m in services {
        sample(out, name, &deployment(m), f64::from(m.ready_replicas));
    }
    let name = "pg_up";
    family(
        out,
        name,
        "gauge",
        "Whether PostgreSQL accepts connections (postgres_exporter): 1 when a pod of the database is ready",
    );
    for m in services
        .iter()
        .filter(|m| m.tier == Tier::Database.as_str())
    {
        let labels = vec![
            ("namespace", m.namespace.clone()),
            ("service", m.service.clone()),
        ];
        sample(
            out,
            name,
            &labels,
            f64::from(u8::from(m.ready_replicas > 0)),
        );
    }
}

/// The rest of what a real cluster's exporters say of a pod, under their real names, types
/// and labels (plus `service`, as in [`kube_state_metrics`]), for a Prometheus backend to
/// read the fleet as it reads a cluster: kube-state-metrics' pod info, creation, container
/// start, last termination and memory limit; cAdvisor's working set, CPU and CFS
/// counters; the kubelet's volume stats (every pod has one volume, its claim
/// `data-<pod>`); each pod's requests (`http_requests_total` by `code`) and their latency
/// (`http_request_duration_seconds`, a histogram), as an instrumented server exports them;
/// and postgres_exporter's and blackbox_exporter's gauges for connections, replication lag
/// and certificate expiry. Timestamps are whole Unix seconds, as kube-state-metrics gives
/// them. A pod replaced by its controller shows only its new instance.
fn pod_details(out: &mut String, services: &[ServiceMetrics], counters: &[Vec<PodCounters>]) {
    let pods: Vec<(&ServiceMetrics, &PodStatus, Option<&PodCounters>)> = services
        .iter()
        .zip(counters)
        .flat_map(|(m, c)| {
            m.pods
                .iter()
                .enumerate()
                .map(move |(i, p)| (m, p, c.get(i)))
        })
        .collect();
    let pod = |m: &ServiceMetrics, p: &PodStatus| -> Labels {
        vec![
            ("namespace", m.namespace.clone()),
            ("pod", p.name.clone()),
            ("uid", p.uid.clone()),
            ("service", m.service.clone()),
        ]
    };
    // cAdvisor names a container's pod but not its uid.
    let cadvisor = |m: &ServiceMetrics, p: &PodStatus| -> Labels {
        vec![
            ("namespace", m.namespace.clone()),
            ("pod", p.name.clone()),
            ("container", m.service.clone()),
            ("service", m.service.clone()),
        ]
    };
    let name = "kube_pod_info";
    family(out, name, "gauge", "Information about pod");
    for (m, p, _) in &pods {
        sample(out, name, &pod(m, p), 1.0);
    }
    let name = "kube_pod_created";
    family(out, name, "gauge", "Unix creation timestamp");
    for (m, p, _) in &pods {
        sample(out, name, &pod(m, p), p.created_at.timestamp() as f64);
    }
    let name = "kube_pod_container_state_started";
    family(
        out,
        name,
        "gauge",
        "Start time in unix timestamp for a pod container",
    );
    for (m, p, _) in &pods {
        let labels = container_labels(m, p, None);
        sample(out, name, &labels, p.started_at.timestamp() as f64);
    }
    let name = "kube_pod_container_status_last_terminated_exitcode";
    family(
        out,
        name,
        "gauge",
        "Describes the exit code for the last container in terminated state",
    );
    for (m, p, _) in &pods {
        if let Some(code) = p.last_exit_code {
            sample(out, name, &container_labels(m, p, None), f64::from(code));
        }
    }
    let name = "kube_pod_container_status_last_terminated_timestamp";
    family(
        out,
        name,
        "gauge",
        "Last terminated time for a pod container in unix timestamp",
    );
    for (m, p, _) in &pods {
        if let Some(at) = p.last_terminated_at {
            let labels = container_labels(m, p, None);
            sample(out, name, &labels, at.timestamp() as f64);
        }
    }
    let name = "kube_pod_container_resource_limits";
    family(
        out,
        name,
        "gauge",
        "The number of requested limit resource by a container",
    );
    for (m, p, _) in &pods {
        let mut labels = container_labels(m, p, None);
        labels.pop();
        labels.extend([
            ("resource", "memory".to_owned()),
            ("unit", "byte".to_owned()),
            ("service", m.service.clone()),
        ]);
        sample(out, name, &labels, p.memory_limit_bytes as f64);
    }
    let name = "kube_pod_spec_volumes_persistentvolumeclaims_info";
    family(
        out,
        name,
        "gauge",
        "Information about persistentvolumeclaim volumes in a pod",
    );
    for (m, p, _) in &pods {
        let mut labels = pod(m, p);
        labels.pop();
        labels.extend([
            ("volume", "data".to_owned()),
            ("persistentvolumeclaim", format!("data-{}", p.name)),
            ("service", m.service.clone()),
        ]);
        sample(out, name, &labels, 1.0);
    }
    let name = "container_memory_working_set_bytes";
    family(
        out,
        name,
        "gauge",
        "Current working set of the container in bytes",
    );
    for (m, p, _) in &pods {
        sample(out, name, &cadvisor(m, p), p.memory_used_bytes as f64);
    }
    let counted: [CounterFamily; 3] = [
        (
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds",
            |c| c.cpu_seconds,
        ),
        (
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals",
            |c| c.cfs_periods,
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals",
            |c| c.cfs_throttled_periods,
        ),
    ];
    for (name, help, read) in counted {
        family(out, name, "counter", help);
        for (m, p, c) in &pods {
            if let Some(c) = c {
                sample(out, name, &cadvisor(m, p), read(c));
            }
        }
    }
    let volume = |m: &ServiceMetrics, p: &PodStatus| -> Labels {
        vec![
            ("namespace", m.namespace.clone()),
            ("persistentvolumeclaim", format!("data-{}", p.name)),
            ("service", m.service.clone()),
        ]
    };
    let name = "kubelet_volume_stats_capacity_bytes";
    family(out, name, "gauge", "Capacity in bytes of the volume");
    for (m, p, _) in &pods {
        sample(out, name, &volume(m, p), VOLUME_CAPACITY_BYTES as f64);
    }
    let name = "kubelet_volume_stats_used_bytes";
    family(out, name, "gauge", "Number of used bytes in the volume");
    for (m, p, _) in &pods {
        let used = (VOLUME_CAPACITY_BYTES as f64 * p.disk_used_ratio).round();
        sample(out, name, &volume(m, p), used);
    }
    let server = |m: &ServiceMetrics, p: &PodStatus| -> Labels {
        vec![
            ("namespace", m.namespace.clone()),
            ("pod", p.name.clone()),
            ("service", m.service.clone()),
        ]
    };
    let name = "http_requests_total";
    family(out, name, "counter", "Requests served, by status code");
    for (m, p, c) in &pods {
        if let Some(c) = c {
            for (code, n) in [("200", c.requests - c.errors), ("500", c.errors)] {
                let mut labels = server(m, p);
                labels.insert(2, ("code", code.to_owned()));
                sample(out, name, &labels, n.max(0.0));
            }
        }
    }
    let name = "http_request_duration_seconds";
    family(out, name, "histogram", "Time taken to serve a request");
    for (m, p, c) in &pods {
        let Some(c) = c else { continue };
        let bucket = format!("{name}_bucket");
        for (bound, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&c.latency_buckets) {
            let mut labels = server(m, p);
            labels.insert(2, ("le", bound.to_string()));
            sample(out, &bucket, &labels, *n);
        }
        let mut labels = server(m, p);
        labels.insert(2, ("le", "+Inf".to_owned()));
        sample(out, &bucket, &labels, c.requests);
        sample(
            out,
            &format!("{name}_sum"),
            &server(m, p),
            c.latency_seconds_sum,
        );
        sample(out, &format!("{name}_count"), &server(m, p), c.requests);
    }
    let gauges: [OptionalFamily<ServiceMetrics>; 3] = [
        (
            "pg_stat_activity_count",
            "gauge",
            "number of connections in this state (postgres_exporter)",
            |m| m.connections.map(f64::from),
        ),
        (
            "pg_replication_lag_seconds",
            "gauge",
            "Replication lag behind master in seconds (postgres_exporter)",
            |m| m.replication_lag_secs,
        ),
        (
            "probe_ssl_earliest_cert_expiry",
            "gauge",
            "Returns last SSL chain expiry in unixtime (blackbox_exporter)",
            |m| m.certificate_expires_at.map(|t| t.timestamp() as f64),
        ),
    ];
    for (name, kind, help, read) in gauges {
        family(out, name, kind, help);
        for m in services {
            if let Some(value) = read(m) {
                let labels = vec![
                    ("namespace", m.namespace.clone()),
                    ("service", m.service.clone()),
                ];
                sample(out, name, &labels, value);
            }
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// A counter family of a pod: name, help, and how to read it.
type CounterFamily = (&'static str, &'static str, fn(&PodCounters) -> f64);

/// A container's labels as kube-state-metrics gives them, `extra` (a reason) before
/// `service`.
fn container_labels(
    m: &ServiceMetrics,
    p: &PodStatus,
    extra: Option<(&'static str, &str)>,
) -> Labels {
    let mut labels = vec![
        ("namespace", m.namespace.clone()),
        ("pod", p.name.clone()),
        ("uid", p.uid.clone()),
        ("container", m.service.clone()),
    ];
    labels.extend(extra.map(|(k, v)| (k, v.to_owned())));
    labels.push(("service", m.service.clone()));
    labels
}

/// A pod's labels as kube-state-metrics gives them, with one more (a condition or phase).
fn pod_labels(m: &ServiceMetrics, p: &PodStatus, (key, value): (&'static str, &str)) -> Labels {
    vec![
        ("namespace", m.namespace.clone()),
        ("pod", p.name.clone()),
        ("uid", p.uid.clone()),
        (key, value.to_owned()),
        ("service", m.service.clone()),
    ]
}

/// `# HELP` and `# TYPE` of a family; the HELP says where `service` comes from.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}; {SERVICE_LABEL_NOTE}\n# TYPE {name} {kind}"
    );
}

/// One sample: `name{label="value",…} value`, the label values escaped.
fn sample(out: &mut String, name: &str, labels: &[(&'static str, String)], value: f64) {
    out.push_str(name);
    out.push('{');
    for (i, (key, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{}\"", escape_label_value(v));
    }
    let _ = writeln!(out, "}} {value}");
}

/// A label value as the text exposition format writes it: backslash, double quote and line
/// feed escaped.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_exposition_format_says() {
        assert_eq!(escape_label_value("checkout-api-0"), "checkout-api-0");
        assert_eq!(escape_label_value("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    }

    #[test]
    fn a_crash_looping_pod_is_in_the_running_phase_as_kubernetes_reports_it() {
        assert_eq!(kube_phase("CrashLoopBackOff"), "Running");
        assert_eq!(kube_phase("Running"), "Running");
        assert_eq!(kube_phase("Terminating"), "Unknown");
    }
}
