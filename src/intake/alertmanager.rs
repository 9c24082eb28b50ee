//! Alertmanager's webhook payload (version 4), parsed at the edge: every alert of the group
//! becomes an [`AlertEvent`] and the incident it would open, or the whole payload is
//! refused with every bad field named. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;

use crate::core::alerts::{AlertEvent, AlertSource, AlertState};
use crate::core::text;
use crate::incident::{FieldError, NewIncident, NewIncidentRequest, TITLE_CHARS_MAX};

/// Most alerts in one delivery (Alertmanager's `max_alerts` is unlimited by default).
pub const ALERTS_PER_DELIVERY_MAX: usize = 1_000;
/// Longest fingerprint, in characters (Alertmanager's are 16 hex digits).
pub const FINGERPRINT_CHARS_MAX: usize = 64;
/// Longest description kept from an alert's annotations, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 4_096;

/// The payload as Alertmanager 0.25 sends it. Fields the agent does not use are accepted
/// and ignored (newer versions add some); the ones it relies on are required.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: String,
    pub receiver: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of the group.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    /// `0001-01-01T00:00:00Z` while the alert fires.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// One alert of a delivery, ready for the intake.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub event: AlertEvent,
    /// The incident it opens when no incident for its failure is open.
    pub incident: NewIncident,
}

/// The incident's severity from the alert's `severity` label: `critical` → critical,
/// `error`/`high` → high, `warning` → medium, `info`/`none` → low; absent or anything else
/// → medium.
pub fn severity(label: Option<&str>) -> &'static str {
    match label.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("critical") | Some("page") => "critical",
        Some("error") | Some("high") | Some("major") => "high",
        Some("info") | Some("none") | Some("low") => "low",
        _ => "medium",
    }
}

