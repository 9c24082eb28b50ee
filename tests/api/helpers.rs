//! Test harness: a fresh database per test (a temporary SQLite file, or a fresh PostgreSQL
//! schema when `TEST_DATABASE_URL` is set), the real application on a free loopback port,
//! and a client.

use std::time::Duration;

use serde_json::Value;
use sre_agent::app::Application;
use sre_agent::config::{Config, HttpConfig};
use sre_agent::store::DbConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::db::{Backend, TestDb};

/// Request body limit used by every test app, small enough to exceed cheaply.
pub const BODY_LIMIT_BYTES: usize = 256 * 1024;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

pub fn config(db: &TestDb) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: HttpConfig {
            request_body_limit_bytes: BODY_LIMIT_BYTES,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            idempotency_key_keep_secs: 86_400,
            header_read_timeout_ms: 10_000,
            connections_max: 1_000,
            alertmanager_token: None,
            approver_tokens: vec![],
        },
        db: DbConfig {
            url: db.url.clone(),
            max_connections: 10,
            acquire_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 10_000,
            statement_timeout_ms: 30_000,
        },
        agent: None,
        data_dir: None,
        backends: None,
    }
}

/// Builds and starts the real application on `db`.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(config(db)).await
}

/// Builds and starts the real application with `config`.
pub async fn spawn_app_with(config: Config) -> TestApp {
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("the application runs until stopped");
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        address,
        client,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_incident(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/incidents"))
            .json(body)
            .send()
            .await
            .expect("POST /incidents answers")
    }

    /// Opens an incident and returns its id, failing the test unless it was accepted.
    pub async fn open(&self, body: &Value) -> String {
        let response = self.post_incident(body).await;
        assert_eq!(response.status(), 202, "{body}");
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET answers")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Stops the service gracefully and waits until it has closed its database pool.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Asserts `response` is an RFC 9457 problem with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("a problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:sre-agent:problem:"),
        "{body}"
    );
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
    body
}

/// Generates, for each named test function `f(Backend)`, one test on SQLite and one on
/// PostgreSQL. The PostgreSQL one says so and returns when `TEST_DATABASE_URL` is unset.
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if std::env::var_os("TEST_DATABASE_URL").is_none() {
                        eprintln!("TEST_DATABASE_URL is unset: not run on PostgreSQL");
                        return;
                    }
                    super::$name(super::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_each_backend;
