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
    pub description: String,
}

/// The machine-readable part of a runbook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookSpec {
    pub service: String,
    pub title: String,
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
