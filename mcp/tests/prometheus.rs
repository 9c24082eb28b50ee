//! The Prometheus backend of `get-metrics` against a real Prometheus (Debian's
//! `/usr/bin/prometheus`) scraping a real `sre-fleet` on a loopback port every second: what
//! the backend reads must agree with what the fleet itself says, through faults and a pod
//! replaced by `restart-pod`.
//!
//! Without the program the tests say so loudly on stderr and pass, unless
//! `SRE_REQUIRE_PROMETHEUS=1`: then they fail.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp::backend::prometheus::{PrometheusConfig, PrometheusMetrics, Queries};
use mcp::fleet::model::{PodStatus, RestartOutcome, ServiceMetrics};
use support::{Fleet, start_fleet};

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Set to `1`, a missing Prometheus fails the test instead of skipping it.
const REQUIRE_ENV: &str = "SRE_REQUIRE_PROMETHEUS";
/// Prometheus started to ready.
const READY_WAIT_MS: u64 = 15_000;
/// Prometheus ready (its scrape target handed over about 5 s after start) to the backend
/// agreeing with the fleet; also a restart to its new instance showing, and the rates
/// following it. The backend's rates are over `[1m]`: samples from before the restart stay
/// in the window for up to a minute (p99 187 ms against the fleet's 140 ms after 20 s, seen
/// under CI's load), so the wait is that window, two scrapes and a margin. The loop ends as
/// soon as they agree.
const AGREE_WAIT_MS: u64 = 75_000;
const POLL_MS: u64 = 250;
/// Timeout of one query of the backend.
const QUERY_TIMEOUT_MS: u64 = 3_000;

/// Kills and reaps Prometheus when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether Prometheus is installed; when not, says so loudly, or fails under
/// [`REQUIRE_ENV`].
fn prometheus_installed() -> bool {
    if Path::new(PROMETHEUS).is_file() {
        return true;
    }
    assert!(
        std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{PROMETHEUS} not installed, and {REQUIRE_ENV}=1 requires it: run scripts/prometheus-stack.sh install"
    );
    eprintln!(
        "*** SKIPPED: {PROMETHEUS} not installed; run scripts/prometheus-stack.sh install ***"
    );
    false
}

