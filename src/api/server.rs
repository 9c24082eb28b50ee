//! The HTTP server loop around the router, with the bounds a server on a real network needs
//! and `axum::serve` does not set: a time limit to receive a request's headers (which also
//! ends a connection left idle between requests, and a slowloris client), a maximum of open
//! connections (beyond it a connection gets a short 503 problem and is closed at once, so
//! file descriptors stay bounded), a bound on a request's head, backoff when `accept` fails
//! (out of descriptors), and a graceful stop that lets requests in flight finish. What hyper
//! itself refuses before a request exists (a malformed request line or header, a head over
//! the bound, a URI too long) is answered in the house format too: [`ProblemIo`] turns
//! hyper's bodyless 400/414/431 into a problem+json answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    raw_problem(
        503,
        "Service Unavailable",
        "unavailable",
        "Service unavailable",
        "too many open connections: try again in a moment",
    )
});

/// Longest time the over-limit answer may take to write.
const OVER_LIMIT_WRITE_MS: u64 = 1_000;

/// Longest wait after `accept` fails (for instance out of file descriptors).
const ACCEPT_BACKOFF_MAX_MS: u64 = 1_000;

/// Largest request head (request line and headers) hyper buffers while it arrives, in
/// bytes; a head still incomplete past it is 431 (one that arrives whole in a single read
/// may pass slightly over it).
pub const REQUEST_HEAD_BYTES_MAX: usize = 64 * 1024;

/// A problem+json answer that closes the connection, as raw HTTP/1.1 bytes.
fn raw_problem(status: u16, reason: &str, kind: &str, title: &str, detail: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("urn:sre-agent:problem:{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string();
    let retry = if status == 503 {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n{retry}\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The problem answer for hyper's own response to a request it could not read: status,
/// reason phrase, problem kind, title, detail.
fn parse_error_problem(head: &[u8]) -> Option<Vec<u8>> {
    let (status, reason, kind, title, detail) = match head.get(..13)? {
        b"HTTP/1.1 400 " => (
            400,
            "Bad Request",
            "malformed-request",
            "Malformed request",
            "the request line or a header is not valid HTTP/1.1".to_owned(),
        ),
        b"HTTP/1.1 414 " => (
            414,
            "URI Too Long",
            "uri-too-long",
            "URI too long",
            "the request URI is too long".to_owned(),
        ),
        b"HTTP/1.1 431 " => (
            431,
            "Request Header Fields Too Large",
            "headers-too-large",
            "Request headers too large",
            format!(
                "the request line and headers must fit in about {REQUEST_HEAD_BYTES_MAX} bytes"
            ),
        ),
        _ => return None,
    };
    // hyper's automatic answers have no body and no content type; every answer of the
    // application has both, so nothing the application says is ever rewritten.
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    let bare = text.ends_with("\r\n\r\n")
        && text.contains("\r\ncontent-length: 0\r\n")
        && !text.contains("\r\ncontent-type:");
    bare.then(|| raw_problem(status, reason, kind, title, &detail))
}

/// The connection's IO, with hyper's automatic parse-error answers rewritten as problems.
/// Writes are not vectored, so a response head reaches `poll_write` in one piece.
pub struct ProblemIo<T> {
    inner: T,
    /// A rewritten answer being written: its bytes, how many went out, and the length of
    /// hyper's original (what hyper is told was written once all of it is out).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> ProblemIo<T> {
    pub fn new(inner: T) -> Self {
        ProblemIo {
            inner,
            pending: None,
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for ProblemIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for ProblemIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none()
            && let Some(problem) = parse_error_problem(buf)
        {
            this.pending = Some((problem, 0, buf.len()));
        }
        let Some((bytes, sent, original)) = &mut this.pending else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *sent < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let original = *original;
        this.pending = None;
        Poll::Ready(Ok(original))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

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
        .max_buf_size(REQUEST_HEAD_BYTES_MAX)
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
        let io = ProblemIo::new(TokioIo::new(stream));
        let connection = builder.serve_connection(io, service);
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
    use super::{OVER_LIMIT, parse_error_problem};

    #[test]
    fn only_hypers_bodyless_parse_error_answers_are_rewritten() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 26 Nov 2026 07:00:00 GMT\r\n\r\n";
        let problem = String::from_utf8(parse_error_problem(hyper_400).unwrap()).unwrap();
        assert!(
            problem
                .starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json"),
            "{problem}"
        );
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_problem(hyper_431).is_some());
        let app_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(parse_error_problem(app_400), None);
        assert_eq!(
            parse_error_problem(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(parse_error_problem(b"HTTP/1.1 40"), None);
    }

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
