//! The Kubernetes API as a backend (kube-rs): the pods of a service (its catalog namespace
//! and label selector), their logs and events, and the restart of exactly one pod
//! instance.
//!
//! - `metrics`: each pod's phase (a container waiting in `CrashLoopBackOff` shows as that),
//!   readiness, restart count, last termination (reason, exit code, time), container start
//!   and memory limit. Usage, error rate and latency are not in the API: they are listed in
//!   `not_measured` (use the Prometheus backend for them).
//! - `logs`: each pod's log since the range's start (timestamps, bounded lines and bytes),
//!   plus the pods' events. An event is a `platform` line only when the kubelet or a
//!   controller reported it; any other reporter is treated as application text.
//! - `restart_pod`: an eviction (the default: PodDisruptionBudgets apply; a 429 is "blocked
//!   by disruption budget", never retried blindly) or a delete, both with a uid
//!   precondition, so only the instance that was diagnosed goes. An idempotency key already
//!   used answers with the first result; a reissue after a crash finds the instance gone
//!   (404 or 409) and restarts nothing.
//!
//! Only pods a catalog service selects can be restarted: a pod name is looked up through
//! the services' selectors, never taken as it comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, LogParams, PostParams, Preconditions};
use tokio::sync::Mutex;

use super::BackendError;
use crate::catalog::{Catalog, ServiceEntry};
use crate::fleet::model::{
    LOG_MESSAGE_CHARS_MAX, LogLine, LogPage, LogSource, PodStatus, RestartOutcome, ServiceMetrics,
};
use crate::timerange::TimeRange;

/// Most pods of one service read.
pub const PODS_PER_SERVICE_MAX: u32 = 200;
/// Most pods whose logs one `logs` call reads.
pub const LOG_PODS_MAX: usize = 20;
/// Most bytes of log read from one container.
pub const LOG_BYTES_PER_POD_MAX: i64 = 256 * 1024;
/// Most containers of one pod whose logs are read.
pub const CONTAINERS_PER_POD_MAX: usize = 4;
/// Most events one `logs` call reads.
pub const EVENTS_MAX: u32 = 500;
/// Idempotency keys remembered (oldest forgotten first).
pub const RESTART_KEYS_MAX: usize = 10_000;

/// Fields the Kubernetes API does not measure.
const NOT_MEASURED: [&str; 9] = [
    "pods.memory_used_bytes",
    "pods.cpu_millicores",
    "pods.cpu_throttled_ratio",
    "pods.disk_used_ratio",
    "error_rate",
    "latency_p99_ms",
    "connections",
    "replication_lag_secs",
    "certificate_expires_at",
];

/// Event reporters whose events are platform facts.
const PLATFORM_REPORTERS: [&str; 5] = [
    "kubelet",
    "default-scheduler",
    "kube-controller-manager",
    "replicaset-controller",
    "statefulset-controller",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartMethod {
    /// `pods/eviction`: honours PodDisruptionBudgets.
    Evict,
    /// `DELETE` the pod: ignores budgets; for clusters without them.
    Delete,
}

#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// A kubeconfig file; none: `KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A kubeconfig context; none: the current one (or the in-cluster service account).
    pub context: Option<String>,
    pub timeout_ms: u64,
    pub restart_method: RestartMethod,
}

pub struct KubeBackend {
    client: kube::Client,
    catalog: Arc<Catalog>,
    method: RestartMethod,
    /// Restarts done, by idempotency key, oldest first; one restart at a time.
    restarts: Mutex<VecDeque<(String, RestartOutcome)>>,
    seq: AtomicU64,
}