/// A Prometheus scraping `fleet_url` every second, with its data in `dir`; its URL.
async fn start_prometheus(dir: &Path, fleet_url: &str) -> (Running, String) {
    let target = fleet_url.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sre-fleet\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MS);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
            && r.status().is_success()
        {
            return (running, url);
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready within {READY_WAIT_MS} ms:\n{}",
            log_tail(dir)
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The fields of a pod both sides must agree on; instants to the second.
fn comparable(p: &PodStatus) -> String {
    format!(
        "{} uid={} created={} phase={} ready={} restarts={} last={:?}/{:?}@{:?} limit={}",
        p.name,
        p.uid,
        p.created_at.timestamp(),
        p.phase,
        p.ready,
        p.restarts,
        p.last_termination_reason,
        p.last_exit_code,
        p.last_terminated_at.map(|t| t.timestamp()),
        p.memory_limit_bytes
    )
}

/// Polls the backend until it agrees with the fleet on `service` and `also` holds of what
/// it saw and the fleet's answer read with it (rates lag the fleet by a scrape or two);
/// returns both, or fails with the last difference after [`AGREE_WAIT_MS`].
async fn agree(
    backend: &PrometheusMetrics,
    fleet: &Fleet,
    service: &str,
    dir: &Path,
    also: impl Fn(&ServiceMetrics, &ServiceMetrics) -> bool,
) -> (ServiceMetrics, ServiceMetrics) {
    let deadline = Instant::now() + Duration::from_millis(AGREE_WAIT_MS);
    let mut last = String::new();
    while Instant::now() < deadline {
        match backend.metrics(service, Some("test-trace")).await {
            Ok(seen) => {
                let truth = fleet.metrics(service).await;
                // The order of the pods is no part of the answer.
                let mut ours: Vec<String> = seen.pods.iter().map(comparable).collect();
                let mut theirs: Vec<String> = truth.pods.iter().map(comparable).collect();
                ours.sort();
                theirs.sort();
                if ours == theirs && also(&seen, &truth) {
                    return (seen, truth);
                }
                last = if ours == theirs {
                    format!(
                        "the pods agree, the test's condition does not: prometheus says error rate {} and p99 {} ms, the fleet {} and {} ms; not measured: {:?}",
                        seen.error_rate,
                        seen.latency_p99_ms,
                        truth.error_rate,
                        truth.latency_p99_ms,
                        seen.not_measured
                    )
                } else {
                    format!("prometheus: {ours:#?}\nfleet: {theirs:#?}")
                };
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    panic!(
        "{service}: the backend did not agree with the fleet within {AGREE_WAIT_MS} ms\n{last}\nprometheus log:\n{}",
        log_tail(dir)
    );
}

/// Goal: `get-metrics` read from Prometheus says what the fleet says of an OOM-killed
/// service and a database down, and follows a pod replaced by `restart-pod`. Method: the
/// real programs; the backend polled until it agrees with the fleet's own answer (Prometheus
/// lags by a scrape), then Prometheus asked directly for the replaced instance's series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_backend_agrees_with_the_fleet_through_an_oom_kill_a_restart_and_a_db_outage()
 {
    if !prometheus_installed() {
        return;
    }
    let started = Instant::now();
    let fleet = start_fleet().await;
    fleet.inject("oom-kill").await;
    fleet.inject("db-outage").await;
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, url) = start_prometheus(dir.path(), &fleet.url).await;
    let catalog = Arc::new(mcp::data::load_catalog(None).unwrap());
    let config = PrometheusConfig {
        url: url.clone(),
        timeout_ms: QUERY_TIMEOUT_MS,
        queries: Queries::default(),
    };
    let backend = PrometheusMetrics::new(config, catalog).unwrap();

    let (seen, _) = agree(&backend, &fleet, "checkout-api", dir.path(), |_, _| true).await;
    let oom = seen
        .pods
        .iter()
        .find(|p| p.last_termination_reason.as_deref() == Some("OOMKilled"))
        .expect("an OOM-killed pod")
        .clone();
    assert_eq!(
        (seen.namespace.as_str(), seen.tier.as_str()),
        ("shop", "stateless")
    );
    assert_eq!(seen.replicas, 3);
    eprintln!("checkout-api agreed after {:?}", started.elapsed());

    let outcome: RestartOutcome = reqwest::Client::new()
        .post(format!("{}/v1/pods/{}/restart", fleet.url, oom.name))
        .json(&serde_json::json!({ "expected_uid": oom.uid }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outcome.pod, oom.name);
    // Rates need two scrapes: by now every field the fleet exports is measured.
    let optional = [
        "connections",
        "replication_lag_secs",
        "certificate_expires_at",
    ];
    // The rates follow the restart a scrape or two later: read until they agree too (the
    // fleet's p99 drops when the OOM-killed pod is replaced).
    let (seen, _) = agree(&backend, &fleet, "checkout-api", dir.path(), |m, truth| {
        m.pods
            .iter()
            .any(|p| p.name == oom.name && p.uid != oom.uid)
            && m.not_measured
                .iter()
                .all(|f| optional.contains(&f.as_str()))
            && (m.error_rate - truth.error_rate).abs() < 0.005
            && m.latency_p99_ms.abs_diff(truth.latency_p99_ms) <= 5
    })
    .await;
    let fresh = seen.pods.iter().find(|p| p.name == oom.name).unwrap();
    assert_eq!(
        (fresh.restarts, fresh.last_termination_reason.as_deref()),
        (0, None)
    );
    let old: serde_json::Value = reqwest::get(format!(
        "{url}/api/v1/query?query=kube_pod_info%7Buid%3D%22{}%22%7D",
        oom.uid
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        old["data"]["result"],
        serde_json::json!([]),
        "the old instance's series are stale"
    );
    eprintln!("the restart showed after {:?}", started.elapsed());

    let (db, _) = agree(&backend, &fleet, "payments-db", dir.path(), |_, _| true).await;
    assert_eq!((db.tier.as_str(), db.ready_replicas), ("database", 0));
    assert!(db.pods.iter().all(|p| p.phase == "Running" && !p.ready));
    assert!(
        db.error_rate > 0.9,
        "db-outage fails every request: {}",
        db.error_rate
    );
    assert!(db.connections.is_some(), "{:?}", db.not_measured);
    eprintln!("payments-db agreed after {:?}", started.elapsed());
}
