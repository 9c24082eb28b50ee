//! The simulated fleet: services, pods, logs and an append-only ledger of mutating calls,
//! advanced one simulated second at a time. Pure: the caller passes the instant to advance
//! to, so tests drive time exactly and the `sre-fleet` service drives it with the clock.
//! A step runs once per whole simulated second crossed, however often the fleet is read.
//!
//! Pods behave like Kubernetes pods: the kubelet restarts a container in place after an OOM
//! kill or a crash (same uid, new container start, `lastState.terminated` kept), while
//! `restart-pod` deletes the pod and its controller creates a fresh one (new uid). The
//! kubelet's events are written to the service's log as `platform` lines; what the service
//! writes, and what reaches it from outside ([`Fleet::write_app_log`]), is `application`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::model::{
    LOG_LEVELS, LOG_MESSAGE_CHARS_MAX, LedgerEntry, LogLine, LogPage, LogSource, Notification,
    PodStatus, Receipt, RestartOutcome, ServiceMetrics, validate_idempotency_key,
    validate_notification,
};
use super::scenario::{
    CERTIFICATE_SECS_MAX, CONNECTIONS_MAX, FaultKind, FaultSpec, OnRestart, PodSelector,
    REPLICATION_LAG_SECS_MAX, Scenario,
};
use crate::catalog::Tier;

/// Most log lines kept per service; older ones are dropped.
pub const LOG_LINES_PER_SERVICE_MAX: usize = 5_000;
/// Longest stretch of simulated time replayed second by second; a longer gap skips ahead.
pub const CATCH_UP_SECS_MAX: i64 = 3_600;
/// Most idempotency keys remembered; the oldest are forgotten first.
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;
/// Furthest back an application line written from outside may be dated, in seconds.
pub const APP_LOG_BACKDATE_SECS_MAX: i64 = 7 * 86_400;
/// How often the kubelet reports a failing readiness probe of one pod, in seconds.
pub const PROBE_EVENT_EVERY_SECS: i64 = 30;
/// How long ago the pods of the healthy fleet were created, in hours.
const POD_AGE_HOURS: i64 = 20;
/// How long before injection a pod that already crashed had its current container started.
const RESTARTED_AGO_SECS: i64 = 5;
/// Fraction of a healthy pod's volume in use.
const HEALTHY_DISK_RATIO: f64 = 0.2;
const MIB: u64 = 1024 * 1024;
/// Upper bounds of the buckets of the request-latency histogram each pod exports, in
/// seconds: the Prometheus client libraries' defaults.
pub const LATENCY_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Requests each pod serves per simulated second, for its request counters.
pub const REQUESTS_PER_POD_PER_SEC: f64 = 100.0;
/// CFS scheduler periods per second of a running container (100 ms, the kernel default).
pub const CFS_PERIODS_PER_SEC: f64 = 10.0;
/// The quantile the fleet's `latency_p99_ms` is.
const LATENCY_QUANTILE: f64 = 0.99;

/// What a pod instance has counted since it was created, one simulated second at a time,
/// as cAdvisor and an instrumented HTTP server count: the integral of its CPU use and
/// throttling, and its share of the service's requests, errors and latencies. A pod
/// replaced by its controller starts again from zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodCounters {
    /// CPU time used (`container_cpu_usage_seconds_total`).
    pub cpu_seconds: f64,
    /// CFS periods run, and those throttled (`container_cpu_cfs_*periods_total`).
    pub cfs_periods: f64,
    pub cfs_throttled_periods: f64,
    /// Requests served, and those that failed with a 5xx.
    pub requests: f64,
    pub errors: f64,
    /// Requests per latency bucket, cumulative: `[i]` counts those that took at most
    /// [`LATENCY_BUCKETS_SECONDS`]`[i]`; the `+Inf` bucket is `requests`.
    pub latency_buckets: [f64; LATENCY_BUCKETS_SECONDS.len()],
    /// Total latency of the requests, each counted at its bucket's upper bound (the largest
    /// finite bound for the slowest).
    pub latency_seconds_sum: f64,
}

impl PodCounters {
    /// Counts one second of the pod as `status` shows it, in a service failing
    /// `error_rate` of its requests with `latency_p99_ms` as its 99th percentile.
    fn count_second(&mut self, status: &PodStatus, error_rate: f64, latency_p99_ms: u64) {
        self.cpu_seconds += f64::from(status.cpu_millicores) / 1000.0;
        if status.phase == "Running" {
            self.cfs_periods += CFS_PERIODS_PER_SEC;
            self.cfs_throttled_periods += CFS_PERIODS_PER_SEC * status.cpu_throttled_ratio;
        }
        let requests = REQUESTS_PER_POD_PER_SEC;
        self.requests += requests;
        self.errors += requests * error_rate.clamp(0.0, 1.0);
        let shares = latency_shares(latency_p99_ms as f64 / 1000.0);
        let mut below = 0.0;
        for (i, share) in shares.iter().enumerate() {
            self.latency_buckets[i] += requests * share;
            self.latency_seconds_sum += requests * (share - below) * LATENCY_BUCKETS_SECONDS[i];
            below = *share;
        }
        let slowest = LATENCY_BUCKETS_SECONDS[LATENCY_BUCKETS_SECONDS.len() - 1];
        self.latency_seconds_sum += requests * (1.0 - below) * slowest;
    }
}