/// Validates a whole delivery: the version, the number of alerts, and each alert (its
/// status, fingerprint, labels and texts). Every bad field is reported at once, as
/// `alerts[i].…`; nothing of a refused delivery is recorded.
pub fn parse(hook: Webhook) -> Result<Vec<Delivered>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: String, message: String| errors.push(FieldError { field, message });
    if hook.version != "4" {
        fail(
            "version".into(),
            format!(
                "webhook version {:?} is not supported; expected \"4\" (Alertmanager 0.x)",
                text::clean(&hook.version, 16)
            ),
        );
    }
    if hook.alerts.is_empty() {
        fail("alerts".into(), "must hold at least one alert".into());
    }
    if hook.alerts.len() > ALERTS_PER_DELIVERY_MAX {
        fail(
            "alerts".into(),
            format!(
                "must hold at most {ALERTS_PER_DELIVERY_MAX} alerts; lower max_alerts in the webhook receiver"
            ),
        );
    }
    let mut delivered = Vec::with_capacity(hook.alerts.len().min(ALERTS_PER_DELIVERY_MAX));
    for (i, alert) in hook
        .alerts
        .into_iter()
        .take(ALERTS_PER_DELIVERY_MAX)
        .enumerate()
    {
        let at = |field: &str| format!("alerts[{i}].{field}");
        let state = match alert.status.as_str() {
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            other => {
                fail(
                    at("status"),
                    format!(
                        "must be firing or resolved, not {:?}",
                        text::clean(other, 32)
                    ),
                );
                None
            }
        };
        let fp = alert.fingerprint.trim();
        if fp.is_empty()
            || fp.chars().count() > FINGERPRINT_CHARS_MAX
            || !fp.chars().all(|c| c.is_ascii_alphanumeric())
        {
            fail(
                at("fingerprint"),
                format!("must be 1 to {FINGERPRINT_CHARS_MAX} letters and digits"),
            );
        }
        let Some(alertname) = alert.labels.get("alertname").cloned() else {
            fail(at("labels.alertname"), "is required".into());
            continue;
        };
        let summary = alert
            .annotations
            .get("summary")
            .map(|s| text::clean(s, TITLE_CHARS_MAX))
            .filter(|s| !s.is_empty());
        let place = ["service", "pod", "namespace"]
            .iter()
            .find_map(|k| alert.labels.get(*k))
            .map(|p| format!(" for {}", text::clean(p, 100)))
            .unwrap_or_default();
        let title =
            summary.unwrap_or_else(|| text::clean(&format!("{alertname}{place}"), TITLE_CHARS_MAX));
        let request = NewIncidentRequest {
            title: Some(title),
            description: alert
                .annotations
                .get("description")
                .map(|d| text::clean(d, DESCRIPTION_CHARS_MAX)),
            severity: Some(severity(alert.labels.get("severity").map(String::as_str)).into()),
            alert_type: Some(alertname.clone()),
            service: None,
            labels: Some(alert.labels.clone()),
            coalesce: None,
        };
        let incident = match NewIncident::parse(request, "alertmanager") {
            Ok(incident) => incident,
            Err(bad) => {
                for e in bad {
                    fail(at(&e.field), e.message);
                }
                continue;
            }
        };
        let Some(state) = state else { continue };
        // Alertmanager sends the zero time (year 1) as the end of an alert still firing.
        let ends_at = alert.ends_at.filter(|t| t.year() > 1);
        delivered.push(Delivered {
            event: AlertEvent {
                source: AlertSource::Alertmanager,
                fingerprint: fp.to_ascii_lowercase(),
                alertname,
                labels: alert.labels,
                state,
                starts_at: Some(alert.starts_at),
                ends_at: if state == AlertState::Resolved {
                    ends_at
                } else {
                    None
                },
            },
            incident,
        });
    }
    if errors.is_empty() {
        Ok(delivered)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Severity;

    /// Real requests captured from Alertmanager 0.25 (see `tests/fixtures/alertmanager-0.25`).
    fn fixture(name: &str) -> Webhook {
        let path = format!(
            "{}/tests/fixtures/alertmanager-0.25/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let whole: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(whole["headers"]["User-Agent"], "Alertmanager/0.25.0");
        serde_json::from_value(whole["body"].clone()).unwrap()
    }

    #[test]
    fn the_captured_payloads_parse_into_one_event_each() {
        let oom = parse(fixture("003-KubePodOOMKilled-firing")).unwrap();
        assert_eq!(oom.len(), 1);
        let e = &oom[0].event;
        assert_eq!(e.fingerprint, "76251d4043ef079b");
        assert_eq!(e.alertname, "KubePodOOMKilled");
        assert_eq!(e.state, AlertState::Firing);
        assert_eq!(e.ends_at, None, "the zero time means still firing");
        assert_eq!(e.labels["pod"], "checkout-api-jw7m9-xx6v2");
        let i = &oom[0].incident;
        assert_eq!(i.title, "Pod shop/checkout-api-jw7m9-xx6v2 was OOMKilled");
        assert_eq!(i.severity, Severity::Critical);
        assert_eq!(i.alert_type.as_deref(), Some("KubePodOOMKilled"));
        assert_eq!(i.source, "alertmanager");

        let resolved = parse(fixture("005-KubePodOOMKilled-resolved")).unwrap();
        let r = &resolved[0].event;
        assert_eq!(r.state, AlertState::Resolved);
        assert_eq!(r.fingerprint, e.fingerprint);
        assert_eq!(r.starts_at, e.starts_at, "the same firing, now resolved");
        assert!(r.ends_at.is_some());

        for name in ["001-PostgresqlDown-firing", "007-PostgresqlDown-resolved"] {
            let db = parse(fixture(name)).unwrap();
            assert_eq!(db[0].event.labels["service"], "payments-db");
            assert_eq!(db[0].incident.severity, Severity::Critical);
        }
    }

    #[test]
    fn a_bad_delivery_names_every_bad_field_and_keeps_nothing() {
        let mut hook = fixture("003-KubePodOOMKilled-firing");
        hook.version = "5".into();
        let mut second = fixture("001-PostgresqlDown-firing").alerts.remove(0);
        second.status = "pending".into();
        second.fingerprint = "not hex!".into();
        second.labels.insert("pod".into(), "db\u{202E}0".into());
        let mut third = fixture("001-PostgresqlDown-firing").alerts.remove(0);
        third.labels.remove("alertname");
        hook.alerts.push(second);
        hook.alerts.push(third);
        let fields: Vec<String> = parse(hook)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "version",
            "alerts[1].status",
            "alerts[1].fingerprint",
            "alerts[1].labels.pod",
            "alerts[2].labels.alertname",
        ] {
            assert!(fields.iter().any(|g| g == f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn severities_map_to_the_incidents_and_texts_are_cleaned() {
        assert_eq!(severity(Some("critical")), "critical");
        assert_eq!(severity(Some("warning")), "medium");
        assert_eq!(severity(Some("info")), "low");
        assert_eq!(severity(Some("none")), "low");
        assert_eq!(severity(None), "medium");
        assert_eq!(severity(Some("whatever")), "medium");

        let mut hook = fixture("003-KubePodOOMKilled-firing");
        hook.alerts[0]
            .annotations
            .insert("summary".into(), "line one\nline\u{202E} two".into());
        hook.alerts[0].annotations.remove("description");
        hook.alerts[0].labels.remove("severity");
        let d = &parse(hook).unwrap()[0];
        assert_eq!(d.incident.title, "line one line two");
        assert_eq!(d.incident.severity, Severity::Medium);
        assert_eq!(d.incident.description, None);

        let mut untitled = fixture("001-PostgresqlDown-firing");
        untitled.alerts[0].annotations.clear();
        assert_eq!(
            parse(untitled).unwrap()[0].incident.title,
            "PostgresqlDown for payments-db"
        );
    }

    #[test]
    fn empty_and_oversized_deliveries_are_refused() {
        let mut empty = fixture("001-PostgresqlDown-firing");
        empty.alerts.clear();
        assert!(parse(empty).is_err());
        let mut big = fixture("001-PostgresqlDown-firing");
        let one = big.alerts.remove(0);
        for i in 0..=ALERTS_PER_DELIVERY_MAX {
            let mut a = one.clone();
            a.fingerprint = format!("{i:016x}");
            big.alerts.push(a);
        }
        let errors = parse(big).unwrap_err();
        assert_eq!(errors[0].field, "alerts");
    }
}
