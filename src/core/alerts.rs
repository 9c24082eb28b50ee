//! Alerts and the incidents they belong to, pure: one failure, one incident.
//!
//! An alert arrives as an [`AlertEvent`] (from Alertmanager's webhook, or a report through
//! `POST /incidents`). Alerts that describe the same failure share a [`failure_key`]: the
//! mapped service and failure class when the alert routes to a service, else the alert's own
//! identity. While an incident for that key is open, an event joins it: [`apply`] records
//! it on the incident's [`Alerts`] and says what changed. An exact repeat (Alertmanager
//! re-sends the whole group every `group_interval`, and retries failed deliveries) changes
//! nothing. [`AlertsView`] is what the agent's decisions read: which alerts still fire, and
//! whether one fired again after the agent's fix.
//!
//! Times: `starts_at`/`ends_at` are the alerting system's own; every `at` is the agent's
//! clock when the event was received, which is what is compared with the agent's own
//! actions (a fix verified at T, an alert firing again after T).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{TimelineEntry, TimelineKind};

/// Distinct alerts recorded whole (labels and history) on one incident.
pub const ALERTS_DETAILED_MAX: usize = 100;
/// Distinct alerts tracked on one incident: past [`ALERTS_DETAILED_MAX`] an alert is kept
/// without its labels and with its latest changes only, so that it still holds the incident
/// open while it fires and its repeats are still recognised; past this, an alert is not
/// recorded at all ([`Change::Dropped`]).
pub const ALERTS_TRACKED_MAX: usize = 1_000;
/// State changes kept per alert (the first and the latest ones).
pub const HISTORY_PER_ALERT_MAX: usize = 16;
/// State changes kept per alert past [`ALERTS_DETAILED_MAX`].
pub const HISTORY_COMPACT_MAX: usize = 2;

/// Where an alert came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// Alertmanager's webhook: alerts with a fingerprint that fire and resolve.
    Alertmanager,
    /// `POST /incidents`: a report, with no lifecycle of its own.
    Api,
}

/// What an alert says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
    /// A report through the API: it happened; nothing will say it stopped.
    Reported,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Reported => "reported",
        }
    }
}

/// One alert as delivered, validated at the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    pub source: AlertSource,
    /// Alertmanager's fingerprint (a hash of the labels); for a report, the hash of its
    /// alert type, service and labels ([`report_fingerprint`]).
    pub fingerprint: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// When the alerting system says it began firing (`None` for a report).
    pub starts_at: Option<DateTime<Utc>>,
    /// When it says it stopped (resolved alerts only).
    pub ends_at: Option<DateTime<Utc>>,
}

/// One received change of an alert, in the agent's clock: a line of the incident's story.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertChange {
    pub at: DateTime<Utc>,
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
}

/// One alert of an incident and its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub source: AlertSource,
    pub fingerprint: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// When the agent received the firing that is current (the agent's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<DateTime<Utc>>,
    /// Reports of it through the API (1 for an alert from Alertmanager).
    pub reports: u32,
    pub history: Vec<AlertChange>,
}

/// The alerts of one incident (the `alerts` column).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alerts {
    pub records: Vec<AlertRecord>,
}

/// What an event did to an incident's alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new alert joined.
    Joined,
    /// A firing alert resolved.
    Resolved,
    /// An alert fired again (a new `starts_at`) after it had resolved or fired before.
    Refired,
    /// A report counted once more.
    Reported,
    /// An exact repeat, or an older state delivered late: nothing changed.
    Unchanged,
    /// A new alert past [`ALERTS_TRACKED_MAX`]: not recorded.
    Dropped,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Joined => "joined",
            Change::Resolved => "resolved",
            Change::Refired => "refired",
            Change::Reported => "reported",
            Change::Unchanged => "unchanged",
            Change::Dropped => "dropped",
        }
    }
}

