//! The HTTP server loop around the router, with the bounds a server on a real network needs
//! and `axum::serve` does not set: a time limit to receive a request's headers (which also
//! ends a connection left idle between requests, and a slowloris client), a maximum of open
//! connections (beyond it a connection gets a short 503 problem and is closed at once, so
//! file descriptors stay bounded), backoff when `accept` fails (out of descriptors), and a
//! graceful stop that lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The bounds of the server loop.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Longest time to receive a request's headers, counted from when the connection opens
    /// or falls idle after a response: an idle keep-alive connection, a client that never
    /// sends, or one that sends a byte at a time is closed after it.
    pub header_read_timeout_ms: u64,
    /// Most connections open at once; one more is answered 503 and closed.
    pub connections_max: usize,
}

/// The answer of a connection over the limit: one short write, then the socket is closed.
static OVER_LIMIT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = serde_json::json!({
        "type": "urn:sre-agent:problem:unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": "too many open connections: try again in a moment",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Longest time the over-limit answer may take to write.
const OVER_LIMIT_WRITE_MS: u64 = 1_000;

/// Longest wait after `accept` fails (for instance out of file descriptors).
const ACCEPT_BACKOFF_MAX_MS: u64 = 1_000;

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and waits
/// for the open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff_ms = 10;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff_ms = 10;
                accepted
            }
            Err(error) => {
                tracing::warn!(%error, backoff_ms, "accepting a connection failed; backing off");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MAX_MS);
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = limits.connections_max, "too many open connections; refusing one");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    Duration::from_millis(OVER_LIMIT_WRITE_MS),
                    stream.write_all(&OVER_LIMIT),
                )
                .await;
            });
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Raises the soft limit of open files to the hard limit where the platform allows it, so
/// that the connection limit, not the descriptor limit, is what refuses clients. Returns
/// the soft limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-files limit");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OVER_LIMIT;

    #[test]
    fn the_over_limit_answer_declares_its_body_length() {
        let text = std::str::from_utf8(&OVER_LIMIT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }
}
