//! Notification channels for `send-notification`: a Slack-compatible incoming webhook and a
//! generic JSON webhook, behind one [`Notifier`] that validates, retries within bounds and
//! never delivers twice for one idempotency key.
//!
//! # Slack-compatible incoming webhook (`--notify-backend slack`)
//!
//! `POST SRE_NOTIFY_URL` with `{"text": "[CRITICAL] <message>\ntrace <trace id> · key <key>"}`.
//! Slack reads `<…>` as links and mentions (`<!channel>`, `<@U1>`, `<http://x|click>`) and
//! `&` as the start of an entity, so every untrusted part of the text (message, trace id,
//! key) has `&`, `<` and `>` escaped as `&amp;`, `&lt;`, `&gt;`: a message can neither ping a
//! channel nor hide a link behind other words. Any 2xx is delivered (Slack answers `200 ok`).
//! The URL embeds Slack's secret: logs and errors show only its `scheme://host[:port]`.
//!
//! # Generic JSON webhook (`--notify-backend webhook`)
//!
//! `POST SRE_NOTIFY_URL` with `Content-Type: application/json` and the body
//!
//! ```json
//! {"id": 7, "source": "sre-agent", "severity": "critical", "message": "…",
//!  "idempotency_key": "inc-42:notify" | null, "trace_id": "4bf9…" | null,
//!  "sent_at": "2025-01-01T12:00:00.000Z"}
//! ```
//!
//! and the headers `Idempotency-Key` (when the call has a key) and `X-Trace-Id` (when it has a
//! trace id). With `SRE_NOTIFY_HMAC_SECRET` set, two more:
//!
//! ```text
//! X-SRE-Timestamp: <unix seconds, when the notification was built>
//! X-SRE-Signature: sha256=<lowercase hex of HMAC-SHA256(secret, "{timestamp}.{body}")>
//! ```
//!
//! where `{timestamp}` is the header's decimal text and `{body}` the exact bytes received. A
//! receiver verifies by recomputing the HMAC over those raw bytes (before parsing them),
//! comparing in constant time, and refusing a timestamp outside its tolerance.
//!
//! Retries resend the **same request byte for byte**: same body, same timestamp, same
//! signature (nothing is recomputed). A receiver can therefore drop duplicates by
//! `Idempotency-Key`, by `id` or by signature, and its timestamp tolerance should cover the
//! retry window (at most `(retries + 1) × timeout` plus the waits, see below).
//!
//! # Retries
//!
//! One attempt is bounded by `timeout_ms`. Connect errors, timeouts, other transport errors,
//! 5xx, 408 and 429 are retried up to `retries_max` times, waiting `backoff_initial_ms`
//! doubled per retry (capped at [`BACKOFF_MS_MAX`]), or longer when the answer carries a
//! `Retry-After` in seconds (capped at [`RETRY_AFTER_MS_MAX`]; an HTTP-date is ignored).
//! A 3xx (redirects are never followed) or another 4xx is not retried: it is
//! [`BackendError::Invalid`] with the status and at most [`BODY_EXCERPT_CHARS_MAX`]
//! characters of the answer. Retries exhausted: [`BackendError::Unavailable`].
//!
//! # Idempotency
//!
//! Architecture Invariant: one idempotency key is delivered at most once per process. The
//! receipts of delivered keys are kept (the newest [`DELIVERED_KEYS_MAX`]); the same key again
//! answers the first receipt with `replayed: true` and sends nothing, and with another
//! message or severity it is a [`BackendError::Conflict`]. Calls with one key are serialised
//! (a per-key async lock), so concurrent calls deliver once. A failed delivery records
//! nothing: a later call with the key sends again. Calls without a key always send.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use sha2::{Digest, Sha256};

use super::BackendError;
use crate::fleet::model::{Receipt, validate_idempotency_key, validate_notification};

/// Longest accepted `--notify-timeout-ms`, per attempt.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// Longest connect phase of one attempt (shorter when `timeout_ms` is).
pub const CONNECT_TIMEOUT_MS_MAX: u64 = 5_000;
/// Largest accepted `--notify-retries-max`.
pub const RETRIES_MAX_CEILING: u32 = 10;
/// Cap of the doubled backoff between attempts, and of `--notify-backoff-initial-ms`.
pub const BACKOFF_MS_MAX: u64 = 10_000;
/// Longest wait a `Retry-After` can ask for; a longer one is cut to this.
pub const RETRY_AFTER_MS_MAX: u64 = 30_000;
/// Delivered idempotency keys remembered; the oldest is forgotten first.
pub const DELIVERED_KEYS_MAX: usize = 10_000;
/// Bytes of an error answer read at most (the rest is never read).
pub const RESPONSE_BYTES_MAX: usize = 4_096;
/// Characters of an error answer quoted in an error at most.
pub const BODY_EXCERPT_CHARS_MAX: usize = 200;
/// Characters of a transport error quoted at most.
const TRANSPORT_ERROR_CHARS_MAX: usize = 300;

/// The `source` field of the generic webhook's body.
const SOURCE: &str = "sre-agent";
const HEADER_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const HEADER_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
const HEADER_TIMESTAMP: HeaderName = HeaderName::from_static("x-sre-timestamp");
const HEADER_SIGNATURE: HeaderName = HeaderName::from_static("x-sre-signature");

/// Which kind of receiver `SRE_NOTIFY_URL` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelKind {
    /// A Slack-compatible incoming webhook: `{"text": …}`.
    Slack,
    /// A generic JSON webhook, optionally signed.
    Webhook,
}

