//! Harness for the agent suite: the simulated fleet with scenarios injected, on a free
//! loopback port; the real application with its agent (three MCP servers spawned over stdio
//! as this package's own binary, the chosen reasoner, a fresh SQLite file); and a client
//! that reads the API and the fleet's ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ractor::ActorRef;
use serde_json::{Value, json};
use sre_agent::agent::incident::IncidentHooks;
use sre_agent::agent::supervisor::SupervisorMsg;
use sre_agent::app::Application;
use sre_agent::config::{Cli, Command, Config, LogFormat};
use sre_agent::mcp_client::McpClientMsg;
use sre_agent::reasoner::Server;
use tokio::sync::oneshot;

pub const OOM_ALERT: &str = "CheckoutApiOOMKilled";
pub const DB_ALERT: &str = "PaymentsDbDown";

/// How long a test waits for incidents to finish.
pub const FINISH_WAIT_MS: u64 = 60_000;

pub struct Harness {
    pub api: String,
    pub fleet: String,
    pub http: reqwest::Client,
    pub clients: Vec<(Server, ActorRef<McpClientMsg>)>,
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
    app_stop: Option<oneshot::Sender<()>>,
    app_task: Option<tokio::task::JoinHandle<()>>,
    fleet_stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

/// What a test may change before the application starts.
pub struct Options {
    pub scenarios: Vec<&'static str>,
    /// Extra `serve` flags (e.g. `--reasoner openai --llm-base-url …`).
    pub flags: Vec<String>,
    pub hooks: Option<Arc<dyn IncidentHooks>>,
    pub database_url: Option<String>,
    /// Use this running fleet instead of starting one (`scenarios` is then ignored).
    pub fleet_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scenarios: vec!["oom-kill", "db-outage"],
            flags: vec![],
            hooks: None,
            database_url: None,
            fleet_url: None,
        }
    }
}

pub async fn start(options: Options) -> Harness {
    let (fleet_url, fleet_stop) = match options.fleet_url.clone() {
        Some(url) => (url, None),
        None => {
            let (url, stop) = start_fleet(&options.scenarios).await;
            (url, Some(stop))
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let db = options
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("incidents.db").display()));
    let mut argv: Vec<String> = [
        "sre-agent",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--fleet-url",
        &fleet_url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // The suite's defaults, unless a test sets the flag itself.
    for (flag, value) in [
        ("--verify-interval-ms", "100"),
        ("--adopt-interval-ms", "500"),
        ("--mcp-backoff-max-ms", "500"),
    ] {
        if !options.flags.iter().any(|f| f == flag) {
            argv.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    argv.extend(options.flags.iter().cloned());
    let cli = Cli::try_parse_from(argv).expect("valid test flags");
    let Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sre-agent"));
    let mut config: Config = args.to_config(&program, LogFormat::Human).unwrap();
    if let (Some(agent), Some(hooks)) = (config.agent.as_mut(), options.hooks) {
        agent.hooks = hooks;
    }
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let api = format!("http://127.0.0.1:{}", app.port());
    let clients = app
        .agent()
        .map(|a| a.clients.iter().map(|(s, c)| (*s, c.clone())).collect())
        .unwrap_or_default();
    let supervisor = app.agent().map(|a| a.supervisor.clone());
    let (app_stop, app_stopped) = oneshot::channel::<()>();
    let app_task = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = app_stopped.await;
        })
        .await
        .expect("the application runs until stopped");
    });
    Harness {
        api,
        fleet: fleet_url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        clients,
        supervisor,
        app_stop: Some(app_stop),
        app_task: Some(app_task),
        fleet_stop,
        _dir: dir,
    }
}

