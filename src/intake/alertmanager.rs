//! Alertmanager's webhook payload (version 4), parsed at the edge: every alert of the group
//! becomes an [`AlertEvent`] and the incident it would open, or the whole payload is
//! refused with every bad field named. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;

use crate::core::alerts::{AlertEvent, AlertSource, AlertState};
use crate::core::text;
use crate::incident::{
    FieldError, LABEL_VALUE_BYTES_MAX, NewIncident, NewIncidentRequest, TITLE_CHARS_MAX,
};

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

/// An alert of a delivery that cannot be taken, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Refused {
    pub index: usize,
    pub fingerprint: String,
    pub errors: Vec<FieldError>,
}

/// A delivery as parsed: the alerts to take, and the ones refused alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub delivered: Vec<Delivered>,
    pub refused: Vec<Refused>,
}

/// Validates a delivery. A broken envelope (version, number of alerts) refuses it whole,
/// every bad field named. An alert that cannot be taken (no alert name, a bad status,
/// fingerprint or label name, too many labels) is refused alone, with its reasons:
/// Alertmanager does not retry a 4xx, so refusing the group would lose its good alerts.
/// Label values are cleaned, not refused: Prometheus allows any text in them (a newline,
/// say), and they are shown to people.
pub fn parse(hook: Webhook) -> Result<Parsed, Vec<FieldError>> {
    let mut envelope = Vec::new();
    if hook.version != "4" {
        envelope.push(FieldError {
            field: "version".into(),
            message: format!(
                "webhook version {:?} is not supported; expected \"4\" (Alertmanager 0.x)",
                text::clean(&hook.version, 16)
            ),
        });
    }
    if hook.alerts.is_empty() {
        envelope.push(FieldError {
            field: "alerts".into(),
            message: "must hold at least one alert".into(),
        });
    }
    if hook.alerts.len() > ALERTS_PER_DELIVERY_MAX {
        envelope.push(FieldError {
            field: "alerts".into(),
            message: format!(
                "must hold at most {ALERTS_PER_DELIVERY_MAX} alerts; lower max_alerts in the webhook receiver"
            ),
        });
    }
    if !envelope.is_empty() {
        return Err(envelope);
    }
    let mut parsed = Parsed {
        delivered: Vec::with_capacity(hook.alerts.len()),
        refused: Vec::new(),
    };
    for (i, alert) in hook.alerts.into_iter().enumerate() {
        let fingerprint = text::clean(&alert.fingerprint, FINGERPRINT_CHARS_MAX);
        match parse_alert(i, alert) {
            Ok(d) => parsed.delivered.push(d),
            Err(errors) => parsed.refused.push(Refused {
                index: i,
                fingerprint,
                errors,
            }),
        }
    }
    if parsed.delivered.is_empty() {
        return Err(parsed.refused.into_iter().flat_map(|r| r.errors).collect());
    }
    Ok(parsed)
}

/// A label value as people may see it: one line of visible text within the bound.
fn clean_value(value: &str) -> String {
    if value.len() <= LABEL_VALUE_BYTES_MAX && text::first_hidden(value).is_none() {
        return value.to_owned();
    }
    let mut cleaned = text::clean(value, LABEL_VALUE_BYTES_MAX);
    while cleaned.len() > LABEL_VALUE_BYTES_MAX {
        cleaned.pop();
    }
    cleaned
}

