//! Which backend each part of the world comes from, as configured: metrics (fleet,
//! Kubernetes, Prometheus), logs (fleet, Kubernetes), restarts (fleet, Kubernetes) and
//! notifications (fleet, a Slack-compatible or a generic JSON webhook). [`BackendArgs`] is
//! the configuration every server and the agent take; [`ObservabilityBackends`] and
//! [`RemediationBackends`] dispatch each call to the backend chosen for it; building them
//! checks every setting they use (the agent builds both once at start to refuse a bad
//! configuration with its name, before it spawns the servers). `fleet`
//! everywhere is the default: the demo needs nothing else.

use std::path::PathBuf;
use std::sync::Arc;

use super::kubernetes::{KubeBackend, KubeConfig, RestartMethod};
use super::notify::{ChannelKind, Notifier, NotifyConfig};
use super::prometheus::{PrometheusConfig, PrometheusMetrics, Queries};
use super::{BackendError, FleetClient, Observability, Remediation};
use crate::catalog::Catalog;
use crate::fleet::model::{LogPage, Receipt, RestartOutcome, ServiceMetrics};
use crate::timerange::TimeRange;

/// The environment variable holding the notification webhook's URL (a secret: Slack's
/// embeds its token), never a flag, so it is not seen in a process list.
pub const NOTIFY_URL_ENV: &str = "SRE_NOTIFY_URL";
/// The environment variable holding the generic webhook's HMAC secret.
pub const NOTIFY_HMAC_SECRET_ENV: &str = "SRE_NOTIFY_HMAC_SECRET";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsKind {
    Fleet,
    /// Pod state from the Kubernetes API (no usage, error rate or latency).
    Kubernetes,
    /// kube-state-metrics, cAdvisor and service series from Prometheus.
    Prometheus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogsKind {
    Fleet,
    /// Pod logs and events from the Kubernetes API.
    Kubernetes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartKind {
    Fleet,
    /// Eviction (or delete) with a uid precondition through the Kubernetes API.
    Kubernetes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyKind {
    Fleet,
    /// A Slack-compatible incoming webhook (`SRE_NOTIFY_URL`).
    Slack,
    /// A generic JSON webhook (`SRE_NOTIFY_URL`, optionally signed with
    /// `SRE_NOTIFY_HMAC_SECRET`).
    Webhook,
}

/// Where the observability and remediation servers get and change the world.
#[derive(Clone, Debug, clap::Args)]
pub struct BackendArgs {
    /// Where `get-metrics` reads from.
    #[arg(long, env = "SRE_METRICS_BACKEND", value_enum, default_value_t = MetricsKind::Fleet)]
    pub metrics_backend: MetricsKind,
    /// Where `get-logs` reads from.
    #[arg(long, env = "SRE_LOGS_BACKEND", value_enum, default_value_t = LogsKind::Fleet)]
    pub logs_backend: LogsKind,
    /// What `restart-pod` acts on.
    #[arg(long, env = "SRE_RESTART_BACKEND", value_enum, default_value_t = RestartKind::Fleet)]
    pub restart_backend: RestartKind,
    /// Where `send-notification` delivers.
    #[arg(long, env = "SRE_NOTIFY_BACKEND", value_enum, default_value_t = NotifyKind::Fleet)]
    pub notify_backend: NotifyKind,
    /// Base URL of the simulated fleet (`sre-fleet`), for the parts on `fleet`.
    #[arg(long, env = "SRE_FLEET_URL", default_value = "http://127.0.0.1:9400")]
    pub fleet_url: String,
    /// Longest a single fleet request may take.
    #[arg(long, env = "SRE_FLEET_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub fleet_timeout_ms: u64,
    /// The kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`, else the
    /// in-cluster service account).
    #[arg(long, env = "SRE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current one; in a pod, its service
    /// account). `KUBECONFIG` names the file as usual.
    #[arg(long, env = "SRE_KUBE_CONTEXT")]
    pub kube_context: Option<String>,
    /// Longest a single Kubernetes API request may take.
    #[arg(long, env = "SRE_KUBE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub kube_timeout_ms: u64,
    /// How `restart-pod` restarts a pod on Kubernetes.
    #[arg(long, env = "SRE_KUBE_RESTART_METHOD", value_enum, default_value_t = RestartMethod::Evict)]
    pub kube_restart_method: RestartMethod,
    /// Prometheus base URL (e.g. `http://prometheus.monitoring:9090`), for
    /// `--metrics-backend prometheus`.
    #[arg(long, env = "SRE_PROMETHEUS_URL", hide_env_values = true)]
    pub prometheus_url: Option<String>,
    /// Longest a single Prometheus query may take.
    #[arg(long, env = "SRE_PROMETHEUS_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub prometheus_timeout_ms: u64,
    /// A TOML file of PromQL queries replacing the defaults (see
    /// `deploy/prometheus/queries.toml`).
    #[arg(long, env = "SRE_PROMETHEUS_QUERIES")]
    pub prometheus_queries: Option<PathBuf>,
    /// Longest one notification delivery attempt may take.
    #[arg(long, env = "SRE_NOTIFY_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub notify_timeout_ms: u64,
    /// First wait before retrying a notification; doubles per retry.
    #[arg(long, env = "SRE_NOTIFY_BACKOFF_INITIAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub notify_backoff_initial_ms: u64,
    /// Retries of a notification after its first attempt (5xx, 429, timeouts).
    #[arg(long, env = "SRE_NOTIFY_RETRIES_MAX", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub notify_retries_max: u32,
}

impl BackendArgs {
    /// The flags that reproduce this configuration, for a server spawned by the agent.
    /// Secrets are not among them: they reach the child through its environment.
    pub fn to_flags(&self) -> Vec<String> {
        use clap::ValueEnum;
        let name = |v: clap::builder::PossibleValue| v.get_name().to_owned();
        let mut flags = vec![
            "--metrics-backend".to_owned(),
            self.metrics_backend
                .to_possible_value()
                .map(name)
                .unwrap_or_default(),
            "--logs-backend".into(),
            self.logs_backend
                .to_possible_value()
                .map(name)
                .unwrap_or_default(),
            "--restart-backend".into(),
            self.restart_backend
                .to_possible_value()
                .map(name)
                .unwrap_or_default(),
            "--notify-backend".into(),
            self.notify_backend
                .to_possible_value()
                .map(name)
                .unwrap_or_default(),
            "--fleet-url".into(),
            self.fleet_url.clone(),
            "--fleet-timeout-ms".into(),
            self.fleet_timeout_ms.to_string(),
            "--kube-timeout-ms".into(),
            self.kube_timeout_ms.to_string(),
            "--kube-restart-method".into(),
            self.kube_restart_method
                .to_possible_value()
                .map(name)
                .unwrap_or_default(),
            "--prometheus-timeout-ms".into(),
            self.prometheus_timeout_ms.to_string(),
            "--notify-timeout-ms".into(),
            self.notify_timeout_ms.to_string(),
            "--notify-retries-max".into(),
            self.notify_retries_max.to_string(),
            "--notify-backoff-initial-ms".into(),
            self.notify_backoff_initial_ms.to_string(),
        ];
        if let Some(path) = &self.kubeconfig {
            flags.extend(["--kubeconfig".into(), path.display().to_string()]);
        }
        if let Some(context) = &self.kube_context {
            flags.extend(["--kube-context".into(), context.clone()]);
        }
        // A URL can carry credentials: one the environment gave reaches the child through
        // its environment, not its argv (which `ps` shows).
        if let Some(url) = &self.prometheus_url
            && std::env::var("SRE_PROMETHEUS_URL").ok().as_ref() != Some(url)
        {
            flags.extend(["--prometheus-url".into(), url.clone()]);
        }
        if let Some(path) = &self.prometheus_queries {
            flags.extend(["--prometheus-queries".into(), path.display().to_string()]);
        }
        flags
    }

    fn prometheus_config(&self) -> Result<Option<PrometheusConfig>, String> {
        if self.metrics_backend != MetricsKind::Prometheus {
            return Ok(None);
        }
        let url = self
            .prometheus_url
            .clone()
            .ok_or("--metrics-backend prometheus needs --prometheus-url (SRE_PROMETHEUS_URL)")?;
        let queries = match &self.prometheus_queries {
            None => Queries::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("--prometheus-queries {}: cannot read: {e}", path.display())
                })?;
                Queries::from_toml(&text)
                    .map_err(|e| format!("--prometheus-queries {}: {e}", path.display()))?
            }
        };
        Ok(Some(PrometheusConfig {
            url,
            timeout_ms: self.prometheus_timeout_ms,
            queries,
        }))
    }

    fn notify_config(&self) -> Result<Option<NotifyConfig>, String> {
        let kind = match self.notify_backend {
            NotifyKind::Fleet => return Ok(None),
            NotifyKind::Slack => ChannelKind::Slack,
            NotifyKind::Webhook => ChannelKind::Webhook,
        };
        let url = std::env::var(NOTIFY_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "--notify-backend {} needs the webhook URL in the environment variable \
                     {NOTIFY_URL_ENV}",
                    if kind == ChannelKind::Slack {
                        "slack"
                    } else {
                        "webhook"
                    }
                )
            })?;
        let hmac_secret = std::env::var(NOTIFY_HMAC_SECRET_ENV).ok();
        let config = NotifyConfig {
            kind,
            url,
            hmac_secret,
            timeout_ms: self.notify_timeout_ms,
            retries_max: self.notify_retries_max,
            backoff_initial_ms: self.notify_backoff_initial_ms,
        };
        Ok(Some(config))
    }

    fn fleet(&self) -> Result<Arc<FleetClient>, String> {
        FleetClient::new(&self.fleet_url, self.fleet_timeout_ms)
            .map(Arc::new)
            .map_err(|e| format!("--fleet-url: {e}"))
    }

    async fn kube(&self, catalog: &Arc<Catalog>) -> Result<Arc<KubeBackend>, String> {
        let config = KubeConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.kube_context.clone(),
            timeout_ms: self.kube_timeout_ms,
            restart_method: self.kube_restart_method,
        };
        KubeBackend::connect(config, catalog.clone())
            .await
            .map(Arc::new)
    }
}

