//! The simulated fleet as a Kubernetes API server: the paths, objects and status codes a
//! real API server answers for what the agent's Kubernetes backend reads and does, in the
//! `k8s-openapi` types, so the backend is exercised against the real wire format on a
//! machine where no API server can run.
//!
//! Modelled: `GET` pods (list with a label selector, get one), `pods/{name}/log` (since,
//! tail, byte limit, timestamps), core/v1 events of the fleet's platform lines (field
//! selector on `involvedObject`), eviction (`pods/{name}/eviction`, 201; 429 when a
//! PodDisruptionBudget would be violated; 409 when the uid precondition names another
//! instance; 404), delete with a uid precondition (200 with the pod; 409; 404),
//! PodDisruptionBudgets created with `POST` (integer `minAvailable`, `matchLabels`), and 403
//! for what `PUT /v1/kube/forbidden` denies or `PUT /v1/kube/allowed` does not allow (RBAC,
//! set by tests: `"{verb} {resource}"` pairs). Every error is a
//! `Status` object with the reason a real server gives.
//!
//! Not modelled: watches, resource versions, pagination (`continue`), authentication,
//! `matchExpressions` and percentages in budgets, set-based selectors, grace periods (a
//! deleted pod is replaced at once, under the same name: the fleet's controllers behave like
//! a StatefulSet's, where a Deployment's replacement would get a new name), several
//! containers per pod, and the `previous` container's logs.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Event, EventSource, ObjectReference, Pod, PodCondition,
    PodSpec, PodStatus as KubePodStatus, ResourceRequirements,
};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, ListMeta, ObjectMeta, Status, StatusCause, StatusDetails, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use super::http::FleetState;
use super::model::{LogSource, PodStatus, ServiceMetrics};
use super::sim::{Fleet, FleetError};

/// Who the façade says was refused, in 403 messages.
const SERVICE_ACCOUNT: &str = "system:serviceaccount:sre:sre-agent";
/// Most pods one list returns (no pagination is modelled).
const PODS_PER_LIST_MAX: usize = 500;

/// A PodDisruptionBudget as modelled: its integer `minAvailable` and `matchLabels`.
#[derive(Clone, Debug, Default)]
struct Budget {
    min_available: i32,
    match_labels: BTreeMap<String, String>,
}

/// What the façade holds besides the fleet: budgets and RBAC refusals.
#[derive(Clone, Debug, Default)]
pub struct KubeObjects {
    /// Namespace → budget name → budget.
    budgets: BTreeMap<String, BTreeMap<String, Budget>>,
    /// `"{verb} {resource}"` pairs answered 403, e.g. `"create pods/eviction"`.
    forbidden: Vec<String>,
    /// When set, the only pairs allowed (a role's rules); everything else is answered 403.
    allowed: Option<Vec<String>>,
}

/// A kubeconfig naming the fleet at `server` (`http://host:port`) as the cluster, as
/// `kubectl config` would write it (no credentials: the façade checks none).
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sre-fleet\n  cluster:\n    server: {server}\n\
         contexts:\n- name: sre-fleet\n  context:\n    cluster: sre-fleet\n    user: sre-agent\n\
         current-context: sre-fleet\nusers:\n- name: sre-agent\n  user: {{}}\n"
    )
}

/// Writes [`kubeconfig`] for `server` to `path`.
pub fn write_kubeconfig(path: &std::path::Path, server: &str) -> std::io::Result<()> {
    std::fs::write(path, kubeconfig(server))
}

pub fn router() -> Router<FleetState> {
    Router::new()
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod).delete(delete_pod),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route("/api/v1/namespaces/{ns}/pods/{name}/eviction", post(evict))
        .route("/api/v1/namespaces/{ns}/events", get(list_events))
        .route(
            "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
            post(create_budget),
        )
        .route("/v1/kube/forbidden", put(set_forbidden))
        .route("/v1/kube/allowed", put(set_allowed))
}

/// A Kubernetes `Status` failure as the API server sends it.
struct KubeError {
    code: u16,
    reason: &'static str,
    message: String,
    /// Boxed: the error stays small on every path that returns it.
    details: Option<Box<StatusDetails>>,
}

impl KubeError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        KubeError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn pod_not_found(name: &str) -> Self {
        let mut e = KubeError::new(404, "NotFound", format!("pods \"{name}\" not found"));
        e.details = Some(Box::new(StatusDetails {
            name: Some(name.to_owned()),
            kind: Some("pods".into()),
            ..Default::default()
        }));
        e
    }
}