/// The simulated fleet with `scenarios` injected, on a free loopback port.
pub async fn start_fleet(scenarios: &[&str]) -> (String, oneshot::Sender<()>) {
    let mut fleet = mcp::data::load_fleet(None, chrono::Utc::now()).unwrap();
    for s in scenarios {
        fleet.inject(s).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mcp::fleet::http::serve(listener, fleet, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

impl Harness {
    /// Posts an incident for `alert`; returns its id and trace id.
    pub async fn post(&self, alert: &str, service: &str) -> (String, String) {
        post(&self.http, &self.api, alert, service).await
    }

    /// GET `url` (on the API or the fleet) as JSON.
    pub async fn get_json(&self, url: &str) -> Value {
        get_json(&self.http, url).await
    }

    pub async fn incident(&self, id: &str) -> Value {
        self.get_json(&format!("{}/incidents/{id}", self.api)).await
    }

    /// Waits until the incident is resolved, escalated or failed; returns it.
    pub async fn finished(&self, id: &str) -> Value {
        finished(&self.http, &self.api, id).await
    }

    /// The pages the fleet delivered for one trace id, oldest first.
    pub async fn pages_of(&self, trace: &str) -> Vec<String> {
        self.get_json(&format!("{}/v1/notifications", self.fleet))
            .await["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["trace_id"] == trace)
            .map(|n| n["message"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The fleet's ledger of mutating calls.
    pub async fn ledger(&self) -> Vec<Value> {
        let ledger = self.get_json(&format!("{}/v1/ledger", self.fleet)).await;
        ledger["entries"].as_array().cloned().unwrap_or_default()
    }

    /// Restarts in the ledger of pods whose names start with `service`.
    pub async fn restarts_of(&self, service: &str) -> Vec<Value> {
        self.ledger()
            .await
            .into_iter()
            .filter(|e| {
                e["action"] == "restart-pod"
                    && e["target"].as_str().is_some_and(|t| t.starts_with(service))
            })
            .collect()
    }

    /// The pod of `service` whose last termination was an OOM kill, as the fleet shows it.
    pub async fn oom_killed_pod(&self) -> String {
        let metrics = self
            .get_json(&format!("{}/v1/services/checkout-api/metrics", self.fleet))
            .await;
        metrics["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["last_termination_reason"] == "OOMKilled")
            .expect("the oom-kill scenario has an OOM-killed pod")["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `GET /metrics`, checked to be OpenMetrics text, parsed.
    pub async fn scrape(&self) -> Scrape {
        let response = self
            .http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let text = response.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        Scrape::parse(&text)
    }

    /// Scrapes until `check` holds (at most [`FINISH_WAIT_MS`]); returns that scrape.
    pub async fn scrape_until(&self, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_millis(FINISH_WAIT_MS);
        loop {
            let scrape = self.scrape().await;
            if check(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "the metrics never showed {what}:\n{}",
                scrape.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self, server: Server) -> ActorRef<McpClientMsg> {
        self.clients
            .iter()
            .find(|(s, _)| *s == server)
            .map(|(_, c)| c.clone())
            .expect("the agent runs a client per server")
    }

    /// Stops the application (its actors, clients and server processes); the fleet runs on.
    pub async fn stop_agent_keep_fleet(&mut self) {
        if let Some(stop) = self.app_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.app_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_agent_keep_fleet().await;
        if let Some(stop) = self.fleet_stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The three MCP servers over streamable HTTP on free loopback ports, `catalog` behind the
/// mapping server and the fleet at `fleet` behind the other two; returns the agent's flags
/// to reach them.
pub async fn http_servers(fleet: &str, catalog: mcp::catalog::Catalog) -> Vec<String> {
    use mcp::servers::mapping::MappingServer;
    use mcp::servers::observability::ObservabilityServer;
    use mcp::servers::remediation::RemediationServer;
    let backend = Arc::new(mcp::backend::FleetClient::new(fleet, 5_000).unwrap());
    let catalog = Arc::new(catalog);
    let mapping = serve_mcp_http(move || MappingServer::new(catalog.clone())).await;
    let b = backend.clone();
    let observability = serve_mcp_http(move || ObservabilityServer::new(b.clone())).await;
    let remediation = serve_mcp_http(move || RemediationServer::new(backend.clone())).await;
    [
        "--mcp-transport",
        "http",
        "--mcp-mapping-url",
        &mapping,
        "--mcp-observability-url",
        &observability,
        "--mcp-remediation-url",
        &remediation,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Serves `factory` over streamable HTTP on a free loopback port; returns the MCP URL.
async fn serve_mcp_http<S, F>(factory: F) -> String
where
    S: rmcp::ServerHandler,
    F: Fn() -> S + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(mcp::servers::common::serve_http(
        listener,
        &[],
        factory,
        std::future::pending(),
    ));
    url
}

/// Posts an incident for `alert` on `service`; returns its id and trace id (the answer's
/// `trace_id` and its `X-Trace-Id` header agree).
pub async fn post(
    http: &reqwest::Client,
    api: &str,
    alert: &str,
    service: &str,
) -> (String, String) {
    let response = http
        .post(format!("{api}/incidents"))
        // Each post opens an incident of its own: these tests are about what the agent
        // does across incidents (the durable restart window); coalescing has its own.
        .json(&json!({
            "title": format!("{alert} on {service}"),
            "severity": "critical",
            "alert_type": alert,
            "service": service,
            "coalesce": false,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let header = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"], header.as_str());
    (body["id"].as_str().unwrap().to_owned(), header)
}

/// Waits until the incident at `api` is resolved, escalated or failed; returns it.
pub async fn finished(http: &reqwest::Client, api: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_millis(FINISH_WAIT_MS);
    loop {
        let incident = get_json(http, &format!("{api}/incidents/{id}")).await;
        if matches!(
            incident["status"].as_str(),
            Some("resolved" | "escalated" | "failed")
        ) {
            return incident;
        }
        assert!(
            Instant::now() < deadline,
            "incident {id} did not finish within {FINISH_WAIT_MS} ms: {incident:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A service's pods in a fleet with `scenarios` injected, without a server: the fleet is
/// deterministic, so these are the names and states a served fleet starts with.
pub fn fleet_pod_states(scenarios: &[&str], service: &str) -> Vec<mcp::fleet::model::PodStatus> {
    let mut fleet = mcp::data::load_fleet(None, chrono::Utc::now()).unwrap();
    for s in scenarios {
        fleet.inject(s).unwrap();
    }
    fleet.metrics(service).unwrap().pods
}

/// The names of a service's pods (see [`fleet_pod_states`]).
pub fn fleet_pods(scenarios: &[&str], service: &str) -> Vec<String> {
    fleet_pod_states(scenarios, service)
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// The pod the oom-kill scenario kills (the fleet is deterministic), without a server.
pub fn expected_oom_pod() -> String {
    fleet_pod_states(&["oom-kill"], "checkout-api")
        .into_iter()
        .find(|p| p.last_termination_reason.as_deref() == Some("OOMKilled"))
        .expect("the oom-kill scenario kills a pod at once")
        .name
}

/// The actions of an incident with this tool.
pub fn actions<'a>(incident: &'a Value, tool: &str) -> Vec<&'a Value> {
    incident["actions_taken"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tool"] == tool)
        .collect()
}

/// Timeline messages of a kind.
pub fn timeline(incident: &Value, kind: &str) -> Vec<String> {
    incident["metadata"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts the OOM story's outcome: resolved, one verified restart of exactly `pod`, one
/// restart in the ledger carrying the incident's trace id and key, a notification sent.
pub async fn assert_oom_story(h: &Harness, incident: &Value, pod: &str) {
    assert_eq!(incident["status"], "resolved", "{incident:#}");
    let rca = &incident["rca_analysis"];
    assert!(
        rca["summary"].as_str().unwrap().contains(pod) || rca["evidence"].to_string().contains(pod),
        "the RCA names the pod: {rca:#}"
    );
    let restarts = actions(incident, "restart-pod");
    assert_eq!(restarts.len(), 1, "{incident:#}");
    assert_eq!(restarts[0]["args"]["podName"], pod);
    assert_eq!(restarts[0]["decision"], "auto");
    assert_eq!(restarts[0]["status"], "succeeded");
    assert_eq!(restarts[0]["verified"], true);
    let notices = actions(incident, "send-notification");
    assert!(
        notices.iter().any(|n| n["status"] == "succeeded"),
        "{incident:#}"
    );
    let ledger = h.restarts_of("checkout-api").await;
    assert_eq!(ledger.len(), 1, "exactly one restart: {ledger:#?}");
    assert_eq!(ledger[0]["target"], pod);
    assert_eq!(ledger[0]["trace_id"], incident["trace_id"]);
    assert_eq!(ledger[0]["idempotency_key"], restarts[0]["idempotency_key"]);
}

/// Asserts the database story's outcome: escalated, restart proposed and not run, a
/// notification sent, no restart in the ledger, the decision and its reason in the timeline.
pub async fn assert_db_story(h: &Harness, incident: &Value) {
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert!(
        incident["rca_analysis"]["summary"]
            .as_str()
            .unwrap()
            .contains("payments-db"),
        "{incident:#}"
    );
    for restart in actions(incident, "restart-pod") {
        assert_ne!(restart["status"], "succeeded", "{incident:#}");
        assert_ne!(restart["status"], "started", "{incident:#}");
        assert!(matches!(
            restart["decision"].as_str(),
            Some("proposed" | "denied")
        ));
        assert!(!restart["reason"].as_str().unwrap().is_empty());
    }
    assert!(
        actions(incident, "send-notification")
            .iter()
            .any(|n| n["status"] == "succeeded"),
        "{incident:#}"
    );
    assert!(h.restarts_of("payments-db").await.is_empty());
    let decisions = timeline(incident, "decision");
    assert!(
        decisions
            .iter()
            .any(|d| d.contains("restart-pod") && d.contains("proposed")),
        "{decisions:#?}"
    );
}

/// One scrape of `GET /metrics`: every sample with its labels, read by the parser the
/// storm command uses (`sre_agent::storm::exposition`).
pub struct Scrape {
    pub text: String,
    exposition: sre_agent::storm::exposition::Exposition,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            text: text.to_owned(),
            exposition: sre_agent::storm::exposition::Exposition::parse(text),
        }
    }

    /// The sample `name` with exactly these labels; `None` when there is none.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.exposition
            .samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The sample `name` with exactly these labels; 0 when it was never counted.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// The sum of the samples `name` whose labels include these.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        use sre_agent::storm::exposition::Label;
        let conditions: Vec<Label<'_>> = labels.iter().map(|(k, v)| Label::Is(k, v)).collect();
        self.exposition.sum(name, &conditions).unwrap_or(0.0)
    }
}