impl ChannelKind {
    /// The name in receipts and logs: `slack` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// Where and how to notify. `Debug` shows neither the URL's path nor the HMAC secret.
#[derive(Clone)]
pub struct NotifyConfig {
    pub kind: ChannelKind,
    /// `SRE_NOTIFY_URL`. A secret (Slack's webhook URL embeds its token): never logged whole.
    pub url: String,
    /// `SRE_NOTIFY_HMAC_SECRET`, webhook only: signs the body (see the module doc).
    pub hmac_secret: Option<String>,
    /// `--notify-timeout-ms`: bound of one attempt, connect to last byte.
    pub timeout_ms: u64,
    /// `--notify-retries-max`: retries after the first attempt.
    pub retries_max: u32,
    /// `--notify-backoff-initial-ms`: wait before the first retry; doubles per retry, capped at
    /// [`BACKOFF_MS_MAX`].
    pub backoff_initial_ms: u64,
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("kind", &self.kind)
            .field("url", &redacted_endpoint(&self.url))
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("retries_max", &self.retries_max)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .finish()
    }
}

/// Sends notifications to one channel. Cheap to share behind an `Arc`.
pub struct Notifier {
    kind: ChannelKind,
    /// The full URL, secret included: only ever handed to the HTTP client.
    url: url::Url,
    /// `scheme://host[:port]` of `url`: what logs and errors show.
    endpoint: String,
    /// Signs webhook bodies when set.
    hmac_secret: Option<Vec<u8>>,
    /// Bounded per attempt, no redirects, no retries of its own.
    http: reqwest::Client,
    retries_max: u32,
    backoff_initial_ms: u64,
    /// The next receipt's `notification_id` (and `ledger_seq`): from 1, process-local.
    next_id: AtomicU64,
    /// Delivered and in-flight idempotency keys. Never held across an `await`.
    keys: Mutex<Keys>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("signed", &self.hmac_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Checks the config (URL must be http(s) with a host; https required unless the host is
    /// loopback; hmac only for webhook, non-empty) — errors are sentences that name the
    /// setting (`SRE_NOTIFY_URL`, `SRE_NOTIFY_HMAC_SECRET`, `--notify-retries-max` ...).
    pub fn new(config: NotifyConfig) -> Result<Self, String> {
        let url = url::Url::parse(config.url.trim())
            .map_err(|e| format!("SRE_NOTIFY_URL is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "SRE_NOTIFY_URL must be an http(s) URL, not {:?}",
                url.scheme().chars().take(16).collect::<String>()
            ));
        }
        let Some(host) = url.host() else {
            return Err("SRE_NOTIFY_URL has no host".to_owned());
        };
        let endpoint = endpoint_of(&url);
        if url.scheme() == "http" && !is_loopback(&host) {
            return Err(format!(
                "SRE_NOTIFY_URL must use https unless its host is loopback \
                 (127.0.0.1, ::1, localhost), not {endpoint}"
            ));
        }
        let hmac_secret = match (config.kind, config.hmac_secret) {
            (_, None) => None,
            (ChannelKind::Slack, Some(_)) => {
                return Err(
                    "SRE_NOTIFY_HMAC_SECRET is only for --notify-backend webhook: \
                     a Slack webhook's URL is its secret, unset it"
                        .to_owned(),
                );
            }
            (ChannelKind::Webhook, Some(secret)) if secret.trim().is_empty() => {
                return Err("SRE_NOTIFY_HMAC_SECRET is empty: unset it or give the \
                     receiver's secret"
                    .to_owned());
            }
            (ChannelKind::Webhook, Some(secret)) => Some(secret.into_bytes()),
        };
        if !(1..=TIMEOUT_MS_MAX).contains(&config.timeout_ms) {
            return Err(format!(
                "--notify-timeout-ms must be 1 to {TIMEOUT_MS_MAX}, not {}",
                config.timeout_ms
            ));
        }
        if config.retries_max > RETRIES_MAX_CEILING {
            return Err(format!(
                "--notify-retries-max must be at most {RETRIES_MAX_CEILING}, not {}",
                config.retries_max
            ));
        }
        if config.backoff_initial_ms > BACKOFF_MS_MAX {
            return Err(format!(
                "--notify-backoff-initial-ms must be at most {BACKOFF_MS_MAX}, not {}",
                config.backoff_initial_ms
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(
                config.timeout_ms.min(CONNECT_TIMEOUT_MS_MAX),
            ))
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .user_agent(concat!("sre-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for notifications: {e}"))?;
        Ok(Notifier {
            kind: config.kind,
            url,
            endpoint,
            hmac_secret,
            http,
            retries_max: config.retries_max,
            backoff_initial_ms: config.backoff_initial_ms,
            next_id: AtomicU64::new(1),
            keys: Mutex::new(Keys::default()),
        })
    }

    /// Sends `message` once: the same `idempotency_key` again answers the first receipt,
    /// `replayed`, and sends nothing.
    pub async fn notify(
        &self,
        message: &str,
        severity: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Receipt, BackendError> {
        validate_notification(message, severity).map_err(BackendError::Invalid)?;
        let Some(key) = idempotency_key else {
            return self.deliver(message, severity, None, trace_id).await;
        };
        validate_idempotency_key(key).map_err(BackendError::Invalid)?;
        let fingerprint = fingerprint(message, severity);
        if let Some(answer) = self.replay(key, &fingerprint) {
            return answer;
        }
        let ticket = KeyTicket::join(&self.keys, key);
        let _turn = ticket.lock.lock().await;
        // Another call with the key may have delivered while this one waited its turn.
        if let Some(answer) = self.replay(key, &fingerprint) {
            return answer;
        }
        let receipt = self.deliver(message, severity, Some(key), trace_id).await?;
        self.lock_keys().record(key, fingerprint, receipt.clone());
        Ok(receipt)
    }

    /// The answer for a key already delivered: its receipt, replayed, or a conflict.
    fn replay(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
    ) -> Option<Result<Receipt, BackendError>> {
        let keys = self.lock_keys();
        let delivered = keys.delivered.get(key)?;
        if delivered.fingerprint != *fingerprint {
            return Some(Err(BackendError::Conflict(
                "idempotency key reused for a different notification".to_owned(),
            )));
        }
        Some(Ok(Receipt {
            replayed: true,
            ..delivered.receipt.clone()
        }))
    }

    fn lock_keys(&self) -> MutexGuard<'_, Keys> {
        lock(&self.keys)
    }

    /// Builds the request once and sends it until delivered, refused or out of retries.
    async fn deliver(
        &self,
        message: &str,
        severity: &str,
        key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Receipt, BackendError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outgoing = self.outgoing(id, Utc::now(), message, severity, key, trace_id)?;
        self.send_with_retries(&outgoing, id, trace_id).await?;
        Ok(Receipt {
            notification_id: id,
            channel: self.kind.as_str().to_owned(),
            delivered_at: Utc::now(),
            ledger_seq: id,
            replayed: false,
        })
    }

    /// The body and headers every attempt of notification `id` sends.
    fn outgoing(
        &self,
        id: u64,
        now: DateTime<Utc>,
        message: &str,
        severity: &str,
        key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Outgoing, BackendError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = match self.kind {
            ChannelKind::Slack => {
                serde_json::json!({ "text": slack_text(message, severity, key, trace_id) })
            }
            ChannelKind::Webhook => serde_json::json!({
                "id": id,
                "source": SOURCE,
                "severity": severity,
                "message": message,
                "idempotency_key": key,
                "trace_id": trace_id,
                "sent_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            }),
        }
        .to_string()
        .into_bytes();
        if self.kind == ChannelKind::Webhook {
            if let Some(key) = key {
                let value = HeaderValue::from_str(key).map_err(|_| {
                    BackendError::Invalid(
                        "idempotencyKey cannot be sent as an HTTP header: use printable ASCII"
                            .to_owned(),
                    )
                })?;
                headers.insert(HEADER_IDEMPOTENCY_KEY, value);
            }
            // A trace id that is no header value still travels in the body.
            if let Some(value) = trace_id.and_then(|t| HeaderValue::from_str(t).ok()) {
                headers.insert(HEADER_TRACE_ID, value);
            }
            if let Some(secret) = &self.hmac_secret {
                let timestamp = now.timestamp();
                let signature = sign(secret, timestamp, &body);
                headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
                let value = HeaderValue::from_str(&format!("sha256={signature}"))
                    .map_err(|_| BackendError::Invalid("unsendable signature".to_owned()))?;
                headers.insert(HEADER_SIGNATURE, value);
            }
        }
        Ok(Outgoing { headers, body })
    }

    async fn send_with_retries(
        &self,
        outgoing: &Outgoing,
        id: u64,
        trace_id: Option<&str>,
    ) -> Result<(), BackendError> {
        let channel = self.kind.as_str();
        let endpoint = self.endpoint.as_str();
        let trace = trace_id.unwrap_or_default();
        let attempts = self.retries_max.saturating_add(1);
        let mut backoff_ms = self.backoff_initial_ms;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(outgoing).await {
                Attempt::Delivered(status) => {
                    tracing::info!(
                        channel,
                        endpoint,
                        notification_id = id,
                        trace_id = trace,
                        attempt,
                        status,
                        "notification delivered"
                    );
                    return Ok(());
                }
                Attempt::Refused(reason) => {
                    tracing::warn!(
                        channel,
                        endpoint,
                        notification_id = id,
                        trace_id = trace,
                        attempt,
                        error = %reason,
                        "notification refused, not retried"
                    );
                    return Err(BackendError::Invalid(format!(
                        "{channel} at {endpoint} refused the notification: {reason}"
                    )));
                }
                Attempt::Failed(reason) => {
                    tracing::warn!(
                        channel,
                        endpoint,
                        notification_id = id,
                        trace_id = trace,
                        attempt,
                        error = %reason,
                        "notification failed, not retried"
                    );
                    return Err(BackendError::Unavailable(format!(
                        "{channel} at {endpoint}: {reason}"
                    )));
                }
                Attempt::Transient {
                    reason,
                    retry_after_ms,
                } => {
                    let wait_ms = backoff_ms.max(retry_after_ms.unwrap_or(0));
                    let retrying = attempt < attempts;
                    tracing::warn!(
                        channel,
                        endpoint,
                        notification_id = id,
                        trace_id = trace,
                        attempt,
                        attempts,
                        error = %reason,
                        wait_ms = retrying.then_some(wait_ms),
                        "notification attempt failed"
                    );
                    last = reason;
                    if retrying {
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        backoff_ms = backoff_ms.saturating_mul(2).min(BACKOFF_MS_MAX);
                    }
                }
            }
        }
        let plural = if attempts == 1 { "" } else { "s" };
        Err(BackendError::Unavailable(format!(
            "{channel} at {endpoint} did not take the notification in {attempts} attempt{plural}; \
             the last: {last}"
        )))
    }

    /// One POST and what its outcome means.
    async fn attempt(&self, outgoing: &Outgoing) -> Attempt {
        let sent = self
            .http
            .post(self.url.clone())
            .headers(outgoing.headers.clone())
            .body(outgoing.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
                return Attempt::Transient {
                    reason: describe(e),
                    retry_after_ms: None,
                };
            }
            Err(e) => return Attempt::Failed(describe(e)),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered(status.as_u16());
        }
        if status.is_redirection() {
            return Attempt::Refused(format!(
                "answered {status}; redirects are not followed: set SRE_NOTIFY_URL to the final \
                 address"
            ));
        }
        let retry_after_ms = retry_after_ms(response.headers());
        let excerpt = read_excerpt(response).await;
        let reason = format!("answered {status}: {excerpt}");
        if is_transient(status) {
            Attempt::Transient {
                reason,
                retry_after_ms,
            }
        } else {
            Attempt::Refused(reason)
        }
    }
}

/// What every attempt of one notification sends: built once, so retries are byte-identical.
struct Outgoing {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// The outcome of one attempt.
enum Attempt {
    /// A 2xx, with its code.
    Delivered(u16),
    /// The receiver refused (3xx, 4xx but 408 and 429): retrying would not help.
    Refused(String),
    /// Neither sent nor refused, and retrying would not help (the request could not be built).
    Failed(String),
    /// Worth another attempt, not before `retry_after_ms` when the receiver said so.
    Transient {
        reason: String,
        retry_after_ms: Option<u64>,
    },
}

/// SHA-256 of a notification's severity and message: what "the same notification" means
/// for a reused key, in 32 bytes whatever the message's length.
type Fingerprint = [u8; 32];

fn fingerprint(message: &str, severity: &str) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(severity.as_bytes());
    hash.update([0]);
    hash.update(message.as_bytes());
    hash.finalize().into()
}

/// A key's delivery.
struct Delivered {
    fingerprint: Fingerprint,
    receipt: Receipt,
}

/// Idempotency keys: the delivered (bounded, oldest forgotten first) and those being sent.
#[derive(Default)]
struct Keys {
    delivered: HashMap<String, Delivered>,
    /// Delivered keys, oldest first: the eviction order.
    order: VecDeque<String>,
    /// Keys with calls running or waiting: their turn lock and how many calls hold it.
    in_flight: HashMap<String, InFlight>,
}

impl Keys {
    fn record(&mut self, key: &str, fingerprint: Fingerprint, receipt: Receipt) {
        let previous = self.delivered.insert(
            key.to_owned(),
            Delivered {
                fingerprint,
                receipt,
            },
        );
        if previous.is_none() {
            self.order.push_back(key.to_owned());
        }
        while self.order.len() > DELIVERED_KEYS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.delivered.remove(&oldest);
            }
        }
    }
}

struct InFlight {
    lock: Arc<tokio::sync::Mutex<()>>,
    holders: usize,
}

/// A call's place in the queue of its key. Dropping it (also when the call is cancelled)
/// forgets the key's lock once no call holds it, so `in_flight` never outgrows the calls.
struct KeyTicket<'a> {
    keys: &'a Mutex<Keys>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> KeyTicket<'a> {
    fn join(keys: &'a Mutex<Keys>, key: &str) -> Self {
        let mut guard = lock(keys);
        let entry = guard
            .in_flight
            .entry(key.to_owned())
            .or_insert_with(|| InFlight {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                holders: 0,
            });
        entry.holders += 1;
        KeyTicket {
            keys,
            key: key.to_owned(),
            lock: entry.lock.clone(),
        }
    }
}

impl Drop for KeyTicket<'_> {
    fn drop(&mut self) {
        let mut keys = lock(self.keys);
        if let Some(entry) = keys.in_flight.get_mut(&self.key) {
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                keys.in_flight.remove(&self.key);
            }
        }
    }
}

