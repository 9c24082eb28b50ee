//! What a storm found, pure: the figures from what was observed (the answers, the agent's
//! metrics before and after, the incidents' rows, the fleet's ledger), the verdict, the
//! table and the JSON object. The agent's own doings are read from its metrics, so the
//! storm and the metrics cannot disagree; what the client saw is beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::exposition::{Exposition, Label};
use super::stats::{self, Quantiles, Samples};

/// An incident the answers named, as the final listing found it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: String,
    /// `None`: never found.
    pub status: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// One entry of the fleet's ledger, as far as the storm needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub action: String,
    pub idempotency_key: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// Everything a storm observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `embedded` or the target's URL.
    pub target: String,
    /// `sqlite` or `postgres` for the embedded service.
    pub database: Option<String>,
    /// `reports` or `alertmanager`.
    pub mode: String,
    pub alerts: u64,
    pub failures: u64,
    pub concurrency: u64,
    pub model_latency_ms: u64,
    /// Alerts in requests the agent answered with a 2xx.
    pub alerts_sent: u64,
    /// Alerts in requests given up on (not taken by the agent).
    pub undelivered: u64,
    /// 503 answers (each retried after its `Retry-After`).
    pub refused: u64,
    /// Incidents the answers said were opened, and alerts they said joined one.
    pub answered_opened: u64,
    pub answered_coalesced: u64,
    pub metrics_before: Option<Exposition>,
    pub metrics_after: Option<Exposition>,
    /// The highest `process_resident_memory_bytes` scraped during the storm.
    pub rss_sampled_max: Option<f64>,
    /// The most live incidents (`sre_incidents_live`) scraped during the storm.
    pub live_sampled_max: Option<f64>,
    /// Whose memory the agent's RSS figure is (`agent`, or the storm's own process when the
    /// agent is embedded in it).
    pub rss_of: String,
    pub rows: Vec<Row>,
    pub ledger: Option<Vec<Entry>>,
    pub post: Samples,
    pub get: Samples,
    /// When the first request went out.
    pub first_post: Option<DateTime<Utc>>,
    pub timed_out: bool,
}

/// The storm's figures. Field names are stable (the JSON output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub target: String,
    pub database: Option<String>,
    pub mode: String,
    pub alerts: u64,
    pub failures: u64,
    pub concurrency: u64,
    pub model_latency_ms: u64,
    pub alerts_sent: u64,
    pub undelivered: u64,
    /// Incidents opened (metrics: `sre_incidents_opened_total`).
    pub accepted: Option<u64>,
    /// Alerts that opened nothing (metrics: `sre_alerts_received_total`, outcome not
    /// `opened`).
    pub coalesced: Option<u64>,
    pub refused: u64,
    pub investigations: Option<u64>,
    pub model_turns: Option<u64>,
    /// Restarts that succeeded (metrics: `sre_restarts_total{outcome="succeeded"}`).
    pub restarts: Option<u64>,
    /// Pages delivered (metrics: `sre_pages_total{outcome="succeeded"}`).
    pub pages: Option<u64>,
    pub answered_opened: u64,
    pub answered_coalesced: u64,
    /// Distinct incidents the answers named.
    pub incidents: u64,
    pub terminal: u64,
    /// Incidents named by an answer and not terminal at the end, or never found.
    pub lost: u64,
    pub statuses: BTreeMap<String, u64>,
    /// Repeated idempotency keys in the fleet's ledger; `None` without a ledger.
    pub duplicates: Option<u64>,
    pub ledger_restarts: Option<u64>,
    pub ledger_pages: Option<u64>,
    /// `created_at` → `updated_at` of the terminal incidents.
    pub alert_to_terminal: Option<Quantiles>,
    /// Every answered POST.
    pub api_post: Option<Quantiles>,
    /// `GET /incidents/{id}` of recent incidents during the storm.
    pub api_get: Option<Quantiles>,
    pub peak_rss_bytes: Option<u64>,
    pub rss_of: String,
    /// The most incident actors alive at once, sampled every second (what the peak RSS
    /// holds, beside the process's own).
    pub live_peak: Option<u64>,
    /// Terminal incidents per second, from the first POST to the last terminal one.
    pub incidents_per_sec: Option<f64>,
    pub elapsed_ms: Option<u64>,
    pub timed_out: bool,
    /// No problem below.
    pub ok: bool,
    pub problems: Vec<String>,
}

