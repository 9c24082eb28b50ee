//! Each scenario file loads and behaves as its description says, on the pure simulation
//! with exact simulated time: what the metrics and logs show, and what a restart does.

use chrono::{DateTime, Duration, Utc};
use mcp::fleet::model::{PodStatus, ServiceMetrics};
use mcp::fleet::sim::Fleet;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn fleet_with(scenario: &str) -> Fleet {
    let mut fleet = mcp::data::load_fleet(None, t0()).expect("embedded data loads");
    fleet.inject(scenario).expect("scenario injects");
    fleet
}

fn at(fleet: &mut Fleet, secs: i64) {
    fleet.advance(t0() + Duration::seconds(secs));
}

fn metrics(fleet: &Fleet, service: &str) -> ServiceMetrics {
    fleet.metrics(service).unwrap()
}

fn pod(m: &ServiceMetrics, i: usize) -> PodStatus {
    m.pods[i].clone()
}

fn logs_contain(fleet: &Fleet, service: &str, text: &str) -> bool {
    let end = fleet.now();
    fleet
        .logs(service, end - Duration::minutes(15), end, 1000)
        .unwrap()
        .lines
        .iter()
        .any(|l| l.message.contains(text))
}

#[test]
fn every_scenario_and_the_catalog_load() {
    let fleet = mcp::data::load_fleet(None, t0()).unwrap();
    let names: Vec<_> = fleet.scenario_names().collect();
    assert_eq!(
        names,
        [
            "bad-config-crashloop",
            "db-outage",
            "disk-full",
            "oom-kill",
            "slow-dependency"
        ]
    );
    let catalog = mcp::data::load_catalog(None).unwrap();
    for service in fleet.service_names() {
        let runbook = catalog
            .runbook_for(service)
            .unwrap_or_else(|| panic!("{service} has a runbook"));
        assert_eq!(runbook.spec.service, service);
    }
}

