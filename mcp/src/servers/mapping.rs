//! `mapping-mcp`: which service an alert is about, and that service's runbook.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ALERT_TYPE_CHARS_MAX, SERVICE_NAME_CHARS_MAX, check_name, common};
use crate::catalog::{AlertMapping, Catalog, Runbook};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapAlertArgs {
    /// The alert's name as the alerting system sends it (Alertmanager's `alertname`), for
    /// example `CheckoutApiOOMKilled`, `PaymentsDbDown` or `KubePodOOMKilled`. Case does
    /// not matter.
    pub alert_type: String,
    /// The alert's labels exactly as Alertmanager sent them (names to string values), for
    /// example `{"namespace": "shop", "service": "checkout-api", "pod":
    /// "checkout-api-7d9f-x2k"}`. Generic alerts such as `KubePodOOMKilled` or
    /// `PostgresqlDown` are routed by them (namespace, service, deployment, statefulset,
    /// app.kubernetes.io/name, app, job, container, pod); a service-specific alert ignores
    /// them. At most 64 labels, names up to 128 bytes, values up to 1024 bytes.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetRunbookArgs {
    /// The service's name as `map-alert-to-service` returned it, for example `checkout-api`.
    pub service_name: String,
}

#[derive(Clone)]
pub struct MappingServer {
    catalog: Arc<Catalog>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl MappingServer {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        MappingServer {
            catalog,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        name = "map-alert-to-service",
        description = "Find the service an alert is about: returns the service name, its \
            Kubernetes namespace, its tier (stateless, stateful or database; databases are \
            never restarted without a human), the owning team, the name of its runbook, the \
            failure class (oom_killed, crash_looping, database_down, error_rate, ...) and \
            matched_by, what chose the service. Call this first for every alert, with the \
            alert's name and its labels: generic alerts (KubePodOOMKilled, \
            KubePodCrashLooping, PostgresqlDown) name no service and are routed by labels \
            such as namespace, service, deployment, job and pod."
    )]
    async fn map_alert_to_service(
        &self,
        Parameters(args): Parameters<MapAlertArgs>,
    ) -> Result<Json<AlertMapping>, String> {
        let alert = args.alert_type.trim();
        if alert.is_empty() || alert.chars().count() > ALERT_TYPE_CHARS_MAX {
            return Err(format!(
                "alertType must be 1 to {ALERT_TYPE_CHARS_MAX} characters"
            ));
        }
        let labels = args.labels.unwrap_or_default();
        self.catalog
            .route(alert, &labels)
            .map(Json)
            .map_err(|e| e.to_string())
    }

    #[tool(
        name = "get-runbook",
        description = "Get a service's runbook: its Markdown text and its machine-readable \
            part: the diagnostics to run (get-metrics, get-logs with a time range), the \
            signals that identify root causes in their results, and the remediation steps, \
            each with an autonomy level (auto: may be done without asking; approval: a human \
            must approve; never)."
    )]
    async fn get_runbook(
        &self,
        Parameters(args): Parameters<GetRunbookArgs>,
    ) -> Result<Json<Runbook>, String> {
        let service = args.service_name.trim();
        check_name("serviceName", service, SERVICE_NAME_CHARS_MAX)?;
        self.catalog
            .runbook_for(service)
            .cloned()
            .map(Json)
            .ok_or_else(|| {
                format!(
                    "no runbook for service {service:?}; known services: {}",
                    self.catalog.service_names().collect::<Vec<_>>().join(", ")
                )
            })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MappingServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mapping-mcp",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Maps alerts to services and serves their runbooks. Start with \
                 map-alert-to-service (the alert's name and its labels), then get-runbook for \
                 the service it returns.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        common::call_tool("mapping-mcp", self, &self.tool_router, request, context).await
    }
}
