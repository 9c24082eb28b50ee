//! The simulated fleet: services, pods, logs and an append-only ledger of mutating calls,
//! advanced one simulated second at a time. Pure: the caller passes the instant to advance
//! to, so tests drive time exactly and the `sre-fleet` service drives it with the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::model::{
    LedgerEntry, LogLine, LogPage, Notification, PodStatus, Receipt, RestartOutcome,
    ServiceMetrics, validate_idempotency_key, validate_notification,
};
use super::scenario::{FaultKind, FaultSpec, OnRestart, PodSelector, Scenario};
use crate::catalog::Tier;

/// Most log lines kept per service; older ones are dropped.
pub const LOG_LINES_PER_SERVICE_MAX: usize = 5_000;
/// Longest stretch of simulated time replayed second by second; a longer gap skips ahead.
pub const CATCH_UP_SECS_MAX: i64 = 3_600;
/// Most idempotency keys remembered; the oldest are forgotten first.
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;
const MIB: u64 = 1024 * 1024;

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
            if s.replicas == 0
                || s.replicas > 50
                || s.log_every_secs == 0
                || s.memory_baseline_mib >= s.memory_limit_mib
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
    phase: &'static str,
    ready: bool,
    restarts: u32,
    last_termination_reason: Option<String>,
    last_exit_code: Option<i32>,
    memory_bytes: u64,
    disk_ratio: f64,
    started_at: DateTime<Utc>,
    /// Index into `Fleet::faults` of the fault this pod suffers.
    fault: Option<usize>,
    /// While set, the container is down and comes back at this instant.
    backoff_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct Service {
    spec: ServiceSpec,
    pods: Vec<Pod>,
    logs: VecDeque<LogLine>,
    next_log_at: DateTime<Utc>,
    next_log_message: usize,
}