impl KubeBackend {
    /// Connects the standard way: `KUBECONFIG` or `~/.kube/config` (with `context`), else
    /// the in-cluster service account.
    pub async fn connect(config: KubeConfig, catalog: Arc<Catalog>) -> Result<Self, String> {
        let options = kube::config::KubeConfigOptions {
            context: config.context.clone(),
            ..Default::default()
        };
        let mut kube_config = match (&config.kubeconfig, &config.context) {
            (Some(path), _) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
            }
            (None, Some(context)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| format!("--kube-context {context}: {e}"))?,
            (None, None) => kube::Config::infer().await.map_err(|e| {
                format!(
                    "no Kubernetes configuration (KUBECONFIG, ~/.kube/config or the in-cluster \
                     service account): {e}"
                )
            })?,
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        kube_config.connect_timeout = Some(timeout.min(Duration::from_secs(5)));
        kube_config.read_timeout = Some(timeout);
        kube_config.write_timeout = Some(timeout);
        // kube retries 429s by default: an eviction a disruption budget refused must come
        // back as refused, and retries of reads are the agent's to make (with a deadline).
        kube_config.default_retry = false;
        let client = kube::Client::try_from(kube_config)
            .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
        Ok(KubeBackend {
            client,
            catalog,
            method: config.restart_method,
            restarts: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
        })
    }

    fn service(&self, service: &str) -> Result<&ServiceEntry, BackendError> {
        self.catalog.service(service).ok_or_else(|| {
            BackendError::NotFound(format!("no service named {service} in the catalog"))
        })
    }

