//! Each scenario file loads and behaves as its description says, on the pure simulation
//! with exact simulated time: what the metrics and logs show, and what a restart does.

use chrono::{DateTime, Duration, Utc};
use mcp::fleet::model::{LogLine, LogSource, PodStatus, ServiceMetrics};
use mcp::fleet::scenario::{PodSelector, Scenario};
use mcp::fleet::sim::{Fleet, FleetError, FleetSpec};

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

fn lines(fleet: &Fleet, service: &str) -> Vec<LogLine> {
    let end = fleet.now();
    fleet
        .logs(service, end - Duration::hours(1), end, 5000)
        .unwrap()
        .lines
}

/// A fleet of the embedded services that knows one extra scenario, written here.
fn fleet_with_scenario(toml: &str) -> Result<Fleet, String> {
    let spec = FleetSpec::parse(include_str!("../data/fleet.toml"))?;
    let scenario = Scenario::parse("test.toml", toml)?;
    Fleet::new(spec, vec![scenario], t0())
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
            "cert-expired",
            "cpu-throttling",
            "db-outage",
            "db-replication-lag",
            "disk-full",
            "oom-kill",
            "oom-kill-recurring",
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

#[test]
fn frequent_reads_do_not_speed_the_world_up() {
    // Goal: a client polling every millisecond sees faults progress at the simulated clock's
    // pace, not one simulated second per read. Method: 2,000 advances of 1 ms against one
    // advance of 2 s; the memory leak has moved exactly as far in both.
    let mut polled = fleet_with("oom-kill");
    let mut once = fleet_with("oom-kill");
    let start = pod(&metrics(&polled, "checkout-api"), 0).memory_used_bytes;
    for ms in 1..=999 {
        polled.advance(t0() + Duration::milliseconds(ms));
    }
    assert_eq!(
        pod(&metrics(&polled, "checkout-api"), 0).memory_used_bytes,
        start,
        "no whole second has passed yet"
    );
    for ms in 1000..=2000 {
        polled.advance(t0() + Duration::milliseconds(ms));
    }
    once.advance(t0() + Duration::seconds(2));
    let (p, o) = (
        pod(&metrics(&polled, "checkout-api"), 0),
        pod(&metrics(&once, "checkout-api"), 0),
    );
    assert_eq!(p, o);
    // (512 - 210) MiB over 60 s: about 5 MiB a second, two seconds' worth.
    let grown = p.memory_used_bytes - start;
    let per_sec = (512 - 210) * 1024 * 1024 / 60;
    assert!(
        (2 * per_sec - 2..=2 * per_sec + 2).contains(&grown),
        "{grown} bytes is not two seconds of leak"
    );
    assert_eq!(polled.now(), t0() + Duration::seconds(2));
}

#[test]
fn the_healthy_fleet_has_old_pods_without_terminations_or_throttling() {
    let fleet = mcp::data::load_fleet(None, t0()).unwrap();
    let mut uids = std::collections::HashSet::new();
    for service in fleet.service_names() {
        let m = metrics(&fleet, service);
        for p in &m.pods {
            assert_eq!(p.created_at, t0() - Duration::hours(20));
            assert_eq!(p.started_at, p.created_at);
            assert_eq!(
                (p.last_termination_reason.as_ref(), p.last_terminated_at),
                (None, None)
            );
            assert_eq!(p.cpu_throttled_ratio, 0.0);
            assert!(uids.insert(p.uid.clone()), "uids are unique");
        }
    }
    let checkout = metrics(&fleet, "checkout-api");
    assert_eq!(
        checkout.certificate_expires_at,
        Some(t0() + Duration::days(60))
    );
    assert_eq!(checkout.connections, None);
    let db = metrics(&fleet, "payments-db");
    assert_eq!(
        (db.connections, db.replication_lag_secs),
        (Some(40), Some(0.2))
    );
    assert_eq!(db.certificate_expires_at, None);
    let again = mcp::data::load_fleet(None, t0()).unwrap();
    assert_eq!(
        metrics(&again, "checkout-api").pods[0].uid,
        checkout.pods[0].uid,
        "uids are deterministic"
    );
}

#[test]
fn an_oom_killed_container_is_restarted_in_place_keeping_its_uid_and_last_termination() {
    let mut fleet = fleet_with("oom-kill");
    let sick = pod(&metrics(&fleet, "checkout-api"), 0);
    // At injection the pod looks like one the kubelet already restarted after an OOM kill:
    // killed 25 s ago, backed off 20 s, running again for 5 s.
    assert_eq!(sick.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(sick.last_terminated_at, Some(t0() - Duration::seconds(25)));
    assert_eq!(sick.started_at, t0() - Duration::seconds(5));
    assert_eq!(sick.created_at, t0() - Duration::hours(20));
    assert_eq!((sick.phase.as_str(), sick.ready), ("Running", true));

    // Killed again at 11 s (see above), backing off until 31 s.
    at(&mut fleet, 15);
    let killed = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(killed.phase, "CrashLoopBackOff");
    assert_eq!(
        killed.last_terminated_at,
        Some(t0() + Duration::seconds(11))
    );
    assert_eq!(killed.started_at, sick.started_at);

    at(&mut fleet, 35);
    let back = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!((back.phase.as_str(), back.ready), ("Running", true));
    assert_eq!(back.started_at, t0() + Duration::seconds(31));
    assert!(back.started_at > back.last_terminated_at.unwrap());
    assert_eq!(back.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(back.last_exit_code, Some(137));
    assert_eq!(back.restarts, 4);
    assert_eq!(
        (back.uid.as_str(), back.created_at),
        (sick.uid.as_str(), sick.created_at),
        "a container restart keeps the pod"
    );

    // The kubelet's events are platform lines, back-dated ones included, in time order.
    let all = lines(&fleet, "checkout-api");
    let platform: Vec<&LogLine> = all
        .iter()
        .filter(|l| l.source == LogSource::Platform && l.pod == sick.name)
        .collect();
    let kills: Vec<_> = platform
        .iter()
        .filter(|l| l.message.contains("OOMKilled (exit code 137)"))
        .map(|l| l.at)
        .collect();
    assert_eq!(
        kills,
        [t0() - Duration::seconds(25), t0() + Duration::seconds(11)]
    );
    assert!(platform.iter().any(|l| l.at == t0() + Duration::seconds(31)
        && l.message.starts_with("Started container checkout-api")));
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        all.iter()
            .filter(|l| l.message.contains("OutOfMemoryError") || l.message.contains("POST"))
            .all(|l| l.source == LogSource::Application)
    );
}

#[test]
fn restart_pod_replaces_the_pod_with_a_new_uid() {
    let mut fleet = fleet_with("oom-kill");
    at(&mut fleet, 40);
    let before = pod(&metrics(&fleet, "checkout-api"), 0);
    fleet.restart_pod(&before.name, None, None).unwrap();
    let after = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(after.name, before.name);
    assert_ne!(after.uid, before.uid);
    let now = t0() + Duration::seconds(40);
    assert_eq!((after.created_at, after.started_at), (now, now));
    assert_eq!(after.restarts, 0);
    assert_eq!(
        (after.last_termination_reason, after.last_terminated_at),
        (None, None)
    );
    fleet.restart_pod(&before.name, None, None).unwrap();
    let third = pod(&metrics(&fleet, "checkout-api"), 0).uid;
    assert!(third != before.uid && third != after.uid);
    assert!(
        lines(&fleet, "checkout-api")
            .iter()
            .any(|l| l.source == LogSource::Platform
                && l.message.contains(&format!("Deleted pod {}", before.name)))
    );
}

#[test]
fn a_recurring_oom_hits_the_chosen_replica_and_comes_back_after_a_restart() {
    let mut fleet = fleet_with("oom-kill-recurring");
    let m = metrics(&fleet, "checkout-api");
    let sick = pod(&m, 1);
    assert_eq!(sick.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(sick.restarts, 2);
    assert_eq!(sick.last_terminated_at, Some(t0() - Duration::seconds(15)));
    assert_eq!(sick.started_at, t0() - Duration::seconds(5));
    for i in [0, 2] {
        let p = pod(&m, i);
        assert_eq!((p.restarts, p.last_termination_reason), (0, None), "{i}");
    }

    at(&mut fleet, 30);
    let outcome = fleet.restart_pod(&sick.name, Some("k"), None).unwrap();
    assert_eq!(
        outcome.previous_termination_reason.as_deref(),
        Some("OOMKilled")
    );
    let fresh = pod(&metrics(&fleet, "checkout-api"), 1);
    assert_ne!(fresh.uid, sick.uid);
    assert_eq!(
        (fresh.phase.as_str(), fresh.ready, fresh.restarts),
        ("Running", true, 0)
    );
    assert_eq!(fresh.last_termination_reason, None);

    // From half of 512 MiB at (512 - 210) MiB / 20 s: killed again 17 s after the restart.
    at(&mut fleet, 46);
    assert_eq!(pod(&metrics(&fleet, "checkout-api"), 1).restarts, 0);
    at(&mut fleet, 55);
    let again = pod(&metrics(&fleet, "checkout-api"), 1);
    assert_eq!(again.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(again.last_terminated_at, Some(t0() + Duration::seconds(47)));
    assert_eq!(
        (again.restarts, again.phase.as_str()),
        (1, "CrashLoopBackOff")
    );
    assert_eq!(again.uid, fresh.uid, "the kubelet restarts the same pod");
    assert!(metrics(&fleet, "checkout-api").error_rate >= 0.04);
}

#[test]
fn a_replica_selector_out_of_range_is_refused_at_load() {
    let scenario = |pods: &str| {
        format!(
            "name = \"x\"\ndescription = \"x\"\n[[fault]]\nservice = \"checkout-api\"\n\
             pods = {pods}\nkind = \"unavailable\"\non_restart = \"persists\"\n"
        )
    };
    let err = fleet_with_scenario(&scenario("{ replica = 3 }")).unwrap_err();
    assert!(err.contains("replica 3 does not exist"), "{err}");
    for pods in ["\"first\"", "\"all\"", "\"none\"", "{ replica = 2 }"] {
        let mut fleet = fleet_with_scenario(&scenario(pods)).unwrap();
        fleet.inject("x").unwrap();
        let ready: Vec<bool> = metrics(&fleet, "checkout-api")
            .pods
            .iter()
            .map(|p| p.ready)
            .collect();
        let expected = match pods {
            "\"first\"" => [false, true, true],
            "\"all\"" => [false, false, false],
            "\"none\"" => [true, true, true],
            _ => [true, true, false],
        };
        assert_eq!(ready, expected, "{pods}");
    }
    let parsed = Scenario::parse("t", &scenario("{ replica = 1 }")).unwrap();
    assert_eq!(parsed.faults[0].pods, PodSelector::Replica(1));
    assert!(Scenario::parse("t", &scenario("{ replica = -1 }")).is_err());
    assert!(Scenario::parse("t", &scenario("\"second\"")).is_err());
}

#[test]
fn back_dated_lines_are_kept_in_time_order() {
    let mut fleet = fleet_with_scenario(
        r#"
name = "flush"
description = "checkout-api flushes lines buffered two minutes ago"
[[fault]]
service = "checkout-api"
pods = "first"
kind = "degraded"
on_restart = "persists"
logs = [{ level = "error", message = "buffered: request failed", every_secs = 30, backdate_secs = 120 }]
"#,
    )
    .unwrap();
    at(&mut fleet, 300);
    fleet.inject("flush").unwrap();
    at(&mut fleet, 400);
    let all = lines(&fleet, "checkout-api");
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    let buffered: Vec<_> = all
        .iter()
        .filter(|l| l.message == "buffered: request failed")
        .map(|l| l.at)
        .collect();
    assert_eq!(buffered[0], t0() + Duration::seconds(180));
    assert_eq!(buffered.len(), 4);
    // A window that ended before the flush still finds the back-dated line.
    let window = fleet
        .logs(
            "checkout-api",
            t0() + Duration::seconds(170),
            t0() + Duration::seconds(190),
            100,
        )
        .unwrap();
    assert!(
        window
            .lines
            .iter()
            .any(|l| l.message.starts_with("buffered"))
    );
    assert!(
        Scenario::parse(
            "t",
            "name = \"x\"\ndescription = \"x\"\n[[fault]]\nservice = \"checkout-api\"\n\
         pods = \"none\"\nkind = \"degraded\"\non_restart = \"persists\"\n\
         logs = [{ level = \"info\", message = \"m\", every_secs = 1, backdate_secs = 99999999 }]\n"
        )
        .is_err()
    );
}

#[test]
fn crash_looping_pods_report_recent_terminations_as_platform_events() {
    let mut fleet = fleet_with("bad-config-crashloop");
    let p = pod(&metrics(&fleet, "orders-worker"), 0);
    assert_eq!(p.last_terminated_at, Some(t0() - Duration::seconds(1)));
    assert_eq!(p.last_exit_code, Some(1));
    at(&mut fleet, 45);
    let later = pod(&metrics(&fleet, "orders-worker"), 0);
    assert_eq!(later.last_terminated_at, Some(t0() + Duration::seconds(40)));
    assert_eq!(later.uid, p.uid);
    let events: Vec<_> = lines(&fleet, "orders-worker")
        .into_iter()
        .filter(|l| l.source == LogSource::Platform && l.pod == p.name)
        .collect();
    assert!(events.len() >= 2);
    assert!(events.iter().all(|l| {
        l.message
            .starts_with("Back-off restarting failed container orders-worker")
            && l.message.contains("exit code 1, reason Error")
    }));
}

#[test]
fn unready_pods_report_failing_readiness_probes() {
    let mut fleet = fleet_with("db-outage");
    at(&mut fleet, 65);
    let probes: Vec<_> = lines(&fleet, "payments-db")
        .into_iter()
        .filter(|l| l.source == LogSource::Platform && l.message.contains("Readiness probe failed"))
        .collect();
    assert_eq!(probes.len(), 3, "every 30 s: at 1, 31 and 61 s");
}

#[test]
fn write_app_log_writes_application_lines_only_for_the_services_own_pods() {
    let mut fleet = fleet_with("oom-kill");
    at(&mut fleet, 100);
    let now = fleet.now();
    // Default pod: the first ready one (the first is backing off after its OOM kill).
    let line = fleet
        .write_app_log(
            "checkout-api",
            None,
            "info",
            "GET /search?q=OOMKilled 200",
            None,
        )
        .unwrap();
    let m = metrics(&fleet, "checkout-api");
    assert_eq!(line.pod, m.pods.iter().find(|p| p.ready).unwrap().name);
    assert_eq!((line.at, line.source), (now, LogSource::Application));

    let earlier = now - Duration::seconds(50);
    let pod0 = m.pods[0].name.clone();
    let back = fleet
        .write_app_log(
            "checkout-api",
            Some(&pod0),
            "error",
            "Container checkout-api was OOMKilled",
            Some(earlier),
        )
        .unwrap();
    assert_eq!((back.at, back.source), (earlier, LogSource::Application));
    let all = lines(&fleet, "checkout-api");
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(all.contains(&back));

    let refuse =
        |fleet: &mut Fleet, service: &str, pod: Option<&str>, level: &str, message: &str, at| {
            fleet
                .write_app_log(service, pod, level, message, at)
                .unwrap_err()
        };
    assert!(matches!(
        refuse(&mut fleet, "checkout-api", None, "info", "x", Some(now + Duration::seconds(1))),
        FleetError::Invalid(e) if e.contains("future")
    ));
    assert!(matches!(
        refuse(
            &mut fleet,
            "checkout-api",
            None,
            "info",
            "x",
            Some(now - Duration::days(30))
        ),
        FleetError::Invalid(_)
    ));
    assert!(matches!(
        refuse(
            &mut fleet,
            "checkout-api",
            Some("checkout-api-nope"),
            "info",
            "x",
            None
        ),
        FleetError::NotFound(_)
    ));
    assert!(matches!(
        refuse(
            &mut fleet,
            "checkout-api",
            Some("payments-db-0"),
            "info",
            "x",
            None
        ),
        FleetError::NotFound(_)
    ));
    assert!(matches!(
        refuse(&mut fleet, "nope", None, "info", "x", None),
        FleetError::NotFound(_)
    ));
    assert!(matches!(
        refuse(&mut fleet, "checkout-api", None, "platform", "x", None),
        FleetError::Invalid(_)
    ));
    assert!(matches!(
        refuse(&mut fleet, "checkout-api", None, "info", "", None),
        FleetError::Invalid(_)
    ));
    assert!(matches!(
        refuse(
            &mut fleet,
            "checkout-api",
            None,
            "info",
            &"x".repeat(4097),
            None
        ),
        FleetError::Invalid(_)
    ));
}

#[test]
fn cpu_throttling_slows_healthy_pods_and_a_restart_does_not_help() {
    let mut fleet = fleet_with("cpu-throttling");
    let m = metrics(&fleet, "catalog-api");
    assert_eq!(m.ready_replicas, 3);
    assert!(m.pods.iter().all(|p| p.cpu_throttled_ratio == 0.6));
    assert_eq!(m.latency_p99_ms, 1900);
    assert!(logs_contain(&fleet, "catalog-api", "slow request"));
    assert!(
        metrics(&fleet, "checkout-api")
            .pods
            .iter()
            .all(|p| p.cpu_throttled_ratio == 0.0)
    );
    let name = pod(&m, 0).name;
    fleet.restart_pod(&name, None, None).unwrap();
    at(&mut fleet, 60);
    let m = metrics(&fleet, "catalog-api");
    assert_eq!(pod(&m, 0).cpu_throttled_ratio, 0.6);
    assert_eq!(m.latency_p99_ms, 1900);
}

#[test]
fn an_expired_certificate_fails_handshakes_with_healthy_pods() {
    let mut fleet = fleet_with("cert-expired");
    let m = metrics(&fleet, "payments-api");
    assert_eq!(
        m.certificate_expires_at,
        Some(t0() - Duration::seconds(3600))
    );
    assert!(m.error_rate >= 0.3);
    assert_eq!(m.ready_replicas, 2);
    assert!(logs_contain(
        &fleet,
        "payments-api",
        "TLS handshake failed: certificate has expired"
    ));
    assert_eq!(
        metrics(&fleet, "checkout-api").certificate_expires_at,
        Some(t0() + Duration::days(60)),
        "the caller's own certificate is fine"
    );
    let name = pod(&m, 0).name;
    fleet.restart_pod(&name, None, None).unwrap();
    at(&mut fleet, 60);
    let m = metrics(&fleet, "payments-api");
    assert!(m.certificate_expires_at.unwrap() < fleet.now());
    assert!(m.error_rate >= 0.3);
}

#[test]
fn replication_lag_and_connections_show_on_the_database() {
    let mut fleet = fleet_with("db-replication-lag");
    let db = metrics(&fleet, "payments-db");
    assert_eq!(
        (db.replication_lag_secs, db.connections),
        (Some(45.0), Some(480))
    );
    assert_eq!(db.ready_replicas, 1);
    assert!(logs_contain(&fleet, "payments-db", "replication lag"));
    assert_eq!(metrics(&fleet, "payments-api").connections, None);
    fleet.restart_pod("payments-db-0", None, None).unwrap();
    at(&mut fleet, 60);
    assert_eq!(
        metrics(&fleet, "payments-db").replication_lag_secs,
        Some(45.0)
    );
}

#[test]
fn out_of_range_values_are_refused_at_load_never_panicking() {
    let fault = |extra: &str| {
        format!(
            "name = \"x\"\ndescription = \"x\"\n[[fault]]\nservice = \"payments-db\"\n\
             pods = \"none\"\nkind = \"degraded\"\non_restart = \"persists\"\n{extra}\n"
        )
    };
    for extra in [
        "certificate_expires_in_secs = -9223372036854775808",
        "certificate_expires_in_secs = 9223372036854775807",
        "cpu_throttled_ratio = 1.5",
        "cpu_throttled_ratio = nan",
        "replication_lag_secs = -1.0",
        "replication_lag_secs = inf",
        "connections = 4294967295",
        "logs = [{ level = \"info\", message = \"m\", every_secs = 18446744073709551615 }]",
    ] {
        assert!(Scenario::parse("t", &fault(extra)).is_err(), "{extra}");
    }
    assert!(
        Scenario::parse(
            "t",
            &fault("connections = 480\nreplication_lag_secs = 45.0")
        )
        .is_ok()
    );
    let fleet = include_str!("../data/fleet.toml");
    for (from, to) in [
        (
            "certificate_expires_in_days = 60",
            "certificate_expires_in_days = -9223372036854775808",
        ),
        ("connections = 40", "connections = 4000000000"),
        ("replication_lag_secs = 0.2", "replication_lag_secs = nan"),
        (
            "log_every_secs = 30",
            "log_every_secs = 9223372036854775807",
        ),
    ] {
        assert!(fleet.contains(from));
        let text = fleet.replacen(from, to, 1);
        assert!(FleetSpec::parse(&text).is_err(), "{to}");
    }
}

#[test]
fn ending_a_scenario_heals_its_pods_in_place_and_restores_the_services() {
    // Goal: `end` is an operator's fix by hand, not a restart. Method: end db-outage after
    // a minute and check the database's pod is the same instance, ready, and every service
    // the scenario touched is back to its healthy values; nothing is in the ledger.
    let mut fleet = fleet_with("db-outage");
    let down = pod(&metrics(&fleet, "payments-db"), 0);
    at(&mut fleet, 60);
    fleet.end("db-outage").unwrap();
    assert!(fleet.active_scenarios().is_empty());

    let db = metrics(&fleet, "payments-db");
    let healed = pod(&db, 0);
    assert_eq!((healed.phase.as_str(), healed.ready), ("Running", true));
    assert_eq!(
        (healed.uid.as_str(), healed.created_at, healed.started_at),
        (down.uid.as_str(), down.created_at, down.started_at),
        "an unready pod whose container ran is fixed in place"
    );
    assert_eq!((db.ready_replicas, db.error_rate), (1, 0.0));
    let api = metrics(&fleet, "payments-api");
    assert!(api.error_rate < 0.01 && api.latency_p99_ms < 1000);
    assert!(metrics(&fleet, "checkout-api").error_rate < 0.01);
    assert!(fleet.ledger().is_empty(), "ending a scenario is not a call");

    at(&mut fleet, 180);
    let end = fleet.now();
    let recent = fleet
        .logs("payments-api", end - Duration::seconds(60), end, 1000)
        .unwrap();
    assert!(
        !recent
            .lines
            .iter()
            .any(|l| l.message.contains("connection refused")),
        "the ended faults write no more lines"
    );
    fleet
        .inject("db-outage")
        .expect("an ended scenario may be injected again");
    assert_eq!(metrics(&fleet, "payments-db").ready_replicas, 0);
}

#[test]
fn ending_an_oom_scenario_starts_the_backed_off_container_and_keeps_its_history() {
    let mut fleet = fleet_with("oom-kill");
    // Killed at 11 s, backing off until 31 s (see above).
    at(&mut fleet, 15);
    let killed = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(
        (killed.phase.as_str(), killed.restarts),
        ("CrashLoopBackOff", 4)
    );
    fleet.end("oom-kill").unwrap();

    let fixed = pod(&metrics(&fleet, "checkout-api"), 0);
    let now = t0() + Duration::seconds(15);
    assert_eq!((fixed.phase.as_str(), fixed.ready), ("Running", true));
    assert_eq!(fixed.started_at, now, "the container was down: started now");
    assert_eq!(fixed.uid, killed.uid);
    assert_eq!(fixed.restarts, 4);
    assert_eq!(
        (fixed.last_termination_reason, fixed.last_terminated_at),
        (killed.last_termination_reason, killed.last_terminated_at),
        "Kubernetes keeps the last termination of a container"
    );
    assert_eq!(fixed.memory_used_bytes, 210 * 1024 * 1024);
    assert!(lines(&fleet, "checkout-api").iter().any(|l| l.at == now
        && l.source == LogSource::Platform
        && l.message.starts_with("Started container checkout-api")));

    at(&mut fleet, 600);
    let later = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!(
        (later.restarts, later.ready),
        (4, true),
        "no more OOM kills"
    );
}

#[test]
fn ending_one_scenario_leaves_the_others_faults_running() {
    // Goal: pods refer to faults by index, and ending a scenario removes faults from the
    // middle. Method: db-outage, then oom-kill; end db-outage; the OOM pod must go on
    // being killed by its own fault, and ending oom-kill afterwards must heal it.
    let mut fleet = fleet_with("db-outage");
    fleet.inject("oom-kill").unwrap();
    fleet.end("db-outage").unwrap();
    assert_eq!(fleet.active_scenarios(), ["oom-kill"]);
    assert_eq!(metrics(&fleet, "payments-db").ready_replicas, 1);
    at(&mut fleet, 15);
    let p = pod(&metrics(&fleet, "checkout-api"), 0);
    assert_eq!((p.phase.as_str(), p.restarts), ("CrashLoopBackOff", 4));
    assert!(metrics(&fleet, "checkout-api").error_rate >= 0.04);

    fleet.end("oom-kill").unwrap();
    assert!(fleet.active_scenarios().is_empty());
    at(&mut fleet, 300);
    let m = metrics(&fleet, "checkout-api");
    assert!(m.pods.iter().all(|p| p.ready) && m.error_rate < 0.01);
}

#[test]
fn only_an_active_scenario_can_be_ended() {
    let mut fleet = mcp::data::load_fleet(None, t0()).unwrap();
    let refused = |fleet: &mut Fleet, name: &str| match fleet.end(name) {
        Err(FleetError::NotFound(message)) => message,
        other => panic!("{name}: {other:?}"),
    };
    assert!(refused(&mut fleet, "db-outage").contains("not active"));
    assert!(refused(&mut fleet, "meteor-strike").contains("no scenario named meteor-strike"));
    fleet.inject("db-outage").unwrap();
    fleet.end("db-outage").unwrap();
    assert!(refused(&mut fleet, "db-outage").contains("not active"));
}