fn parse_alert(i: usize, mut alert: WebhookAlert) -> Result<Delivered, Vec<FieldError>> {
    let mut errors = Vec::new();
    let at = |field: &str| format!("alerts[{i}].{field}");
    for value in alert.labels.values_mut() {
        *value = clean_value(value);
    }
    let state = match alert.status.as_str() {
        "firing" => Some(AlertState::Firing),
        "resolved" => Some(AlertState::Resolved),
        other => {
            errors.push(FieldError {
                field: at("status"),
                message: format!(
                    "must be firing or resolved, not {:?}",
                    text::clean(other, 32)
                ),
            });
            None
        }
    };
    let fp = alert.fingerprint.trim().to_ascii_lowercase();
    if fp.is_empty()
        || fp.chars().count() > FINGERPRINT_CHARS_MAX
        || !fp.chars().all(|c| c.is_ascii_alphanumeric())
    {
        errors.push(FieldError {
            field: at("fingerprint"),
            message: format!("must be 1 to {FINGERPRINT_CHARS_MAX} letters and digits"),
        });
    }
    let Some(alertname) = alert.labels.get("alertname").cloned() else {
        errors.push(FieldError {
            field: at("labels.alertname"),
            message: "is required".into(),
        });
        return Err(errors);
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
    let incident = NewIncident::parse(request, "alertmanager").map_err(|bad| {
        errors.extend(bad.into_iter().map(|e| FieldError {
            field: at(&e.field),
            message: e.message,
        }));
        errors.clone()
    })?;
    let Some(state) = state.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    // Alertmanager sends the zero time (year 1) as the end of an alert still firing.
    let ends_at = alert.ends_at.filter(|t| t.year() > 1);
    Ok(Delivered {
        event: AlertEvent {
            source: AlertSource::Alertmanager,
            fingerprint: fp,
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
    })
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
        let oom = parse(fixture("003-KubePodOOMKilled-firing"))
            .unwrap()
            .delivered;
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

        let resolved = parse(fixture("005-KubePodOOMKilled-resolved"))
            .unwrap()
            .delivered;
        let r = &resolved[0].event;
        assert_eq!(r.state, AlertState::Resolved);
        assert_eq!(r.fingerprint, e.fingerprint);
        assert_eq!(r.starts_at, e.starts_at, "the same firing, now resolved");
        assert!(r.ends_at.is_some());

        for name in ["001-PostgresqlDown-firing", "007-PostgresqlDown-resolved"] {
            let db = parse(fixture(name)).unwrap().delivered;
            assert_eq!(db[0].event.labels["service"], "payments-db");
            assert_eq!(db[0].incident.severity, Severity::Critical);
        }
    }

    #[test]
    fn a_broken_envelope_is_refused_whole_and_a_bad_alert_alone() {
        let mut hook = fixture("003-KubePodOOMKilled-firing");
        hook.version = "5".into();
        let fields: Vec<String> = parse(hook)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["version"]);

        let mut hook = fixture("003-KubePodOOMKilled-firing");
        let mut second = fixture("001-PostgresqlDown-firing").alerts.remove(0);
        second.status = "pending".into();
        second.fingerprint = "not hex!".into();
        let mut third = fixture("001-PostgresqlDown-firing").alerts.remove(0);
        third.labels.remove("alertname");
        let mut fourth = fixture("001-PostgresqlDown-firing").alerts.remove(0);
        fourth
            .labels
            .insert("message".into(), "line one\nline \u{202E}two".into());
        hook.alerts.extend([second, third, fourth]);
        let parsed = parse(hook).unwrap();
        let taken: Vec<&str> = parsed
            .delivered
            .iter()
            .map(|d| d.event.alertname.as_str())
            .collect();
        assert_eq!(taken, ["KubePodOOMKilled", "PostgresqlDown"]);
        assert_eq!(
            parsed.delivered[1].event.labels["message"], "line one line two",
            "a label value with a newline or a bidi control is cleaned, not refused"
        );
        let refused: Vec<(usize, Vec<String>)> = parsed
            .refused
            .iter()
            .map(|r| (r.index, r.errors.iter().map(|e| e.field.clone()).collect()))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    1,
                    vec!["alerts[1].status".into(), "alerts[1].fingerprint".into()]
                ),
                (2, vec!["alerts[2].labels.alertname".into()]),
            ]
        );

        // Nothing to take at all: the delivery is refused with every reason.
        let mut none = fixture("001-PostgresqlDown-firing");
        none.alerts[0].labels.remove("alertname");
        assert!(parse(none).is_err());
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
        let d = &parse(hook).unwrap().delivered[0];
        assert_eq!(d.incident.title, "line one line two");
        assert_eq!(d.incident.severity, Severity::Medium);
        assert_eq!(d.incident.description, None);

        let mut untitled = fixture("001-PostgresqlDown-firing");
        untitled.alerts[0].annotations.clear();
        assert_eq!(
            parse(untitled).unwrap().delivered[0].incident.title,
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