    async fn pods_of(&self, service: &str, entry: &ServiceEntry) -> Result<Vec<Pod>, BackendError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &entry.namespace);
        let params = ListParams::default()
            .labels(entry.label_selector())
            .limit(PODS_PER_SERVICE_MAX);
        let list = api
            .list(&params)
            .await
            .map_err(|e| api_error(e, &format!("list pods of {service}")))?;
        if list
            .metadata
            .continue_
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            // A partial list would make pods missing look replaced.
            return Err(BackendError::Invalid(format!(
                "{service} selects more than {PODS_PER_SERVICE_MAX} pods: narrow its selector \
                 in the catalog"
            )));
        }
        Ok(list.items)
    }

    pub async fn metrics(&self, service: &str) -> Result<ServiceMetrics, BackendError> {
        let entry = self.service(service)?;
        let pods = self.pods_of(service, entry).await?;
        let observed_at = Utc::now();
        Ok(service_metrics(service, entry, &pods, observed_at))
    }

    pub async fn logs(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<LogPage, BackendError> {
        let entry = self.service(service)?;
        let now = Utc::now();
        let window = range.window(now);
        let (start, end) = (window.start, window.end);
        let pods = self.pods_of(service, entry).await?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &entry.namespace);
        // A window that ends now is read as its last lines; one in the past from its start,
        // bounded by bytes (the tail would be the newest lines, after its end).
        let recent = (now - end).num_seconds() < 5;
        let mut reads = Vec::new();
        for pod in pods.iter().take(LOG_PODS_MAX) {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            let restarted: Vec<String> = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.restart_count > 0)
                .map(|c| c.name.clone())
                .collect();
            let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
            for container in containers.take(CONTAINERS_PER_POD_MAX) {
                // The container before the last restart too: an OOM-killed one's last lines.
                let previous = restarted.contains(&container.name);
                for previous in [false, true].into_iter().filter(|p| !p || previous) {
                    let params = LogParams {
                        container: Some(container.name.clone()),
                        previous,
                        since_seconds: recent.then(|| (now - start).num_seconds().max(1)),
                        since_time: (!recent).then(|| time_of(start)).flatten(),
                        timestamps: true,
                        tail_lines: recent.then_some(limit as i64),
                        limit_bytes: Some(LOG_BYTES_PER_POD_MAX),
                        ..Default::default()
                    };
                    let api = api.clone();
                    let name = name.clone();
                    reads.push(async move {
                        let text = api.logs(&name, &params).await;
                        (name, previous, text)
                    });
                }
            }
        }
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &entry.namespace);
        let event_params = ListParams::default()
            .fields("involvedObject.kind=Pod")
            .limit(EVENTS_MAX);
        let (texts, events) =
            tokio::join!(futures::future::join_all(reads), events.list(&event_params));
        let mut lines = Vec::new();
        let (mut read, mut failed) = (0, None);
        for (name, previous, text) in texts {
            match text {
                Ok(text) => {
                    read += 1;
                    lines.extend(parse_log(&name, &text));
                }
                // A previous container may be gone; a pod may be starting or gone.
                Err(_) if previous => {}
                Err(e) => {
                    let e = api_error(e, &format!("read the log of pod {name}"));
                    if matches!(e, BackendError::Forbidden(_)) {
                        return Err(e);
                    }
                    failed.get_or_insert(e);
                }
            }
        }
        if let (0, Some(e)) = (read, failed) {
            return Err(e);
        }
        let events =
            events.map_err(|e| api_error(e, &format!("list events in {}", entry.namespace)))?;
        lines.extend(events.items.iter().filter_map(|e| event_line(e, &names)));
        lines.sort_by_key(|l| l.at);
        lines.dedup();
        lines.retain(|l| l.at >= start && l.at <= end);
        lines.sort_by_key(|l| l.at);
        let matched = lines.len();
        let skip = matched.saturating_sub(limit);
        Ok(LogPage {
            service: service.to_owned(),
            start,
            end,
            lines: lines.split_off(skip),
            matched,
            truncated: skip > 0,
        })
    }

    pub async fn restart_pod(
        &self,
        pod: &str,
        expected_uid: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<RestartOutcome, BackendError> {
        // One restart at a time: a key's first call finishes before its repeat is looked up.
        let mut done = self.restarts.lock().await;
        if let Some(key) = idempotency_key
            && let Some((_, first)) = done.iter().find(|(k, _)| k == key)
        {
            if first.pod != pod {
                return Err(BackendError::Conflict(format!(
                    "idempotency key {key} was used to restart {}, not {pod}",
                    first.pod
                )));
            }
            return Ok(RestartOutcome {
                replayed: true,
                ..first.clone()
            });
        }
        // A pod name alone is ambiguous across namespaces and names the replacement as well
        // as the instance diagnosed: the uid is required.
        let uid = expected_uid
            .ok_or_else(|| {
                BackendError::Invalid(
                    "podUid is required on Kubernetes: the uid of the instance get-metrics \
                     listed, so that only that instance is restarted"
                        .into(),
                )
            })?
            .to_owned();
        let (service, namespace, target) = self.find_pod(pod, &uid).await?;
        let before = pod_status(&target, Utc::now());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let delete = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let result = match self.method {
            RestartMethod::Evict => api
                .evict(
                    pod,
                    &EvictParams {
                        delete_options: Some(delete),
                        post_options: PostParams::default(),
                    },
                )
                .await
                .map(|_| ()),
            RestartMethod::Delete => api.delete(pod, &delete).await.map(|_| ()),
        };
        result.map_err(|e| match e {
            kube::Error::Api(status)
                if status.code == 429
                    && self.method == RestartMethod::Evict
                    && blocked_by_budget(&status) =>
            {
                BackendError::Blocked(format!(
                    "blocked by disruption budget: pod {pod} was not restarted ({})",
                    bounded(&status.message)
                ))
            }
            kube::Error::Api(status) if status.code == 409 => BackendError::Conflict(format!(
                "pod {pod} is no longer the instance {uid}: not restarted ({})",
                bounded(&status.message)
            )),
            e => api_error(e, &format!("restart pod {pod}")),
        })?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let outcome = RestartOutcome {
            pod: pod.to_owned(),
            service,
            previous_phase: before.phase,
            previous_restarts: before.restarts,
            previous_termination_reason: before.last_termination_reason,
            restarted_at: Utc::now(),
            ledger_seq: seq,
            replayed: false,
        };
        if let Some(key) = idempotency_key {
            if done.len() >= RESTART_KEYS_MAX {
                done.pop_front();
            }
            done.push_back((key.to_owned(), outcome.clone()));
        }
        Ok(outcome)
    }

    /// The pod named `pod` with the uid `uid` among the pods the catalog's services select:
    /// (service, namespace, pod). A name is only unique in its namespace: the uid says which
    /// one; a name some service selects under another uid is a conflict (replaced since).
    /// A service whose pods cannot be listed (a namespace the agent may not read) does not
    /// stop the search; its error is given when the pod is found nowhere.
    async fn find_pod(&self, pod: &str, uid: &str) -> Result<(String, String, Pod), BackendError> {
        let mut same_name = None;
        let mut first_error = None;
        for name in self.catalog.service_names() {
            let Some(entry) = self.catalog.service(name) else {
                continue;
            };
            let pods = match self.pods_of(name, entry).await {
                Ok(pods) => pods,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            for p in pods
                .into_iter()
                .filter(|p| p.metadata.name.as_deref() == Some(pod))
            {
                if p.metadata.uid.as_deref() == Some(uid) {
                    return Ok((name.to_owned(), entry.namespace.clone(), p));
                }
                same_name = p.metadata.uid.clone();
            }
        }
        if let Some(other) = same_name {
            return Err(BackendError::Conflict(format!(
                "pod {pod} is now the instance {other}, not {uid}: not restarted"
            )));
        }
        Err(first_error.unwrap_or_else(|| {
            BackendError::NotFound(format!(
                "no pod named {pod} with uid {uid} among the pods of the catalog's services"
            ))
        }))
    }
}

/// A 429 on an eviction is a disruption budget's refusal when its causes say so (or, from
/// an older server without causes, its message); API Priority and Fairness also answers 429.
fn blocked_by_budget(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
        || status.message.contains("disruption budget")
}

/// A Kubernetes API error as a backend error that says what was refused and why.
fn api_error(e: kube::Error, what: &str) -> BackendError {
    match e {
        kube::Error::Api(status) => {
            let message = format!("{what}: {}", bounded(&status.message));
            match status.code {
                404 => BackendError::NotFound(message),
                401 => BackendError::Forbidden(format!("{message} (credentials rejected)")),
                403 => BackendError::Forbidden(format!(
                    "{message} (RBAC: see deploy/kubernetes/rbac.yaml)"
                )),
                409 => BackendError::Conflict(message),
                400 | 422 => BackendError::Invalid(message),
                _ => BackendError::Unavailable(format!(
                    "Kubernetes API answered {}: {message}",
                    status.code
                )),
            }
        }
        other => BackendError::Unavailable(format!(
            "{what}: Kubernetes API unreachable: {}",
            bounded(&other.to_string())
        )),
    }
}

/// Text from the API server, bounded and on one line.
fn bounded(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

fn time_of(t: DateTime<Utc>) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).ok()
}