/// The keys' lock; a panic elsewhere while it was held leaves the maps consistent (every
/// change is one insert or remove), so a poisoned lock is used as it is.
fn lock(keys: &Mutex<Keys>) -> MutexGuard<'_, Keys> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Slack's text: `[SEVERITY] message`, then the trace id and key, all escaped.
fn slack_text(message: &str, severity: &str, key: Option<&str>, trace_id: Option<&str>) -> String {
    let mut text = format!(
        "[{}] {}",
        severity.to_ascii_uppercase(),
        slack_escape(message)
    );
    let tail: Vec<String> = [("trace", trace_id), ("key", key)]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name} {}", slack_escape(v))))
        .collect();
    if !tail.is_empty() {
        text.push('\n');
        text.push_str(&tail.join(" · "));
    }
    text
}

/// Escapes the three characters Slack gives meaning to: no mention, link or entity survives.
fn slack_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Lowercase hex of HMAC-SHA256(secret, "{timestamp}.{body}").
fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// 5xx, 408 and 429: the receiver may take the notification later.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// A `Retry-After` in seconds, in milliseconds capped at [`RETRY_AFTER_MS_MAX`].
fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(seconds.saturating_mul(1_000).min(RETRY_AFTER_MS_MAX))
}

/// At most [`RESPONSE_BYTES_MAX`] bytes of the answer, as a quotable excerpt.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_BYTES_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BYTES_MAX - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    excerpt(&String::from_utf8_lossy(&bytes), BODY_EXCERPT_CHARS_MAX)
}

