//! placeholder until the Prometheus backend lands (branch wip-prom).
use std::sync::Arc;

use super::BackendError;
use crate::catalog::Catalog;
use crate::fleet::model::ServiceMetrics;

#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Queries {}
impl Queries {
    pub fn from_toml(_text: &str) -> Result<Queries, String> {
        Ok(Queries {})
    }
}
#[derive(Clone, Debug)]
pub struct PrometheusConfig {
    pub url: String,
    pub timeout_ms: u64,
    pub queries: Queries,
}
pub struct PrometheusMetrics;
impl PrometheusMetrics {
    pub fn new(_config: PrometheusConfig, _catalog: Arc<Catalog>) -> Result<Self, String> {
        Err("not yet".into())
    }
    pub async fn metrics(
        &self,
        _service: &str,
        _trace_id: Option<&str>,
    ) -> Result<ServiceMetrics, BackendError> {
        Err(BackendError::Unavailable("not yet".into()))
    }
}
