//! The service catalog: which service an alert type belongs to, and each service's runbook.
//! Data, not code: `data/catalog.toml` and `data/runbooks/*.md` (Markdown with a TOML header
//! between `+++` lines). Loading validates everything a reasoner will rely on, so a broken
//! file fails at start-up with its name, not in the middle of an incident. Pure: no IO here.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The six tools of the three servers: the only names a runbook may refer to.
pub const TOOLS: [&str; 6] = [
    "map-alert-to-service",
    "get-runbook",
    "get-logs",
    "get-metrics",
    "restart-pod",
    "send-notification",
];

/// What kind of workload a service is. Databases and other stateful services are never
/// restarted autonomously.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Stateless,
    Stateful,
    Database,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Stateless => "stateless",
            Tier::Stateful => "stateful",
            Tier::Database => "database",
        }
    }
}

/// A service as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub namespace: String,
    pub tier: Tier,
    /// Team that owns the service and is notified.
    pub owner: String,
    /// Name of the service's runbook (a file in `runbooks/`).
    pub runbook: String,
    #[serde(default)]
    pub description: String,
}

/// One alert type and the service it is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertEntry {
    /// The alert name as the alerting system sends it, e.g. `CheckoutApiOOMKilled`.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// Other names the same alert goes by.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub service: String,
    #[serde(default)]
    pub summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    services: BTreeMap<String, ServiceEntry>,
    #[serde(rename = "alert")]
    alerts: Vec<AlertEntry>,
}

/// How far the agent may go on its own with a remediation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// The agent may act without asking.
    Auto,
    /// A human must approve first.
    Approval,
    /// Never done by the agent.
    Never,
}

/// A diagnostic the runbook asks to run before concluding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diagnostic {
    /// `get-logs` or `get-metrics`.
    pub tool: String,
    /// For `get-logs`: how far back to read, e.g. `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<String>,
    /// Why this diagnostic is run.
    pub why: String,
}

/// What a signal looks for in the diagnostics' results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum Matcher {
    /// A pod's last termination reason equals `equals` (e.g. `OOMKilled`).
    PodTerminationReason { equals: String },
    /// A pod is in phase `equals` (e.g. `CrashLoopBackOff`).
    PodPhase { equals: String },
    /// A pod is running but not ready.
    PodNotReady,
    /// A pod uses at least `ratio` of its memory limit.
    MemoryRatioAtLeast { ratio: f64 },
    /// A pod's disk is at least `ratio` full.
    DiskRatioAtLeast { ratio: f64 },
    /// The service's error rate is at least `rate` (0–1).
    ErrorRateAtLeast { rate: f64 },
    /// The service's p99 latency is at least `ms`.
    LatencyP99AtLeastMs { ms: u64 },
    /// A log line contains `text` (case-insensitive).
    LogContains { text: String },
}

/// An observation that, when matched, identifies a root cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
// No `deny_unknown_fields`: serde does not support it together with `flatten`.
pub struct Signal {
    pub id: String,
    #[serde(flatten)]
    pub matcher: Matcher,
    /// The root cause this signal points to.
    pub root_cause: String,
    /// How sure the runbook is when this signal matches (0–1).
    pub confidence: f64,
    /// Ids of the remediation steps this root cause calls for, in order.
    #[serde(default)]
    pub remediation: Vec<String>,
}

/// A condition over *platform* facts of the target pod (what the orchestrator reports:
/// phase, readiness, last termination and its time, container start), never over log text
/// or a model's words. A `restart-pod` step runs on the agent's own authority only when its
/// condition holds for that very pod, on an observation newer than the step's `within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The pod's last container ended `OOMKilled` within the window, and the pod has been
    /// in that failure since (its current container started after the kill).
    OomKilled,
    /// The pod is in `CrashLoopBackOff` and its last container ended within the window.
    CrashLooping,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::OomKilled => "oom_killed",
            Condition::CrashLooping => "crash_looping",
        }
    }
}

/// The evidence window when a runbook or step names none.
pub const EVIDENCE_WINDOW_DEFAULT: &str = "15m";

/// One remediation step and how autonomous it may be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemediationStep {
    pub id: String,
    /// `restart-pod` or `send-notification`.
    pub tool: String,
    pub autonomy: Autonomy,
    /// For `restart-pod`: which pod, `matched-pod` (the pod a signal matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For a `restart-pod` step with `autonomy = "auto"` (required there): the platform
    /// condition that must hold for the target pod. A step without one is never run alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// How recent the observation behind `when` must be, as a look-back (`15m`); the
    /// runbook's `window` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    pub description: String,
}

/// The machine-readable part of a runbook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookSpec {
    pub service: String,
    pub title: String,
    /// How old an observation may be and still describe the current failure, as a look-back
    /// (`15m`, the default). Older termination times and log lines are stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
    pub signals: Vec<Signal>,
    pub remediation: Vec<RemediationStep>,
}

/// A runbook: its Markdown text and its machine-readable header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Runbook {
    pub name: String,
    pub spec: RunbookSpec,
    pub text: String,
}

