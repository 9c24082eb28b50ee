//! The storm's alerts, decided before the first is sent (pure): every request's body, in
//! order, and how many distinct failures the alerts describe.
//!
//! Every alert its own failure: `POST /incidents` reports with `"coalesce": false`,
//! rotating a checkout-api OOM, a payments-db outage and an alert nobody maps, each with an
//! `Idempotency-Key` so that a retried request opens nothing twice.
//!
//! `K` failures from `N` alerts (`K < N`): Alertmanager webhook (v4) deliveries, the way
//! Alertmanager sends them: one group per failure, every notification repeating the whole
//! group. Failure 0 is an OOM of checkout-api, failure 1 an outage of payments-db, each with
//! up to [`FINGERPRINTS_PER_FAILURE_MAX`] alerts (generic and specific rule names, distinct
//! fingerprints) that route to the same failure; the others are alerts nobody maps, one
//! fingerprint each (an unmapped alert is its own failure). The groups are delivered round
//! robin until the firing alerts are spent; then the OOM's alerts resolve, as they would
//! once the agent's restart fixed the pod (the database and the unmapped alerts keep firing:
//! nobody fixed those). So the incident of every failure can end.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// Most alerts (fingerprints) of one mapped failure.
pub const FINGERPRINTS_PER_FAILURE_MAX: usize = 4;

/// The kinds of trouble a storm is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// checkout-api OOM-killed: the agent restarts the pod on its own authority.
    Oom,
    /// payments-db down: the agent pages and proposes, a human decides.
    DbOutage,
    /// An alert no catalog entry maps: escalated, never acted on.
    Unmapped,
}

impl Kind {
    /// The order reports rotate in.
    pub const ROTATION: [Kind; 3] = [Kind::Oom, Kind::DbOutage, Kind::Unmapped];

    /// The kind of the `i`-th failure of an Alertmanager storm.
    pub fn of_failure(i: usize) -> Kind {
        match i {
            0 => Kind::Oom,
            1 => Kind::DbOutage,
            _ => Kind::Unmapped,
        }
    }

    /// `(alert_type, service)` of a report.
    fn report(self) -> (&'static str, &'static str) {
        match self {
            Kind::Oom => ("CheckoutApiOOMKilled", "checkout-api"),
            Kind::DbOutage => ("PaymentsDbDown", "payments-db"),
            Kind::Unmapped => ("SomethingNobodyMapped", "mystery"),
        }
    }

    /// The rule names its alerts take in turn: generic and specific name one failure.
    fn alertnames(self) -> &'static [&'static str] {
        match self {
            Kind::Oom => &["KubePodOOMKilled", "CheckoutApiOOMKilled"],
            Kind::DbOutage => &["PostgresqlDown", "PaymentsDbDown"],
            Kind::Unmapped => &["StormUnmappedAlert"],
        }
    }
}

/// Why a storm cannot be planned.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("--alerts must be at least 1")]
    NoAlerts,
    #[error("--failures must be at least 1")]
    NoFailures,
    #[error("--failures ({failures}) must not exceed --alerts ({alerts})")]
    MoreFailuresThanAlerts { failures: usize, alerts: usize },
}

/// Which requests a phase holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Every alert firing (or every report).
    Firing,
    /// After every firing request was answered: the alerts that resolve.
    Resolving,
}

/// One request of the storm.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `/incidents` or `/webhooks/alertmanager`.
    pub path: &'static str,
    pub body: Value,
    /// Sent as `Idempotency-Key` (reports), so a retry opens nothing twice.
    pub idempotency_key: Option<String>,
    /// Alerts the request carries.
    pub alerts: usize,
}

/// A failure of an Alertmanager storm: its kind and its alerts' fingerprints.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: Kind,
    pub fingerprints: Vec<String>,
}

/// One webhook delivery: the first `alerts` alerts of one failure's group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub failure: usize,
    pub alerts: usize,
}

/// The storm, decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Every alert its own incident.
    Reports { alerts: usize, run: u64 },
    /// Alertmanager deliveries describing `failures.len()` failures.
    Alertmanager {
        failures: Vec<Failure>,
        firing: Vec<Delivery>,
        resolving: Vec<Delivery>,
        run: u64,
    },
}