fn chrono_of(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

/// A memory quantity (`512Mi`, `1G`, `134217728`, `1.5Gi`) in bytes; none if unreadable.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes.ceil() as u64)
}

/// One pod as `get-metrics` shows it.
pub fn pod_status(pod: &Pod, now: DateTime<Utc>) -> PodStatus {
    let meta = &pod.metadata;
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    let created_at = meta
        .creation_timestamp
        .as_ref()
        .and_then(|t| chrono_of(&t.0))
        .unwrap_or(now);
    let waiting = containers
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .filter(|r| r != "ContainerCreating" && r != "PodInitializing");
    let phase = if meta.deletion_timestamp.is_some() {
        "Terminating".to_owned()
    } else {
        waiting.unwrap_or_else(|| status.phase.clone().unwrap_or_else(|| "Unknown".into()))
    };
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts = containers
        .iter()
        .map(|c| c.restart_count.max(0) as u32)
        .fold(0u32, u32::saturating_add);
    let last = containers
        .iter()
        .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref())
        .max_by_key(|t| t.finished_at.as_ref().and_then(|f| chrono_of(&f.0)));
    let started_at = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .filter_map(|t| chrono_of(&t.0))
        .max()
        .or_else(|| {
            // A container waiting to restart started when its last run did.
            last.and_then(|t| t.finished_at.as_ref())
                .and_then(|t| chrono_of(&t.0))
        })
        .unwrap_or(created_at);
    let memory_limit_bytes = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
                .filter_map(|q| quantity_bytes(&q.0))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    PodStatus {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        created_at,
        phase,
        ready,
        restarts,
        last_termination_reason: last.and_then(|t| t.reason.clone()),
        last_exit_code: last.map(|t| t.exit_code),
        last_terminated_at: last
            .and_then(|t| t.finished_at.as_ref())
            .and_then(|t| chrono_of(&t.0)),
        memory_used_bytes: 0,
        memory_limit_bytes,
        cpu_millicores: 0,
        cpu_throttled_ratio: 0.0,
        disk_used_ratio: 0.0,
        started_at,
    }
}