#[test]
fn oom_kill_crash_loops_one_pod_until_it_is_restarted() {
    let mut fleet = fleet_with("oom-kill");
    let m = metrics(&fleet, "checkout-api");
    let sick = pod(&m, 0);
    assert_eq!(sick.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(sick.last_exit_code, Some(137));
    assert_eq!(sick.restarts, 3);
    assert!(sick.memory_used_bytes as f64 >= 0.9 * sick.memory_limit_bytes as f64 - 1.0);
    assert!(m.pods[1..].iter().all(|p| p.ready && p.restarts == 0));
    assert!(logs_contain(&fleet, "checkout-api", "OutOfMemoryError"));

    // From 90 % of 512 MiB at (512 - 210) MiB / 60 s, the limit is reached after about
    // 10.2 s: OOMKilled again, backing off 20 s, then climbing again.
    at(&mut fleet, 15);
    let p = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(
        (p.phase.as_str(), p.ready, p.restarts),
        ("CrashLoopBackOff", false, 4)
    );
    at(&mut fleet, 120);
    assert!(pod(&metrics(&fleet, "checkout-api"), 0).restarts >= 5);

    let outcome = fleet
        .restart_pod(&sick.name, Some("k1"), Some("trace"))
        .unwrap();
    assert_eq!(
        outcome.previous_termination_reason.as_deref(),
        Some("OOMKilled")
    );
    at(&mut fleet, 600);
    let p = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(
        (p.phase.as_str(), p.ready, p.restarts),
        ("Running", true, 0)
    );
    assert_eq!(p.last_termination_reason, None);
    let m = metrics(&fleet, "checkout-api");
    assert!(
        m.error_rate < 0.01,
        "the service recovers once the fault is cleared"
    );
    let restarts: Vec<_> = fleet
        .ledger()
        .iter()
        .filter(|e| e.action == "restart-pod")
        .collect();
    assert_eq!(restarts.len(), 1);
}

#[test]
fn db_outage_takes_the_database_down_and_restarting_app_pods_does_not_help() {
    let mut fleet = fleet_with("db-outage");
    let db = metrics(&fleet, "payments-db");
    assert_eq!(db.tier, "database");
    assert_eq!(db.ready_replicas, 0);
    assert!(db.pods.iter().all(|p| p.phase == "Running" && !p.ready));
    let api = metrics(&fleet, "payments-api");
    assert!(api.error_rate >= 0.5);
    assert!(logs_contain(
        &fleet,
        "payments-api",
        "connection refused: payments-db"
    ));
    assert!(logs_contain(
        &fleet,
        "payments-db",
        "database system is shut down"
    ));

    let api_pod = api.pods[0].name.clone();
    fleet.restart_pod(&api_pod, None, None).unwrap();
    at(&mut fleet, 60);
    let api = metrics(&fleet, "payments-api");
    assert!(
        api.error_rate >= 0.5,
        "an app restart does not bring the database back"
    );
    let end = fleet.now();
    let recent = fleet
        .logs("payments-api", end - Duration::seconds(30), end, 1000)
        .unwrap();
    assert!(
        recent
            .lines
            .iter()
            .any(|l| l.pod == api_pod && l.message.contains("connection refused"))
    );

    fleet.restart_pod("payments-db-0", None, None).unwrap();
    at(&mut fleet, 120);
    assert_eq!(
        metrics(&fleet, "payments-db").ready_replicas,
        0,
        "nor does a database restart"
    );
}

#[test]
fn bad_config_crash_loops_every_pod_and_survives_restarts() {
    let mut fleet = fleet_with("bad-config-crashloop");
    let m = metrics(&fleet, "orders-worker");
    assert!(
        m.pods.iter().all(|p| p.phase == "CrashLoopBackOff"
            && p.last_termination_reason.as_deref() == Some("Error"))
    );
    assert!(logs_contain(
        &fleet,
        "orders-worker",
        "invalid configuration"
    ));
    let before = pod(&m, 0).restarts;
    at(&mut fleet, 200);
    assert!(pod(&metrics(&fleet, "orders-worker"), 0).restarts > before);
    let name = pod(&m, 0).name;
    fleet.restart_pod(&name, None, None).unwrap();
    at(&mut fleet, 210);
    let p = pod(&metrics(&fleet, "orders-worker"), 0);
    assert_eq!(p.phase, "CrashLoopBackOff");
    assert_eq!(p.last_termination_reason.as_deref(), Some("Error"));
}

#[test]
fn disk_full_fills_the_volume_and_a_restart_frees_nothing() {
    let mut fleet = fleet_with("disk-full");
    let p = pod(&metrics(&fleet, "search-indexer"), 0);
    assert_eq!(p.name, "search-indexer-0");
    assert!(p.disk_used_ratio >= 0.95);
    at(&mut fleet, 180);
    let p = pod(&metrics(&fleet, "search-indexer"), 0);
    assert_eq!((p.disk_used_ratio, p.ready), (1.0, false));
    assert!(logs_contain(
        &fleet,
        "search-indexer",
        "No space left on device"
    ));
    fleet.restart_pod("search-indexer-0", None, None).unwrap();
    at(&mut fleet, 190);
    let p = pod(&metrics(&fleet, "search-indexer"), 0);
    assert_eq!((p.disk_used_ratio, p.ready), (1.0, false));
    assert!(
        pod(&metrics(&fleet, "search-indexer"), 1).ready,
        "the other replica is unaffected"
    );
}

#[test]
fn slow_dependency_raises_latency_with_healthy_pods() {
    let mut fleet = fleet_with("slow-dependency");
    let m = metrics(&fleet, "catalog-api");
    assert_eq!(m.latency_p99_ms, 4200);
    assert_eq!(m.ready_replicas, 3);
    assert!(logs_contain(&fleet, "catalog-api", "timed out"));
    let name = pod(&m, 0).name;
    fleet.restart_pod(&name, None, None).unwrap();
    at(&mut fleet, 60);
    assert_eq!(metrics(&fleet, "catalog-api").latency_p99_ms, 4200);
}

#[test]
fn a_scenario_cannot_be_injected_twice_and_unknown_ones_are_named() {
    let mut fleet = fleet_with("oom-kill");
    assert!(
        fleet
            .inject("oom-kill")
            .unwrap_err()
            .to_string()
            .contains("already active")
    );
    assert!(
        fleet
            .inject("meteor-strike")
            .unwrap_err()
            .to_string()
            .contains("no scenario")
    );
}

#[test]
fn a_long_pause_is_caught_up_in_bounded_time() {
    // Goal: a fleet idle for days does not replay every second. Method: advance 30 days at
    // once; the catch-up is capped and the state is still sane.
    let mut fleet = fleet_with("oom-kill");
    at(&mut fleet, 30 * 86_400);
    let m = metrics(&fleet, "checkout-api");
    assert_eq!(m.observed_at, t0() + Duration::seconds(30 * 86_400));
    assert!(m.pods[0].restarts > 3);
}