impl Plan {
    /// `alerts` alerts describing `failures` distinct failures (`None`, or as many as
    /// alerts: every alert its own). `run` tells this storm's alerts from another's (its
    /// fingerprints and idempotency keys).
    pub fn new(alerts: usize, failures: Option<usize>, run: u64) -> Result<Plan, PlanError> {
        if alerts == 0 {
            return Err(PlanError::NoAlerts);
        }
        let k = match failures {
            None => return Ok(Plan::Reports { alerts, run }),
            Some(0) => return Err(PlanError::NoFailures),
            Some(k) if k > alerts => {
                return Err(PlanError::MoreFailuresThanAlerts {
                    failures: k,
                    alerts,
                });
            }
            Some(k) if k == alerts => return Ok(Plan::Reports { alerts, run }),
            Some(k) => k,
        };
        // Every failure one alert, and one for the OOM's to resolve: k + 1 <= alerts. The
        // alerts to spare give the OOM (2 each: firing and resolved) and the database (1
        // each) more alerts of their own, then repeat the groups.
        let mut per_failure = vec![1usize; k];
        let mut spare = alerts - k - 1;
        loop {
            let mut grew = false;
            if per_failure[0] < FINGERPRINTS_PER_FAILURE_MAX && spare >= 2 {
                per_failure[0] += 1;
                spare -= 2;
                grew = true;
            }
            if k > 1 && per_failure[1] < FINGERPRINTS_PER_FAILURE_MAX && spare >= 1 {
                per_failure[1] += 1;
                spare -= 1;
                grew = true;
            }
            if !grew {
                break;
            }
        }
        let failures: Vec<Failure> = per_failure
            .iter()
            .enumerate()
            .map(|(f, &n)| Failure {
                kind: Kind::of_failure(f),
                fingerprints: (0..n).map(|j| fingerprint(run, f, j)).collect(),
            })
            .collect();
        // Round robin over the groups until the firing alerts are spent. The first round
        // carries every alert (spare >= 0), so every failure fires; each round spends at
        // least one alert, so this ends.
        let mut left = alerts - per_failure[0];
        let mut firing = Vec::new();
        while left > 0 {
            for (f, &n) in per_failure.iter().enumerate() {
                let take = n.min(left);
                if take == 0 {
                    break;
                }
                firing.push(Delivery {
                    failure: f,
                    alerts: take,
                });
                left -= take;
            }
        }
        let resolving = vec![Delivery {
            failure: 0,
            alerts: per_failure[0],
        }];
        Ok(Plan::Alertmanager {
            failures,
            firing,
            resolving,
            run,
        })
    }

    /// Alerts the storm sends.
    pub fn alerts(&self) -> usize {
        match self {
            Plan::Reports { alerts, .. } => *alerts,
            Plan::Alertmanager {
                firing, resolving, ..
            } => firing.iter().chain(resolving).map(|d| d.alerts).sum(),
        }
    }

    /// Distinct failures the alerts describe: at most this many incidents.
    pub fn failures(&self) -> usize {
        match self {
            Plan::Reports { alerts, .. } => *alerts,
            Plan::Alertmanager { failures, .. } => failures.len(),
        }
    }

