//! `mapping-mcp`: which service an alert is about, and that service's runbook.

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
    /// example `CheckoutApiOOMKilled` or `PaymentsDbDown`. Case does not matter.
    pub alert_type: String,
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
            never restarted without a human), the owning team and the name of its runbook. \
            Call this first for every alert."
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
        self.catalog.map_alert(alert).map(Json).ok_or_else(|| {
            format!(
                "no service is mapped to alert type {alert:?}; known alert types: {}",
                self.catalog.alert_types().collect::<Vec<_>>().join(", ")
            )
        })
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
                 map-alert-to-service, then get-runbook for the service it returns.",
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