impl IntoResponse for KubeError {
    fn into_response(self) -> Response {
        let status = Status {
            code: Some(i32::from(self.code)),
            details: self.details.map(|d| *d),
            message: Some(self.message),
            metadata: ListMeta::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".into()),
        };
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(status)).into_response()
    }
}

type KubeResult = Result<Response, KubeError>;

/// The 403 a real server gives when RBAC does not allow `verb` on `resource`.
fn authorize(
    s: &FleetState,
    verb: &str,
    resource: &str,
    group: &str,
    ns: &str,
) -> Result<(), KubeError> {
    let rule = format!("{verb} {resource}");
    let refused = s.with_kube(|k| {
        k.forbidden.contains(&rule) || k.allowed.as_ref().is_some_and(|a| !a.contains(&rule))
    });
    if refused {
        let group = if group.is_empty() {
            "\"\"".to_owned()
        } else {
            format!("\"{group}\"")
        };
        return Err(KubeError::new(
            403,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"{SERVICE_ACCOUNT}\" cannot {verb} resource \
                 \"{resource}\" in API group {group} in the namespace \"{ns}\""
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Forbidden {
    rules: Vec<String>,
}

/// Sets the RBAC refusals (`{"rules": ["create pods/eviction", ...]}`); for tests.
async fn set_forbidden(State(s): State<FleetState>, Json(f): Json<Forbidden>) -> StatusCode {
    s.with_kube(|k| k.forbidden = f.rules);
    StatusCode::NO_CONTENT
}

/// Allows only these pairs (`{"rules": ["list pods", ...]}`): a role's rules; for tests.
async fn set_allowed(State(s): State<FleetState>, Json(f): Json<Forbidden>) -> StatusCode {
    s.with_kube(|k| k.allowed = Some(f.rules));
    StatusCode::NO_CONTENT
}

/// The fleet's services in `ns`, with their pods.
fn services_in(f: &Fleet, ns: &str) -> Vec<ServiceMetrics> {
    let names: Vec<String> = f.service_names().map(str::to_owned).collect();
    names
        .iter()
        .filter_map(|n| f.metrics(n).ok())
        .filter(|m| m.namespace == ns)
        .collect()
}

fn labels_of(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), service.to_owned()),
        ("app.kubernetes.io/name".to_owned(), service.to_owned()),
    ])
}

/// Equality-based selector terms (`k=v`, `k==v`, `k!=v`, `k`, `!k`), as a real server
/// parses them; set-based terms are not modelled and refused.
fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> Result<bool, KubeError> {
    let mut all = true;
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let holds = if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).is_none_or(|x| x != v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            !labels.contains_key(k.trim())
        } else if term.contains(['(', ')', ' ']) {
            return Err(KubeError::new(
                400,
                "BadRequest",
                format!(
                    "unable to parse requirement: {term:?} (set-based selectors are not modelled)"
                ),
            ));
        } else {
            labels.contains_key(term)
        };
        all &= holds;
    }
    Ok(all)
}

fn time(at: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos() as i32)
            .unwrap_or_default(),
    )
}