/// The failure an alert describes: `{service}/{class}` when it routes to a service (so a
/// generic `KubePodOOMKilled` and a specific `CheckoutApiOOMKilled` for checkout-api are one
/// failure), else the alert's own identity. `None`: a report with no alert type, which is
/// never coalesced.
pub fn failure_key(route: Option<(&str, &str)>, event: &AlertEvent) -> Option<String> {
    match (route, event.source) {
        (Some((service, class)), _) => Some(format!("{service}/{class}")),
        (None, AlertSource::Alertmanager) => Some(format!("alertmanager/{}", event.fingerprint)),
        (None, AlertSource::Api) if !event.alertname.is_empty() => {
            Some(format!("api/{}", event.fingerprint))
        }
        (None, AlertSource::Api) => None,
    }
}

/// The identity of a report through the API: the SHA-256 of its alert type, service and
/// labels, first 16 hex digits (the length of Alertmanager's fingerprints).
pub fn report_fingerprint(
    alert_type: &str,
    service: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::json!([alert_type, service, labels]).to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn push_history(record: &mut AlertRecord, change: AlertChange, max: usize) {
    if record.history.len() >= max {
        // Keep the first change (how it began) and the latest ones.
        record.history.remove(1.min(record.history.len() - 1));
    }
    record.history.push(change);
}

/// Records `event` on an incident's alerts at `now` (the agent's clock).
pub fn apply(alerts: &mut Alerts, event: &AlertEvent, now: DateTime<Utc>) -> Change {
    let change = |state| AlertChange {
        at: now,
        state,
        starts_at: event.starts_at,
    };
    let position = alerts
        .records
        .iter()
        .position(|r| r.source == event.source && r.fingerprint == event.fingerprint);
    let Some(index) = position else {
        if alerts.records.len() >= ALERTS_TRACKED_MAX {
            return Change::Dropped;
        }
        let detailed = alerts.records.len() < ALERTS_DETAILED_MAX;
        alerts.records.push(AlertRecord {
            source: event.source,
            fingerprint: event.fingerprint.clone(),
            alertname: event.alertname.clone(),
            labels: if detailed {
                event.labels.clone()
            } else {
                BTreeMap::new()
            },
            state: event.state,
            starts_at: event.starts_at,
            ends_at: event.ends_at,
            firing_since: (event.state == AlertState::Firing).then_some(now),
            reports: 1,
            history: vec![change(event.state)],
        });
        return Change::Joined;
    };
    let max = if index < ALERTS_DETAILED_MAX {
        HISTORY_PER_ALERT_MAX
    } else {
        HISTORY_COMPACT_MAX
    };
    let record = &mut alerts.records[index];
    if event.source == AlertSource::Api {
        record.reports = record.reports.saturating_add(1);
        push_history(record, change(AlertState::Reported), max);
        return Change::Reported;
    }
    let (Some(new_start), old_start) = (event.starts_at, record.starts_at) else {
        return Change::Unchanged;
    };
    match old_start.map(|old| new_start.cmp(&old)) {
        // Older than what is recorded: a late redelivery.
        Some(std::cmp::Ordering::Less) => Change::Unchanged,
        Some(std::cmp::Ordering::Equal) => match (record.state, event.state) {
            (AlertState::Firing, AlertState::Resolved) => {
                record.state = AlertState::Resolved;
                record.ends_at = event.ends_at;
                push_history(record, change(AlertState::Resolved), max);
                Change::Resolved
            }
            // The same state again, or a firing delivered after its resolution.
            _ => Change::Unchanged,
        },
        // A new firing of the same alert (same labels, new start).
        None | Some(std::cmp::Ordering::Greater) => {
            record.starts_at = Some(new_start);
            record.state = event.state;
            record.ends_at = event.ends_at;
            record.firing_since = (event.state == AlertState::Firing).then_some(now);
            push_history(record, change(event.state), max);
            if event.state == AlertState::Firing {
                Change::Refired
            } else {
                Change::Resolved
            }
        }
    }
}

/// What the agent's decisions read of an incident's alerts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertsView {
    /// Alerts from Alertmanager: the ones that can resolve.
    pub tracked: usize,
    /// Those still firing, by name.
    pub firing: Vec<String>,
    /// Those whose current firing began and was received after the given instant (the
    /// agent's fix): the failure came back.
    pub fired_again: Vec<String>,
    /// When the first of those was received: the failure came back then.
    pub fired_again_at: Option<DateTime<Utc>>,
}