#[derive(Clone, Debug)]
struct ActiveFault {
    spec: FaultSpec,
    /// When each of the spec's log templates next writes.
    next_log_at: Vec<DateTime<Utc>>,
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
    services: BTreeMap<String, Service>,
    /// Pod name → service name.
    pod_index: HashMap<String, String>,
    faults: Vec<ActiveFault>,
    /// Scenario names injected so far, in order.
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
            let pods: Vec<Pod> = (0..s.replicas)
                .map(|i| Pod {
                    name: pod_name(&s, i),
                    phase: "Running",
                    ready: true,
                    restarts: 0,
                    last_termination_reason: None,
                    last_exit_code: None,
                    memory_bytes: s.memory_baseline_mib * MIB,
                    disk_ratio: 0.2,
                    started_at: now - Duration::hours(20),
                    fault: None,
                    backoff_until: None,
                })
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
            by_name.insert(scenario.name.clone(), scenario);
        }
        Ok(Fleet {
            now,
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

    /// Advances the world to `to`, one simulated second at a time.
    pub fn advance(&mut self, to: DateTime<Utc>) {
        if to <= self.now {
            return;
        }
        let mut t = self.now.max(to - Duration::seconds(CATCH_UP_SECS_MAX));
        while t < to {
            t = (t + Duration::seconds(1)).min(to);
            self.step(t);
        }
        self.now = to;
    }

    fn step(&mut self, t: DateTime<Utc>) {
        let dt = 1.0;
        for service in self.services.values_mut() {
            let limit = service.spec.memory_limit_mib * MIB;
            let baseline = service.spec.memory_baseline_mib * MIB;
            for pod in &mut service.pods {
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
                            pod.memory_bytes = baseline;
                        }
                        Some(_) => {}
                        None => {
                            let rate = (limit - baseline) as f64 / *ramp_secs as f64;
                            pod.memory_bytes = (pod.memory_bytes as f64 + rate * dt) as u64;
                            if pod.memory_bytes >= limit {
                                pod.restarts += 1;
                                pod.last_termination_reason = Some("OOMKilled".into());
                                pod.last_exit_code = Some(137);
                                pod.phase = "CrashLoopBackOff";
                                pod.ready = false;
                                pod.memory_bytes = 0;
                                pod.backoff_until =
                                    Some(t + Duration::seconds(*backoff_secs as i64));
                            }
                        }
                    },
                    FaultKind::CrashLoop { backoff_secs, .. } => {
                        if pod.backoff_until.is_none_or(|until| t >= until) {
                            pod.restarts += 1;
                            pod.backoff_until = Some(t + Duration::seconds(*backoff_secs as i64));
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
                    push_log(service, t, &pod, "info", message.clone());
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
            push_log(service, t, &pod, &tpl.level, message);
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
        for spec in scenario.faults {
            let index = self.faults.len();
            let service = self
                .services
                .get_mut(&spec.service)
                .expect("checked at load");
            let limit = service.spec.memory_limit_mib * MIB;
            let selected = match spec.pods {
                PodSelector::First => 1,
                PodSelector::All => service.pods.len(),
                PodSelector::None => 0,
            };
            for pod in service.pods.iter_mut().take(selected) {
                pod.fault = Some(index);
                pod.restarts += spec.initial_restarts;
                apply_fault_start(pod, &spec.kind, limit, now, spec.initial_restarts > 0);
            }
            self.faults.push(ActiveFault {
                next_log_at: vec![now; spec.logs.len()],
                spec,
            });
            for k in 0..self.faults[index].spec.logs.len() {
                self.write_fault_log(index, k, now);
            }
        }
        self.active_scenarios.push(name.to_owned());
        Ok(())
    }

    /// The service and its pods as they are now.
    pub fn metrics(&self, service: &str) -> Result<ServiceMetrics, FleetError> {
        let s = self.service(service)?;
        let active: Vec<&FaultSpec> = self
            .faults
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                f.spec.service == service
                    && (f.spec.pods == PodSelector::None
                        || s.pods.iter().any(|p| p.fault == Some(*i)))
            })
            .map(|(_, f)| &f.spec)
            .collect();
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
                phase: p.phase.to_owned(),
                ready: p.ready,
                restarts: p.restarts,
                last_termination_reason: p.last_termination_reason.clone(),
                last_exit_code: p.last_exit_code,
                memory_used_bytes: p.memory_bytes,
                memory_limit_bytes: s.spec.memory_limit_mib * MIB,
                cpu_millicores: if p.phase == "Running" {
                    s.spec.cpu_millicores
                } else {
                    0
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
            pods,
            observed_at: self.now,
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
        let pod = service
            .pods
            .iter_mut()
            .find(|p| p.name == pod_name)
            .expect("indexed");
        let (previous_phase, previous_restarts, previous_reason) = (
            pod.phase.to_owned(),
            pod.restarts,
            pod.last_termination_reason.clone(),
        );
        *pod = Pod {
            name: pod.name.clone(),
            phase: "Running",
            ready: true,
            restarts: 0,
            last_termination_reason: None,
            last_exit_code: None,
            memory_bytes: baseline,
            // The volume outlives the pod.
            disk_ratio: pod.disk_ratio,
            started_at: now,
            fault: pod.fault,
            backoff_until: None,
        };
        if let Some(i) = pod.fault {
            let fault = &self.faults[i].spec;
            match fault.on_restart {
                OnRestart::Clears => pod.fault = None,
                OnRestart::Persists => apply_fault_start(pod, &fault.kind, limit, now, false),
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
/// that does not clear it). `crashed_before` marks a pod that already crashed from it.
fn apply_fault_start(
    pod: &mut Pod,
    kind: &FaultKind,
    limit: u64,
    now: DateTime<Utc>,
    crashed_before: bool,
) {
    match kind {
        FaultKind::MemoryLeak { start_ratio, .. } => {
            if crashed_before {
                pod.last_termination_reason = Some("OOMKilled".into());
                pod.last_exit_code = Some(137);
            }
            pod.memory_bytes = (limit as f64 * start_ratio) as u64;
        }
        FaultKind::CrashLoop {
            reason,
            exit_code,
            backoff_secs,
        } => {
            pod.phase = "CrashLoopBackOff";
            pod.ready = false;
            pod.last_termination_reason = Some(reason.clone());
            pod.last_exit_code = Some(*exit_code);
            pod.backoff_until = Some(now + Duration::seconds(*backoff_secs as i64));
        }
        FaultKind::Unavailable => pod.ready = false,
        FaultKind::DiskFill { start_ratio, .. } => {
            pod.disk_ratio = pod.disk_ratio.max(*start_ratio);
            pod.ready = pod.disk_ratio < 0.98;
        }
        FaultKind::Degraded => {}
    }
}

fn push_log(service: &mut Service, at: DateTime<Utc>, pod: &str, level: &str, message: String) {
    if service.logs.len() >= LOG_LINES_PER_SERVICE_MAX {
        service.logs.pop_front();
    }
    service.logs.push_back(LogLine {
        at,
        pod: pod.to_owned(),
        level: level.to_owned(),
        message,
    });
}
