//! The server under hostile and careless clients: connections that never send, send a byte
//! at a time, or sit idle after a response are closed after the header-read timeout;
//! connections beyond the limit get a 503 problem and are closed at once; normal requests
//! keep being served and the process's file descriptors stay bounded. These tests run the
//! application with a 2 s header-read timeout, a 1.5 s request timeout and at most 64
//! connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, TestDb, config, spawn_app_with};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTIONS_MAX: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_500);

async fn app_with_tight_limits(db: &TestDb) -> TestApp {
    let mut config = config(db);
    config.http.header_read_timeout_ms = HEADER_READ_TIMEOUT.as_millis() as u64;
    config.http.connections_max = CONNECTIONS_MAX;
    config.http.request_timeout_ms = REQUEST_TIMEOUT.as_millis() as u64;
    spawn_app_with(config).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or resets it), within `limit`; returns
/// what it sent. Fails the test if the connection is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open after {limit:?}"),
        }
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed_and_requests_keep_being_served() {
    // Goal: a slowloris, a silent connection and an idle keep-alive connection cannot hold
    // the server. Method: ten of each kind; a healthy request meanwhile; each must be
    // closed by the server within the header timeout plus slack.
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_tight_limits(&db).await;
    let mut silent = Vec::new();
    let mut slow = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..10 {
        silent.push(connect(&app).await);
        let mut s = connect(&app).await;
        s.write_all(b"POST /incidents HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
        let mut i = connect(&app).await;
        i.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = i.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        idle.push(i);
    }
    // The slow clients keep dripping a byte every 300 ms.
    let drip = tokio::spawn(async move {
        for _ in 0..20 {
            for s in &mut slow {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });
    let healthy = app.get("/healthz").await;
    assert_eq!(healthy.status(), 200);
    let began = Instant::now();
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    for s in silent.iter_mut().chain(idle.iter_mut()) {
        read_until_closed(s, limit).await;
    }
    let mut slow = drip.await.unwrap();
    for s in &mut slow {
        read_until_closed(s, limit).await;
    }
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_a_503_problem_and_descriptors_stay_bounded() {
    // Goal: a flood of connections never exhausts file descriptors and the service comes
    // back by itself. Method: the limit's worth of silent connections, then 40 more: each
    // extra one is answered 503 (problem+json) and closed at once; once the silent ones
    // time out, a normal request is served and the descriptors are back near where they
    // started.
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_tight_limits(&db).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let before = open_descriptors();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        held.push(connect(&app).await);
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..40 {
        let mut extra = connect(&app).await;
        let answer = read_until_closed(&mut extra, Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("application/problem+json"), "{text}");
        assert!(text.contains("retry-after: 1"), "{text}");
    }
    let during = open_descriptors();
    assert!(
        during < before + CONNECTIONS_MAX * 2 + 40,
        "descriptors grew from {before} to {during}"
    );
    for s in &mut held {
        read_until_closed(s, HEADER_READ_TIMEOUT + Duration::from_secs(3)).await;
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let after = open_descriptors();
    assert!(
        after < before + 16,
        "descriptors went from {before} to {after}"
    );
    eprintln!("descriptors: {before} before, {during} at the limit, {after} after");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_server_cannot_read_get_problem_json_too() {
    // Goal: even what is refused before it is a request (a malformed request line, a head
    // far over 64 KiB) gets an answer in the house format. Method: raw bytes over TCP.
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_tight_limits(&db).await;
    let big = "x".repeat(256 * 1024);
    let cases: [(Vec<u8>, &str, &str); 3] = [
        (
            b"GARBAGE\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "malformed-request",
        ),
        (
            b"GET /incidents HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "malformed-request",
        ),
        (
            format!("GET /incidents HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            "HTTP/1.1 431",
            "headers-too-large",
        ),
    ];
    for (request, status, kind) in cases {
        let mut s = connect(&app).await;
        let _ = s.write_all(&request).await;
        let answer = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(status), "{text}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{text}"
        );
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:sre-agent:problem:{kind}"),
            "{problem}"
        );
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_at_the_request_timeout() {
    // Goal: the time limit covers the body too: a client that sends its headers and then
    // a byte of body now and then gets a 503 problem at the request timeout, and nothing is
    // stored. Method: raw TCP, a 200-byte body announced, one byte every 200 ms.
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_tight_limits(&db).await;
    let mut s = connect(&app).await;
    s.write_all(
        b"POST /incidents HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{",
    )
    .await
    .unwrap();
    let began = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 2048];
    while began.elapsed() < Duration::from_secs(6) {
        let _ = s.write_all(b" ").await;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(
        began.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    let list = app.get_json("/incidents").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    app.stop().await;
}