    /// `reports` or `alertmanager`.
    pub fn mode(&self) -> &'static str {
        match self {
            Plan::Reports { .. } => "reports",
            Plan::Alertmanager { .. } => "alertmanager",
        }
    }

    /// Requests in a phase.
    pub fn len(&self, phase: Phase) -> usize {
        match (self, phase) {
            (Plan::Reports { alerts, .. }, Phase::Firing) => *alerts,
            (Plan::Reports { .. }, Phase::Resolving) => 0,
            (Plan::Alertmanager { firing, .. }, Phase::Firing) => firing.len(),
            (Plan::Alertmanager { resolving, .. }, Phase::Resolving) => resolving.len(),
        }
    }

    /// The `i`-th request of a phase (`None` past its end). Alerts fire since `started`
    /// (the same instant in every repeat, so Alertmanager's repeats are repeats); resolved
    /// ones ended at `now`.
    pub fn request(
        &self,
        phase: Phase,
        i: usize,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Request> {
        match self {
            Plan::Reports { alerts, run } => {
                if phase != Phase::Firing || i >= *alerts {
                    return None;
                }
                let (alert, service) = Kind::ROTATION[i % Kind::ROTATION.len()].report();
                Some(Request {
                    path: "/incidents",
                    body: json!({
                        "title": format!("storm {i}: {alert}"),
                        "severity": "high",
                        "alert_type": alert,
                        "service": service,
                        "coalesce": false,
                    }),
                    idempotency_key: Some(format!("storm-{run:016x}-{i}")),
                    alerts: 1,
                })
            }
            Plan::Alertmanager {
                failures,
                firing,
                resolving,
                run,
            } => {
                let (delivery, resolved) = match phase {
                    Phase::Firing => (firing.get(i)?, false),
                    Phase::Resolving => (resolving.get(i)?, true),
                };
                let failure = failures.get(delivery.failure)?;
                Some(Request {
                    path: "/webhooks/alertmanager",
                    body: webhook(
                        *run,
                        delivery.failure,
                        failure,
                        delivery.alerts,
                        started,
                        resolved.then_some(now),
                    ),
                    idempotency_key: None,
                    alerts: delivery.alerts,
                })
            }
        }
    }
}

/// A fingerprint unique to this run, failure and alert: 16 hex digits, like Alertmanager's.
fn fingerprint(run: u64, failure: usize, alert: usize) -> String {
    let index = failure
        .saturating_mul(FINGERPRINTS_PER_FAILURE_MAX)
        .saturating_add(alert);
    format!("{:08x}{:08x}", run & 0xffff_ffff, index as u32)
}

/// The labels of one alert of a failure.
fn labels(run: u64, f: usize, kind: Kind, j: usize) -> BTreeMap<String, String> {
    let names = kind.alertnames();
    let mut labels = BTreeMap::from([
        ("alertname".to_owned(), names[j % names.len()].to_owned()),
        ("job".to_owned(), "storm".to_owned()),
        ("instance".to_owned(), format!("storm-{j}")),
    ]);
    let (namespace, service, severity) = match kind {
        Kind::Oom => ("shop", Some("checkout-api"), "critical"),
        Kind::DbOutage => ("payments", Some("payments-db"), "critical"),
        Kind::Unmapped => ("storm", None, "warning"),
    };
    labels.insert("namespace".into(), namespace.into());
    labels.insert("severity".into(), severity.into());
    if let Some(service) = service {
        labels.insert("service".into(), service.into());
    }
    if kind == Kind::Unmapped {
        labels.insert("storm_run".into(), format!("{:08x}", run & 0xffff_ffff));
        labels.insert("storm_failure".into(), f.to_string());
    }
    labels
}

fn summary(kind: Kind, f: usize) -> String {
    match kind {
        Kind::Oom => "a checkout-api container was OOMKilled (storm)".into(),
        Kind::DbOutage => "payments-db accepts no connections (storm)".into(),
        Kind::Unmapped => format!("storm failure {f}: an alert no runbook maps"),
    }
}

