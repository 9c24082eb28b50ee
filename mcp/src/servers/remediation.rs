//! `remediation-mcp`: restarts pods and sends notifications through a
//! [`Remediation`] backend. Every call may carry an idempotency key: the same key again
//! returns the first call's result and changes nothing.

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

use super::{POD_NAME_CHARS_MAX, check_name, common};
use crate::backend::Remediation;
use crate::fleet::model::{
    Receipt, RestartOutcome, validate_idempotency_key, validate_notification,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPodArgs {
    /// The exact pod name as `get-metrics` lists it, for example `checkout-api-7d9f8-x2k4q`.
    pub pod_name: String,
    /// The uid of the pod instance to restart, as `get-metrics` listed it. When given, a
    /// pod of that name that is another instance (already replaced) is not restarted.
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// A key unique to this intended action (for example `{incident_id}:{step}`). Sending
    /// the same key again returns the first result and restarts nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendNotificationArgs {
    /// What happened, the evidence, and what was done or is proposed (at most 4096
    /// characters).
    pub message: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// A key unique to this notification; the same key again sends nothing new.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub struct RemediationServer<B> {
    backend: Arc<B>,
    tool_router: ToolRouter<Self>,
}

impl<B> Clone for RemediationServer<B> {
    fn clone(&self) -> Self {
        RemediationServer {
            backend: self.backend.clone(),
            tool_router: self.tool_router.clone(),
        }
    }
}

#[tool_router]
impl<B: Remediation> RemediationServer<B> {
    pub fn new(backend: Arc<B>) -> Self {
        RemediationServer {
            backend,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        name = "restart-pod",
        description = "Restart one pod: it is evicted (or deleted) and its controller starts \
            a fresh one, under the same name (a StatefulSet) or a new one (a Deployment). Pass \
            the podUid get-metrics listed: only that instance is restarted. Returns the pod's phase and restart count before the \
            restart. Changes production: pass an idempotencyKey so a retried call never \
            restarts twice."
    )]
    async fn restart_pod(
        &self,
        Parameters(args): Parameters<RestartPodArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<RestartOutcome>, String> {
        let pod = args.pod_name.trim();
        check_name("podName", pod, POD_NAME_CHARS_MAX)?;
        if let Some(key) = &args.idempotency_key {
            validate_idempotency_key(key)?;
        }
        if let Some(uid) = &args.pod_uid {
            check_uid(uid)?;
        }
        let trace = common::trace_id(&context);
        let outcome = self
            .backend
            .restart_pod(
                pod,
                args.pod_uid.as_deref(),
                args.idempotency_key.as_deref(),
                trace.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(pod, replayed = outcome.replayed, "pod restarted");
        Ok(Json(outcome))
    }

    #[tool(
        name = "send-notification",
        description = "Notify the on-call humans: use it to report what was found and done, \
            and to ask for approval of actions the agent may not take alone."
    )]
    async fn send_notification(
        &self,
        Parameters(args): Parameters<SendNotificationArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Receipt>, String> {
        validate_notification(&args.message, &args.severity)?;
        if let Some(key) = &args.idempotency_key {
            validate_idempotency_key(key)?;
        }
        let trace = common::trace_id(&context);
        self.backend
            .notify(
                &args.message,
                &args.severity,
                args.idempotency_key.as_deref(),
                trace.as_deref(),
            )
            .await
            .map(Json)
            .map_err(|e| e.to_string())
    }
}

/// A pod uid: 1 to 64 ASCII letters, digits and `-` (a Kubernetes uid is a UUID).
fn check_uid(uid: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(())
        .ok_or_else(|| "podUid must be 1 to 64 letters, digits and '-'".to_owned())
}

#[tool_handler(router = self.tool_router)]
impl<B: Remediation> ServerHandler for RemediationServer<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "remediation-mcp",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Changes production: restarts pods and notifies humans. Pass an \
                 idempotencyKey on every call.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        common::call_tool("remediation-mcp", self, &self.tool_router, request, context).await
    }
}
