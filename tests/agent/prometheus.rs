//! The agent driven end to end by the real programs (issue 10): Debian's `prometheus` scrapes
//! the simulated fleet's `/metrics` and evaluates the repository's alert rules
//! (`deploy/prometheus/alerts.yml`); Debian's `prometheus-alertmanager` posts its webhook to
//! the agent's `POST /webhooks/alertmanager`. Both run as child processes on free loopback
//! ports, with configs generated from the examples in `deploy/prometheus/`, and are killed
//! when the test ends, also when it fails. Nothing is posted to the agent by the test but a
//! human's decision: the fleet's faults are injected and ended, the rest follows from them.
//! Outcomes are read from the API and from the fleet's ledger and inbox.
//!
//! Without the programs the tests say so loudly on stderr and pass, unless
//! `SRE_REQUIRE_PROMETHEUS=1` (CI sets it once `scripts/prometheus-stack.sh` succeeded).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{self, Harness, Options, actions, timeline};

/// Set to `1`, a missing program fails the tests instead of skipping them.
const REQUIRE_ENV: &str = "SRE_REQUIRE_PROMETHEUS";
/// Prometheus up, its first scrape of the fleet done and its Alertmanager known; Alertmanager
/// ready. Prometheus's discovery hands over targets about 5 s after it starts.
const STACK_UP_MS: u64 = 30_000;
/// A fault to its alert firing, or a fix to its alert resolving, in Prometheus.
const ALERT_WAIT_MS: u64 = 30_000;
/// An alert delivered to an incident opened, or an incident to the state a step expects.
const INCIDENT_WAIT_MS: u64 = 60_000;
/// How often a wait looks again.
const POLL_MS: u64 = 100;
/// Timeout of one request to Prometheus or Alertmanager.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Lines of each program's log shown when a wait fails.
const LOG_TAIL_LINES: usize = 15;

/// The two programs, found on `PATH`.
struct Programs {
    prometheus: PathBuf,
    alertmanager: PathBuf,
}