/// A catalog or runbook file that does not hold what it must.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct CatalogError {
    pub file: String,
    pub reason: String,
}

fn err(file: &str, reason: impl fmt::Display) -> CatalogError {
    CatalogError {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

/// What `map-alert-to-service` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertMapping {
    pub alert_type: String,
    pub service: String,
    pub namespace: String,
    pub tier: Tier,
    pub owner: String,
    pub runbook: String,
    pub summary: String,
}

/// The loaded, validated catalog and runbooks.
#[derive(Clone, Debug)]
pub struct Catalog {
    services: BTreeMap<String, ServiceEntry>,
    /// Lower-cased alert type or alias → index into `alerts`.
    alert_index: BTreeMap<String, usize>,
    alerts: Vec<AlertEntry>,
    runbooks: BTreeMap<String, Runbook>,
}

impl Catalog {
    /// Parses and cross-checks the catalog and its runbooks (`(file name, text)` pairs).
    pub fn parse(catalog_toml: &str, runbooks: &[(String, String)]) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(catalog_toml).map_err(|e| err("catalog.toml", e))?;
        let mut parsed = BTreeMap::new();
        for (name, text) in runbooks {
            let runbook = parse_runbook(name, text)?;
            parsed.insert(runbook.name.clone(), runbook);
        }
        let mut alert_index = BTreeMap::new();
        for (i, alert) in file.alerts.iter().enumerate() {
            if !file.services.contains_key(&alert.service) {
                return Err(err(
                    "catalog.toml",
                    format!(
                        "alert {} names unknown service {}",
                        alert.alert_type, alert.service
                    ),
                ));
            }
            for name in std::iter::once(&alert.alert_type).chain(&alert.aliases) {
                if alert_index.insert(name.to_lowercase(), i).is_some() {
                    return Err(err(
                        "catalog.toml",
                        format!("alert type {name} is listed twice"),
                    ));
                }
            }
        }
        for (service, entry) in &file.services {
            let Some(runbook) = parsed.get(&entry.runbook) else {
                return Err(err(
                    "catalog.toml",
                    format!("service {service} names missing runbook {}", entry.runbook),
                ));
            };
            if &runbook.spec.service != service {
                return Err(err(
                    &entry.runbook,
                    format!("runbook is for {}, not {service}", runbook.spec.service),
                ));
            }
        }
        Ok(Catalog {
            services: file.services,
            alert_index,
            alerts: file.alerts,
            runbooks: parsed,
        })
    }

    /// The service an alert type (or one of its aliases, any case) is about.
    pub fn map_alert(&self, alert_type: &str) -> Option<AlertMapping> {
        let alert = &self.alerts[*self.alert_index.get(&alert_type.trim().to_lowercase())?];
        let service = &self.services[&alert.service];
        Some(AlertMapping {
            alert_type: alert.alert_type.clone(),
            service: alert.service.clone(),
            namespace: service.namespace.clone(),
            tier: service.tier,
            owner: service.owner.clone(),
            runbook: service.runbook.clone(),
            summary: alert.summary.clone(),
        })
    }

    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.get(name)
    }

    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    pub fn alert_types(&self) -> impl Iterator<Item = &str> {
        self.alerts.iter().map(|a| a.alert_type.as_str())
    }

    /// The runbook of a service.
    pub fn runbook_for(&self, service: &str) -> Option<&Runbook> {
        self.runbooks.get(&self.services.get(service)?.runbook)
    }
}

impl RunbookSpec {
    /// The evidence window in seconds (validated at load).
    pub fn window_secs(&self) -> i64 {
        lookback_secs(self.window.as_deref().unwrap_or(EVIDENCE_WINDOW_DEFAULT)).unwrap_or(900)
    }

    /// The window of a step's condition, in seconds: its `within`, else the runbook's.
    pub fn step_window_secs(&self, step: &RemediationStep) -> i64 {
        step.within
            .as_deref()
            .and_then(|w| lookback_secs(w).ok())
            .unwrap_or_else(|| self.window_secs())
    }
}

/// A look-back such as `15m` in seconds; an interval or anything else is an error.
pub fn lookback_secs(text: &str) -> Result<i64, String> {
    match crate::timerange::parse_range(text)? {
        crate::timerange::TimeRange::Last(d) => Ok(d.num_seconds()),
        crate::timerange::TimeRange::Between(_) => Err(format!(
            "{text:?} is an interval; give a look-back such as 15m"
        )),
    }
}

/// Splits `+++\n<toml>\n+++\n<markdown>` and validates the header.
pub fn parse_runbook(file: &str, text: &str) -> Result<Runbook, CatalogError> {
    let name = file.trim_end_matches(".md").to_owned();
    let rest = text.strip_prefix("+++\n").ok_or_else(|| {
        err(
            file,
            "a runbook starts with a TOML header between +++ lines",
        )
    })?;
    let (header, body) = rest
        .split_once("\n+++\n")
        .ok_or_else(|| err(file, "the TOML header is not closed by a +++ line"))?;
    let spec: RunbookSpec = toml::from_str(header).map_err(|e| err(file, e))?;
    validate_spec(&spec).map_err(|reason| err(file, reason))?;
    Ok(Runbook {
        name,
        spec,
        text: body.trim_start().to_owned(),
    })
}

