//! `sre-agent storm` as a user runs it: the real binary with its embedded fleet and agent,
//! small storms, the figures read from its JSON and checked against each other.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sre-agent");

/// Runs `sre-agent storm --json ARGS`; returns whether it exited 0, its JSON and its stderr.
fn storm(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(BIN)
        .args(["storm", "--json"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON object ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), json, stderr)
}

fn n(s: &Value, field: &str) -> u64 {
    s[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a count: {s:#}"))
}

/// What holds after every storm that finished: nothing lost or repeated, every figure
/// there, the agent's metrics agreeing with the answers, the rows and the fleet's ledger.
fn assert_consistent(s: &Value) {
    assert_eq!(s["ok"], true, "{s:#}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0);
    assert_eq!(s["timed_out"], false);
    assert_eq!(n(s, "lost"), 0);
    assert_eq!(n(s, "duplicates"), 0);
    assert_eq!(n(s, "undelivered"), 0);
    assert_eq!(n(s, "alerts_sent"), n(s, "alerts"));
    assert_eq!(
        n(s, "accepted") + n(s, "coalesced"),
        n(s, "alerts"),
        "every alert opened an incident or joined one: {s:#}"
    );
    assert_eq!(
        n(s, "accepted"),
        n(s, "answered_opened"),
        "metrics = answers"
    );
    assert_eq!(n(s, "coalesced"), n(s, "answered_coalesced"));
    assert_eq!(n(s, "incidents"), n(s, "accepted"));
    assert_eq!(n(s, "terminal"), n(s, "incidents"));
    let statuses: u64 = s["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(statuses, n(s, "incidents"));
    assert_eq!(
        n(s, "investigations"),
        n(s, "incidents"),
        "one investigation per incident"
    );
    assert!(n(s, "model_turns") >= n(s, "investigations"));
    assert_eq!(
        n(s, "restarts"),
        n(s, "ledger_restarts"),
        "metrics = ledger"
    );
    assert_eq!(n(s, "pages"), n(s, "ledger_pages"));
    assert_eq!(n(s, "pages"), n(s, "incidents"), "one page per incident");
    for q in ["alert_to_terminal", "api_post", "api_get"] {
        let q = &s[q];
        let (p50, p99, max) = (
            q["p50_ms"].as_f64().unwrap(),
            q["p99_ms"].as_f64().unwrap(),
            q["max_ms"].as_f64().unwrap(),
        );
        assert!(n(q, "count") > 0 && p50 <= p99 && p99 <= max, "{q}");
    }
    assert_eq!(n(&s["alert_to_terminal"], "count"), n(s, "terminal"));
    assert!(n(s, "peak_rss_bytes") > 1024 * 1024);
    assert!(
        n(s, "live_peak") <= n(s, "incidents"),
        "a gauge of live actors"
    );
    assert!(s["incidents_per_sec"].as_f64().unwrap() > 0.0);
    assert!(n(s, "elapsed_ms") > 0);
}

#[test]
fn a_storm_of_reports_opens_one_incident_per_alert_and_loses_none() {
    // Goal: the storm a user runs from the binary alone finishes, loses nothing, repeats no
    // mutating call, and its figures agree with each other. Method: `storm --alerts 120
    // --json` (reports with coalesce false, rotating OOM, database outage and an unmapped
    // alert), then the JSON's figures against each other.
    let (ok, s, stderr) = storm(&["--alerts", "120", "--timeout-secs", "180"]);
    assert!(ok, "{stderr}");
    assert_eq!(s["mode"], "reports");
    assert_eq!((n(&s, "alerts"), n(&s, "failures")), (120, 120));
    assert_consistent(&s);
    assert_eq!(n(&s, "accepted"), 120);
    assert_eq!(n(&s, "coalesced"), 0);
    assert!(n(&s["api_post"], "count") >= 120, "every POST is timed");
    // One pod is OOM-killed: restarted on the agent's own authority, within its budget.
    assert!((1..=3).contains(&n(&s, "restarts")), "{s:#}");
    assert_eq!(
        n(&s, "restarts"),
        s["statuses"]["resolved"].as_u64().unwrap()
    );
}

#[test]
fn a_storm_of_120_alerts_from_3_failures_opens_3_incidents_restarts_once_and_pages_3_times() {
    // Goal: alerts that describe one failure coalesce into one incident: one investigation,
    // one restart, one page per failure, however many alerts and repeats. Method: `storm
    // --alerts 120 --failures 3 --json` (Alertmanager deliveries: an OOM and a database
    // outage with several alerts each, an unmapped alert, every group repeated, the OOM's
    // alerts resolved at the end), then the figures.
    let (ok, s, stderr) = storm(&[
        "--alerts",
        "120",
        "--failures",
        "3",
        "--timeout-secs",
        "180",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(s["mode"], "alertmanager");
    assert_consistent(&s);
    assert_eq!(n(&s, "accepted"), 3);
    assert_eq!(n(&s, "coalesced"), 117);
    assert_eq!(n(&s, "investigations"), 3);
    assert_eq!(n(&s, "restarts"), 1);
    assert_eq!(n(&s, "pages"), 3);
    assert_eq!(
        s["statuses"]["resolved"], 1,
        "the OOM: fixed, its alerts resolved"
    );
    assert_eq!(
        s["statuses"]["escalated"], 2,
        "the database and the unmapped alert"
    );
}

#[test]
fn a_storm_that_cannot_finish_in_time_fails_and_says_what_it_left_unfinished() {
    // Goal: the storm never reports success it did not see: past its timeout it prints its
    // figures, names the unfinished incidents as lost and exits non-zero. Method: a model
    // that takes 3 s a turn, one turn at a time, and a 2 s timeout.
    let (ok, s, _) = storm(&[
        "--alerts",
        "6",
        "--model-latency-ms",
        "3000",
        "--model-concurrency",
        "1",
        "--timeout-secs",
        "2",
    ]);
    assert!(!ok, "{s:#}");
    assert_eq!(s["ok"], false);
    assert_eq!(s["timed_out"], true);
    assert_eq!(n(&s, "accepted"), 6);
    assert!(n(&s, "lost") > 0, "{s:#}");
    assert!(
        s["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("not terminal")),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_a_fleet_already_running_acts_on_that_fleet_and_leaves_it_running() {
    // Goal: `--fleet-url` without `--target` runs the embedded agent on a fleet of another
    // process (so that the peak RSS is the agent's and the clients'): every mutating call
    // lands in that fleet's ledger, the figures agree, and the storm leaves the fleet it did
    // not start running. Method: a fleet served by this test, a 30-alert storm on it, then
    // the fleet's ledger read by the test itself.
    let fleet = sre_agent::embedded::Fleet::start(&sre_agent::storm::service::SCENARIOS)
        .await
        .unwrap();
    let url = fleet.url.clone();
    let fleet_url = url.clone();
    let (ok, s, stderr) = tokio::task::spawn_blocking(move || {
        storm(&[
            "--alerts",
            "30",
            "--fleet-url",
            &fleet_url,
            "--timeout-secs",
            "180",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert_consistent(&s);
    assert_eq!(n(&s, "accepted"), 30);
    assert!(
        s["rss_of"]
            .as_str()
            .unwrap()
            .contains("the agent and the storm's clients"),
        "{s:#}"
    );
    let ledger: Value = reqwest::get(format!("{url}/v1/ledger"))
        .await
        .expect("the fleet still answers after the storm")
        .json()
        .await
        .unwrap();
    let entries = ledger["entries"].as_array().expect("a ledger");
    let pages = entries
        .iter()
        .filter(|e| e["action"] == "send-notification")
        .count() as u64;
    assert_eq!(pages, n(&s, "pages"), "{ledger:#}");
    assert_eq!(pages, 30, "one page per incident, in this fleet");
    fleet.stop().await;
}