enum Metrics {
    Fleet(Arc<FleetClient>),
    Kubernetes(Arc<KubeBackend>),
    Prometheus(PrometheusMetrics),
}

enum Logs {
    Fleet(Arc<FleetClient>),
    Kubernetes(Arc<KubeBackend>),
}

enum Restarts {
    Fleet(Arc<FleetClient>),
    Kubernetes(Arc<KubeBackend>),
}

enum Notify {
    Fleet(Arc<FleetClient>),
    Channel(Box<Notifier>),
}

/// What `observability-mcp` reads through: metrics and logs, each from its backend.
pub struct ObservabilityBackends {
    metrics: Metrics,
    logs: Logs,
}

/// What `remediation-mcp` acts through: restarts and notifications, each on its backend.
pub struct RemediationBackends {
    restarts: Restarts,
    notify: Notify,
}

impl ObservabilityBackends {
    pub async fn build(args: &BackendArgs, catalog: Arc<Catalog>) -> Result<Self, String> {
        let kube = if args.metrics_backend == MetricsKind::Kubernetes
            || args.logs_backend == LogsKind::Kubernetes
        {
            Some(args.kube(&catalog).await?)
        } else {
            None
        };
        let metrics = match args.metrics_backend {
            MetricsKind::Fleet => Metrics::Fleet(args.fleet()?),
            MetricsKind::Kubernetes => Metrics::Kubernetes(kube.clone().ok_or("no client")?),
            MetricsKind::Prometheus => {
                let config = args
                    .prometheus_config()?
                    .ok_or("no Prometheus configuration")?;
                Metrics::Prometheus(PrometheusMetrics::new(config, catalog.clone())?)
            }
        };
        let logs = match args.logs_backend {
            LogsKind::Fleet => Logs::Fleet(args.fleet()?),
            LogsKind::Kubernetes => Logs::Kubernetes(kube.ok_or("no client")?),
        };
        Ok(ObservabilityBackends { metrics, logs })
    }
}