const TERMINAL: [&str; 3] = ["resolved", "escalated", "failed"];

/// `name`'s increase from `before` to `after`; `None` when the agent does not expose it.
/// A counter that went down (an agent restarted) counts from zero.
fn delta(o: &Observed, name: &str, conditions: &[Label<'_>]) -> Option<u64> {
    let after = o.metrics_after.as_ref()?.sum(name, conditions)?;
    let before = o
        .metrics_before
        .as_ref()
        .and_then(|m| m.sum(name, conditions))
        .unwrap_or(0.0);
    let d = if after >= before {
        after - before
    } else {
        after
    };
    Some(d.max(0.0).round() as u64)
}

/// A gauge's sample as a count; `None` when it is not a finite, non-negative number.
fn amount(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

impl Summary {
    pub fn of(o: &Observed) -> Summary {
        let mut statuses = BTreeMap::<String, u64>::new();
        let mut to_terminal = Samples::default();
        let mut last_terminal: Option<DateTime<Utc>> = None;
        let mut terminal = 0;
        for row in &o.rows {
            let status = row.status.clone().unwrap_or_else(|| "not found".into());
            *statuses.entry(status).or_default() += 1;
            if row.status.as_deref().is_some_and(|s| TERMINAL.contains(&s)) {
                terminal += 1;
                if let (Some(c), Some(u)) = (row.created_at, row.updated_at) {
                    to_terminal.push((u - c).to_std().unwrap_or_default());
                    last_terminal = last_terminal.max(Some(u));
                }
            }
        }
        let lost = o.rows.len() as u64 - terminal;
        let elapsed = match (o.first_post, last_terminal) {
            (Some(first), Some(last)) => Some((last - first).to_std().unwrap_or_default()),
            _ => None,
        };
        let since_start = |e: &&Entry| match (o.first_post, e.at) {
            (Some(first), Some(at)) => at >= first,
            _ => true,
        };
        let ledger_count = |action: &str| {
            o.ledger.as_ref().map(|l| {
                l.iter()
                    .filter(since_start)
                    .filter(|e| e.action == action)
                    .count() as u64
            })
        };
        let peak_metric = o
            .metrics_after
            .as_ref()
            .and_then(|m| m.sum("sre_process_resident_memory_peak_bytes", &[]));
        let peak = match (peak_metric, o.rss_sampled_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .and_then(amount);
        let mut s = Summary {
            target: o.target.clone(),
            database: o.database.clone(),
            mode: o.mode.clone(),
            alerts: o.alerts,
            failures: o.failures,
            concurrency: o.concurrency,
            model_latency_ms: o.model_latency_ms,
            alerts_sent: o.alerts_sent,
            undelivered: o.undelivered,
            accepted: delta(o, "sre_incidents_opened_total", &[]),
            coalesced: delta(
                o,
                "sre_alerts_received_total",
                &[Label::IsNot("outcome", "opened")],
            ),
            refused: o.refused,
            investigations: delta(o, "sre_investigations_total", &[]),
            model_turns: delta(o, "sre_model_turns_total", &[]),
            restarts: delta(
                o,
                "sre_restarts_total",
                &[Label::Is("outcome", "succeeded")],
            ),
            pages: delta(o, "sre_pages_total", &[Label::Is("outcome", "succeeded")]),
            answered_opened: o.answered_opened,
            answered_coalesced: o.answered_coalesced,
            incidents: o.rows.len() as u64,
            terminal,
            lost,
            statuses,
            duplicates: o
                .ledger
                .as_ref()
                .map(|l| stats::repeats(l.iter().filter_map(|e| e.idempotency_key.as_deref()))),
            ledger_restarts: ledger_count("restart-pod"),
            ledger_pages: ledger_count("send-notification"),
            alert_to_terminal: to_terminal.quantiles(),
            api_post: o.post.quantiles(),
            api_get: o.get.quantiles(),
            peak_rss_bytes: peak,
            rss_of: o.rss_of.clone(),
            live_peak: o.live_sampled_max.and_then(amount),
            incidents_per_sec: elapsed.and_then(|e| stats::per_sec(terminal, e)),
            elapsed_ms: elapsed.map(|e| e.as_millis() as u64),
            timed_out: o.timed_out,
            ok: true,
            problems: vec![],
        };
        s.problems = problems(&s);
        s.ok = s.problems.is_empty();
        s
    }

    /// The summary as a person reads it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let database = self
            .database
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "storm: {} alerts describing {} failure(s) ({}), {} clients, model latency {} ms → {}{}",
            self.alerts,
            self.failures,
            self.mode,
            self.concurrency,
            self.model_latency_ms,
            self.target,
            database
        );
        let n = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let ms = |q: &Option<Quantiles>| match q {
            Some(q) => format!("{} / {}", duration(q.p50_ms), duration(q.p99_ms)),
            None => "n/a".into(),
        };
        let rows: Vec<(&str, String, String)> = vec![
            (
                "alerts sent",
                self.alerts_sent.to_string(),
                format!("undelivered {}", self.undelivered),
            ),
            (
                "accepted",
                n(self.accepted),
                format!("incidents opened (answers: {})", self.answered_opened),
            ),
            (
                "coalesced",
                n(self.coalesced),
                format!(
                    "alerts that opened nothing (answers: {})",
                    self.answered_coalesced
                ),
            ),
            (
                "refused",
                self.refused.to_string(),
                "503 answers, each retried after its Retry-After".into(),
            ),
            ("investigations", n(self.investigations), String::new()),
            ("model turns", n(self.model_turns), String::new()),
            (
                "restarts",
                n(self.restarts),
                format!("in the fleet's ledger: {}", n(self.ledger_restarts)),
            ),
            (
                "pages",
                n(self.pages),
                format!("in the fleet's ledger: {}", n(self.ledger_pages)),
            ),
            (
                "lost",
                self.lost.to_string(),
                format!(
                    "of {} incidents: {}",
                    self.incidents,
                    self.statuses
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "duplicate mutating calls",
                n(self.duplicates),
                "repeated idempotency keys in the fleet's ledger".into(),
            ),
            (
                "alert → terminal p50 / p99",
                ms(&self.alert_to_terminal),
                "created_at → updated_at".into(),
            ),
            (
                "POST p50 / p99",
                ms(&self.api_post),
                format!("{} requests", self.api_post.as_ref().map_or(0, |q| q.count)),
            ),
            (
                "GET /incidents/{id} p50 / p99",
                ms(&self.api_get),
                format!(
                    "{} probes during the storm",
                    self.api_get.as_ref().map_or(0, |q| q.count)
                ),
            ),
            (
                "peak RSS",
                self.peak_rss_bytes.map_or_else(
                    || "n/a".into(),
                    |b| format!("{:.0} MiB", b as f64 / 1048576.0),
                ),
                self.rss_of.clone(),
            ),
            (
                "live incidents peak",
                self.live_peak
                    .map_or_else(|| "n/a".into(), |n| n.to_string()),
                "most incident actors at once (sampled every second)".into(),
            ),
            (
                "incidents/s",
                self.incidents_per_sec
                    .map_or_else(|| "n/a".into(), |r| format!("{r:.1}")),
                format!(
                    "{} terminal in {}",
                    self.terminal,
                    self.elapsed_ms
                        .map_or_else(|| "n/a".into(), |e| duration(e as f64))
                ),
            ),
        ];
        let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let value_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        for (name, value, note) in rows {
            let pad = width - name.chars().count();
            let line = format!("  {name}{}  {value:>value_width$}  {note}", " ".repeat(pad));
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if self.timed_out {
            let _ = writeln!(out, "  (the storm timed out before everything finished)");
        }
        let _ = match self.problems.is_empty() {
            true => writeln!(out, "✓ nothing lost, no mutating call repeated"),
            false => writeln!(out, "✗ {}", self.problems.join("; ")),
        };
        out
    }
}

/// Milliseconds as a person reads them.
fn duration(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// What makes the storm fail: anything lost, a mutating call made twice, the timeout.
fn problems(s: &Summary) -> Vec<String> {
    let mut p = Vec::new();
    if s.lost > 0 {
        p.push(format!(
            "{} incident(s) accepted are not terminal or were never found",
            s.lost
        ));
    }
    if s.undelivered > 0 {
        p.push(format!(
            "{} alert(s) were not taken by the agent",
            s.undelivered
        ));
    }
    if let Some(d) = s.duplicates.filter(|d| *d > 0) {
        p.push(format!("{d} mutating call(s) reached the fleet twice"));
    }
    if s.timed_out {
        p.push("the timeout passed".into());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn row(id: &str, status: Option<&str>, created: &str, updated: &str) -> Row {
        Row {
            id: id.into(),
            status: status.map(Into::into),
            created_at: Some(at(created)),
            updated_at: Some(at(updated)),
        }
    }

    fn observed() -> Observed {
        let before = Exposition::parse(
            "sre_incidents_opened_total{source=\"api\"} 10\n\
             sre_alerts_received_total{source=\"alertmanager\",outcome=\"joined\"} 5\n\
             sre_restarts_total{outcome=\"succeeded\"} 1\n",
        );
        let after = Exposition::parse(
            "sre_incidents_opened_total{source=\"api\"} 10\n\
             sre_incidents_opened_total{source=\"alertmanager\"} 3\n\
             sre_alerts_received_total{source=\"alertmanager\",outcome=\"opened\"} 3\n\
             sre_alerts_received_total{source=\"alertmanager\",outcome=\"joined\"} 20\n\
             sre_alerts_received_total{source=\"alertmanager\",outcome=\"unchanged\"} 82\n\
             sre_investigations_total 3\n\
             sre_model_turns_total{reasoner=\"rules\",outcome=\"ok\"} 12\n\
             sre_restarts_total{outcome=\"succeeded\"} 2\n\
             sre_restarts_total{outcome=\"failed\"} 4\n\
             sre_pages_total{outcome=\"succeeded\"} 3\n\
             sre_process_resident_memory_peak_bytes 104857600\n# EOF\n",
        );
        Observed {
            target: "embedded".into(),
            database: Some("sqlite".into()),
            mode: "alertmanager".into(),
            alerts: 100,
            failures: 3,
            concurrency: 8,
            alerts_sent: 100,
            answered_opened: 3,
            answered_coalesced: 97,
            metrics_before: Some(before),
            metrics_after: Some(after),
            rss_sampled_max: Some(90.0 * 1048576.0),
            live_sampled_max: Some(3.0),
            rss_of: "agent".into(),
            rows: vec![
                row(
                    "a",
                    Some("resolved"),
                    "2026-11-26T10:00:00.100Z",
                    "2026-11-26T10:00:02.100Z",
                ),
                row(
                    "b",
                    Some("escalated"),
                    "2026-11-26T10:00:00.200Z",
                    "2026-11-26T10:00:00.700Z",
                ),
                row(
                    "c",
                    Some("escalated"),
                    "2026-11-26T10:00:00.300Z",
                    "2026-11-26T10:00:00.400Z",
                ),
            ],
            ledger: Some(vec![
                Entry {
                    action: "restart-pod".into(),
                    idempotency_key: Some("a:1".into()),
                    at: Some(at("2026-11-26T10:00:01Z")),
                },
                Entry {
                    action: "send-notification".into(),
                    idempotency_key: Some("a:2".into()),
                    at: Some(at("2026-11-26T10:00:01Z")),
                },
                Entry {
                    action: "restart-pod".into(),
                    idempotency_key: Some("old:1".into()),
                    at: Some(at("2026-11-26T09:00:00Z")),
                },
            ]),
            first_post: Some(at("2026-11-26T10:00:00Z")),
            ..Observed::default()
        }
    }

    #[test]
    fn the_figures_are_the_metrics_increase_and_the_rows() {
        let s = Summary::of(&observed());
        assert_eq!(s.accepted, Some(3));
        assert_eq!(s.coalesced, Some(97), "joined 15 more, unchanged 82");
        assert_eq!(s.investigations, Some(3));
        assert_eq!(s.model_turns, Some(12));
        assert_eq!(s.restarts, Some(1), "succeeded ones, the increase only");
        assert_eq!(s.pages, Some(3));
        assert_eq!(
            s.ledger_restarts,
            Some(1),
            "the storm's own, not older ones"
        );
        assert_eq!(s.ledger_pages, Some(1));
        assert_eq!(s.duplicates, Some(0));
        assert_eq!((s.incidents, s.terminal, s.lost), (3, 3, 0));
        assert_eq!(s.statuses["escalated"], 2);
        let q = s.alert_to_terminal.clone().unwrap();
        assert_eq!((q.p50_ms, q.p99_ms), (500.0, 2_000.0));
        assert_eq!(s.elapsed_ms, Some(2_100));
        assert_eq!(
            s.incidents_per_sec.map(|r| (r * 1000.0).round()),
            Some(1429.0)
        );
        assert_eq!(s.peak_rss_bytes, Some(104_857_600));
        assert_eq!(s.live_peak, Some(3));
        assert!(s.ok, "{:?}", s.problems);
        let table = s.table();
        assert!(table.contains("accepted"), "{table}");
        assert!(table.contains("✓ nothing lost"), "{table}");
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "accepted",
            "coalesced",
            "refused",
            "investigations",
            "model_turns",
            "restarts",
            "pages",
            "lost",
            "duplicates",
            "alert_to_terminal",
            "api_post",
            "api_get",
            "peak_rss_bytes",
            "incidents_per_sec",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn lost_incidents_repeated_keys_undelivered_alerts_and_the_timeout_fail_the_storm() {
        let mut o = observed();
        o.rows[1].status = Some("analyzing".into());
        o.rows.push(Row {
            id: "d".into(),
            status: None,
            created_at: None,
            updated_at: None,
        });
        o.ledger.as_mut().unwrap().push(Entry {
            action: "restart-pod".into(),
            idempotency_key: Some("a:1".into()),
            at: None,
        });
        o.undelivered = 2;
        o.timed_out = true;
        let s = Summary::of(&o);
        assert_eq!(s.lost, 2);
        assert_eq!(s.statuses["not found"], 1);
        assert_eq!(s.duplicates, Some(1));
        assert!(!s.ok);
        assert_eq!(s.problems.len(), 4, "{:?}", s.problems);
        assert!(s.table().contains("✗ 2 incident(s)"));
    }

    #[test]
    fn without_metrics_or_ledger_the_figures_are_absent_not_zero() {
        let mut o = observed();
        o.metrics_after = None;
        o.ledger = None;
        o.rss_sampled_max = None;
        o.live_sampled_max = None;
        let s = Summary::of(&o);
        assert_eq!(s.accepted, None);
        assert_eq!(s.duplicates, None);
        assert_eq!(s.peak_rss_bytes, None);
        assert_eq!(s.live_peak, None);
        assert!(s.ok);
        assert!(s.table().contains("n/a"));
    }
}