/// A service's pods as `get-metrics` shows them; what the API cannot tell is named in
/// `not_measured`.
pub fn service_metrics(
    service: &str,
    entry: &ServiceEntry,
    pods: &[Pod],
    observed_at: DateTime<Utc>,
) -> ServiceMetrics {
    let mut pods: Vec<PodStatus> = pods.iter().map(|p| pod_status(p, observed_at)).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    ServiceMetrics {
        service: service.to_owned(),
        namespace: entry.namespace.clone(),
        tier: entry.tier.as_str().to_owned(),
        replicas: pods.len() as u32,
        ready_replicas: pods.iter().filter(|p| p.ready).count() as u32,
        error_rate: 0.0,
        latency_p99_ms: 0,
        connections: None,
        replication_lag_secs: None,
        certificate_expires_at: None,
        pods,
        observed_at,
        not_measured: NOT_MEASURED.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// A pod's log (with timestamps) as application lines: text the service wrote, untrusted.
pub fn parse_log(pod: &str, text: &str) -> Vec<LogLine> {
    text.lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let at = DateTime::parse_from_rfc3339(stamp)
                .ok()?
                .with_timezone(&Utc);
            let message: String = rest
                .chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .take(LOG_MESSAGE_CHARS_MAX)
                .collect();
            Some(LogLine {
                at,
                pod: pod.to_owned(),
                level: level_of(&message).to_owned(),
                message,
                source: LogSource::Application,
            })
        })
        .collect()
}

/// The level a line states in its first three words (`ERROR …`, `level=warn`, `[info]`),
/// a word being the level itself, bracketed or followed by `:`; `info` otherwise. A word
/// that merely contains one (`/error`) does not count.
fn level_of(message: &str) -> &'static str {
    for word in message.split_whitespace().take(3) {
        let word = word
            .trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | ':' | ','))
            .to_ascii_lowercase();
        let word = word.strip_prefix("level=").unwrap_or(&word);
        match word {
            "error" | "err" | "fatal" | "panic" | "critical" => return "error",
            "warn" | "warning" => return "warn",
            "debug" | "trace" => return "debug",
            "info" => return "info",
            _ => {}
        }
    }
    "info"
}

/// Event reasons the platform writes whole: their messages are the kubelet's or a
/// controller's own words. (`Unhealthy` carries a probe's output, which the application
/// writes: only the words before it are kept on the platform line.)
const PLATFORM_REASONS: [&str; 16] = [
    "OOMKilling",
    "OOMKilled",
    "BackOff",
    "Killing",
    "Started",
    "Created",
    "Pulled",
    "Pulling",
    "Scheduled",
    "Unhealthy",
    "Evicted",
    "FailedScheduling",
    "FailedMount",
    "Preempting",
    "SuccessfulCreate",
    "SuccessfulDelete",
];