impl AlertsView {
    /// Alerts were tracked and none fires any more.
    pub fn all_resolved(&self) -> bool {
        self.tracked > 0 && self.firing.is_empty()
    }
}

/// The alerts as the decisions see them; `fixed_at` is when the agent's fix was verified.
pub fn view(alerts: &Alerts, fixed_at: Option<DateTime<Utc>>) -> AlertsView {
    let tracked: Vec<&AlertRecord> = alerts
        .records
        .iter()
        .filter(|r| r.source == AlertSource::Alertmanager)
        .collect();
    let firing: Vec<&AlertRecord> = tracked
        .iter()
        .copied()
        .filter(|r| r.state == AlertState::Firing)
        .collect();
    let name = |r: &&AlertRecord| format!("{} ({})", r.alertname, r.fingerprint);
    // Fired again: a firing received after the fix, of an alert the incident held before it
    // (a new start of a known alert), or of a new alert that began after the fix as
    // Alertmanager tells it. A new alert of the failure that began before the fix and
    // arrives late (Alertmanager sends a group's alerts over several notifications) still
    // fires: it is waited for, and must resolve within the wait like the others. A start
    // that Alertmanager's clock puts before the fix can only delay the page until the wait
    // runs out, never close the incident.
    let again: Vec<&AlertRecord> = firing
        .iter()
        .copied()
        .filter(|r| {
            fixed_at.is_some_and(|fixed| {
                let joined = r.history.first().map(|h| h.at);
                r.firing_since.is_some_and(|since| since > fixed)
                    && (joined.is_some_and(|j| j <= fixed)
                        || r.starts_at.is_none_or(|start| start > fixed))
            })
        })
        .collect();
    AlertsView {
        tracked: tracked.len(),
        firing: firing.iter().map(name).collect(),
        fired_again: again.iter().map(name).collect(),
        fired_again_at: again.iter().filter_map(|r| r.firing_since).min(),
    }
}