/// The cumulative share of requests in each latency bucket that makes Prometheus's
/// `histogram_quantile(0.99, …)`, which interpolates linearly inside a bucket, give back
/// `p99_secs` (clamped to what the buckets can give: 4.95 ms to 10 s). With `p99_secs` at fraction `x` of its
/// bucket's width: below `x = 0.99`, a share `(0.99 - x) / (1 - x)` is put in the lowest
/// bucket and the rest in the p99's bucket; from it on, `0.99 / x` in the p99's bucket and
/// the rest in the next.
pub fn latency_shares(p99_secs: f64) -> [f64; LATENCY_BUCKETS_SECONDS.len()] {
    let bounds = LATENCY_BUCKETS_SECONDS;
    let last = bounds.len() - 1;
    let p99 = if p99_secs.is_finite() {
        // The lowest bucket starts at 0: no share of it interpolates below 0.99 of its bound.
        p99_secs.clamp(bounds[0] * LATENCY_QUANTILE, bounds[last])
    } else {
        bounds[last]
    };
    let k = bounds.iter().position(|&b| p99 <= b).unwrap_or(last);
    let lower = if k == 0 { 0.0 } else { bounds[k - 1] };
    let x = (p99 - lower) / (bounds[k] - lower);
    let (below, at) = if x < LATENCY_QUANTILE {
        ((LATENCY_QUANTILE - x) / (1.0 - x), 1.0)
    } else {
        (0.0, LATENCY_QUANTILE / x)
    };
    let mut shares = [0.0; LATENCY_BUCKETS_SECONDS.len()];
    for (i, share) in shares.iter_mut().enumerate() {
        *share = match i.cmp(&k) {
            std::cmp::Ordering::Less => below,
            std::cmp::Ordering::Equal => at,
            std::cmp::Ordering::Greater => 1.0,
        };
    }
    shares
}

/// A service of the fleet file (`data/fleet.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub tier: Tier,
    pub replicas: u32,
    pub memory_limit_mib: u64,
    pub memory_baseline_mib: u64,
    pub cpu_millicores: u32,
    pub error_rate: f64,
    pub latency_p99_ms: u64,
    /// Messages a healthy pod logs, in turn.
    #[serde(default)]
    pub logs: Vec<String>,
    pub log_every_secs: u64,
    /// Days from the fleet's start until the serving TLS certificate expires; none: the
    /// service serves no TLS.
    #[serde(default)]
    pub certificate_expires_in_days: Option<i64>,
    /// Open client connections while healthy (databases).
    #[serde(default)]
    pub connections: Option<u32>,
    /// Replication lag while healthy, in seconds (replicated databases).
    #[serde(default)]
    pub replication_lag_secs: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    #[serde(rename = "service")]
    pub services: Vec<ServiceSpec>,
}

impl FleetSpec {
    pub fn parse(text: &str) -> Result<FleetSpec, String> {
        let spec: FleetSpec = toml::from_str(text).map_err(|e| format!("fleet.toml: {e}"))?;
        for s in &spec.services {
            let certificate_ok = s.certificate_expires_in_days.is_none_or(|d| {
                d.saturating_mul(86_400).unsigned_abs() <= CERTIFICATE_SECS_MAX.unsigned_abs()
            });
            let gauges_ok = s.connections.is_none_or(|c| c <= CONNECTIONS_MAX)
                && s.replication_lag_secs
                    .is_none_or(|l| (0.0..=REPLICATION_LAG_SECS_MAX).contains(&l))
                && (0.0..=1.0).contains(&s.error_rate);
            if s.replicas == 0
                || s.replicas > 50
                || !(1..=86_400).contains(&s.log_every_secs)
                || s.memory_limit_mib > 1024 * 1024
                || s.memory_baseline_mib >= s.memory_limit_mib
                || !certificate_ok
                || !gauges_ok
            {
                return Err(format!(
                    "fleet.toml: service {} has out-of-range values",
                    s.name
                ));
            }
        }
        Ok(spec)
    }
}

/// Why a fleet operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

#[derive(Clone, Debug)]
struct Pod {
    name: String,
    /// How many times this pod was replaced; with the name, it makes the uid.
    generation: u32,
    uid: String,
    created_at: DateTime<Utc>,
    phase: &'static str,
    ready: bool,
    restarts: u32,
    last_termination_reason: Option<String>,
    last_exit_code: Option<i32>,
    last_terminated_at: Option<DateTime<Utc>>,
    memory_bytes: u64,
    disk_ratio: f64,
    /// When the current container started.
    started_at: DateTime<Utc>,
    /// Index into `Fleet::faults` of the fault this pod suffers.
    fault: Option<usize>,
    /// While set, the container is down and comes back at this instant.
    backoff_until: Option<DateTime<Utc>>,
    /// When a failing readiness probe of this pod is next reported.
    next_probe_event_at: DateTime<Utc>,
    /// What this instance counted since it was created.
    counters: PodCounters,
}

impl Pod {
    /// A fresh, healthy pod instance created at `at`.
    fn new(name: String, generation: u32, at: DateTime<Utc>, memory_bytes: u64) -> Pod {
        Pod {
            uid: pod_uid(&name, generation),
            name,
            generation,
            created_at: at,
            phase: "Running",
            ready: true,
            restarts: 0,
            last_termination_reason: None,
            last_exit_code: None,
            last_terminated_at: None,
            memory_bytes,
            disk_ratio: HEALTHY_DISK_RATIO,
            started_at: at,
            fault: None,
            backoff_until: None,
            next_probe_event_at: at,
            counters: PodCounters::default(),
        }
    }

    /// The container ended at `at` with `reason`: the kubelet counts a restart and backs
    /// off until `until`.
    fn terminate(&mut self, reason: &str, exit_code: i32, at: DateTime<Utc>, until: DateTime<Utc>) {
        self.restarts += 1;
        self.last_termination_reason = Some(reason.to_owned());
        self.last_exit_code = Some(exit_code);
        self.last_terminated_at = Some(at);
        self.phase = "CrashLoopBackOff";
        self.ready = false;
        self.backoff_until = Some(until);
    }

