//! The `sre-agent` binary as an operator runs it: configuration from the environment,
//! `migrate`, `serve`, SIGTERM, restart on the same database file, refused bad config.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sre-agent");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database_url: &str) -> Server {
        let port = free_port();
        let child = Command::new(BIN)
            .arg("serve")
            .env("SRE_LISTEN", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("SRE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = blocking_get(&format!("{}/readyz", self.base))
                && r.0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the service did not become ready within 20 s");
    }

    /// Sends SIGTERM and returns whether the process exited successfully within 15 s.
    fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP/1.1 client over a TCP stream, so this test needs no runtime.
fn request(method: &str, url: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn blocking_get(url: &str) -> std::io::Result<(u16, String)> {
    request("GET", url, None)
}

#[test]
fn the_binary_serves_stops_on_sigterm_and_keeps_incidents_across_restarts() {
    // Goal: the service as deployed keeps what it accepted. Method: run the real binary
    // configured from the environment, open an incident, SIGTERM it, start it again on the
    // same SQLite file and read the incident back.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agent.db").display());

    let server = Server::start(&url);
    let (status, body) = request(
        "POST",
        &format!("{}/incidents", server.base),
        Some(
            r#"{"title":"payments-db unreachable","severity":"critical","service":"payments-db"}"#,
        ),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert!(server.terminate(), "SIGTERM ends the service with success");

    let server = Server::start(&url);
    let (status, body) = blocking_get(&format!("{}/incidents/{id}", server.base)).unwrap();
    assert_eq!(status, 200, "{body}");
    let incident: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(incident["title"], "payments-db unreachable");
    assert_eq!(incident["trace_id"], accepted["trace_id"]);
    assert!(server.terminate());
}

#[test]
fn migrate_is_idempotent_and_leaves_sqlite_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agent.db").display());
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Bytes 18 and 19 of a SQLite file header are 2 once it is in WAL mode, which lets
    // readers and a writer work at once.
    let header = std::fs::read(dir.path().join("agent.db")).unwrap();
    assert_eq!(&header[18..20], &[2, 2], "the database is in WAL mode");
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    struct BackendCase {
        args: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
        mentions: &'static str,
    }
    struct Case {
        args: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
        /// What the message must name so the operator knows what to fix.
        mentions: &'static str,
    }
    let cases = [
        Case {
            args: &["serve", "--listen", "nowhere"],
            env: &[],
            mentions: "--listen",
        },
        Case {
            args: &["serve"],
            env: &[("SRE_REQUEST_TIMEOUT_MS", "soon")],
            mentions: "--request-timeout-ms",
        },
        Case {
            args: &["serve"],
            env: &[("SRE_LOG_FORMAT", "xml")],
            mentions: "--log-format",
        },
        Case {
            args: &["launch"],
            env: &[],
            mentions: "launch",
        },
        Case {
            args: &["serve", "--reasoner", "gpt"],
            env: &[],
            mentions: "--reasoner",
        },
        Case {
            args: &["serve"],
            env: &[("SRE_INCIDENT_STEPS_MAX", "0")],
            mentions: "--incident-steps-max",
        },
        Case {
            args: &["mcp", "nosuchserver"],
            env: &[],
            mentions: "nosuchserver",
        },
    ];
    for Case {
        args,
        env,
        mentions,
    } in cases
    {
        let out = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
    }

    // A database URL of no supported kind, or one that does not parse, is named as such,
    // without echoing the password in it.
    for url in [
        "mysql://root:hunter2@localhost/db",
        "postgres://root:hunter2@local host:99999/db",
    ] {
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unusable database URL"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }

    // Backends that cannot work are refused at start (exit 1), naming the setting; a
    // webhook URL, a secret, is never echoed whole.
    let backend_cases = [
        BackendCase {
            args: &["serve", "--metrics-backend", "prometheus"],
            env: &[],
            mentions: "--prometheus-url",
        },
        BackendCase {
            args: &[
                "serve",
                "--restart-backend",
                "kubernetes",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ],
            env: &[],
            mentions: "--kubeconfig",
        },
        BackendCase {
            args: &["serve", "--notify-backend", "slack"],
            env: &[],
            mentions: "SRE_NOTIFY_URL",
        },
        BackendCase {
            args: &["serve", "--notify-backend", "slack"],
            env: &[("SRE_NOTIFY_URL", "http://hooks.example.com/x")],
            mentions: "https",
        },
        BackendCase {
            args: &[
                "serve",
                "--metrics-backend",
                "prometheus",
                "--prometheus-url",
                "ftp://x",
            ],
            env: &[],
            mentions: "--prometheus-url",
        },
    ];
    for BackendCase {
        args,
        env,
        mentions,
    } in backend_cases
    {
        let out = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("DATABASE_URL", "sqlite::memory:")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        assert!(!stderr.contains("hooks.example.com/x"), "{stderr}");
    }

    // A model endpoint that cannot work is refused at start, naming the setting, and the
    // key is never echoed.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--reasoner",
            "openai",
            "--llm-base-url",
            "ftp://models.example/v1",
        ])
        .env("SRE_LLM_API_KEY", "sk-hunter2")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--llm") && stderr.contains("ftp"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // A database that cannot be opened is an error at start-up, not a panic.
    let out = Command::new(BIN)
        .args([
            "migrate",
            "--database-url",
            "sqlite:///nonexistent-dir/x/y.db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_demo_runs_both_stories_and_exits_zero() {
    // Goal: the README's first command works as printed. Method: run `sre-agent demo` (the
    // fleet, the three MCP servers as children, the agent and its API in one run), bounded
    // by a deadline; read its exit code and what it printed.
    let mut child = Command::new(BIN)
        .args(["demo", "--wait-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status}: {stdout}");
    assert!(
        stdout.contains("✓ checkout-api: resolved, 1 restart(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ payments-db: escalated, 0 restart(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("restart-pod") && stdout.contains("verified"),
        "{stdout}"
    );
}