fn validate_spec(spec: &RunbookSpec) -> Result<(), String> {
    for d in &spec.diagnostics {
        if !matches!(d.tool.as_str(), "get-logs" | "get-metrics") {
            return Err(format!(
                "diagnostic tool {} is not get-logs or get-metrics",
                d.tool
            ));
        }
        if let Some(range) = &d.time_range {
            crate::timerange::parse(range, chrono::Utc::now())
                .map_err(|e| format!("diagnostic time_range {range}: {e}"))?;
        }
    }
    for step in &spec.remediation {
        if !matches!(step.tool.as_str(), "restart-pod" | "send-notification") {
            return Err(format!(
                "remediation {} uses {}, not a remediation tool",
                step.id, step.tool
            ));
        }
        if step.tool == "restart-pod" && step.target.as_deref() != Some("matched-pod") {
            return Err(format!("remediation {} must target matched-pod", step.id));
        }
        if step.tool != "restart-pod" && (step.when.is_some() || step.within.is_some()) {
            return Err(format!(
                "remediation {}: when and within apply to restart-pod steps only",
                step.id
            ));
        }
        if step.tool == "restart-pod" && step.autonomy == Autonomy::Auto && step.when.is_none() {
            return Err(format!(
                "remediation {} is auto but names no condition: add when = \"oom_killed\" (or \
                 crash_looping), or make it autonomy = \"approval\"",
                step.id
            ));
        }
        if let Some(within) = &step.within {
            lookback_secs(within).map_err(|e| format!("remediation {} within: {e}", step.id))?;
        }
    }
    if let Some(window) = &spec.window {
        lookback_secs(window).map_err(|e| format!("window: {e}"))?;
    }
    if spec.signals.is_empty() {
        return Err("a runbook needs at least one signal".into());
    }
    for signal in &spec.signals {
        if !(0.0..=1.0).contains(&signal.confidence) {
            return Err(format!("signal {} confidence is not within 0–1", signal.id));
        }
        for id in &signal.remediation {
            if !spec.remediation.iter().any(|s| &s.id == id) {
                return Err(format!(
                    "signal {} names unknown remediation {id}",
                    signal.id
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runbook(remediation: &str) -> Result<Runbook, CatalogError> {
        let text = format!(
            "+++\nservice = \"svc\"\ntitle = \"t\"\ndiagnostics = []\n\n[[signals]]\nid = \"s\"\n\
             match = \"pod_not_ready\"\nroot_cause = \"r\"\nconfidence = 0.5\nremediation = [\"fix\"]\n\n\
             [[remediation]]\nid = \"fix\"\n{remediation}\ndescription = \"d\"\n+++\n# text\n"
        );
        parse_runbook("svc.md", &text)
    }

    #[test]
    fn an_autonomous_restart_must_say_when_on_platform_facts() {
        let no_condition =
            runbook("tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"");
        let e = no_condition.unwrap_err();
        assert_eq!(e.file, "svc.md");
        assert!(e.reason.contains("names no condition"), "{e}");

        let ok = runbook(
            "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"\nwhen = \"oom_killed\"\nwithin = \"10m\"",
        )
        .unwrap();
        let step = &ok.spec.remediation[0];
        assert_eq!(step.when, Some(Condition::OomKilled));
        assert_eq!(ok.spec.step_window_secs(step), 600);
        assert_eq!(ok.spec.window_secs(), 900, "the default window");

        // Approval needs no condition: it can be proposed, never run alone.
        runbook("tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"approval\"")
            .unwrap();
    }

    #[test]
    fn conditions_and_windows_are_checked_at_load() {
        for (bad, says) in [
            (
                "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"\nwhen = \"log_says_so\"",
                "unknown variant",
            ),
            (
                "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"\nwhen = \"oom_killed\"\nwithin = \"soon\"",
                "within",
            ),
            (
                "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"\nwhen = \"oom_killed\"\n\
                 within = \"2026-11-24T10:00:00Z/2026-11-24T10:30:00Z\"",
                "look-back",
            ),
            (
                "tool = \"send-notification\"\nautonomy = \"auto\"\nwhen = \"oom_killed\"",
                "restart-pod steps only",
            ),
        ] {
            let e = runbook(bad).unwrap_err();
            assert!(e.reason.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_shipped_auto_restart_names_its_condition() {
        let catalog = crate::data::load_catalog(None).unwrap();
        for service in catalog.service_names() {
            let runbook = catalog.runbook_for(service).unwrap();
            for step in &runbook.spec.remediation {
                if step.tool == "restart-pod" && step.autonomy == Autonomy::Auto {
                    assert!(step.when.is_some(), "{service}: {}", step.id);
                }
            }
        }
    }
}