/// Finds `prometheus` and `prometheus-alertmanager` on `PATH`. When either is missing, says
/// so loudly and gives `None` (the test returns), unless [`REQUIRE_ENV`] is `1`: then fails.
fn programs() -> Option<Programs> {
    let prometheus = on_path("prometheus");
    let alertmanager = on_path("prometheus-alertmanager");
    if let (Some(prometheus), Some(alertmanager)) = (prometheus.clone(), alertmanager.clone()) {
        return Some(Programs {
            prometheus,
            alertmanager,
        });
    }
    let missing: Vec<&str> = [
        ("prometheus", prometheus.is_none()),
        ("prometheus-alertmanager", alertmanager.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, gone)| gone.then_some(name))
    .collect();
    let missing = missing.join(" and ");
    assert!(
        std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{missing} not installed, and {REQUIRE_ENV}=1 requires both: run scripts/prometheus-stack.sh install"
    );
    eprintln!("*** SKIPPED: {missing} not installed; run scripts/prometheus-stack.sh install ***");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Two distinct free loopback ports (both bound at once, then released).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// `text` with the one occurrence of `from` replaced by `to`; fails when there is not
/// exactly one (the example changed: this test must follow it).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected {from:?} exactly once in the example config:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// `text` with the value of the one YAML line `key: …` (comments aside, a list item's
/// leading `- ` allowed) set to `value`, its indentation kept.
fn set_value(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}:");
    let mut found = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            let item = body.strip_prefix("- ").unwrap_or(body);
            if item.starts_with(&prefix) {
                found += 1;
                let indent = &line[..line.len() - item.len()];
                format!("{indent}{key}: {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(
        found, 1,
        "expected one `{key}:` line in the example config:\n{text}"
    );
    lines.join("\n") + "\n"
}

/// The last `n` lines of a file, or why it cannot be read.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// A real Prometheus and Alertmanager watching one harness's fleet and alerting its agent.
/// Dropping it kills both and waits for them.
struct Stack {
    /// The two children, killed and reaped on drop; behind a lock so that a wait can see,
    /// through `&self`, that one exited.
    prometheus: Mutex<Child>,
    alertmanager: Mutex<Child>,
    /// `http://127.0.0.1:{port}` of each.
    prometheus_url: String,
    alertmanager_url: String,
    /// A client with a short timeout, so that a wedged program fails a wait, not the test.
    http: reqwest::Client,
    /// Configs, rules, storage and the programs' logs; removed after the children are gone.
    dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [&self.prometheus, &self.alertmanager] {
            let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Stack {
    /// Writes the configs (the examples with this harness's ports, 1 s scrapes and
    /// evaluations, 1 s group waits and intervals), starts both programs, and waits until
    /// Alertmanager is ready and Prometheus has scraped the fleet and knows its Alertmanager:
    /// an alert Prometheus fires before it knows one is dropped, and sent again only a
    /// minute later.
    async fn start(programs: &Programs, h: &Harness, ports: (u16, u16)) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
        let read = |name: &str| std::fs::read_to_string(deploy.join(name)).unwrap();
        let (prometheus_port, alertmanager_port) = ports;
        let fleet = h.fleet.trim_start_matches("http://");
        let agent = h.api.trim_start_matches("http://");

        // The rules are the repository's, unchanged, beside the config that names them.
        std::fs::copy(deploy.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
        let mut prometheus_yml = read("prometheus.yml");
        prometheus_yml = set_value(&prometheus_yml, "scrape_interval", "1s");
        prometheus_yml = set_value(&prometheus_yml, "evaluation_interval", "1s");
        prometheus_yml = replace_once(
            &prometheus_yml,
            "\"127.0.0.1:9400\"",
            &format!("\"{fleet}\""),
        );
        prometheus_yml = replace_once(
            &prometheus_yml,
            "\"127.0.0.1:8080\"",
            &format!("\"{agent}\""),
        );
        prometheus_yml = replace_once(
            &prometheus_yml,
            "\"127.0.0.1:9093\"",
            &format!("\"127.0.0.1:{alertmanager_port}\""),
        );
        std::fs::write(dir.path().join("prometheus.yml"), prometheus_yml).unwrap();

        let mut alertmanager_yml = read("alertmanager.yml");
        let webhook = format!("{}/webhooks/alertmanager", h.api);
        alertmanager_yml = set_value(&alertmanager_yml, "url", &webhook);
        alertmanager_yml = set_value(&alertmanager_yml, "send_resolved", "true");
        alertmanager_yml = set_value(&alertmanager_yml, "group_wait", "1s");
        alertmanager_yml = set_value(&alertmanager_yml, "group_interval", "1s");
        // Short, so that Alertmanager's repeats of an unchanged group reach the agent too.
        alertmanager_yml = set_value(&alertmanager_yml, "repeat_interval", "10s");
        std::fs::write(dir.path().join("alertmanager.yml"), alertmanager_yml).unwrap();

        let at = |name: &str| dir.path().join(name).display().to_string();
        let alertmanager = spawn(
            &programs.alertmanager,
            &[
                format!("--config.file={}", at("alertmanager.yml")),
                format!("--storage.path={}", at("alertmanager-data")),
                format!("--web.listen-address=127.0.0.1:{alertmanager_port}"),
                // Empty: no gossip, nothing listening beyond the loopback port.
                "--cluster.listen-address=".to_owned(),
            ],
            dir.path(),
            "alertmanager.log",
        );
        let prometheus = spawn(
            &programs.prometheus,
            &[
                format!("--config.file={}", at("prometheus.yml")),
                format!("--storage.tsdb.path={}", at("prometheus-data")),
                format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            ],
            dir.path(),
            "prometheus.log",
        );
        let stack = Stack {
            prometheus: Mutex::new(prometheus),
            alertmanager: Mutex::new(alertmanager),
            prometheus_url: format!("http://127.0.0.1:{prometheus_port}"),
            alertmanager_url: format!("http://127.0.0.1:{alertmanager_port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
                .build()
                .unwrap(),
            dir,
        };
        stack
            .wait_for("Alertmanager ready", STACK_UP_MS, || async {
                let url = format!("{}/-/ready", stack.alertmanager_url);
                match stack.http.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("/-/ready answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        let alertmanager_api = format!("{}/api/v2/alerts", stack.alertmanager_url);
        stack
            .wait_for(
                "Prometheus scraping the fleet and the agent (targets up: it reads the agent's \
                 OpenMetrics text) and knowing its Alertmanager",
                STACK_UP_MS,
                || async {
                    let targets = stack.prometheus_get("/api/v1/targets").await?;
                    let health_of = |job: &str| {
                        targets["data"]["activeTargets"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|t| t["labels"]["job"] == job)
                            .map(|t| t["health"].clone())
                    };
                    let (fleet, agent) = (health_of("sre-fleet"), health_of("sre-agent"));
                    let up = Some(Value::from("up"));
                    let managers = stack.prometheus_get("/api/v1/alertmanagers").await?;
                    let known = managers["data"]["activeAlertmanagers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| m["url"] == alertmanager_api.as_str());
                    if fleet == up && agent == up && known {
                        Ok(())
                    } else {
                        Err(format!(
                            "target health: fleet {fleet:?}, agent {agent:?}; alertmanagers {}",
                            managers["data"]
                        ))
                    }
                },
            )
            .await;
        stack
    }

    /// GET a path of Prometheus's API as JSON.
    async fn prometheus_get(&self, path: &str) -> Result<Value, String> {
        get(&self.http, &format!("{}{path}", self.prometheus_url)).await
    }

    /// Instant queries Prometheus answered, from its own `/metrics`: the test itself asks
    /// only for targets, alertmanagers, alerts and rules, so any are the agent's.
    async fn queries_answered(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.prometheus_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("prometheus_http_requests_total{")
                    && l.contains("handler=\"/api/v1/query\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Asserts where the agent's `get-metrics` read: Prometheus answered its queries, or
    /// none were asked.
    async fn assert_metrics_read_from(&self, metrics: Metrics) {
        let answered = self.queries_answered().await;
        match metrics {
            Metrics::Prometheus => assert!(answered > 0, "the agent queried Prometheus"),
            Metrics::Fleet => assert_eq!(answered, 0, "the agent read the fleet"),
        }
    }

    /// Prometheus's alerts named `name` (pending or firing) whose label `key` is `value`.
    async fn prometheus_alerts(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Value>, String> {
        let alerts = self.prometheus_get("/api/v1/alerts").await?;
        Ok(alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["labels"][key] == value)
            .cloned()
            .collect())
    }

    /// The firing alert `name` whose label `key` is `value`, once Prometheus fires it.
    async fn firing(&self, name: &str, key: &str, value: &str) -> Value {
        self.wait_for(
            &format!("{name} ({key}={value}) firing in Prometheus"),
            ALERT_WAIT_MS,
            || async {
                let alerts = self.prometheus_alerts(name, key, value).await?;
                alerts
                    .iter()
                    .find(|a| a["state"] == "firing")
                    .cloned()
                    .ok_or_else(|| format!("{alerts:?}"))
            },
        )
        .await
    }

    /// Waits until Prometheus no longer shows the alert `name` whose label `key` is `value`.
    async fn resolved(&self, name: &str, key: &str, value: &str) {
        self.wait_for(
            &format!("{name} ({key}={value}) resolved in Prometheus"),
            ALERT_WAIT_MS,
            || async {
                let alerts = self.prometheus_alerts(name, key, value).await?;
                if alerts.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{alerts:?}"))
                }
            },
        )
        .await
    }

    /// Polls `probe` until it gives a value. Fails after `limit_ms`, or at once when a program
    /// exited, with what `probe` saw last and what Prometheus and Alertmanager show.
    async fn wait_for<T, F, Fut>(&self, what: &str, limit_ms: u64, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + Duration::from_millis(limit_ms);
        loop {
            let seen = match probe().await {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if let Some(exited) = self.exited() {
                panic!(
                    "{what}: {exited}; last seen: {seen}\n{}",
                    self.report().await
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not within {limit_ms} ms; last seen: {seen}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Which program exited, if one did.
    fn exited(&self) -> Option<String> {
        [
            ("prometheus", &self.prometheus),
            ("alertmanager", &self.alertmanager),
        ]
        .into_iter()
        .find_map(|(name, child)| {
            let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
            match child.try_wait() {
                Ok(Some(status)) => Some(format!("{name} exited ({status})")),
                _ => None,
            }
        })
    }

    /// What Prometheus (`/api/v1/alerts`) and Alertmanager (`/api/v2/alerts`) show, and the
    /// ends of their logs.
    async fn report(&self) -> String {
        let prometheus = match self.prometheus_get("/api/v1/alerts").await {
            Ok(v) => summarize(v["data"]["alerts"].as_array(), |a| {
                format!("{} {} since {}", labels(a), a["state"], a["activeAt"])
            }),
            Err(e) => e,
        };
        let alertmanager_api = format!("{}/api/v2/alerts", self.alertmanager_url);
        let alertmanager = match get(&self.http, &alertmanager_api).await {
            Ok(v) => summarize(v.as_array(), |a| {
                format!(
                    "{} {} starts {} ends {}",
                    labels(a),
                    a["status"]["state"],
                    a["startsAt"],
                    a["endsAt"]
                )
            }),
            Err(e) => e,
        };
        let rules = match self.prometheus_get("/api/v1/rules").await {
            Ok(v) => {
                let broken: Vec<String> = v["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .filter(|r| r["health"] != "ok")
                    .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
                    .collect();
                if broken.is_empty() {
                    "all ok".to_owned()
                } else {
                    broken.join("; ")
                }
            }
            Err(e) => e,
        };
        let logs = |name: &str| tail(&self.dir.path().join(name), LOG_TAIL_LINES);
        format!(
            "Prometheus /api/v1/alerts: {prometheus}\nAlertmanager /api/v2/alerts: {alertmanager}\n\
             Prometheus rules: {rules}\n\
             --- prometheus.log (end) ---\n{}\n--- alertmanager.log (end) ---\n{}",
            logs("prometheus.log"),
            logs("alertmanager.log")
        )
    }
}

/// Starts `program` in `dir` with its output to `dir/log`.
fn spawn(program: &Path, args: &[String], dir: &Path, log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()))
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    response.json().await.map_err(|e| format!("{url}: {e}"))
}

/// An alert's labels on one line, `alertname` first.
fn labels(alert: &Value) -> String {
    let labels = &alert["labels"];
    let rest: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "job" | "instance"))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!(
        "{}{{{}}}",
        labels["alertname"].as_str().unwrap_or("?"),
        rest.join(",")
    )
}

fn summarize(alerts: Option<&Vec<Value>>, line: impl Fn(&Value) -> String) -> String {
    match alerts {
        Some(alerts) if !alerts.is_empty() => {
            let lines: Vec<String> = alerts.iter().map(|a| format!("\n  {}", line(a))).collect();
            lines.concat()
        }
        Some(_) => "none".to_owned(),
        None => "(unreadable)".to_owned(),
    }
}

/// The incidents whose failure is `service`'s (their `failure_key` is `{service}/…`),
/// oldest first.
async fn incidents_of(h: &Harness, service: &str) -> Vec<Value> {
    let list = h.get_json(&format!("{}/incidents?limit=200", h.api)).await;
    let mut found = Vec::new();
    for item in list["items"].as_array().unwrap().iter().rev() {
        let incident = h.incident(item["id"].as_str().unwrap()).await;
        if incident["failure_key"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("{service}/")))
        {
            found.push(incident);
        }
    }
    found
}

/// Every incident's failure key and status, for the record.
async fn all_incidents(h: &Harness) -> Vec<String> {
    let list = h.get_json(&format!("{}/incidents?limit=200", h.api)).await;
    let mut lines = Vec::new();
    for item in list["items"].as_array().unwrap().iter().rev() {
        let incident = h.incident(item["id"].as_str().unwrap()).await;
        lines.push(format!(
            "{} {}",
            incident["failure_key"], incident["status"]
        ));
    }
    lines
}

/// Waits until `check` holds for incident `id`; returns it.
async fn until_incident(
    stack: &Stack,
    h: &Harness,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    stack
        .wait_for(
            &format!("incident {id}: {what}"),
            INCIDENT_WAIT_MS,
            || async {
                let incident = h.incident(id).await;
                if check(&incident) {
                    Ok(incident)
                } else {
                    Err(format!("{incident:#}"))
                }
            },
        )
        .await
}

/// The incident's record of alert `name`.
fn alert_record<'a>(incident: &'a Value, name: &str) -> &'a Value {
    incident["alerts"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alertname"] == name)
        .unwrap_or_else(|| panic!("no {name} record: {incident:#}"))
}

/// When the agent received the alert's latest change to `state` (its clock).
fn received(record: &Value, state: &str) -> DateTime<Utc> {
    let at = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c["state"] == state)
        .unwrap_or_else(|| panic!("no {state} change: {record:#}"))["at"]
        .clone();
    serde_json::from_value(at).unwrap()
}

/// When the incident's status last moved to `to` (its timeline).
fn moved_to(incident: &Value, to: &str) -> DateTime<Utc> {
    let entry = incident["metadata"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "status" && e["detail"]["to"] == to)
        .unwrap_or_else(|| panic!("no move to {to}: {incident:#}"));
    time(&entry["at"])
}

fn time(v: &Value) -> DateTime<Utc> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Milliseconds from `a` to `b` (same machine, same clock).
fn ms(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_milliseconds()
}

/// The proposed restart of an escalated incident: its seq, digest and target pod.
fn proposal(incident: &Value) -> (u64, String, String) {
    let p = actions(incident, "restart-pod")
        .into_iter()
        .find(|a| a["status"] == "proposed")
        .unwrap_or_else(|| panic!("a proposed restart: {incident:#}"));
    (
        p["seq"].as_u64().unwrap(),
        p["proposal"]["digest"].as_str().unwrap().to_owned(),
        p["args"]["podName"].as_str().unwrap().to_owned(),
    )
}

/// A human's decision on proposal `seq` of incident `id`, naming its digest and the decider.
async fn decide(h: &Harness, id: &str, seq: u64, verdict: &str, digest: &str, by: &str) -> Value {
    let r = h
        .http
        .post(format!("{}/incidents/{id}/actions/{seq}/{verdict}", h.api))
        .header("if-match", format!("\"{digest}\""))
        .header("x-decided-by", by)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{verdict} by {by}: {body:#}");
    body
}

/// `POST` or `DELETE` of a fleet scenario, as an operator's tool would.
async fn scenario(h: &Harness, method: reqwest::Method, name: &str) {
    let r = h
        .http
        .request(method.clone(), format!("{}/v1/scenarios/{name}", h.fleet))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{method} scenario {name}: {}",
        r.status()
    );
}

#[tokio::test]
async fn an_oom_kill_seen_by_prometheus_is_fixed_once_and_closed_when_its_alert_resolves() {
    oom_story(Metrics::Fleet).await;
}

#[tokio::test]
async fn the_oom_story_ends_the_same_with_get_metrics_read_from_prometheus() {
    oom_story(Metrics::Prometheus).await;
}

#[tokio::test]
async fn a_database_outage_seen_by_prometheus_restarts_nothing_when_rejected_and_once_when_approved()
 {
    db_story(Metrics::Fleet).await;
}

#[tokio::test]
async fn the_database_story_ends_the_same_with_get_metrics_read_from_prometheus() {
    db_story(Metrics::Prometheus).await;
}

/// Where the agent's `get-metrics` reads: the fleet's own API, or the same Prometheus that
/// alerts (`--metrics-backend prometheus`, the kube-state-metrics and cAdvisor series).
#[derive(Clone, Copy, PartialEq)]
enum Metrics {
    Fleet,
    Prometheus,
}

/// The agent's flags for `metrics`, Prometheus being on `prometheus_port`. Through
/// Prometheus a replaced pod shows one scrape later: verification looks for up to 10 s.
fn metrics_flags(metrics: Metrics, prometheus_port: u16) -> Vec<String> {
    match metrics {
        Metrics::Fleet => vec![],
        Metrics::Prometheus => [
            "--metrics-backend",
            "prometheus",
            "--prometheus-url",
            &format!("http://127.0.0.1:{prometheus_port}"),
            // With the harness's 100 ms between checks.
            "--verify-attempts-max",
            "100",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    }
}

async fn oom_story(metrics: Metrics) {
    // Goal: an OOM kill Prometheus sees on the fleet's /metrics reaches the agent through
    // Alertmanager as KubePodOOMKilled and ends in one incident, one verified restart of the
    // killed pod, closed only once the alert resolved, and at most one page. Method: the real
    // Prometheus and Alertmanager over a fleet with no fault; once Prometheus watches it,
    // oom-kill is injected (Prometheus sees the restart counter rise, as it would on a real
    // cluster; injected before its first scrape, the kill could happen unseen and the alert
    // wait for the next one, 80 s later); then only Prometheus, Alertmanager and the agent
    // act. Read: Prometheus's alerts, the incidents, the ledger, the inbox.
    let Some(programs) = programs() else { return };
    let begun = Instant::now();
    let ports = free_ports();
    let h = helpers::start(Options {
        scenarios: vec![],
        flags: metrics_flags(metrics, ports.0),
        ..Options::default()
    })
    .await;
    let stack = Stack::start(&programs, &h, ports).await;
    let stack_up_ms = begun.elapsed().as_millis();

    let injected_at = Utc::now();
    scenario(&h, reqwest::Method::POST, "oom-kill").await;
    let pod = h.oom_killed_pod().await;
    assert_eq!(pod, helpers::expected_oom_pod());
    let fired = stack.firing("KubePodOOMKilled", "pod", &pod).await;
    let seen_firing_at = Utc::now();

    let opened = stack
        .wait_for("an incident for checkout-api", INCIDENT_WAIT_MS, || async {
            incidents_of(&h, "checkout-api")
                .await
                .into_iter()
                .next()
                .ok_or_else(|| "no incident".to_owned())
        })
        .await;
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(
        opened["failure_key"], "checkout-api/oom_killed",
        "{opened:#}"
    );

    // The fix runs and verifies; the incident waits for the alert, then closes.
    let fixed = until_incident(&stack, &h, &id, "a verified restart", |i| {
        actions(i, "restart-pod")
            .first()
            .is_some_and(|r| r["verified"] == true)
    })
    .await;
    let fixed_seen_status = fixed["status"].clone();
    stack.resolved("KubePodOOMKilled", "pod", &pod).await;
    let seen_resolved_at = Utc::now();
    let incident = until_incident(&stack, &h, &id, "resolved", |i| {
        matches!(
            i["status"].as_str(),
            Some("resolved" | "escalated" | "failed")
        )
    })
    .await;
    helpers::assert_oom_story(&h, &incident, &pod).await;

    // Closed only once the alert resolved: the agent received the resolution before it
    // wrote its incident's last status.
    let record = alert_record(&incident, "KubePodOOMKilled");
    assert_eq!(record["state"], "resolved", "{incident:#}");
    assert_eq!(record["labels"]["pod"], pod.as_str());
    let restart = actions(&incident, "restart-pod")[0];
    let restarted_at = time(&restart["finished_at"]);
    let alert_resolved_at = received(record, "resolved");
    let closed_at = moved_to(&incident, "resolved");
    assert!(
        restarted_at < alert_resolved_at && alert_resolved_at <= closed_at,
        "fixed {restarted_at}, alert resolved {alert_resolved_at}, closed {closed_at}: {incident:#}"
    );
    let statuses = timeline(&incident, "status");
    assert!(
        statuses.last().is_some_and(|s| s.contains("resolved")),
        "{statuses:#?}"
    );

    let ours = incidents_of(&h, "checkout-api").await;
    let everything = all_incidents(&h).await;
    assert_eq!(
        ours.len(),
        1,
        "one incident for checkout-api: {everything:#?}"
    );
    let ledger = h.restarts_of("checkout-api").await;
    assert_eq!(ledger.len(), 1, "one restart: {ledger:#?}");
    assert_eq!(ledger[0]["target"], pod.as_str());
    let pages = h.pages_of(incident["trace_id"].as_str().unwrap()).await;
    assert!(pages.len() <= 1, "at most one page: {pages:#?}");

    let fired_at = time(&record["starts_at"]);
    let created_at = time(&incident["created_at"]);
    let active_at = time(&fired["activeAt"]);
    eprintln!(
        "prometheus oom story: stack up (harness, Prometheus's first scrape, Alertmanager known) {stack_up_ms} ms; \
         injected → alert active in Prometheus {} ms (seen firing {} ms); \
         alert fired (startsAt) → incident opened {} ms; opened → restart verified {} ms \
         (status then {fixed_seen_status}); restart verified → alert gone from Prometheus (as polled) {} ms, \
         → resolution received by the agent {} ms; resolution received → incident resolved {} ms; \
         incidents: {everything:?}; pages: {}; total {} ms",
        ms(injected_at, active_at),
        ms(injected_at, seen_firing_at),
        ms(fired_at, created_at),
        ms(created_at, restarted_at),
        ms(restarted_at, seen_resolved_at),
        ms(restarted_at, alert_resolved_at),
        ms(alert_resolved_at, closed_at),
        pages.len(),
        begun.elapsed().as_millis(),
    );
    stack.assert_metrics_read_from(metrics).await;
    drop(stack);
    h.stop().await;
}

async fn db_story(metrics: Metrics) {
    // Goal: PostgresqlDown from the real Prometheus and Alertmanager ends in an escalated
    // incident proposing a restart of a payments-db pod; rejecting it restarts nothing; the
    // fault ended, the alert resolves and so does the incident; the fault back, the alert
    // fires again (a new startsAt) and opens a new incident, whose approved proposal restarts
    // the pod exactly once on the approver's authority. Method: the real stack over a fleet
    // with db-outage injected; the human's decisions through the API; the fault ended and
    // injected again through the fleet's API. Read: Prometheus's alerts, the incidents, the
    // ledger.
    let Some(programs) = programs() else { return };
    let begun = Instant::now();
    let ports = free_ports();
    let h = helpers::start(Options {
        scenarios: vec!["db-outage"],
        flags: metrics_flags(metrics, ports.0),
        ..Options::default()
    })
    .await;
    let stack = Stack::start(&programs, &h, ports).await;
    let stack_up_ms = begun.elapsed().as_millis();

    // First firing: escalated with a proposal; rejected.
    let fired = stack
        .firing("PostgresqlDown", "service", "payments-db")
        .await;
    let first = stack
        .wait_for("an incident for payments-db", INCIDENT_WAIT_MS, || async {
            incidents_of(&h, "payments-db")
                .await
                .into_iter()
                .next()
                .ok_or_else(|| "no incident".to_owned())
        })
        .await;
    let id = first["id"].as_str().unwrap().to_owned();
    let escalated = until_incident(&stack, &h, &id, "finished", |i| {
        matches!(
            i["status"].as_str(),
            Some("resolved" | "escalated" | "failed")
        )
    })
    .await;
    helpers::assert_db_story(&h, &escalated).await;
    let (seq, digest, target) = proposal(&escalated);
    assert!(target.starts_with("payments-db"), "{escalated:#}");
    let escalated_at = moved_to(&escalated, "escalated");
    let rejected = decide(&h, &id, seq, "reject", &digest, "bob").await;
    assert_eq!(rejected["status"], "escalated", "{rejected:#}");
    assert_eq!(rejected["action"]["status"], "rejected", "{rejected:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.restarts_of("payments-db").await.is_empty(),
        "rejected: nothing restarted"
    );
    assert_eq!(h.incident(&id).await["status"], "escalated");

    // The fault ends by hand: the alert resolves, and the agent's own check agrees.
    let ended_at = Utc::now();
    scenario(&h, reqwest::Method::DELETE, "db-outage").await;
    stack
        .resolved("PostgresqlDown", "service", "payments-db")
        .await;
    let seen_resolved_at = Utc::now();
    let closed = until_incident(&stack, &h, &id, "resolved", |i| i["status"] == "resolved").await;
    assert!(
        timeline(&closed, "status")
            .last()
            .is_some_and(|l| l.contains("resolved on its own")),
        "{closed:#}"
    );
    assert_eq!(
        actions(&closed, "restart-pod")[0]["status"],
        "rejected",
        "{closed:#}"
    );
    assert_eq!(alert_record(&closed, "PostgresqlDown")["state"], "resolved");
    let closed_at = moved_to(&closed, "resolved");
    assert!(closed_at >= received(alert_record(&closed, "PostgresqlDown"), "resolved"));

    // The fault comes back: the alert fires again, a new incident; approved.
    let reinjected_at = Utc::now();
    scenario(&h, reqwest::Method::POST, "db-outage").await;
    let refired = stack
        .wait_for(
            "PostgresqlDown firing again in Prometheus",
            ALERT_WAIT_MS,
            || async {
                let alerts = stack
                    .prometheus_alerts("PostgresqlDown", "service", "payments-db")
                    .await?;
                alerts
                    .iter()
                    .find(|a| a["state"] == "firing" && a["activeAt"] != fired["activeAt"])
                    .cloned()
                    .ok_or_else(|| format!("{alerts:?}"))
            },
        )
        .await;
    let second = stack
        .wait_for(
            "a second incident for payments-db",
            INCIDENT_WAIT_MS,
            || async {
                let found = incidents_of(&h, "payments-db").await;
                found
                    .get(1)
                    .cloned()
                    .ok_or_else(|| format!("{} incident(s)", found.len()))
            },
        )
        .await;
    let id2 = second["id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    let waiting = until_incident(&stack, &h, &id2, "finished", |i| {
        matches!(
            i["status"].as_str(),
            Some("resolved" | "escalated" | "failed")
        )
    })
    .await;
    assert_eq!(waiting["status"], "escalated", "{waiting:#}");
    let starts = |i: &Value| time(&alert_record(i, "PostgresqlDown")["starts_at"]);
    assert!(
        starts(&waiting) > starts(&closed),
        "a new startsAt: {waiting:#}"
    );
    let (seq2, digest2, target2) = proposal(&waiting);
    assert!(target2.starts_with("payments-db"), "{waiting:#}");
    assert!(
        h.restarts_of("payments-db").await.is_empty(),
        "not before the approval"
    );
    let approved_at = Utc::now();
    let approved = decide(&h, &id2, seq2, "approve", &digest2, "alice").await;
    assert_eq!(approved["action"]["human"]["by"], "alice", "{approved:#}");

    // The restart runs on the approval; the fault persists across it, so it does not verify
    // and the incident is escalated again.
    let done = until_incident(&stack, &h, &id2, "the approved restart ran", |i| {
        i["status"] == "escalated"
            && actions(i, "restart-pod")
                .iter()
                .any(|r| r["decision"] == "approved" && r["verified"].is_boolean())
    })
    .await;
    let restart = actions(&done, "restart-pod")
        .into_iter()
        .find(|r| r["seq"] == seq2)
        .unwrap()
        .clone();
    assert_eq!(restart["status"], "succeeded", "{done:#}");
    assert_eq!(restart["human"]["by"], "alice", "{done:#}");
    assert!(
        timeline(&done, "human")
            .iter()
            .any(|l| l.contains("approved by alice")),
        "{done:#}"
    );
    let ledger = h.restarts_of("payments-db").await;
    assert_eq!(ledger.len(), 1, "one restart: {ledger:#?}");
    assert_eq!(ledger[0]["target"], target2.as_str());
    assert_eq!(ledger[0]["trace_id"], done["trace_id"]);
    assert_eq!(ledger[0]["idempotency_key"], restart["idempotency_key"]);
    assert_eq!(
        h.incident(&id).await["status"],
        "resolved",
        "the first stays resolved"
    );
    let everything = all_incidents(&h).await;
    assert_eq!(
        incidents_of(&h, "payments-db").await.len(),
        2,
        "{everything:#?}"
    );

    let fired_at = time(&alert_record(&escalated, "PostgresqlDown")["starts_at"]);
    let created_at = time(&escalated["created_at"]);
    let refired_at = starts(&waiting);
    let created2_at = time(&waiting["created_at"]);
    let restarted_at = time(&restart["finished_at"]);
    eprintln!(
        "prometheus db story: stack up {stack_up_ms} ms; alert active {} → fired (startsAt) {} ms; \
         fired → incident opened {} ms; opened → escalated {} ms; fault ended → alert gone from \
         Prometheus (as polled) {} ms, → incident resolved {} ms; fault back → fired again {} ms \
         (active {}); fired → second incident {} ms; opened → escalated {} ms; approved → restart \
         done {} ms; incidents: {everything:?}; total {} ms",
        fired["activeAt"],
        ms(time(&fired["activeAt"]), fired_at),
        ms(fired_at, created_at),
        ms(created_at, escalated_at),
        ms(ended_at, seen_resolved_at),
        ms(ended_at, closed_at),
        ms(reinjected_at, refired_at),
        refired["activeAt"],
        ms(refired_at, created2_at),
        ms(created2_at, moved_to(&waiting, "escalated")),
        ms(approved_at, restarted_at),
        begun.elapsed().as_millis(),
    );
    stack.assert_metrics_read_from(metrics).await;
    drop(stack);
    h.stop().await;
}