/// `text` without control characters, whitespace runs as one space, at most `chars_max`
/// characters (then `…`).
fn excerpt(text: &str, chars_max: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let flat = words.join(" ");
    if flat.is_empty() {
        return "(empty answer)".to_owned();
    }
    let mut cut: String = flat.chars().take(chars_max).collect();
    if cut.len() < flat.len() {
        cut.push('…');
    }
    cut
}

/// A transport error without its URL (it may embed a secret), with its causes.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    excerpt(&text, TRANSPORT_ERROR_CHARS_MAX)
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// `scheme://host[:port]`: the part of a URL that is safe to show.
fn endpoint_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// [`endpoint_of`] for text that may not be a URL.
fn redacted_endpoint(url: &str) -> String {
    url::Url::parse(url.trim())
        .map(|u| endpoint_of(&u))
        .unwrap_or_else(|_| "<not a URL>".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Instant;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::Uri;
    use axum::response::{IntoResponse, Response};

    use super::*;

    /// One request the test receiver saw.
    #[derive(Clone, Debug)]
    struct Seen {
        path: String,
        headers: HeaderMap,
        body: Vec<u8>,
        at: Instant,
    }

    impl Seen {
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("the body is JSON")
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    /// What the receiver answers to one request.
    #[derive(Clone, Debug)]
    struct Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay_ms: u64,
    }

    impl Answer {
        fn status(status: u16) -> Self {
            Answer {
                status,
                headers: Vec::new(),
                body: String::new(),
                delay_ms: 0,
            }
        }

        fn ok() -> Self {
            Answer {
                body: "ok".to_owned(),
                ..Answer::status(200)
            }
        }
    }

    #[derive(Clone, Default)]
    struct Script {
        seen: Arc<StdMutex<Vec<Seen>>>,
        /// Answers in order; `200 ok` once they run out (or `then` when set).
        answers: Arc<StdMutex<VecDeque<Answer>>>,
        then: Option<Answer>,
    }

    /// A local HTTP receiver on 127.0.0.1:0 that records every request.
    struct Receiver {
        script: Script,
        base: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        /// The URL of the hook: a path that stands for Slack's secret.
        fn url(&self) -> String {
            format!("{}/services/T000/B000/SECRETTOKEN", self.base)
        }

        fn seen(&self) -> Vec<Seen> {
            self.script.seen.lock().expect("receiver lock").clone()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn record(
        State(script): State<Script>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        script.seen.lock().expect("receiver lock").push(Seen {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            at: Instant::now(),
        });
        let answer = script
            .answers
            .lock()
            .expect("receiver lock")
            .pop_front()
            .or_else(|| script.then.clone())
            .unwrap_or_else(Answer::ok);
        tokio::time::sleep(Duration::from_millis(answer.delay_ms)).await;
        let status = StatusCode::from_u16(answer.status).expect("a test status");
        let mut response = (status, answer.body).into_response();
        for (name, value) in answer.headers {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }

    async fn receiver_then(answers: Vec<Answer>, then: Option<Answer>) -> Receiver {
        let script = Script {
            answers: Arc::new(StdMutex::new(answers.into())),
            then,
            ..Script::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let app = Router::new().fallback(record).with_state(script.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { script, base, task }
    }

    async fn receiver(answers: Vec<Answer>) -> Receiver {
        receiver_then(answers, None).await
    }

    fn config(kind: ChannelKind, url: &str) -> NotifyConfig {
        NotifyConfig {
            kind,
            url: url.to_owned(),
            hmac_secret: None,
            timeout_ms: 2_000,
            retries_max: 2,
            backoff_initial_ms: 1,
        }
    }

    fn notifier(kind: ChannelKind, url: &str) -> Notifier {
        Notifier::new(config(kind, url)).expect("a valid test config")
    }

    #[test]
    fn slack_text_escapes_mentions_links_and_entities() {
        let text = slack_text(
            "db down <!channel> see <http://evil|x> & <@U1>",
            "critical",
            Some("k<1>"),
            Some("4bf9&"),
        );
        assert_eq!(
            text,
            "[CRITICAL] db down &lt;!channel&gt; see &lt;http://evil|x&gt; &amp; &lt;@U1&gt;\n\
             trace 4bf9&amp; · key k&lt;1&gt;"
        );
        assert_eq!(slack_text("plain", "info", None, None), "[INFO] plain");
    }

    #[tokio::test]
    async fn slack_payload_arrives_escaped_with_severity_trace_and_key() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Slack, &hook.url());
        let receipt = notifier
            .notify(
                "checkout down <!channel> <http://evil|x>",
                "critical",
                Some("inc-1:notify"),
                Some("4bf92f3577b34da6"),
            )
            .await
            .expect("delivered");
        assert_eq!(receipt.channel, "slack");
        assert_eq!(receipt.notification_id, 1);
        assert_eq!(receipt.ledger_seq, 1);
        assert!(!receipt.replayed);
        let seen = hook.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/services/T000/B000/SECRETTOKEN");
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        let body = seen[0].json();
        let text = body["text"].as_str().expect("a text field");
        assert_eq!(
            text,
            "[CRITICAL] checkout down &lt;!channel&gt; &lt;http://evil|x&gt;\n\
             trace 4bf92f3577b34da6 · key inc-1:notify"
        );
        assert!(!text.contains('<') && !text.contains('>'));
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    }

    #[tokio::test]
    async fn webhook_payload_carries_every_field_and_header() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        let before = Utc::now();
        let receipt = notifier
            .notify(
                "disk full on db-0",
                "warning",
                Some("inc-2:notify"),
                Some("trace-2"),
            )
            .await
            .expect("delivered");
        assert_eq!(receipt.channel, "webhook");
        let seen = hook.seen();
        assert_eq!(seen.len(), 1);
        let body = seen[0].json();
        assert_eq!(body["id"], receipt.notification_id);
        assert_eq!(body["source"], "sre-agent");
        assert_eq!(body["severity"], "warning");
        assert_eq!(body["message"], "disk full on db-0");
        assert_eq!(body["idempotency_key"], "inc-2:notify");
        assert_eq!(body["trace_id"], "trace-2");
        let sent_at = DateTime::parse_from_rfc3339(body["sent_at"].as_str().expect("sent_at"))
            .expect("RFC 3339");
        assert!(sent_at >= before - chrono::Duration::seconds(1));
        assert_eq!(seen[0].header("idempotency-key"), Some("inc-2:notify"));
        assert_eq!(seen[0].header("x-trace-id"), Some("trace-2"));
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert_eq!(
            seen[0].header("x-sre-signature"),
            None,
            "unsigned without a secret"
        );
        assert_eq!(seen[0].header("x-sre-timestamp"), None);

        // Without key and trace: nulls in the body, no headers.
        notifier
            .notify("second", "info", None, None)
            .await
            .expect("delivered");
        let seen = hook.seen();
        let body = seen[1].json();
        assert!(body["idempotency_key"].is_null() && body["trace_id"].is_null());
        assert_eq!(seen[1].header("idempotency-key"), None);
        assert_eq!(seen[1].header("x-trace-id"), None);
    }

    #[tokio::test]
    async fn webhook_signature_verifies_with_an_independent_hmac() {
        // Goal: a receiver following the module doc verifies the signature. Method: recompute
        // HMAC-SHA256 over "{X-SRE-Timestamp}.{raw body}" here and compare.
        let hook = receiver(vec![]).await;
        let mut config = config(ChannelKind::Webhook, &hook.url());
        config.hmac_secret = Some("s3cret".to_owned());
        let notifier = Notifier::new(config).expect("valid");
        notifier
            .notify("signed", "info", Some("k"), None)
            .await
            .expect("delivered");
        let seen = &hook.seen()[0];
        let timestamp = seen.header("x-sre-timestamp").expect("a timestamp");
        let seconds: i64 = timestamp.parse().expect("unix seconds");
        assert!((Utc::now().timestamp() - seconds).abs() < 60);
        let signature = seen.header("x-sre-signature").expect("a signature");
        let hex_sig = signature.strip_prefix("sha256=").expect("sha256= prefix");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&seen.body);
        mac.verify_slice(&hex::decode(hex_sig).expect("hex"))
            .expect("the signature verifies");
        let mut wrong = Hmac::<Sha256>::new_from_slice(b"other").expect("any key length");
        wrong.update(format!("{timestamp}.").as_bytes());
        wrong.update(&seen.body);
        assert!(
            wrong
                .verify_slice(&hex::decode(hex_sig).expect("hex"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn two_503s_then_200_deliver_once_after_three_identical_requests() {
        // Goal: transient failures are retried with the very same request. Method: the
        // receiver answers 503 twice, then 200; compare the three requests byte for byte.
        let hook = receiver(vec![Answer::status(503), Answer::status(503)]).await;
        let mut config = config(ChannelKind::Webhook, &hook.url());
        config.hmac_secret = Some("s3cret".to_owned());
        let notifier = Notifier::new(config).expect("valid");
        let receipt = notifier
            .notify("retry me", "critical", Some("inc-3:notify"), Some("t3"))
            .await
            .expect("delivered on the third attempt");
        assert!(!receipt.replayed);
        let seen = hook.seen();
        assert_eq!(seen.len(), 3);
        for request in &seen {
            assert_eq!(request.header("idempotency-key"), Some("inc-3:notify"));
            assert_eq!(request.body, seen[0].body);
            assert_eq!(
                request.header("x-sre-signature"),
                seen[0].header("x-sre-signature")
            );
            assert_eq!(
                request.header("x-sre-timestamp"),
                seen[0].header("x-sre-timestamp")
            );
        }
    }

    #[tokio::test]
    async fn retry_after_of_a_429_is_honoured() {
        // Goal: a 429's Retry-After (seconds) delays the retry. Method: Retry-After: 1 with a
        // 1 ms backoff; the retry must arrive at least about a second later.
        let limited = Answer {
            headers: vec![("retry-after", "1")],
            ..Answer::status(429)
        };
        let hook = receiver(vec![limited]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        notifier
            .notify("slow down", "info", None, None)
            .await
            .expect("delivered after waiting");
        let seen = hook.seen();
        assert_eq!(seen.len(), 2);
        let waited = seen[1].at.duration_since(seen[0].at);
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_ms(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 2 "));
        assert_eq!(retry_after_ms(&headers), Some(2_000));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("99999999999999999999"),
        );
        assert_eq!(retry_after_ms(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after_ms(&headers), Some(RETRY_AFTER_MS_MAX));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_ms(&headers), None);
    }

    #[tokio::test]
    async fn a_400_is_not_retried_and_quotes_a_bounded_clean_excerpt() {
        let noisy = Answer {
            body: format!("invalid_payload\u{1b}[31m\r\n{}", "x".repeat(1_000_000)),
            ..Answer::status(400)
        };
        let hook = receiver(vec![noisy]).await;
        let notifier = notifier(ChannelKind::Slack, &hook.url());
        let error = notifier
            .notify("hello", "info", Some("k400"), None)
            .await
            .expect_err("refused");
        assert_eq!(hook.seen().len(), 1, "a 400 is not retried");
        let BackendError::Invalid(message) = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        assert!(message.contains("400"), "{message}");
        assert!(message.contains("invalid_payload"), "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(
            message.chars().count() < 400,
            "{} chars",
            message.chars().count()
        );
        assert!(!message.contains("SECRETTOKEN"), "{message}");
        // Nothing was recorded: the key may send again.
        notifier
            .notify("hello", "info", Some("k400"), None)
            .await
            .expect("delivered the second time");
        assert_eq!(hook.seen().len(), 2);
    }

    #[tokio::test]
    async fn exhausted_retries_are_unavailable_naming_the_attempts() {
        let hook = receiver_then(vec![], Some(Answer::status(503))).await;
        let notifier = notifier(ChannelKind::Slack, &hook.url());
        let error = notifier
            .notify("nobody listens", "critical", Some("k503"), None)
            .await
            .expect_err("unavailable");
        assert_eq!(hook.seen().len(), 3, "one attempt and two retries");
        let BackendError::Unavailable(message) = &error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(error.is_retryable());
        assert!(message.contains("3 attempts"), "{message}");
        assert!(message.contains("503"), "{message}");
        assert!(message.contains(&hook.base), "names the host: {message}");
        assert!(
            !message.contains("SECRETTOKEN"),
            "never the full URL: {message}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_then_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("local address");
        drop(listener);
        let url = format!("http://{address}/services/T/B/SECRETTOKEN");
        let notifier = notifier(ChannelKind::Webhook, &url);
        let error = notifier
            .notify("nobody home", "info", None, None)
            .await
            .expect_err("unavailable");
        let BackendError::Unavailable(message) = &error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(message.contains("3 attempts"), "{message}");
        assert!(!message.contains("SECRETTOKEN"), "{message}");
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_and_is_retried() {
        // Goal: an attempt is bounded by timeout_ms and a timeout is retried. Method: the
        // receiver answers after 2 s, the timeout is 150 ms and one retry is allowed.
        let slow = Answer {
            delay_ms: 2_000,
            ..Answer::ok()
        };
        let hook = receiver_then(vec![], Some(slow)).await;
        let mut config = config(ChannelKind::Webhook, &hook.url());
        config.timeout_ms = 150;
        config.retries_max = 1;
        let notifier = Notifier::new(config).expect("valid");
        let started = Instant::now();
        let error = notifier
            .notify("too slow", "info", None, None)
            .await
            .expect_err("timed out");
        assert!(started.elapsed() < Duration::from_millis(1_500));
        assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}");
        assert_eq!(hook.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_302_is_not_followed() {
        let moved = Answer {
            headers: vec![("location", "/elsewhere")],
            ..Answer::status(302)
        };
        let hook = receiver(vec![moved]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        let error = notifier
            .notify("go away", "info", None, None)
            .await
            .expect_err("refused");
        let seen = hook.seen();
        assert_eq!(seen.len(), 1, "neither followed nor retried: {seen:?}");
        let BackendError::Invalid(message) = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        assert!(message.contains("302"), "{message}");
    }

    #[tokio::test]
    async fn the_same_key_twice_delivers_once_and_replays_the_receipt() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Slack, &hook.url());
        let first = notifier
            .notify("once", "warning", Some("inc-5:notify"), Some("t1"))
            .await
            .expect("delivered");
        let second = notifier
            .notify("once", "warning", Some("inc-5:notify"), Some("t2"))
            .await
            .expect("replayed");
        assert_eq!(hook.seen().len(), 1);
        assert!(!first.replayed);
        assert!(second.replayed);
        assert_eq!(
            Receipt {
                replayed: false,
                ..second
            },
            first
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_concurrent_calls_with_one_key_deliver_once() {
        // Goal: single flight per key. Method: 20 calls at once with one key against a
        // receiver that takes 100 ms; exactly one request arrives, 19 answers are replays.
        let slow = Answer {
            delay_ms: 100,
            ..Answer::ok()
        };
        let hook = receiver_then(vec![], Some(slow)).await;
        let notifier = Arc::new(notifier(ChannelKind::Webhook, &hook.url()));
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let notifier = notifier.clone();
                tokio::spawn(async move {
                    notifier
                        .notify("storm", "critical", Some("inc-6:notify"), None)
                        .await
                })
            })
            .collect();
        let mut receipts = Vec::new();
        for call in calls {
            receipts.push(
                call.await
                    .expect("no panic")
                    .expect("delivered or replayed"),
            );
        }
        assert_eq!(hook.seen().len(), 1);
        assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1);
        assert!(
            receipts
                .iter()
                .all(|r| r.notification_id == receipts[0].notification_id)
        );
        assert!(
            notifier.lock_keys().in_flight.is_empty(),
            "turn locks forgotten"
        );
    }

    #[tokio::test]
    async fn the_same_key_with_another_message_is_a_conflict() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        notifier
            .notify("first", "info", Some("inc-7:notify"), None)
            .await
            .expect("delivered");
        let error = notifier
            .notify("second", "info", Some("inc-7:notify"), None)
            .await
            .expect_err("conflict");
        assert_eq!(
            error,
            BackendError::Conflict("idempotency key reused for a different notification".into())
        );
        let error = notifier
            .notify("first", "critical", Some("inc-7:notify"), None)
            .await
            .expect_err("another severity is another notification");
        assert!(matches!(error, BackendError::Conflict(_)));
        assert_eq!(hook.seen().len(), 1);
    }

    #[tokio::test]
    async fn calls_without_a_key_always_send_and_ids_count_from_one() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        let a = notifier
            .notify("same", "info", None, None)
            .await
            .expect("sent");
        let b = notifier
            .notify("same", "info", None, None)
            .await
            .expect("sent");
        assert_eq!((a.notification_id, b.notification_id), (1, 2));
        assert_eq!((a.ledger_seq, b.ledger_seq), (1, 2));
        assert!(!a.replayed && !b.replayed);
        assert_eq!(hook.seen().len(), 2);
    }

    #[tokio::test]
    async fn an_invalid_message_severity_or_key_is_invalid_and_sends_nothing() {
        let hook = receiver(vec![]).await;
        let notifier = notifier(ChannelKind::Webhook, &hook.url());
        let too_long = "x".repeat(crate::fleet::model::MESSAGE_CHARS_MAX + 1);
        let long_key = "k".repeat(crate::fleet::model::IDEMPOTENCY_KEY_BYTES_MAX + 1);
        let calls: [(&str, &str, Option<&str>); 6] = [
            ("", "info", None),
            ("   ", "info", None),
            (&too_long, "info", None),
            ("ok", "panic", None),
            ("ok", "info", Some("")),
            ("ok", "info", Some(&long_key)),
        ];
        for (message, severity, key) in calls {
            let error = notifier
                .notify(message, severity, key, None)
                .await
                .expect_err("invalid");
            assert!(matches!(error, BackendError::Invalid(_)), "{error:?}");
        }
        let error = notifier
            .notify("ok", "info", Some("bad\u{7}key"), None)
            .await
            .expect_err("a control character in the key");
        assert!(matches!(error, BackendError::Invalid(_)), "{error:?}");
        assert!(hook.seen().is_empty());
    }

    #[test]
    fn new_refuses_bad_urls_and_misplaced_secrets() {
        let refused = |config: NotifyConfig, setting: &str| {
            let error = Notifier::new(config).expect_err("refused");
            assert!(error.contains(setting), "{error} should name {setting}");
        };
        let webhook = |url: &str| config(ChannelKind::Webhook, url);
        refused(webhook("ftp://127.0.0.1/x"), "SRE_NOTIFY_URL");
        refused(webhook("http://example.com/hook"), "SRE_NOTIFY_URL");
        refused(webhook("not a url"), "SRE_NOTIFY_URL");
        refused(webhook("mailto:ops@example.com"), "SRE_NOTIFY_URL");
        refused(webhook(""), "SRE_NOTIFY_URL");
        let secret = |kind, value: &str| NotifyConfig {
            hmac_secret: Some(value.to_owned()),
            ..config(kind, "https://hooks.example.com/x")
        };
        refused(secret(ChannelKind::Webhook, ""), "SRE_NOTIFY_HMAC_SECRET");
        refused(secret(ChannelKind::Webhook, "  "), "SRE_NOTIFY_HMAC_SECRET");
        refused(
            secret(ChannelKind::Slack, "s3cret"),
            "SRE_NOTIFY_HMAC_SECRET",
        );
        let https = config(ChannelKind::Slack, "https://hooks.example.com/x");
        refused(
            NotifyConfig {
                retries_max: RETRIES_MAX_CEILING + 1,
                ..https.clone()
            },
            "--notify-retries-max",
        );
        refused(
            NotifyConfig {
                timeout_ms: 0,
                ..https.clone()
            },
            "--notify-timeout-ms",
        );
        refused(
            NotifyConfig {
                backoff_initial_ms: BACKOFF_MS_MAX + 1,
                ..https.clone()
            },
            "--notify-backoff-initial-ms",
        );
        // The secret part of a URL never appears in an error.
        let error =
            Notifier::new(webhook("http://example.com/services/SECRETTOKEN")).expect_err("refused");
        assert!(!error.contains("SECRETTOKEN"), "{error}");

        for url in [
            "https://hooks.example.com/services/T/B/X",
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://[::1]:8080/hook",
        ] {
            assert!(Notifier::new(webhook(url)).is_ok(), "{url}");
        }
        assert!(Notifier::new(secret(ChannelKind::Webhook, "s3cret")).is_ok());
    }

    #[test]
    fn debug_shows_neither_the_url_path_nor_the_secret() {
        let config = NotifyConfig {
            hmac_secret: Some("s3cret".to_owned()),
            ..config(
                ChannelKind::Webhook,
                "https://hooks.example.com/services/SECRETTOKEN",
            )
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert!(
            !shown.contains("SECRETTOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        let notifier = Notifier::new(config).expect("valid");
        let shown = format!("{notifier:?}");
        assert!(
            !shown.contains("SECRETTOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn delivered_keys_are_bounded_and_the_oldest_is_forgotten_first() {
        let mut keys = Keys::default();
        let receipt = |id| Receipt {
            notification_id: id,
            channel: "webhook".to_owned(),
            delivered_at: Utc::now(),
            ledger_seq: id,
            replayed: false,
        };
        for id in 0..=DELIVERED_KEYS_MAX as u64 {
            keys.record(&format!("k{id}"), fingerprint("m", "info"), receipt(id));
        }
        assert_eq!(keys.delivered.len(), DELIVERED_KEYS_MAX);
        assert_eq!(keys.order.len(), DELIVERED_KEYS_MAX);
        assert!(!keys.delivered.contains_key("k0"));
        assert!(keys.delivered.contains_key("k1"));
        assert!(
            keys.delivered
                .contains_key(&format!("k{DELIVERED_KEYS_MAX}"))
        );
    }

    #[test]
    fn excerpt_strips_control_characters_and_bounds_the_length() {
        assert_eq!(excerpt("", 10), "(empty answer)");
        assert_eq!(excerpt("a\r\n\tb\u{1b}c", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("ééé", 3), "ééé");
    }

    #[test]
    fn notify_futures_can_be_sent_between_threads() {
        fn is_send<T: Send>(_: &T) {}
        let notifier = notifier(ChannelKind::Slack, "https://hooks.example.com/x");
        is_send(&notifier.notify("m", "info", Some("k"), None));
    }
}