    /// The fault is fixed by hand at `at`, in place: the same pod instance (uid, restart
    /// count and last termination kept, as Kubernetes keeps them) runs healthy and ready
    /// with `memory_bytes` in use and a healthy volume. Returns whether the container was
    /// down and so was started again now.
    fn heal(&mut self, at: DateTime<Utc>, memory_bytes: u64) -> bool {
        let was_down = self.phase != "Running" || self.backoff_until.is_some();
        self.fault = None;
        self.phase = "Running";
        self.ready = true;
        self.backoff_until = None;
        self.memory_bytes = memory_bytes;
        self.disk_ratio = self.disk_ratio.min(HEALTHY_DISK_RATIO);
        if was_down {
            self.started_at = at;
        }
        was_down
    }
}

#[derive(Clone, Debug)]
struct Service {
    spec: ServiceSpec,
    pods: Vec<Pod>,
    /// Sorted by time (back-dated lines are inserted in place), oldest first.
    logs: VecDeque<LogLine>,
    next_log_at: DateTime<Utc>,
    next_log_message: usize,
    certificate_expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct ActiveFault {
    /// The scenario that injected it: [`Fleet::end`] removes a scenario's faults.
    scenario: String,
    spec: FaultSpec,
    /// When each of the spec's log templates next writes.
    next_log_at: Vec<DateTime<Utc>>,
    /// The certificate expiry the fault sets, fixed at injection.
    certificate_expires_at: Option<DateTime<Utc>>,
}

/// What was answered to the first call with an idempotency key.
#[derive(Clone, Debug)]
enum Recorded {
    Restart {
        pod: String,
        outcome: RestartOutcome,
    },
    Notification {
        message: String,
        severity: String,
        receipt: Receipt,
    },
}

#[derive(Clone, Debug)]
pub struct Fleet {
    now: DateTime<Utc>,
    /// The last whole simulated second stepped; `now` is at most a second past it.
    tick: DateTime<Utc>,
    services: BTreeMap<String, Service>,
    /// Pod name → service name.
    pod_index: HashMap<String, String>,
    faults: Vec<ActiveFault>,
    /// Scenarios injected and not ended, in the order injected.
    active_scenarios: Vec<String>,
    scenarios: BTreeMap<String, Scenario>,
    ledger: Vec<LedgerEntry>,
    notifications: Vec<Notification>,
    idempotency: HashMap<String, Recorded>,
    idempotency_order: VecDeque<String>,
}

/// A stable pod name: `{service}-{i}` for stateful tiers, `{service}-{hash}-{suffix}` (like a
/// Deployment's pods) for stateless ones.
fn pod_name(spec: &ServiceSpec, i: u32) -> String {
    if spec.tier != Tier::Stateless {
        return format!("{}-{i}", spec.name);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.name.bytes().chain(i.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut chars =
        (0..10).map(|k| ALPHABET[((h >> (k * 6)) % ALPHABET.len() as u64) as usize] as char);
    let template: String = chars.by_ref().take(5).collect();
    let suffix: String = chars.collect();
    format!("{}-{template}-{suffix}", spec.name)
}

/// A stable, UUID-shaped id of a pod instance: the same name and generation always give the
/// same uid, a new generation a different one.
fn pod_uid(name: &str, generation: u32) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for b in name.bytes().chain(generation.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The pods a selector picks among `replicas`, or why it cannot.
fn selected_pods(selector: PodSelector, replicas: usize) -> Result<Vec<usize>, String> {
    Ok(match selector {
        PodSelector::First => (0..replicas.min(1)).collect(),
        PodSelector::All => (0..replicas).collect(),
        PodSelector::None => Vec::new(),
        PodSelector::Replica(i) if (i as usize) < replicas => vec![i as usize],
        PodSelector::Replica(i) => {
            return Err(format!(
                "replica {i} does not exist: the service has {replicas} (0-based)"
            ));
        }
    })
}

impl Fleet {
    /// A healthy fleet at `now` that knows `scenarios` (checked against its services).
    pub fn new(
        spec: FleetSpec,
        scenarios: Vec<Scenario>,
        now: DateTime<Utc>,
    ) -> Result<Fleet, String> {
        let mut services = BTreeMap::new();
        let mut pod_index = HashMap::new();
        for s in spec.services {
            let created = now - Duration::hours(POD_AGE_HOURS);
            let pods: Vec<Pod> = (0..s.replicas)
                .map(|i| Pod::new(pod_name(&s, i), 0, created, s.memory_baseline_mib * MIB))
                .collect();
            for p in &pods {
                if pod_index.insert(p.name.clone(), s.name.clone()).is_some() {
                    return Err(format!("pod name {} is not unique", p.name));
                }
            }
            let service = Service {
                next_log_at: now,
                next_log_message: 0,
                pods,
                logs: VecDeque::new(),
                certificate_expires_at: s
                    .certificate_expires_in_days
                    .and_then(Duration::try_days)
                    .and_then(|d| now.checked_add_signed(d)),
                spec: s,
            };
            services.insert(service.spec.name.clone(), service);
        }
        let mut by_name = BTreeMap::new();
        for scenario in scenarios {
            if let Some(f) = scenario
                .faults
                .iter()
                .find(|f| !services.contains_key(&f.service))
            {
                return Err(format!(
                    "scenario {} names unknown service {}",
                    scenario.name, f.service
                ));
            }
            for f in &scenario.faults {
                let replicas = services[&f.service].pods.len();
                selected_pods(f.pods, replicas)
                    .map_err(|e| format!("scenario {} on {}: {e}", scenario.name, f.service))?;
            }
            by_name.insert(scenario.name.clone(), scenario);
        }
        Ok(Fleet {
            now,
            tick: now,
            services,
            pod_index,
            faults: Vec::new(),
            active_scenarios: Vec::new(),
            scenarios: by_name,
            ledger: Vec::new(),
            notifications: Vec::new(),
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn scenario_names(&self) -> impl Iterator<Item = &str> {
        self.scenarios.keys().map(String::as_str)
    }

    pub fn active_scenarios(&self) -> &[String] {
        &self.active_scenarios
    }

    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    pub fn ledger(&self) -> &[LedgerEntry] {
        &self.ledger
    }

    pub fn notifications(&self) -> &[Notification] {
        &self.notifications
    }

    /// Advances the world to `to`: one step for every whole simulated second crossed since
    /// the last, so frequent reads do not speed the world up. A gap longer than
    /// [`CATCH_UP_SECS_MAX`] replays only its last seconds.
    pub fn advance(&mut self, to: DateTime<Utc>) {
        if to <= self.now {
            return;
        }
        let behind = (to - self.tick).num_seconds();
        if behind > CATCH_UP_SECS_MAX {
            self.tick += Duration::seconds(behind - CATCH_UP_SECS_MAX);
        }
        while self.tick + Duration::seconds(1) <= to {
            self.tick += Duration::seconds(1);
            self.step(self.tick);
            self.count_second();
        }
        self.now = to;
    }

    fn step(&mut self, t: DateTime<Utc>) {
        let dt = 1.0;
        for service in self.services.values_mut() {
            let Service {
                spec, pods, logs, ..
            } = service;
            let limit = spec.memory_limit_mib * MIB;
            let baseline = spec.memory_baseline_mib * MIB;
            for pod in pods.iter_mut() {
                if pod.phase == "Running" && !pod.ready && t >= pod.next_probe_event_at {
                    let message = format!(
                        "Readiness probe failed for pod {}: HTTP probe failed with statuscode: 503",
                        pod.name
                    );
                    platform_event(logs, t, &pod.name, "warn", message);
                    pod.next_probe_event_at = t + Duration::seconds(PROBE_EVENT_EVERY_SECS);
                }
                let Some(fault) = pod.fault.map(|i| &self.faults[i].spec) else {
                    continue;
                };
                match &fault.kind {
                    FaultKind::MemoryLeak {
                        ramp_secs,
                        backoff_secs,
                        ..
                    } => match pod.backoff_until {
                        Some(until) if t >= until => {
                            pod.backoff_until = None;
                            pod.phase = "Running";
                            pod.ready = true;
                            pod.started_at = t;
                            pod.memory_bytes = baseline;
                            platform_event(logs, t, &pod.name, "info", started(&spec.name, pod));
                        }
                        Some(_) => {}
                        None => {
                            let rate = (limit - baseline) as f64 / *ramp_secs as f64;
                            pod.memory_bytes = (pod.memory_bytes as f64 + rate * dt) as u64;
                            if pod.memory_bytes >= limit {
                                let until = t + Duration::seconds(*backoff_secs as i64);
                                pod.terminate("OOMKilled", 137, t, until);
                                pod.memory_bytes = 0;
                                let message = oom_killed(&spec.name, &pod.name, *backoff_secs);
                                platform_event(logs, t, &pod.name, "warn", message);
                            }
                        }
                    },
                    FaultKind::CrashLoop {
                        reason,
                        exit_code,
                        backoff_secs,
                    } => {
                        if pod.backoff_until.is_none_or(|until| t >= until) {
                            // The kubelet starts the container again; it exits at once.
                            pod.started_at = t;
                            let until = t + Duration::seconds(*backoff_secs as i64);
                            pod.terminate(reason, *exit_code, t, until);
                            let message =
                                crashed(&spec.name, &pod.name, reason, *exit_code, *backoff_secs);
                            platform_event(logs, t, &pod.name, "warn", message);
                        }
                    }
                    FaultKind::DiskFill {
                        fill_secs,
                        start_ratio,
                    } => {
                        pod.disk_ratio = (pod.disk_ratio
                            + (1.0 - start_ratio) / *fill_secs as f64 * dt)
                            .min(1.0);
                        pod.ready = pod.disk_ratio < 0.98;
                    }
                    FaultKind::Unavailable | FaultKind::Degraded => {}
                }
            }
        }
        self.write_logs(t);
    }

    /// Adds one second of every pod to its counters, as [`Fleet::metrics`] shows it now.
    fn count_second(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Ok(m) = self.metrics(&name) else {
                continue;
            };
            let Some(service) = self.services.get_mut(&name) else {
                continue;
            };
            for (pod, status) in service.pods.iter_mut().zip(&m.pods) {
                pod.counters
                    .count_second(status, m.error_rate, m.latency_p99_ms);
            }
        }
    }

    /// The counters of a service's pods, in the order [`Fleet::metrics`] lists the pods.
    pub fn pod_counters(&self, service: &str) -> Result<Vec<PodCounters>, FleetError> {
        Ok(self
            .service(service)?
            .pods
            .iter()
            .map(|p| p.counters.clone())
            .collect())
    }

    fn write_logs(&mut self, t: DateTime<Utc>) {
        for service in self.services.values_mut() {
            if t >= service.next_log_at && !service.spec.logs.is_empty() {
                let message =
                    service.spec.logs[service.next_log_message % service.spec.logs.len()].clone();
                service.next_log_message += 1;
                let healthy: Vec<String> = service
                    .pods
                    .iter()
                    .filter(|p| p.ready)
                    .map(|p| p.name.clone())
                    .collect();
                for pod in healthy {
                    let line = app_line(t, &pod, "info", message.clone());
                    push_log(&mut service.logs, line);
                }
                service.next_log_at = t + Duration::seconds(service.spec.log_every_secs as i64);
            }
        }
        for i in 0..self.faults.len() {
            for k in 0..self.faults[i].spec.logs.len() {
                if t >= self.faults[i].next_log_at[k] {
                    self.write_fault_log(i, k, t);
                }
            }
        }
    }

    fn write_fault_log(&mut self, fault: usize, template: usize, t: DateTime<Utc>) {
        let spec = self.faults[fault].spec.clone();
        let tpl = &spec.logs[template];
        self.faults[fault].next_log_at[template] = t + Duration::seconds(tpl.every_secs as i64);
        let Some(service) = self.services.get_mut(&spec.service) else {
            return;
        };
        let limit_mib = service.spec.memory_limit_mib;
        let targets: Vec<(String, u64, f64)> = service
            .pods
            .iter()
            .filter(|p| spec.pods == PodSelector::None || p.fault == Some(fault))
            .map(|p| (p.name.clone(), p.memory_bytes / MIB, p.disk_ratio))
            .collect();
        for (pod, memory_mib, disk) in targets {
            let message = tpl
                .message
                .replace("{pod}", &pod)
                .replace("{service}", &spec.service)
                .replace("{memory_mib}", &memory_mib.to_string())
                .replace("{limit_mib}", &limit_mib.to_string())
                .replace("{disk_pct}", &format!("{:.0}", disk * 100.0));
            let at = t - Duration::seconds(tpl.backdate_secs.unwrap_or(0) as i64);
            push_log(&mut service.logs, app_line(at, &pod, &tpl.level, message));
        }
    }

    /// Starts a scenario's faults at the current instant.
    pub fn inject(&mut self, name: &str) -> Result<(), FleetError> {
        let scenario = self
            .scenarios
            .get(name)
            .cloned()
            .ok_or_else(|| FleetError::NotFound(format!("no scenario named {name}")))?;
        if self.active_scenarios.iter().any(|s| s == name) {
            return Err(FleetError::Conflict(format!(
                "scenario {name} is already active"
            )));
        }
        let now = self.now;
        // Check every fault before touching the world: a scenario starts whole or not at all.
        let mut selections = Vec::with_capacity(scenario.faults.len());
        for spec in &scenario.faults {
            let service = self.service(&spec.service)?;
            let selected = selected_pods(spec.pods, service.pods.len())
                .map_err(|e| FleetError::Invalid(format!("scenario {name}: {e}")))?;
            selections.push(selected);
        }
        for (spec, selected) in scenario.faults.into_iter().zip(selections) {
            let index = self.faults.len();
            let Some(service) = self.services.get_mut(&spec.service) else {
                continue;
            };
            let limit = service.spec.memory_limit_mib * MIB;
            for i in selected {
                let pod = &mut service.pods[i];
                pod.fault = Some(index);
                pod.restarts += spec.initial_restarts;
                let events = apply_fault_start(
                    pod,
                    &service.spec.name,
                    &spec.kind,
                    limit,
                    now,
                    spec.initial_restarts > 0,
                );
                for line in events {
                    push_log(&mut service.logs, line);
                }
            }
            self.faults.push(ActiveFault {
                scenario: name.to_owned(),
                next_log_at: vec![now; spec.logs.len()],
                certificate_expires_at: spec
                    .certificate_expires_in_secs
                    .and_then(Duration::try_seconds)
                    .and_then(|d| now.checked_add_signed(d)),
                spec,
            });
            for k in 0..self.faults[index].spec.logs.len() {
                self.write_fault_log(index, k, now);
            }
        }
        self.active_scenarios.push(name.to_owned());
        Ok(())
    }

    /// Ends an active scenario at the current instant, as if an operator fixed it by hand:
    /// its faults are gone, and each pod still suffering one runs healthy and ready again in
    /// place (same uid; restart count and last termination kept, as Kubernetes keeps them;
    /// a container that was down is started now, with the kubelet's platform event). The
    /// service's error rate, latency and gauges go back to their healthy values. Nothing is
    /// appended to the ledger, which records only the calls made to the fleet's API on
    /// behalf of an agent; like `inject`, this is the world changing. The scenario may be
    /// injected again afterwards.
    pub fn end(&mut self, name: &str) -> Result<(), FleetError> {
        let Some(position) = self.active_scenarios.iter().position(|s| s == name) else {
            let known = self.scenarios.contains_key(name);
            return Err(FleetError::NotFound(if known {
                format!("scenario {name} is not active")
            } else {
                format!("no scenario named {}", clip(name))
            }));
        };
        let now = self.now;
        let ended: Vec<bool> = self.faults.iter().map(|f| f.scenario == name).collect();
        // Pods point at faults by index: the faults that stay are renumbered.
        let mut renumbered = Vec::with_capacity(ended.len());
        let mut next = 0;
        for &gone in &ended {
            renumbered.push(next);
            next += usize::from(!gone);
        }
        for service in self.services.values_mut() {
            let Service {
                spec, pods, logs, ..
            } = service;
            let baseline = spec.memory_baseline_mib * MIB;
            for pod in pods.iter_mut() {
                let Some(i) = pod.fault else {
                    continue;
                };
                if !ended[i] {
                    pod.fault = Some(renumbered[i]);
                } else if pod.heal(now, baseline) {
                    platform_event(logs, now, &pod.name, "info", started(&spec.name, pod));
                }
            }
        }
        self.faults.retain(|f| f.scenario != name);
        self.active_scenarios.remove(position);
        Ok(())
    }

    /// The service and its pods as they are now.
    pub fn metrics(&self, service: &str) -> Result<ServiceMetrics, FleetError> {
        let s = self.service(service)?;
        let active_faults: Vec<&ActiveFault> = self
            .faults
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                f.spec.service == service
                    && (f.spec.pods == PodSelector::None
                        || s.pods.iter().any(|p| p.fault == Some(*i)))
            })
            .map(|(_, f)| f)
            .collect();
        let active: Vec<&FaultSpec> = active_faults.iter().map(|f| &f.spec).collect();
        // The latest fault that sets a gauge wins over the healthy value.
        let connections = active
            .iter()
            .rev()
            .find_map(|f| f.connections)
            .or(s.spec.connections);
        let replication_lag_secs = active
            .iter()
            .rev()
            .find_map(|f| f.replication_lag_secs)
            .or(s.spec.replication_lag_secs);
        let certificate_expires_at = active_faults
            .iter()
            .rev()
            .find_map(|f| f.certificate_expires_at)
            .or(s.certificate_expires_at);
        let error_rate = active
            .iter()
            .filter_map(|f| f.error_rate)
            .fold(s.spec.error_rate, f64::max);
        let latency = active
            .iter()
            .filter_map(|f| f.latency_p99_ms)
            .fold(s.spec.latency_p99_ms, u64::max);
        let pods: Vec<PodStatus> = s
            .pods
            .iter()
            .map(|p| PodStatus {
                name: p.name.clone(),
                uid: p.uid.clone(),
                created_at: p.created_at,
                phase: p.phase.to_owned(),
                ready: p.ready,
                restarts: p.restarts,
                last_termination_reason: p.last_termination_reason.clone(),
                last_exit_code: p.last_exit_code,
                last_terminated_at: p.last_terminated_at,
                memory_used_bytes: p.memory_bytes,
                memory_limit_bytes: s.spec.memory_limit_mib * MIB,
                cpu_millicores: if p.phase == "Running" {
                    s.spec.cpu_millicores
                } else {
                    0
                },
                cpu_throttled_ratio: match p.fault {
                    Some(i) if p.phase == "Running" => {
                        self.faults[i].spec.cpu_throttled_ratio.unwrap_or(0.0)
                    }
                    _ => 0.0,
                },
                disk_used_ratio: (p.disk_ratio * 1000.0).round() / 1000.0,
                started_at: p.started_at,
            })
            .collect();
        Ok(ServiceMetrics {
            service: service.to_owned(),
            namespace: s.spec.namespace.clone(),
            tier: s.spec.tier.as_str().to_owned(),
            replicas: s.spec.replicas,
            ready_replicas: pods.iter().filter(|p| p.ready).count() as u32,
            error_rate,
            latency_p99_ms: latency,
            connections,
            replication_lag_secs,
            certificate_expires_at,
            pods,
            observed_at: self.now,
            not_measured: vec![],
        })
    }

    /// The newest `limit` log lines of a service between `start` and `end`.
    pub fn logs(
        &self,
        service: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: usize,
    ) -> Result<LogPage, FleetError> {
        let s = self.service(service)?;
        let matched: Vec<&LogLine> = s
            .logs
            .iter()
            .filter(|l| l.at >= start && l.at <= end)
            .collect();
        let skip = matched.len().saturating_sub(limit);
        Ok(LogPage {
            service: service.to_owned(),
            start,
            end,
            lines: matched[skip..].iter().map(|l| (*l).clone()).collect(),
            matched: matched.len(),
            truncated: skip > 0,
        })
    }

    /// Restarts a pod (deletes it; its controller makes a fresh one with the same name).
    /// With an idempotency key already used for this pod, returns the first answer and
    /// changes nothing.
    pub fn restart_pod(
        &mut self,
        pod_name: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<RestartOutcome, FleetError> {
        self.restart_pod_instance(pod_name, None, idempotency_key, trace_id)
    }

    /// [`Fleet::restart_pod`], restarting only the instance `expected_uid` when given: a pod
    /// of that name that is another instance is not touched (a conflict, as a Kubernetes
    /// delete with a uid precondition answers 409).
    pub fn restart_pod_instance(
        &mut self,
        pod_name: &str,
        expected_uid: Option<&str>,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<RestartOutcome, FleetError> {
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key).map_err(FleetError::Invalid)?;
            match self.idempotency.get(key) {
                Some(Recorded::Restart { pod, outcome }) if pod == pod_name => {
                    return Ok(RestartOutcome {
                        replayed: true,
                        ..outcome.clone()
                    });
                }
                Some(_) => return Err(reused(key)),
                None => {}
            }
        }
        let service_name = self
            .pod_index
            .get(pod_name)
            .cloned()
            .ok_or_else(|| FleetError::NotFound(format!("no pod named {pod_name}")))?;
        let now = self.now;
        let service = self.services.get_mut(&service_name).expect("indexed");
        let (limit, baseline) = (
            service.spec.memory_limit_mib * MIB,
            service.spec.memory_baseline_mib * MIB,
        );
        let Service {
            spec, pods, logs, ..
        } = service;
        let pod = pods
            .iter_mut()
            .find(|p| p.name == pod_name)
            .expect("indexed");
        if let Some(expected) = expected_uid.filter(|u| *u != pod.uid) {
            return Err(FleetError::Conflict(format!(
                "pod {pod_name} is now the instance {}, not {expected}: not restarted",
                pod.uid
            )));
        }
        let (previous_phase, previous_restarts, previous_reason) = (
            pod.phase.to_owned(),
            pod.restarts,
            pod.last_termination_reason.clone(),
        );
        let mut fresh = Pod::new(pod.name.clone(), pod.generation + 1, now, baseline);
        // The volume outlives the pod.
        fresh.disk_ratio = pod.disk_ratio;
        fresh.fault = pod.fault;
        *pod = fresh;
        let message = format!(
            "Deleted pod {}; its controller created a replacement (uid {}) and started container {}",
            pod.name, pod.uid, spec.name
        );
        platform_event(logs, now, &pod.name, "info", message);
        if let Some(i) = pod.fault {
            let fault = &self.faults[i].spec;
            match fault.on_restart {
                OnRestart::Clears => pod.fault = None,
                OnRestart::Persists => {
                    let events = apply_fault_start(pod, &spec.name, &fault.kind, limit, now, false);
                    for line in events {
                        push_log(logs, line);
                    }
                }
            }
        }
        let seq = self.append_ledger("restart-pod", pod_name, idempotency_key, trace_id);
        let outcome = RestartOutcome {
            pod: pod_name.to_owned(),
            service: service_name,
            previous_phase,
            previous_restarts,
            previous_termination_reason: previous_reason,
            restarted_at: now,
            ledger_seq: seq,
            replayed: false,
        };
        if let Some(key) = idempotency_key {
            self.remember(
                key,
                Recorded::Restart {
                    pod: pod_name.to_owned(),
                    outcome: outcome.clone(),
                },
            );
        }
        Ok(outcome)
    }

    /// Delivers a notification to the inbox. With an idempotency key already used for the
    /// same message, returns the first receipt and delivers nothing.
    pub fn notify(
        &mut self,
        message: &str,
        severity: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Receipt, FleetError> {
        validate_notification(message, severity).map_err(FleetError::Invalid)?;
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key).map_err(FleetError::Invalid)?;
            match self.idempotency.get(key) {
                Some(Recorded::Notification {
                    message: m,
                    severity: s,
                    receipt,
                }) if m == message && s == severity => {
                    return Ok(Receipt {
                        replayed: true,
                        ..receipt.clone()
                    });
                }
                Some(_) => return Err(reused(key)),
                None => {}
            }
        }
        let id = self.notifications.len() as u64 + 1;
        self.notifications.push(Notification {
            id,
            at: self.now,
            severity: severity.to_owned(),
            message: message.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            trace_id: trace_id.map(str::to_owned),
        });
        let seq = self.append_ledger("send-notification", severity, idempotency_key, trace_id);
        let receipt = Receipt {
            notification_id: id,
            channel: "inbox".into(),
            delivered_at: self.now,
            ledger_seq: seq,
            replayed: false,
        };
        if let Some(key) = idempotency_key {
            self.remember(
                key,
                Recorded::Notification {
                    message: message.to_owned(),
                    severity: severity.to_owned(),
                    receipt: receipt.clone(),
                },
            );
        }
        Ok(receipt)
    }

    /// Appends an application line to a service's log, as if the service wrote it: models
    /// text from outside (a logged request, a user's input) reaching the log. `pod` must be
    /// one of the service's (the first ready one when absent); `at` defaults to now and may
    /// be back-dated up to [`APP_LOG_BACKDATE_SECS_MAX`], never in the future. The line is
    /// always `application`: nothing from outside can write a `platform` line.
    pub fn write_app_log(
        &mut self,
        service: &str,
        pod: Option<&str>,
        level: &str,
        message: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<LogLine, FleetError> {
        // Names the known services when `service` is not one.
        self.service(service)?;
        if !LOG_LEVELS.contains(&level) {
            return Err(FleetError::Invalid(format!(
                "level {:?} is not one of {}",
                clip(level),
                LOG_LEVELS.join(", ")
            )));
        }
        if message.is_empty() || message.chars().count() > LOG_MESSAGE_CHARS_MAX {
            return Err(FleetError::Invalid(format!(
                "message must be 1 to {LOG_MESSAGE_CHARS_MAX} characters"
            )));
        }
        let now = self.now;
        let at = at.unwrap_or(now);
        if at > now {
            return Err(FleetError::Invalid(format!(
                "at {} is in the future: the fleet's now is {}",
                at.to_rfc3339(),
                now.to_rfc3339()
            )));
        }
        if now - at > Duration::seconds(APP_LOG_BACKDATE_SECS_MAX) {
            return Err(FleetError::Invalid(format!(
                "at may be at most {APP_LOG_BACKDATE_SECS_MAX} s before now"
            )));
        }
        let Some(s) = self.services.get_mut(service) else {
            return Err(FleetError::NotFound(format!(
                "no service named {}",
                clip(service)
            )));
        };
        let pod = match pod {
            Some(name) => s.pods.iter().find(|p| p.name == name).ok_or_else(|| {
                FleetError::NotFound(format!("no pod named {} in service {service}", clip(name)))
            })?,
            None => s
                .pods
                .iter()
                .find(|p| p.ready)
                .or(s.pods.first())
                .ok_or_else(|| FleetError::NotFound(format!("service {service} has no pods")))?,
        };
        let line = app_line(at, &pod.name, level, message.to_owned());
        push_log(&mut s.logs, line.clone());
        Ok(line)
    }

    fn service(&self, name: &str) -> Result<&Service, FleetError> {
        self.services.get(name).ok_or_else(|| {
            FleetError::NotFound(format!(
                "no service named {name}; known services: {}",
                self.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn append_ledger(
        &mut self,
        action: &str,
        target: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> u64 {
        let seq = self.ledger.len() as u64 + 1;
        self.ledger.push(LedgerEntry {
            seq,
            at: self.now,
            action: action.to_owned(),
            target: target.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            trace_id: trace_id.map(str::to_owned),
        });
        seq
    }

    fn remember(&mut self, key: &str, recorded: Recorded) {
        if self.idempotency_order.len() >= IDEMPOTENCY_KEYS_MAX
            && let Some(oldest) = self.idempotency_order.pop_front()
        {
            self.idempotency.remove(&oldest);
        }
        self.idempotency.insert(key.to_owned(), recorded);
        self.idempotency_order.push_back(key.to_owned());
    }
}

fn reused(key: &str) -> FleetError {
    FleetError::Conflict(format!(
        "idempotency key {key} was already used for a different call; use a new key"
    ))
}

/// The state a fault puts a pod in when it starts (at injection, or again after a restart
/// that does not clear it), and the platform events that go with it. `crashed_before` marks
/// a pod that already crashed from it: its last termination is recent, and a memory-leaking
/// pod has already been restarted by the kubelet since.
fn apply_fault_start(
    pod: &mut Pod,
    service: &str,
    kind: &FaultKind,
    limit: u64,
    now: DateTime<Utc>,
    crashed_before: bool,
) -> Vec<LogLine> {
    let mut events = Vec::new();
    match kind {
        FaultKind::MemoryLeak {
            start_ratio,
            backoff_secs,
            ..
        } => {
            if crashed_before {
                let started_at = now - Duration::seconds(RESTARTED_AGO_SECS);
                let killed_at = started_at - Duration::seconds(*backoff_secs as i64);
                pod.last_termination_reason = Some("OOMKilled".into());
                pod.last_exit_code = Some(137);
                pod.last_terminated_at = Some(killed_at);
                pod.started_at = started_at;
                let message = oom_killed(service, &pod.name, *backoff_secs);
                events.push(platform_line(killed_at, &pod.name, "warn", message));
                let message = started(service, pod);
                events.push(platform_line(started_at, &pod.name, "info", message));
            }
            pod.memory_bytes = (limit as f64 * start_ratio) as u64;
        }
        FaultKind::CrashLoop {
            reason,
            exit_code,
            backoff_secs,
        } => {
            // The container exits right after it starts.
            let ended_at = if crashed_before {
                now - Duration::seconds(1)
            } else {
                now
            };
            pod.phase = "CrashLoopBackOff";
            pod.ready = false;
            pod.last_termination_reason = Some(reason.clone());
            pod.last_exit_code = Some(*exit_code);
            pod.last_terminated_at = Some(ended_at);
            pod.started_at = ended_at;
            pod.backoff_until = Some(now + Duration::seconds(*backoff_secs as i64));
            let message = crashed(service, &pod.name, reason, *exit_code, *backoff_secs);
            events.push(platform_line(ended_at, &pod.name, "warn", message));
        }
        FaultKind::Unavailable => pod.ready = false,
        FaultKind::DiskFill { start_ratio, .. } => {
            pod.disk_ratio = pod.disk_ratio.max(*start_ratio);
            pod.ready = pod.disk_ratio < 0.98;
        }
        FaultKind::Degraded => {}
    }
    events
}

/// The kubelet's event for an OOM kill.
fn oom_killed(service: &str, pod: &str, backoff_secs: u64) -> String {
    format!(
        "Container {service} in pod {pod} was OOMKilled (exit code 137); back-off {backoff_secs}s restarting failed container"
    )
}

/// The kubelet's event for a container that exited and is backing off.
fn crashed(service: &str, pod: &str, reason: &str, exit_code: i32, backoff_secs: u64) -> String {
    format!(
        "Back-off restarting failed container {service} in pod {pod} (exit code {exit_code}, reason {reason}); back-off {backoff_secs}s"
    )
}

/// The kubelet's event for a container started again after a termination.
fn started(service: &str, pod: &Pod) -> String {
    format!(
        "Started container {service} in pod {} (restart {})",
        pod.name, pod.restarts
    )
}

fn app_line(at: DateTime<Utc>, pod: &str, level: &str, message: String) -> LogLine {
    LogLine {
        at,
        pod: pod.to_owned(),
        level: level.to_owned(),
        message,
        source: LogSource::Application,
    }
}

fn platform_line(at: DateTime<Utc>, pod: &str, level: &str, message: String) -> LogLine {
    LogLine {
        at,
        pod: pod.to_owned(),
        level: level.to_owned(),
        message,
        source: LogSource::Platform,
    }
}

fn platform_event(
    logs: &mut VecDeque<LogLine>,
    at: DateTime<Utc>,
    pod: &str,
    level: &str,
    message: String,
) {
    push_log(logs, platform_line(at, pod, level, message));
}

/// Inserts `line` in time order (after lines of the same instant), dropping the oldest line
/// beyond [`LOG_LINES_PER_SERVICE_MAX`].
fn push_log(logs: &mut VecDeque<LogLine>, line: LogLine) {
    let at = logs.partition_point(|l| l.at <= line.at);
    logs.insert(at, line);
    if logs.len() > LOG_LINES_PER_SERVICE_MAX {
        logs.pop_front();
    }
}

/// At most 64 characters of a caller's string, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus's `histogram_quantile` computes from cumulative bucket shares.
    fn histogram_quantile(q: f64, shares: &[f64]) -> f64 {
        let rank = q * 1.0;
        let k = shares.iter().position(|&c| c >= rank).unwrap();
        let (lower, below) = if k == 0 {
            (0.0, 0.0)
        } else {
            (LATENCY_BUCKETS_SECONDS[k - 1], shares[k - 1])
        };
        lower + (LATENCY_BUCKETS_SECONDS[k] - lower) * (rank - below) / (shares[k] - below)
    }

    #[test]
    fn the_latency_histogram_gives_back_the_p99_through_histogram_quantile() {
        for p99 in [
            0.003, 0.005, 0.042, 0.12, 0.2495, 0.48, 0.999, 5.0, 7.3, 10.0,
        ] {
            let shares = latency_shares(p99);
            assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
            assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)));
            let back = histogram_quantile(LATENCY_QUANTILE, &shares);
            let expected = p99.max(0.005 * LATENCY_QUANTILE);
            assert!((back - expected).abs() < 1e-9, "{p99} gave {back}");
        }
        assert!(latency_shares(f64::NAN).iter().all(|s| s.is_finite()));
        assert!(latency_shares(-1.0).iter().all(|s| s.is_finite()));
    }
}