impl RemediationBackends {
    pub async fn build(args: &BackendArgs, catalog: Arc<Catalog>) -> Result<Self, String> {
        let restarts = match args.restart_backend {
            RestartKind::Fleet => Restarts::Fleet(args.fleet()?),
            RestartKind::Kubernetes => Restarts::Kubernetes(args.kube(&catalog).await?),
        };
        let notify = match args.notify_config()? {
            None => Notify::Fleet(args.fleet()?),
            Some(config) => Notify::Channel(Box::new(Notifier::new(config)?)),
        };
        Ok(RemediationBackends { restarts, notify })
    }
}

impl Observability for ObservabilityBackends {
    async fn metrics(
        &self,
        service: &str,
        trace_id: Option<&str>,
    ) -> Result<ServiceMetrics, BackendError> {
        match &self.metrics {
            Metrics::Fleet(b) => b.metrics(service, trace_id).await,
            Metrics::Kubernetes(b) => b.metrics(service).await,
            Metrics::Prometheus(b) => b.metrics(service, trace_id).await,
        }
    }

    async fn logs(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
        trace_id: Option<&str>,
    ) -> Result<LogPage, BackendError> {
        match &self.logs {
            Logs::Fleet(b) => b.logs(service, range, limit, trace_id).await,
            Logs::Kubernetes(b) => b.logs(service, range, limit).await,
        }
    }
}

impl Remediation for RemediationBackends {
    async fn restart_pod(
        &self,
        pod: &str,
        expected_uid: Option<&str>,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<RestartOutcome, BackendError> {
        match &self.restarts {
            Restarts::Fleet(b) => {
                b.restart_pod(pod, expected_uid, idempotency_key, trace_id)
                    .await
            }
            Restarts::Kubernetes(b) => b.restart_pod(pod, expected_uid, idempotency_key).await,
        }
    }

    async fn notify(
        &self,
        message: &str,
        severity: &str,
        idempotency_key: Option<&str>,
        trace_id: Option<&str>,
    ) -> Result<Receipt, BackendError> {
        match &self.notify {
            Notify::Fleet(b) => b.notify(message, severity, idempotency_key, trace_id).await,
            Notify::Channel(n) => n.notify(message, severity, idempotency_key, trace_id).await,
        }
    }
}
