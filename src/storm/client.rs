//! The storm's HTTP side: the senders (bounded retries, `Retry-After` honoured), the prober
//! of `GET /incidents/{id}`, the scrapes of `GET /metrics`, the listing of the incidents and
//! the fleet's ledger. Every read is bounded in bytes, every loop in rounds or by the
//! deadline.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use super::exposition::{Exposition, TEXT_BYTES_MAX};
use super::plan::{Phase, Plan, Request};
use super::report::{Entry, Row};
use super::stats::Samples;

/// Longest one HTTP request of the storm may take.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Most 503 answers one request takes before it is given up (each waited out).
const REFUSALS_PER_REQUEST_MAX: u32 = 600;
/// Most transport errors (no answer) one request takes before it is given up.
const TRANSPORT_ERRORS_PER_REQUEST_MAX: u32 = 10;
/// Longest `Retry-After` honoured; a longer one is waited this long.
const RETRY_AFTER_MAX_MS: u64 = 30_000;
/// The wait after a 503 without `Retry-After`.
const RETRY_AFTER_DEFAULT_MS: u64 = 1_000;
const BACKOFF_INITIAL_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 2_000;
/// Largest answer read from the API (an incident with its timeline, a page of 200).
const ANSWER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest ledger read.
const LEDGER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Recent incidents the prober picks from.
const RECENT_MAX: usize = 256;
/// Probes in flight at once; a tick finding none free is skipped.
const PROBES_IN_FLIGHT_MAX: usize = 16;
/// Errors kept to show (the rest are counted).
const ERRORS_KEPT_MAX: usize = 10;
/// Page size of `GET /incidents`.
const PAGE_LIMIT: usize = 200;
/// Most pages one listing reads.
const LIST_PAGES_MAX: usize = 20_000;
/// Incidents not found by the listing that are looked up one by one, at most.
const LOOKUPS_MAX: usize = 2_000;
/// How much older than the storm's first request an incident of the listing may be and
/// still be looked at (clock steps on one machine).
const LIST_SLACK_MS: i64 = 5_000;

/// What the senders and the prober gather, shared with the progress display.
#[derive(Default)]
pub struct Gathered {
    pub alerts_sent: AtomicU64,
    pub undelivered: AtomicU64,
    pub refused: AtomicU64,
    pub opened: AtomicU64,
    pub coalesced: AtomicU64,
    /// A request was given up, or not sent, because the storm's deadline came.
    pub deadline_passed: AtomicBool,
    pub post: Mutex<Samples>,
    pub get: Mutex<Samples>,
    incidents: Mutex<Incidents>,
    errors: Mutex<Vec<String>>,
    errors_dropped: AtomicU64,
}

#[derive(Default)]
struct Incidents {
    ids: HashSet<String>,
    /// In order of appearance, for `ids` in a stable order.
    order: Vec<String>,
    recent: VecDeque<String>,
    next_probe: usize,
}

impl Gathered {
    /// Records an incident an answer named; returns whether it is new.
    fn incident(&self, id: &str) -> bool {
        let mut i = lock(&self.incidents);
        if !i.ids.insert(id.to_owned()) {
            return false;
        }
        i.order.push(id.to_owned());
        if i.recent.len() >= RECENT_MAX {
            i.recent.pop_front();
        }
        i.recent.push_back(id.to_owned());
        true
    }

    /// The next recent incident to probe, round robin.
    fn probe_target(&self) -> Option<String> {
        let mut i = lock(&self.incidents);
        if i.recent.is_empty() {
            return None;
        }
        let n = i.next_probe % i.recent.len();
        i.next_probe = i.next_probe.wrapping_add(1);
        i.recent.get(n).cloned()
    }

    pub fn ids(&self) -> Vec<String> {
        lock(&self.incidents).order.clone()
    }

    fn error(&self, e: String) {
        let mut errors = lock(&self.errors);
        if errors.len() < ERRORS_KEPT_MAX {
            errors.push(e);
        } else {
            self.errors_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The errors kept, and how many more there were.
    pub fn errors(&self) -> (Vec<String>, u64) {
        (
            lock(&self.errors).clone(),
            self.errors_dropped.load(Ordering::Relaxed),
        )
    }
}

/// A poisoned lock still holds good counts: a panic elsewhere never hides them.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub api: String,
}

/// Reads at most `max` bytes of a body.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    Ok(body)
}