/// A fleet pod as the API server shows it: one container named after its service.
fn pod_object(service: &ServiceMetrics, p: &PodStatus) -> Pod {
    let crash_looping = p.phase == "CrashLoopBackOff";
    let phase = match p.phase.as_str() {
        "Running" | "CrashLoopBackOff" | "Terminating" => "Running",
        "Pending" | "Succeeded" | "Failed" => p.phase.as_str(),
        _ => "Unknown",
    };
    let state = if crash_looping {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some(format!(
                    "back-off restarting failed container {} in pod {}",
                    service.service, p.name
                )),
            }),
            ..Default::default()
        }
    } else {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(p.started_at)),
            }),
            ..Default::default()
        }
    };
    let last_state = p
        .last_termination_reason
        .as_ref()
        .map(|reason| ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(reason.clone()),
                exit_code: p.last_exit_code.unwrap_or(1),
                finished_at: p.last_terminated_at.map(time),
                ..Default::default()
            }),
            ..Default::default()
        });
    let resources = ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(p.memory_limit_bytes.to_string()),
        )])),
        requests: Some(BTreeMap::from([(
            "cpu".to_owned(),
            Quantity(format!("{}m", p.cpu_millicores.max(1))),
        )])),
        ..Default::default()
    };
    let image = format!("registry.example/{}:1.0", service.service);
    Pod {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(service.namespace.clone()),
            uid: Some(p.uid.clone()),
            creation_timestamp: Some(time(p.created_at)),
            labels: Some(labels_of(&service.service)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: service.service.clone(),
                image: Some(image.clone()),
                resources: Some(resources),
                ..Default::default()
            }],
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
        status: Some(KubePodStatus {
            phase: Some(phase.to_owned()),
            start_time: Some(time(p.created_at)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if p.ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: service.service.clone(),
                image,
                image_id: String::new(),
                ready: p.ready,
                restart_count: i32::try_from(p.restarts).unwrap_or(i32::MAX),
                started: Some(!crash_looping),
                state: Some(state),
                last_state,
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The pod `name` in `ns`, with its service.
fn find_pod(f: &Fleet, ns: &str, name: &str) -> Result<(ServiceMetrics, PodStatus), KubeError> {
    services_in(f, ns)
        .into_iter()
        .find_map(|m| {
            let p = m.pods.iter().find(|p| p.name == name)?.clone();
            Some((m, p))
        })
        .ok_or_else(|| KubeError::pod_not_found(name))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<usize>,
}

fn list_json(kind: &str, items: Vec<serde_json::Value>) -> Response {
    Json(serde_json::json!({
        "kind": kind,
        "apiVersion": "v1",
        "metadata": { "resourceVersion": "1" },
        "items": items,
    }))
    .into_response()
}

async fn list_pods(
    State(s): State<FleetState>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> KubeResult {
    authorize(&s, "list", "pods", "", &ns)?;
    let selector = q.label_selector.unwrap_or_default();
    let limit = q.limit.unwrap_or(PODS_PER_LIST_MAX).min(PODS_PER_LIST_MAX);
    let services = s.with(|f| services_in(f, &ns));
    let mut items = Vec::new();
    for m in &services {
        if !selector_matches(&selector, &labels_of(&m.service))? {
            continue;
        }
        for p in &m.pods {
            items.push(serde_json::to_value(pod_object(m, p)).unwrap_or_default());
        }
    }
    items.truncate(limit);
    Ok(list_json("PodList", items))
}

async fn get_pod(
    State(s): State<FleetState>,
    Path((ns, name)): Path<(String, String)>,
) -> KubeResult {
    authorize(&s, "get", "pods", "", &ns)?;
    let (m, p) = s.with(|f| find_pod(f, &ns, &name))?;
    Ok(Json(pod_object(&m, &p)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    container: Option<String>,
    since_seconds: Option<i64>,
    since_time: Option<DateTime<Utc>>,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    #[serde(default)]
    timestamps: bool,
    #[serde(default)]
    previous: bool,
}

/// The pod's application lines as its container wrote them: `LEVEL message`, with the
/// RFC 3339 timestamp first when asked. Platform lines are events, not logs.
async fn pod_log(
    State(s): State<FleetState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> KubeResult {
    authorize(&s, "get", "pods/log", "", &ns)?;
    let text = s.with(|f| -> Result<String, KubeError> {
        let (m, _) = find_pod(f, &ns, &name)?;
        if q.previous {
            // One log per container is kept: the previous run's is not modelled.
            return Err(KubeError::new(
                400,
                "BadRequest",
                format!(
                    "previous terminated container \"{}\" in pod \"{name}\" not found",
                    m.service
                ),
            ));
        }
        if let Some(c) = q.container.as_deref().filter(|c| *c != m.service) {
            return Err(KubeError::new(
                400,
                "BadRequest",
                format!("container {c} is not valid for pod {name}"),
            ));
        }
        let now = f.now();
        let start = match (q.since_seconds, q.since_time) {
            (Some(secs), _) if secs > 0 => now - Duration::seconds(secs),
            (_, Some(t)) => t,
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        let page = f
            .logs(
                &m.service,
                start,
                now,
                super::http::LOG_LINES_PER_REQUEST_MAX,
            )
            .map_err(|e| KubeError::new(500, "InternalError", e.to_string()))?;
        let mut lines: Vec<String> = page
            .lines
            .iter()
            .filter(|l| l.pod == name && l.source == LogSource::Application)
            .map(|l| {
                let body = format!("{} {}", l.level.to_ascii_uppercase(), l.message);
                if q.timestamps {
                    format!(
                        "{} {body}",
                        l.at.to_rfc3339_opts(SecondsFormat::Nanos, true)
                    )
                } else {
                    body
                }
            })
            .collect();
        if let Some(tail) = q.tail_lines {
            let skip = lines.len().saturating_sub(tail);
            lines.drain(..skip);
        }
        let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if let Some(limit) = q.limit_bytes {
            let mut cut = limit.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(text)
    })?;
    Ok(([("content-type", "text/plain")], text).into_response())
}

/// Event reasons as the kubelet gives them, from the fleet's platform lines.
fn event_reason(message: &str) -> &'static str {
    if message.starts_with("Readiness probe failed") || message.starts_with("Liveness probe failed")
    {
        "Unhealthy"
    } else if message.contains("OOMKilled") || message.contains("out of memory") {
        "OOMKilled"
    } else if message.starts_with("Deleted pod") {
        "Killing"
    } else if message.contains("Back-off")
        || message.contains("back-off")
        || message.contains("exited")
    {
        "BackOff"
    } else if message.starts_with("Started") || message.contains("started container") {
        "Started"
    } else {
        "Pulled"
    }
}

async fn list_events(
    State(s): State<FleetState>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> KubeResult {
    authorize(&s, "list", "events", "", &ns)?;
    let mut wanted_pod = None;
    for term in q
        .field_selector
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
    {
        match term.split_once('=') {
            Some(("involvedObject.name", v)) => wanted_pod = Some(v.to_owned()),
            Some(("involvedObject.kind", "Pod")) | Some(("involvedObject.namespace", _)) => {}
            _ => {
                return Err(KubeError::new(
                    400,
                    "BadRequest",
                    format!("field label not supported: {term}"),
                ));
            }
        }
    }
    let items = s.with(|f| {
        let now = f.now();
        let mut items = Vec::new();
        for m in services_in(f, &ns) {
            let Ok(page) = f.logs(
                &m.service,
                now - Duration::hours(1),
                now,
                super::http::LOG_LINES_PER_REQUEST_MAX,
            ) else {
                continue;
            };
            for (i, l) in page.lines.iter().enumerate() {
                if l.source != LogSource::Platform
                    || wanted_pod.as_ref().is_some_and(|w| *w != l.pod)
                {
                    continue;
                }
                let uid = m
                    .pods
                    .iter()
                    .find(|p| p.name == l.pod)
                    .map(|p| p.uid.clone());
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(format!("{}.{:x}{i:04}", l.pod, l.at.timestamp())),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        kind: Some("Pod".into()),
                        name: Some(l.pod.clone()),
                        namespace: Some(ns.clone()),
                        uid,
                        api_version: Some("v1".into()),
                        ..Default::default()
                    },
                    reason: Some(event_reason(&l.message).into()),
                    message: Some(l.message.clone()),
                    type_: Some(
                        if l.level == "warn" {
                            "Warning"
                        } else {
                            "Normal"
                        }
                        .into(),
                    ),
                    first_timestamp: Some(time(l.at)),
                    last_timestamp: Some(time(l.at)),
                    count: Some(1),
                    source: Some(EventSource {
                        component: Some("kubelet".into()),
                        host: Some("node-1".into()),
                    }),
                    reporting_component: Some("kubelet".into()),
                    reporting_instance: Some("node-1".into()),
                    ..Default::default()
                };
                items.push(serde_json::to_value(event).unwrap_or_default());
            }
        }
        items
    });
    Ok(list_json("EventList", items))
}

/// `Operation cannot be fulfilled …` when the uid precondition names another instance.
fn check_uid(
    name: &str,
    pod: &PodStatus,
    options: Option<&DeleteOptions>,
) -> Result<(), KubeError> {
    let wanted = options
        .and_then(|o| o.preconditions.as_ref())
        .and_then(|p| p.uid.as_deref());
    match wanted {
        Some(uid) if uid != pod.uid => Err(KubeError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on Pod \"{name}\": the UID in the precondition \
                 ({uid}) does not match the UID in record ({}). The object might have been \
                 deleted and then recreated",
                pod.uid
            ),
        )),
        _ => Ok(()),
    }
}

fn restart(f: &mut Fleet, name: &str, uid: &str) -> Result<(), KubeError> {
    f.restart_pod_instance(name, Some(uid), None, None)
        .map(|_| ())
        .map_err(|e| match e {
            FleetError::NotFound(_) => KubeError::pod_not_found(name),
            FleetError::Conflict(m) => KubeError::new(409, "Conflict", m),
            FleetError::Invalid(m) => KubeError::new(422, "Invalid", m),
        })
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<Option<T>, KubeError> {
    if body.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        KubeError::new(
            400,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
        )
    })
}

async fn evict(
    State(s): State<FleetState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> KubeResult {
    authorize(&s, "create", "pods/eviction", "policy", &ns)?;
    let eviction: Eviction = parse_body(&body)?
        .ok_or_else(|| KubeError::new(400, "BadRequest", "an Eviction body is required"))?;
    if eviction.metadata.name.as_deref() != Some(name.as_str()) {
        return Err(KubeError::new(
            400,
            "BadRequest",
            format!("name in URL does not match name in Eviction object: {name}"),
        ));
    }
    let budgets = s.with_kube(|k| k.budgets.get(&ns).cloned().unwrap_or_default());
    s.with(|f| {
        let (m, pod) = find_pod(f, &ns, &name)?;
        check_uid(&name, &pod, eviction.delete_options.as_ref())?;
        let labels = labels_of(&m.service);
        for (budget, b) in &budgets {
            let (min_available, selector) = (&b.min_available, &b.match_labels);
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            let healthy = services_in(f, &ns)
                .iter()
                .filter(|o| {
                    let l = labels_of(&o.service);
                    selector.iter().all(|(k, v)| l.get(k) == Some(v))
                })
                .flat_map(|o| o.pods.iter())
                .filter(|p| p.ready)
                .count() as i32;
            // An unready pod may go while the budget is met (IfHealthyBudget); a ready one
            // only if one disruption is allowed.
            let blocked = if pod.ready {
                healthy - min_available < 1
            } else {
                healthy < *min_available
            };
            if blocked {
                let mut e = KubeError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                e.details = Some(Box::new(StatusDetails {
                    causes: Some(vec![StatusCause {
                        reason: Some("DisruptionBudget".into()),
                        message: Some(format!(
                            "The disruption budget {budget} needs {min_available} healthy pods \
                             and has {healthy} currently"
                        )),
                        field: None,
                    }]),
                    ..Default::default()
                }));
                return Err(e);
            }
        }
        restart(f, &name, &pod.uid)
    })?;
    let done = Status {
        code: Some(201),
        metadata: ListMeta::default(),
        status: Some("Success".into()),
        ..Default::default()
    };
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

async fn delete_pod(
    State(s): State<FleetState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> KubeResult {
    authorize(&s, "delete", "pods", "", &ns)?;
    let options: Option<DeleteOptions> = parse_body(&body)?;
    let deleted = s.with(|f| {
        let (m, pod) = find_pod(f, &ns, &name)?;
        check_uid(&name, &pod, options.as_ref())?;
        let mut object = pod_object(&m, &pod);
        restart(f, &name, &pod.uid)?;
        object.metadata.deletion_timestamp = Some(time(f.now()));
        Ok::<_, KubeError>(object)
    })?;
    Ok(Json(deleted).into_response())
}

async fn create_budget(
    State(s): State<FleetState>,
    Path(ns): Path<String>,
    body: Bytes,
) -> KubeResult {
    authorize(&s, "create", "poddisruptionbudgets", "policy", &ns)?;
    let budget: PodDisruptionBudget = parse_body(&body)?.ok_or_else(|| {
        KubeError::new(400, "BadRequest", "a PodDisruptionBudget body is required")
    })?;
    let name = budget
        .metadata
        .name
        .clone()
        .ok_or_else(|| KubeError::new(422, "Invalid", "metadata.name: Required value"))?;
    let spec = budget.spec.clone().unwrap_or_default();
    let Some(IntOrString::Int(min_available)) = spec.min_available else {
        return Err(KubeError::new(
            422,
            "Invalid",
            "spec.minAvailable: only an integer is modelled by this server",
        ));
    };
    let selector = spec
        .selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    s.with_kube(|k| {
        k.budgets.entry(ns.clone()).or_default().insert(
            name,
            Budget {
                min_available,
                match_labels: selector,
            },
        )
    });
    Ok((StatusCode::CREATED, Json(budget)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_as_a_server_reads_them() {
        let labels = labels_of("checkout-api");
        for (selector, expected) in [
            ("app.kubernetes.io/name=checkout-api", true),
            ("app==checkout-api", true),
            ("app=payments-api", false),
            ("app!=payments-api", true),
            ("app", true),
            ("!app", false),
            ("app=checkout-api,tier=web", false),
            ("", true),
        ] {
            assert_eq!(
                selector_matches(selector, &labels).ok(),
                Some(expected),
                "{selector}"
            );
        }
        assert!(selector_matches("app in (a,b)", &labels).is_err());
    }
}
