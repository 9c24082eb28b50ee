//! placeholder until the notification channels land (branch wip-notify).
use super::BackendError;
use crate::fleet::model::Receipt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelKind {
    Slack,
    Webhook,
}
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub kind: ChannelKind,
    pub url: String,
    pub hmac_secret: Option<String>,
    pub timeout_ms: u64,
    pub retries_max: u32,
    pub backoff_initial_ms: u64,
}
pub struct Notifier;
impl Notifier {
    pub fn new(_config: NotifyConfig) -> Result<Self, String> {
        Err("not yet".into())
    }
    pub async fn notify(
        &self,
        _m: &str,
        _s: &str,
        _k: Option<&str>,
        _t: Option<&str>,
    ) -> Result<Receipt, BackendError> {
        Err(BackendError::Unavailable("not yet".into()))
    }
}