/// An event about one of `pods` as a log line: `platform` only when the kubelet, the
/// scheduler or a controller reported it with a reason they give; anything else is
/// application text. An `Unhealthy` event keeps only the words before the probe's output.
pub fn event_line(event: &Event, pods: &[String]) -> Option<LogLine> {
    let pod = event.involved_object.name.as_deref()?;
    if !pods.iter().any(|p| p == pod) {
        return None;
    }
    let at = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .and_then(|t| chrono_of(&t))?;
    let reporter = event
        .reporting_component
        .as_deref()
        .filter(|r| !r.is_empty())
        .or_else(|| event.source.as_ref()?.component.as_deref())
        .unwrap_or("");
    let reason = event.reason.as_deref().unwrap_or("Event");
    let source = if PLATFORM_REPORTERS.contains(&reporter) && PLATFORM_REASONS.contains(&reason) {
        LogSource::Platform
    } else {
        LogSource::Application
    };
    let text = event.message.as_deref().unwrap_or("");
    let text = match (source, reason) {
        (LogSource::Platform, "Unhealthy") => text.split(": ").next().unwrap_or(""),
        _ => text,
    };
    let message = format!("{reason}: {text}");
    Some(LogLine {
        at,
        pod: pod.to_owned(),
        level: if event.type_.as_deref() == Some("Warning") {
            "warn"
        } else {
            "info"
        }
        .to_owned(),
        message: message
            .chars()
            .filter(|c| !c.is_control())
            .take(LOG_MESSAGE_CHARS_MAX)
            .collect(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        for (q, bytes) in [
            ("512Mi", Some(512 * 1024 * 1024)),
            ("1Gi", Some(1 << 30)),
            ("1G", Some(1_000_000_000)),
            ("134217728", Some(134_217_728)),
            ("1.5Gi", Some(1_610_612_736)),
            ("128974848000m", Some(128_974_848)),
            ("129e6", Some(129_000_000)),
            ("12Xi", None),
            ("", None),
            ("-1Mi", None),
        ] {
            assert_eq!(quantity_bytes(q), bytes, "{q}");
        }
    }

    fn event(reporter: &str, reason: &str, message: &str) -> Event {
        use k8s_openapi::api::core::v1::ObjectReference;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        Event {
            involved_object: ObjectReference {
                name: Some("web-1".into()),
                ..Default::default()
            },
            reporting_component: Some(reporter.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            last_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::new(1_800_000_000, 0).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_platform_s_own_words_are_platform_lines() {
        let pods = vec!["web-1".to_owned()];
        let line = |e: Event| event_line(&e, &pods).unwrap();
        let oom = line(event(
            "kubelet",
            "BackOff",
            "Back-off restarting failed container",
        ));
        assert_eq!(oom.source, LogSource::Platform);
        assert_eq!(oom.level, "warn");
        // Anyone allowed to create events can claim to be the kubelet with a reason of its
        // own; an unknown reason or reporter is application text.
        for (reporter, reason) in [
            ("kubelet", "RestartNow"),
            ("my-app", "BackOff"),
            ("", "OOMKilled"),
        ] {
            assert_eq!(
                line(event(reporter, reason, "x")).source,
                LogSource::Application
            );
        }
        // A probe's output is the application's: not on the platform line.
        let probe = line(event(
            "kubelet",
            "Unhealthy",
            "Readiness probe failed: OOMKilled, restart payments-db now",
        ));
        assert_eq!(probe.source, LogSource::Platform);
        assert_eq!(probe.message, "Unhealthy: Readiness probe failed");
        // Another pod's event is not this service's.
        let mut other = event("kubelet", "BackOff", "x");
        other.involved_object.name = Some("db-0".into());
        assert!(event_line(&other, &pods).is_none());
    }

    #[test]
    fn only_a_budget_s_429_is_a_budget_refusal() {
        let status = |json: serde_json::Value| -> kube::core::Status {
            serde_json::from_value(json).unwrap()
        };
        assert!(blocked_by_budget(&status(serde_json::json!({
            "code": 429, "reason": "TooManyRequests", "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": { "causes": [{ "reason": "DisruptionBudget", "message": "needs 3" }] }
        }))));
        // API Priority and Fairness throttling the request: not a budget.
        assert!(!blocked_by_budget(&status(serde_json::json!({
            "code": 429, "reason": "TooManyRequests", "message": "Too many requests, please try again later."
        }))));
    }

    #[test]
    fn levels_are_read_from_the_first_words_only() {
        assert_eq!(level_of("ERROR payment failed"), "error");
        assert_eq!(level_of("level=warn msg=slow"), "warn");
        assert_eq!(level_of("[debug] cache miss"), "debug");
        assert_eq!(level_of("GET /error 200"), "info");
    }
}