/// Alertmanager's webhook v4 body for the first `alerts` alerts of failure `f`, firing since
/// `starts_at`, or resolved at `ended_at`.
fn webhook(
    run: u64,
    f: usize,
    failure: &Failure,
    alerts: usize,
    starts_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
) -> Value {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let status = if ended_at.is_some() {
        "resolved"
    } else {
        "firing"
    };
    let summary = summary(failure.kind, f);
    let items: Vec<Value> = failure
        .fingerprints
        .iter()
        .take(alerts)
        .enumerate()
        .map(|(j, fp)| {
            json!({
                "status": status,
                "labels": labels(run, f, failure.kind, j),
                "annotations": { "summary": summary },
                "startsAt": time(starts_at),
                "endsAt": ended_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), time),
                "generatorURL": "",
                "fingerprint": fp,
            })
        })
        .collect();
    let group = labels(run, f, failure.kind, 0);
    let group_labels: BTreeMap<&str, &str> = ["namespace", "service", "storm_failure"]
        .iter()
        .filter_map(|k| group.get(*k).map(|v| (*k, v.as_str())))
        .collect();
    json!({
        "version": "4",
        "receiver": "sre-agent",
        "status": status,
        "groupKey": format!("{{}}:{{storm=\"{run:016x}\", failure=\"{f}\"}}"),
        "truncatedAlerts": 0,
        "groupLabels": group_labels,
        "commonLabels": group_labels,
        "commonAnnotations": { "summary": summary },
        "externalURL": "",
        "alerts": items,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::intake::alertmanager::{self, Webhook};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Every request of the plan, both phases.
    fn requests(plan: &Plan) -> Vec<(Phase, Request)> {
        let (started, now) = (t("2026-11-26T10:00:00Z"), t("2026-11-26T10:05:00Z"));
        [Phase::Firing, Phase::Resolving]
            .into_iter()
            .flat_map(|phase| {
                (0..plan.len(phase)).map(move |i| (phase, plan.request(phase, i, started, now)))
            })
            .map(|(phase, r)| (phase, r.expect("every index below len is a request")))
            .collect()
    }

    /// What the agent's intake makes of the plan: each alert as the webhook parser reads
    /// it, with its failure as the catalog routes it (`{service}/{class}`, else the alert's
    /// own fingerprint). Returns the failures and, per failure, (firing, resolved) alerts.
    fn as_the_agent_sees_it(plan: &Plan) -> BTreeMap<String, (usize, usize)> {
        let catalog = mcp::data::load_catalog(None).unwrap();
        let mut failures = BTreeMap::<String, (usize, usize)>::new();
        for (phase, r) in requests(plan) {
            assert_eq!(r.path, "/webhooks/alertmanager");
            let hook: Webhook = serde_json::from_value(r.body.clone()).unwrap();
            let parsed = alertmanager::parse(hook).expect("the agent takes the delivery");
            assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
            assert_eq!(parsed.delivered.len(), r.alerts);
            for d in parsed.delivered {
                let route = catalog
                    .route(&d.event.alertname, &d.event.labels)
                    .ok()
                    .map(|m| (m.service.clone(), m.class.clone()));
                let key = crate::core::alerts::failure_key(
                    route.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
                    &d.event,
                )
                .unwrap();
                let counts = failures.entry(key).or_default();
                match phase {
                    Phase::Firing => counts.0 += 1,
                    Phase::Resolving => counts.1 += 1,
                }
            }
        }
        failures
    }

    #[test]
    fn k_failures_from_n_alerts_are_exactly_k_failures_and_n_alerts() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 3),
            (10, 3),
            (120, 3),
            (120, 119),
            (1_000, 10),
            (10_000, 10),
            (500, 499),
        ] {
            let plan = Plan::new(n, Some(k), 0xfeed_beef).unwrap();
            assert_eq!(plan.mode(), "alertmanager");
            assert_eq!(plan.alerts(), n, "n={n} k={k}");
            assert_eq!(plan.failures(), k);
            let sent: usize = requests(&plan).iter().map(|(_, r)| r.alerts).sum();
            assert_eq!(sent, n, "n={n} k={k}");
            let failures = as_the_agent_sees_it(&plan);
            assert_eq!(failures.len(), k, "n={n} k={k}: {failures:?}");
            let oom = failures["checkout-api/oom_killed"];
            assert!(oom.1 >= 1, "the OOM's alerts resolve: {oom:?}");
            if k > 1 {
                assert_eq!(failures["payments-db/database_down"].1, 0);
            }
            for (key, (firing, _)) in &failures {
                assert!(*firing >= 1, "{key} fires");
            }
        }
    }

    #[test]
    fn a_big_storm_repeats_deliveries_and_gives_mapped_failures_several_alerts() {
        let plan = Plan::new(10_000, Some(10), 7).unwrap();
        let Plan::Alertmanager {
            failures,
            firing,
            resolving,
            ..
        } = &plan
        else {
            panic!("alertmanager")
        };
        assert_eq!(failures[0].kind, Kind::Oom);
        assert_eq!(failures[1].kind, Kind::DbOutage);
        assert!(failures[2..].iter().all(|f| f.kind == Kind::Unmapped));
        assert_eq!(failures[0].fingerprints.len(), FINGERPRINTS_PER_FAILURE_MAX);
        assert_eq!(failures[1].fingerprints.len(), FINGERPRINTS_PER_FAILURE_MAX);
        let mut deliveries = HashMap::<usize, usize>::new();
        for d in firing {
            *deliveries.entry(d.failure).or_default() += 1;
        }
        assert!(deliveries.values().all(|&n| n > 100), "{deliveries:?}");
        assert_eq!(resolving.len(), 1);
        // The first round opens every failure before any group repeats.
        let first: BTreeSet<usize> = firing[..10].iter().map(|d| d.failure).collect();
        assert_eq!(first.len(), 10);
        // Every fingerprint is distinct, and another run's are too.
        let all: BTreeSet<&String> = failures.iter().flat_map(|f| &f.fingerprints).collect();
        assert_eq!(all.len(), 4 + 4 + 8);
        let other = Plan::new(10_000, Some(10), 8).unwrap();
        let Plan::Alertmanager { failures: o, .. } = &other else {
            panic!()
        };
        assert!(o[2].fingerprints[0] != failures[2].fingerprints[0]);
    }

    #[test]
    fn repeats_carry_the_same_alerts_and_the_resolved_ones_end() {
        let plan = Plan::new(40, Some(3), 1).unwrap();
        let all = requests(&plan);
        let firing_oom: Vec<&Request> = all
            .iter()
            .filter(|(p, r)| {
                *p == Phase::Firing && r.body["alerts"][0]["labels"]["service"] == "checkout-api"
            })
            .map(|(_, r)| r)
            .collect();
        assert!(firing_oom.len() >= 2);
        assert_eq!(
            firing_oom[0].body["alerts"], firing_oom[1].body["alerts"],
            "a repeat is the same group again"
        );
        let (_, last) = all.last().unwrap();
        assert_eq!(last.body["status"], "resolved");
        for a in last.body["alerts"].as_array().unwrap() {
            assert_eq!(a["status"], "resolved");
            assert_eq!(a["endsAt"], "2026-11-26T10:05:00.000Z");
            assert_eq!(a["startsAt"], "2026-11-26T10:00:00.000Z");
        }
    }

    #[test]
    fn every_alert_its_own_failure_is_reports_rotating_three_kinds_with_keys() {
        for plan in [
            Plan::new(7, None, 3).unwrap(),
            Plan::new(7, Some(7), 3).unwrap(),
        ] {
            assert_eq!(plan.mode(), "reports");
            assert_eq!((plan.alerts(), plan.failures()), (7, 7));
            assert_eq!(plan.len(Phase::Resolving), 0);
            let all = requests(&plan);
            assert_eq!(all.len(), 7);
            let types: Vec<&str> = all
                .iter()
                .map(|(_, r)| r.body["alert_type"].as_str().unwrap())
                .collect();
            assert_eq!(
                types[..4],
                [
                    "CheckoutApiOOMKilled",
                    "PaymentsDbDown",
                    "SomethingNobodyMapped",
                    "CheckoutApiOOMKilled"
                ]
            );
            let keys: BTreeSet<&str> = all
                .iter()
                .map(|(_, r)| r.idempotency_key.as_deref().unwrap())
                .collect();
            assert_eq!(keys.len(), 7);
            for (_, r) in &all {
                assert_eq!(r.path, "/incidents");
                assert_eq!(r.body["coalesce"], false);
                let request: crate::incident::NewIncidentRequest =
                    serde_json::from_value(r.body.clone()).unwrap();
                crate::incident::NewIncident::parse(request, "api").expect("a valid report");
            }
        }
        let plan = Plan::new(7, None, 3).unwrap();
        assert_eq!(plan.request(Phase::Firing, 7, Utc::now(), Utc::now()), None);
    }

    #[test]
    fn impossible_storms_are_refused() {
        assert_eq!(Plan::new(0, None, 1), Err(PlanError::NoAlerts));
        assert_eq!(Plan::new(5, Some(0), 1), Err(PlanError::NoFailures));
        assert_eq!(
            Plan::new(5, Some(6), 1),
            Err(PlanError::MoreFailuresThanAlerts {
                failures: 6,
                alerts: 5
            })
        );
    }
}