/// One timeline line per received change of every alert, for reading the incident's story
/// (the alerts are the intake's to write; the agent's timeline is the actor's).
pub fn timeline(alerts: &Alerts, trace_id: &str) -> Vec<TimelineEntry> {
    let mut lines = Vec::new();
    for r in &alerts.records {
        for (i, h) in r.history.iter().enumerate() {
            let what = match (i, h.state) {
                (0, AlertState::Reported) => "reported",
                (0, AlertState::Firing) => "firing",
                (_, AlertState::Reported) => "reported again",
                (_, AlertState::Firing) => "firing again",
                (_, AlertState::Resolved) => "resolved",
            };
            lines.push(TimelineEntry {
                at: h.at,
                trace_id: trace_id.to_owned(),
                kind: TimelineKind::Alert,
                message: format!(
                    "alert {} {what} (from {}, fingerprint {})",
                    r.alertname,
                    match r.source {
                        AlertSource::Alertmanager => "alertmanager",
                        AlertSource::Api => "the API",
                    },
                    r.fingerprint
                ),
                detail: serde_json::json!({
                    "fingerprint": r.fingerprint,
                    "state": h.state,
                    "starts_at": h.starts_at,
                }),
            });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn am(fp: &str, state: AlertState, starts: i64) -> AlertEvent {
        AlertEvent {
            source: AlertSource::Alertmanager,
            fingerprint: fp.into(),
            alertname: "KubePodOOMKilled".into(),
            labels: [("pod".to_owned(), "p-1".to_owned())].into(),
            state,
            starts_at: Some(t(starts)),
            ends_at: (state == AlertState::Resolved).then(|| t(starts + 60)),
        }
    }

    #[test]
    fn a_repeated_or_redelivered_alert_changes_nothing() {
        let mut a = Alerts::default();
        let firing = am("fp1", AlertState::Firing, 0);
        assert_eq!(apply(&mut a, &firing, t(1)), Change::Joined);
        let before = a.clone();
        for later in [2, 30, 300] {
            assert_eq!(apply(&mut a, &firing, t(later)), Change::Unchanged);
        }
        assert_eq!(a, before, "an exact repeat writes nothing");

        let resolved = am("fp1", AlertState::Resolved, 0);
        assert_eq!(apply(&mut a, &resolved, t(400)), Change::Resolved);
        // A retried firing delivery that arrives after the resolution is stale.
        assert_eq!(apply(&mut a, &firing, t(401)), Change::Unchanged);
        assert_eq!(apply(&mut a, &resolved, t(402)), Change::Unchanged);
        assert_eq!(a.records[0].state, AlertState::Resolved);
        assert_eq!(a.records[0].history.len(), 2);
    }

    #[test]
    fn a_new_start_is_a_new_firing_and_an_older_one_is_ignored() {
        let mut a = Alerts::default();
        apply(&mut a, &am("fp1", AlertState::Firing, 100), t(101));
        assert_eq!(
            apply(&mut a, &am("fp1", AlertState::Firing, 50), t(102)),
            Change::Unchanged
        );
        apply(&mut a, &am("fp1", AlertState::Resolved, 100), t(200));
        assert_eq!(
            apply(&mut a, &am("fp1", AlertState::Firing, 300), t(301)),
            Change::Refired
        );
        let v = view(&a, Some(t(250)));
        assert_eq!(v.firing.len(), 1);
        assert_eq!(v.fired_again.len(), 1, "it fired again after the fix");
        assert!(view(&a, Some(t(400))).fired_again.is_empty());
    }

    #[test]
    fn an_alert_that_began_before_the_fix_and_arrives_after_it_still_fires_but_not_again() {
        // Alertmanager sends fp2 of the same group in a later notification: it began at
        // 100, before the fix at 250, and is received at 300.
        let mut a = Alerts::default();
        apply(&mut a, &am("fp1", AlertState::Firing, 100), t(101));
        assert_eq!(
            apply(&mut a, &am("fp2", AlertState::Firing, 100), t(300)),
            Change::Joined
        );
        let v = view(&a, Some(t(250)));
        assert_eq!(
            v.firing.len(),
            2,
            "both still fire: the incident waits for them"
        );
        assert!(v.fired_again.is_empty(), "{v:?}");
        // One that began after the fix did come back, whenever it arrives.
        apply(&mut a, &am("fp3", AlertState::Firing, 260), t(300));
        apply(&mut a, &am("fp4", AlertState::Firing, 280), t(310));
        let v = view(&a, Some(t(250)));
        assert_eq!(v.fired_again.len(), 2, "{v:?}");
        assert_eq!(v.fired_again_at, Some(t(300)), "the first received");
    }

    #[test]
    fn all_resolved_needs_tracked_alerts_and_reports_never_fire() {
        let mut a = Alerts::default();
        let report = AlertEvent {
            source: AlertSource::Api,
            fingerprint: report_fingerprint("X", Some("svc"), &BTreeMap::new()),
            alertname: "X".into(),
            labels: BTreeMap::new(),
            state: AlertState::Reported,
            starts_at: None,
            ends_at: None,
        };
        assert_eq!(apply(&mut a, &report, t(0)), Change::Joined);
        assert_eq!(apply(&mut a, &report, t(1)), Change::Reported);
        assert_eq!(a.records[0].reports, 2);
        let v = view(&a, None);
        assert_eq!(v.tracked, 0);
        assert!(!v.all_resolved(), "reports alone never close an incident");

        apply(&mut a, &am("fp1", AlertState::Firing, 0), t(2));
        apply(&mut a, &am("fp2", AlertState::Firing, 0), t(2));
        apply(&mut a, &am("fp1", AlertState::Resolved, 0), t(3));
        assert!(!view(&a, None).all_resolved());
        apply(&mut a, &am("fp2", AlertState::Resolved, 0), t(4));
        assert!(view(&a, None).all_resolved());
    }

    #[test]
    fn the_alerts_and_their_history_are_bounded_and_repeats_past_the_detail_still_recognised() {
        let mut a = Alerts::default();
        for i in 0..(ALERTS_TRACKED_MAX + 7) {
            let got = apply(&mut a, &am(&format!("fp{i}"), AlertState::Firing, 0), t(0));
            let want = if i < ALERTS_TRACKED_MAX {
                Change::Joined
            } else {
                Change::Dropped
            };
            assert_eq!(got, want, "alert {i}");
        }
        assert_eq!(a.records.len(), ALERTS_TRACKED_MAX);
        assert!(a.records[0].labels.contains_key("pod"));
        assert!(
            a.records[ALERTS_DETAILED_MAX].labels.is_empty(),
            "kept compact"
        );
        // A repeat of a compact alert is recognised, and it still holds the incident open.
        let late = format!("fp{}", ALERTS_DETAILED_MAX + 5);
        assert_eq!(
            apply(&mut a, &am(&late, AlertState::Firing, 0), t(1)),
            Change::Unchanged
        );
        assert_eq!(view(&a, None).firing.len(), ALERTS_TRACKED_MAX);
        for i in 0..10 {
            apply(
                &mut a,
                &am(&late, AlertState::Resolved, i * 10),
                t(i * 10 + 5),
            );
            apply(
                &mut a,
                &am(&late, AlertState::Firing, i * 10 + 10),
                t(i * 10 + 10),
            );
        }
        let compact = a.records.iter().find(|r| r.fingerprint == late).unwrap();
        assert_eq!(compact.history.len(), HISTORY_COMPACT_MAX);

        let mut one = Alerts::default();
        for i in 0..100 {
            apply(&mut one, &am("fp", AlertState::Firing, i * 10), t(i * 10));
            apply(
                &mut one,
                &am("fp", AlertState::Resolved, i * 10),
                t(i * 10 + 5),
            );
        }
        let h = &one.records[0].history;
        assert_eq!(h.len(), HISTORY_PER_ALERT_MAX);
        assert_eq!(h[0].at, t(0), "how it began is kept");
        assert_eq!(h.last().unwrap().at, t(995));
    }

    #[test]
    fn failure_keys_name_the_failure_not_the_alert() {
        let generic = am("aaaa", AlertState::Firing, 0);
        let mut specific = am("bbbb", AlertState::Firing, 0);
        specific.alertname = "CheckoutApiOOMKilled".into();
        let route = Some(("checkout-api", "oom_killed"));
        assert_eq!(
            failure_key(route, &generic),
            failure_key(route, &specific),
            "two alert names, one failure"
        );
        assert_eq!(
            failure_key(None, &generic).as_deref(),
            Some("alertmanager/aaaa")
        );
        let mut anonymous = generic.clone();
        anonymous.source = AlertSource::Api;
        anonymous.alertname = String::new();
        assert_eq!(failure_key(None, &anonymous), None);
        let labels: BTreeMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        assert_eq!(
            report_fingerprint("X", Some("s"), &labels),
            report_fingerprint("X", Some("s"), &labels.clone())
        );
        assert_ne!(
            report_fingerprint("X", Some("s"), &labels),
            report_fingerprint("X", None, &labels)
        );
        assert_eq!(report_fingerprint("X", None, &labels).len(), 16);
    }

    #[test]
    fn every_change_is_one_timeline_line() {
        let mut a = Alerts::default();
        apply(&mut a, &am("fp1", AlertState::Firing, 0), t(1));
        apply(&mut a, &am("fp1", AlertState::Firing, 0), t(2));
        apply(&mut a, &am("fp1", AlertState::Resolved, 0), t(3));
        let lines = timeline(&a, "trace");
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].message.contains("resolved"),
            "{}",
            lines[1].message
        );
        assert_eq!(lines[0].kind, TimelineKind::Alert);
    }
}