/// The wait a 503 asks for: `Retry-After` in seconds (an HTTP date counts as the default).
fn retry_after(response: &reqwest::Response) -> Duration {
    let ms = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(RETRY_AFTER_DEFAULT_MS, |s| s.saturating_mul(1_000));
    Duration::from_millis(ms.min(RETRY_AFTER_MAX_MS))
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

impl Client {
    pub fn new(api: &str, connections: usize) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
                .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                .pool_max_idle_per_host(connections)
                .build()?,
            api: api.to_owned(),
        })
    }

    /// GET `url` as JSON, at most `max` bytes; `None` for any failure.
    async fn json(&self, url: &str, max: usize) -> Option<(StatusCode, Value)> {
        let response = self.http.get(url).send().await.ok()?;
        let status = response.status();
        let body = read_bounded(response, max).await.ok()?;
        Some((status, serde_json::from_slice(&body).ok()?))
    }

    /// Waits until `GET /readyz` answers 200, up to `wait`.
    pub async fn ready(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.api)).send().await
                && r.status() == StatusCode::OK
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One scrape of `GET /metrics`; `None` when the agent has none or cannot be read.
    pub async fn metrics(&self) -> Option<Exposition> {
        let response = self
            .http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = read_bounded(response, TEXT_BYTES_MAX).await.ok()?;
        Some(Exposition::parse(&String::from_utf8_lossy(&body)))
    }

    /// Sends one request until the agent takes it: a 503 is counted as refused and retried
    /// after its `Retry-After`, a request without an answer is retried with backoff, both a
    /// bounded number of times and not past `deadline`. Anything else is an answer: a 2xx
    /// is recorded, another status gives the request up. A request given up is counted as
    /// undelivered with its reason, never dropped silently.
    pub async fn deliver(&self, request: &Request, deadline: Instant, g: &Gathered) {
        let url = format!("{}{}", self.api, request.path);
        let alerts = request.alerts as u64;
        let (mut refusals, mut transport_errors) = (0u32, 0u32);
        let reason = loop {
            let mut builder = self.http.post(&url).json(&request.body);
            if let Some(key) = &request.idempotency_key {
                builder = builder.header("idempotency-key", key);
            }
            let begun = Instant::now();
            let wait = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(&response);
                    let body = read_bounded(response, ANSWER_BYTES_MAX).await;
                    lock(&g.post).push(begun.elapsed());
                    if status.is_success() {
                        let body = body.ok().and_then(|b| serde_json::from_slice(&b).ok());
                        self.record(request, status, body.as_ref(), g);
                        g.alerts_sent.fetch_add(alerts, Ordering::Relaxed);
                        return;
                    }
                    if status != StatusCode::SERVICE_UNAVAILABLE
                        && status != StatusCode::TOO_MANY_REQUESTS
                    {
                        let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                        let text = crate::core::text::clean(&text.unwrap_or_default(), 300);
                        break format!("POST {} answered {status}: {text}", request.path);
                    }
                    g.refused.fetch_add(1, Ordering::Relaxed);
                    refusals += 1;
                    if refusals >= REFUSALS_PER_REQUEST_MAX {
                        break format!("POST {} refused {refusals} times", request.path);
                    }
                    wait
                }
                Err(error) => {
                    transport_errors += 1;
                    if transport_errors >= TRANSPORT_ERRORS_PER_REQUEST_MAX {
                        break format!("POST {}: no answer: {error}", request.path);
                    }
                    let exp = BACKOFF_INITIAL_MS.saturating_mul(1 << transport_errors.min(16));
                    Duration::from_millis(exp.min(BACKOFF_MAX_MS))
                }
            };
            if Instant::now() + wait >= deadline {
                g.deadline_passed.store(true, Ordering::Relaxed);
                break format!("POST {}: the storm's timeout passed", request.path);
            }
            tokio::time::sleep(wait).await;
        };
        g.undelivered.fetch_add(alerts, Ordering::Relaxed);
        g.error(reason);
    }

    /// What an answer says: the incidents it names, opened or joined.
    fn record(&self, request: &Request, status: StatusCode, body: Option<&Value>, g: &Gathered) {
        let Some(body) = body else {
            g.error(format!(
                "POST {} answered {status} without JSON",
                request.path
            ));
            return;
        };
        if let Some(alerts) = body["alerts"].as_array() {
            // The webhook: one entry per alert taken.
            for a in alerts {
                if let Some(id) = a["incident"].as_str() {
                    g.incident(id);
                }
                match a["outcome"].as_str() {
                    Some("opened") => g.opened.fetch_add(1, Ordering::Relaxed),
                    _ => g.coalesced.fetch_add(1, Ordering::Relaxed),
                };
            }
        } else if let Some(id) = body["id"].as_str() {
            // A report: opened (a replay of a retried request names the same incident).
            let new = g.incident(id);
            if body["coalesced"] == true {
                g.coalesced.fetch_add(1, Ordering::Relaxed);
            } else if new {
                g.opened.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends every request of `phase` from `concurrency` clients at once. Requests whose turn
    /// comes after `deadline` are counted as undelivered.
    pub async fn send_phase(
        &self,
        plan: Arc<Plan>,
        phase: Phase,
        concurrency: usize,
        started: DateTime<Utc>,
        deadline: Instant,
        g: Arc<Gathered>,
    ) {
        let next = Arc::new(AtomicUsize::new(0));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..concurrency.min(plan.len(phase)).max(1) {
            let (client, plan, next, g) = (self.clone(), plan.clone(), next.clone(), g.clone());
            clients.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = plan.request(phase, i, started, Utc::now()) else {
                        break;
                    };
                    if Instant::now() >= deadline {
                        g.deadline_passed.store(true, Ordering::Relaxed);
                        g.undelivered
                            .fetch_add(request.alerts as u64, Ordering::Relaxed);
                        continue;
                    }
                    client.deliver(&request, deadline, &g).await;
                }
            });
        }
        while let Some(done) = clients.join_next().await {
            if let Err(error) = done {
                g.error(format!("a client task failed: {error}"));
            }
        }
    }

    /// Probes `GET /incidents/{id}` of recent incidents at `rate_per_sec` until `stop`,
    /// recording the latency of every answer.
    pub async fn probe(
        &self,
        rate_per_sec: u64,
        g: Arc<Gathered>,
        mut stop: watch::Receiver<bool>,
    ) {
        let period = Duration::from_micros(1_000_000 / rate_per_sec.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let permits = Arc::new(Semaphore::new(PROBES_IN_FLIGHT_MAX));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            let Some(id) = g.probe_target() else { continue };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let (http, url, g) = (
                self.http.clone(),
                format!("{}/incidents/{id}", self.api),
                g.clone(),
            );
            tokio::spawn(async move {
                let begun = Instant::now();
                if let Ok(response) = http.get(&url).send().await {
                    let ok = response.status().is_success();
                    if read_bounded(response, ANSWER_BYTES_MAX).await.is_ok() && ok {
                        lock(&g.get).push(begun.elapsed());
                    }
                }
                drop(permit);
            });
        }
    }

    /// How many of `ids` are still new, analyzing or remediating; a lower bound (one poll
    /// reads a bounded number of pages).
    pub async fn unfinished(&self, ids: &HashSet<String>) -> u64 {
        let mut n = 0;
        for status in ["new", "analyzing", "remediating"] {
            let mut cursor: Option<String> = None;
            for _ in 0..=(ids.len() / PAGE_LIMIT + 1) {
                let mut url = format!("{}/incidents?status={status}&limit={PAGE_LIMIT}", self.api);
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let Some((StatusCode::OK, page)) = self.json(&url, ANSWER_BYTES_MAX).await else {
                    return n.max(1);
                };
                n += page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| i["id"].as_str().is_some_and(|id| ids.contains(id)))
                    .count() as u64;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
        }
        n
    }

    /// The rows of `ids`: read from `GET /incidents` newest first (through its cursor) down
    /// to the storm's start, the ones not listed then looked up one by one (bounded); an
    /// incident not found is a row without a status.
    pub async fn rows(&self, ids: &[String], first_post: DateTime<Utc>) -> Vec<Row> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut found = std::collections::HashMap::<String, Row>::new();
        let oldest = first_post - chrono::Duration::milliseconds(LIST_SLACK_MS);
        let mut cursor: Option<String> = None;
        'pages: for _ in 0..LIST_PAGES_MAX {
            let mut url = format!("{}/incidents?limit={PAGE_LIMIT}", self.api);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let Some((StatusCode::OK, page)) = self.json(&url, ANSWER_BYTES_MAX).await else {
                break;
            };
            for item in page["items"].as_array().into_iter().flatten() {
                let row = row_of(item);
                if row.created_at.is_some_and(|c| c < oldest) {
                    break 'pages;
                }
                if wanted.contains(row.id.as_str()) {
                    found.insert(row.id.clone(), row);
                }
            }
            if found.len() == wanted.len() {
                break;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut lookups = 0;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = found.remove(id) {
                rows.push(row);
                continue;
            }
            let mut row = Row {
                id: id.clone(),
                status: None,
                created_at: None,
                updated_at: None,
            };
            if lookups < LOOKUPS_MAX {
                lookups += 1;
                let url = format!("{}/incidents/{id}", self.api);
                if let Some((StatusCode::OK, item)) = self.json(&url, ANSWER_BYTES_MAX).await {
                    row = row_of(&item);
                }
            }
            rows.push(row);
        }
        rows
    }

    /// The fleet's ledger; `None` when it cannot be read.
    pub async fn ledger(&self, fleet: &str) -> Option<Vec<Entry>> {
        let (status, ledger) = self
            .json(&format!("{fleet}/v1/ledger"), LEDGER_BYTES_MAX)
            .await?;
        if status != StatusCode::OK {
            return None;
        }
        Some(
            ledger["entries"]
                .as_array()?
                .iter()
                .map(|e| Entry {
                    action: e["action"].as_str().unwrap_or_default().to_owned(),
                    idempotency_key: e["idempotency_key"].as_str().map(str::to_owned),
                    at: time(&e["at"]),
                })
                .collect(),
        )
    }
}

fn row_of(item: &Value) -> Row {
    Row {
        id: item["id"].as_str().unwrap_or_default().to_owned(),
        status: item["status"].as_str().map(str::to_owned),
        created_at: time(&item["created_at"]),
        updated_at: time(&item["updated_at"]),
    }
}
