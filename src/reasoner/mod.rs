//! Reasoners: what to do next for an incident, given its transcript so far. Two behind one
//! trait: [`rules::RulesReasoner`] (offline, deterministic: runs the runbook) and
//! [`openai::OpenAiReasoner`] (an OpenAI-compatible chat-completions model with tools).
//!
//! [`delayed::Delayed`] wraps either with a fixed wait per turn (a slow model with the same
//! decisions, for storms and tests).
//!
//! A reasoner only *proposes*. Its output is untrusted: the incident actor runs read-only
//! calls, defers every mutating call to the end of the investigation, and puts each one
//! through the pure `policy` before anything touches the world. The transcript is the whole
//! state a reasoner sees, so a reasoner keeps no memory between steps and a restarted
//! incident actor can ask again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::incident::RootCauseAnalysis;

pub mod delayed;
pub mod openai;
pub mod rules;

/// Most calls the agent takes from one reasoner turn; the rest are refused back to it.
pub const CALLS_PER_TURN_MAX: usize = 8;

/// The six tools, by server. Anything else a reasoner names does not exist.
pub const TOOL_SERVERS: [(&str, Server); 6] = [
    ("map-alert-to-service", Server::Mapping),
    ("get-runbook", Server::Mapping),
    ("get-logs", Server::Observability),
    ("get-metrics", Server::Observability),
    ("restart-pod", Server::Remediation),
    ("send-notification", Server::Remediation),
];

/// The three MCP servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Mapping,
    Observability,
    Remediation,
}

impl Server {
    pub const ALL: [Server; 3] = [Self::Mapping, Self::Observability, Self::Remediation];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapping => "mapping",
            Self::Observability => "observability",
            Self::Remediation => "remediation",
        }
    }

    /// The server a tool lives on; `None` for a tool that does not exist.
    pub fn of(tool: &str) -> Option<Server> {
        TOOL_SERVERS
            .iter()
            .find(|(name, _)| *name == tool)
            .map(|(_, s)| *s)
    }
}

/// Tool arguments from string pairs: `[("serviceName", "checkout-api")]`.
pub fn string_args(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

/// An alert's labels with the incident's own `service` added as the `service` label when
/// they name none: what routing a generic alert reads.
pub fn labels_with_service(
    labels: &std::collections::BTreeMap<String, String>,
    service: Option<&str>,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = labels.clone();
    if let Some(service) = service {
        labels
            .entry("service".to_owned())
            .or_insert_with(|| service.to_owned());
    }
    labels
}

/// The arguments of `map-alert-to-service` for an incident: its alert type, and its labels
/// with its own `service` added when they name none (routing of generic alerts reads them).
/// The same arguments every time, so that the agent's own check finds the reasoner's read.
pub fn mapping_args(
    alert_type: &str,
    service: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut args = string_args(&[("alertType", alert_type)]);
    let labels = labels_with_service(labels, service);
    if !labels.is_empty() {
        args.insert(
            "labels".into(),
            Value::Object(
                labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        );
    }
    args
}

/// Whether a tool changes the world (and so is deferred and put through the policy).
pub fn is_mutating(tool: &str) -> bool {
    Server::of(tool) == Some(Server::Remediation)
}

/// A tool as the MCP server lists it: what a model is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
}

/// What the reasoner is told about the incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentBrief {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub severity: String,
    pub alert_type: Option<String>,
    pub service: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A tool call a reasoner asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The model's id for the call (`call_…`); the rules reasoner numbers its own.
    pub id: String,
    pub tool: String,
    pub arguments: Map<String, Value>,
    /// Set when the model's arguments could not be read as a JSON object: the call is not
    /// made and this sentence goes back to the model as the tool's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_arguments: Option<String>,
}

impl Call {
    /// Whether `other` asks for the same thing: the same tool with the same arguments.
    pub fn same_as(&self, other: &Call) -> bool {
        self.tool == other.tool && self.arguments == other.arguments
    }
}

/// The earlier call `call` repeats, with what came of it: among `earlier` (oldest first),
/// the first with the same tool and arguments that answered or was deferred. A call that
/// failed or was not run is not a repeat: asking again may be the right thing.
pub fn repeated<'a>(
    earlier: impl IntoIterator<Item = &'a (Call, Outcome)>,
    call: &Call,
) -> Option<&'a (Call, Outcome)> {
    if call.invalid_arguments.is_some() {
        return None;
    }
    earlier.into_iter().find(|(c, o)| {
        c.same_as(call)
            && c.invalid_arguments.is_none()
            && matches!(o, Outcome::Ok { .. } | Outcome::Deferred { .. })
    })
}

/// A JSON value held as its compact text. A live transcript keeps every tool result until
/// its investigation ends; parsed into a `Value` (a tree of maps and strings) a result takes
/// several times the bytes of its text, and a storm holds thousands of transcripts.
/// Readers parse what they need ([`JsonText::parse`]); the text is shared, not copied.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Arc<str>);

impl JsonText {
    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text read as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.0)
    }

    /// The value (made from a `Value`, the text always reads back).
    pub fn value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }

    /// What a reader is shown: a JSON string as its own text, anything else as JSON.
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        match self.0.starts_with('"').then(|| self.parse::<String>()) {
            Some(Ok(text)) => text.into(),
            _ => self.as_str().into(),
        }
    }
}

/// Most distinct texts a [`TextPool`] remembers; past it, it forgets those nobody holds
/// any more, and, if that is not enough, all of them.
const POOLED_TEXTS_MAX: usize = 256;

/// Longest text a [`TextPool`] takes: a weak reference keeps its allocation (text
/// included) until the pool forgets it, so only small texts are remembered.
const POOLED_TEXT_BYTES_MAX: usize = 16 * 1024;

/// Equal texts held once however many transcripts hold them. Meant for answers that repeat
/// across incidents: what the mapping server answers is the catalog, the same runbook and
/// mapping for every incident of a service, and a storm holds thousands of them. A text
/// equal to one still held elsewhere is swapped for that one ([`TextPool::share`]). The pool
/// holds no text alive itself (weak references): a text goes when its last holder does.
#[derive(Debug, Default)]
pub struct TextPool {
    texts: std::sync::Mutex<std::collections::HashMap<u64, std::sync::Weak<str>>>,
    hasher: std::hash::RandomState,
}

impl TextPool {
    /// `text`, or an equal text already held elsewhere.
    pub fn share(&self, text: JsonText) -> JsonText {
        use std::hash::BuildHasher;
        if text.0.len() > POOLED_TEXT_BYTES_MAX {
            return text;
        }
        let hash = self.hasher.hash_one(&*text.0);
        let Ok(mut texts) = self.texts.lock() else {
            return text;
        };
        if let Some(held) = texts.get(&hash).and_then(std::sync::Weak::upgrade)
            && *held == *text.0
        {
            return JsonText(held);
        }
        if texts.len() >= POOLED_TEXTS_MAX {
            texts.retain(|_, held| held.strong_count() > 0);
            if texts.len() >= POOLED_TEXTS_MAX {
                texts.clear();
            }
        }
        texts.insert(hash, Arc::downgrade(&text.0));
        text
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> Self {
        JsonText(value.to_string().into())
    }
}

impl From<Value> for JsonText {
    fn from(value: Value) -> Self {
        JsonText::from(&value)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(JsonText::from)
    }
}

/// What became of a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The tool answered; `structured` is its structured content (or its text as a string).
    Ok { structured: JsonText },
    /// The tool answered with an error result (`isError`), or the call could not be made.
    Error { message: String },
    /// The call was not made: unknown tool or arguments that are not a JSON object.
    /// `message` says why, for the model to read.
    NotRun { message: String },
    /// A mutating call, held until the investigation ends; the safety policy then decides
    /// whether it runs. Every deferred call is one of the conclusion's proposed actions.
    Deferred { message: String },
    /// The same call (tool and arguments) as an earlier one that answered or was deferred:
    /// not made again. The reasoner is given the earlier outcome back, and a repeated
    /// proposal is proposed once.
    Repeated {
        /// The id of the earlier call.
        of: String,
        earlier: Box<Outcome>,
    },
}

impl Outcome {
    /// The outcome itself, or for a repeated call, what came of the call it repeats.
    pub fn settled(&self) -> &Outcome {
        match self {
            Outcome::Repeated { earlier, .. } => earlier.settled(),
            other => other,
        }
    }
}

/// One reasoner turn and what came of its calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The model's reasoning on this turn, sent back to it on the next request.
    #[serde(default)]
    pub reasoning: Option<String>,
    /// Text the model said alongside its calls.
    #[serde(default)]
    pub content: Option<String>,
    pub calls: Vec<(Call, Outcome)>,
    /// The assistant message exactly as the model's server sent it, sent back as it came
    /// (so the server's prompt cache holds); `None` for a reasoner without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbatim: Option<JsonText>,
}

/// Everything a reasoner sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub incident: IncidentBrief,
    /// The tools the MCP servers listed (for a model's function list); one list shared by
    /// every transcript.
    pub tools: Arc<[ToolSpec]>,
    pub turns: Vec<Turn>,
}

impl Transcript {
    /// Every call made so far with its outcome, oldest first.
    pub fn calls(&self) -> impl Iterator<Item = &(Call, Outcome)> {
        self.turns.iter().flat_map(|t| t.calls.iter())
    }

    /// The mutating calls proposed so far (deferred), each distinct call once, in order:
    /// what goes to the policy when the investigation ends.
    pub fn proposals(&self) -> Vec<Call> {
        let mut proposals: Vec<Call> = Vec::new();
        for (call, outcome) in self.calls() {
            if matches!(outcome, Outcome::Deferred { .. })
                && !proposals.iter().any(|p| p.same_as(call))
            {
                proposals.push(call.clone());
            }
        }
        proposals
    }

    /// Whether each of the last `turns` turns asked only for calls already made: a
    /// reasoner going round in circles, stopped rather than left to spend its budget.
    pub fn repeating(&self, turns: usize) -> bool {
        turns > 0
            && self.turns.len() >= turns
            && self.turns[self.turns.len() - turns..].iter().all(|t| {
                !t.calls.is_empty()
                    && t.calls
                        .iter()
                        .all(|(_, o)| matches!(o, Outcome::Repeated { .. }))
            })
    }

    /// The structured result of the latest successful call of `tool` whose arguments
    /// satisfy `matches`.
    pub fn latest_ok(
        &self,
        tool: &str,
        matches: impl Fn(&Map<String, Value>) -> bool,
    ) -> Option<&JsonText> {
        self.calls()
            .filter(|(c, _)| c.tool == tool && matches(&c.arguments))
            .filter_map(|(_, o)| match o {
                Outcome::Ok { structured } => Some(structured),
                _ => None,
            })
            .last()
    }
}

/// The reasoner's conclusion: the analysis and the actions it proposes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conclusion {
    pub rca: RootCauseAnalysis,
    /// Mutating calls proposed, in order. Each goes through the policy.
    pub actions: Vec<Call>,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Make these calls and ask again.
    Calls {
        calls: Vec<Call>,
        reasoning: Option<String>,
        content: Option<String>,
        /// The assistant message as the model's server sent it (see [`Turn::verbatim`]).
        verbatim: Option<JsonText>,
    },
    /// Investigation over.
    Conclude(Conclusion),
}

/// Why a reasoner could not give a step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReasonerError {
    /// The model endpoint failed in a way that may pass (timeout, 429, 5xx, connection).
    #[error("the model is unavailable: {0}")]
    Unavailable(String),
    /// The model's answers cannot be used (no usable turn after retries, step budget spent).
    #[error("the model's answer is unusable: {0}")]
    Unusable(String),
    /// The reasoner is set up wrongly (bad URL, missing key).
    #[error("the reasoner is misconfigured: {0}")]
    Config(String),
}

impl ReasonerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Step, ReasonerError>> + Send + 'a>>;

/// Tokens a model said one step used (its answers' `usage`, every attempt of the step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
    }
}

/// A step, or why there is none, and what asking for it cost: tokens are spent on failed
/// attempts too.
#[derive(Debug)]
pub struct Reply {
    pub step: Result<Step, ReasonerError>,
    pub usage: Usage,
}

impl Reply {
    /// No step: the model could not be reached or did not answer (retried), at no known cost.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Reply {
            step: Err(ReasonerError::Unavailable(reason.into())),
            usage: Usage::default(),
        }
    }
}

pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A reasoner: the transcript in, the next step out. Implementations are stateless between
/// calls and safe to call from many incidents at once.
pub trait Reasoner: Send + Sync + 'static {
    /// `rules` or `openai:{model}`: recorded in the RCA and the timeline.
    fn name(&self) -> String;
    fn next_step<'a>(&'a self, transcript: &'a Transcript) -> StepFuture<'a>;
    /// The next step with the tokens it used; a reasoner without a model reports none.
    fn next_reply<'a>(&'a self, transcript: &'a Transcript) -> ReplyFuture<'a> {
        Box::pin(async move {
            Reply {
                step: self.next_step(transcript).await,
                usage: Usage::default(),
            }
        })
    }
}

/// An OOM incident's transcript before any turn: what the reasoners' tests start from.
#[cfg(test)]
pub(crate) fn oom_transcript() -> Transcript {
    Transcript {
        incident: IncidentBrief {
            id: "01a216cb-6bd1-75d5-81c4-bbe448aa1a7a".into(),
            title: "checkout-api pod OOMKilled".into(),
            description: None,
            severity: "critical".into(),
            alert_type: Some("CheckoutApiOOMKilled".into()),
            service: Some("checkout-api".into()),
            labels: Default::default(),
        },
        tools: Arc::from(vec![]),
        turns: vec![],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_texts_are_held_once_and_a_text_nobody_holds_is_not_kept() {
        let pool = TextPool::default();
        let runbook = json!({ "service": "checkout-api", "steps": ["a", "b"] });
        let first = pool.share(JsonText::from(&runbook));
        let again = pool.share(JsonText::from(&runbook));
        assert!(
            Arc::ptr_eq(&first.0, &again.0),
            "an equal text is the one held"
        );
        let other = pool.share(JsonText::from(json!({ "service": "payments-db" })));
        assert!(!Arc::ptr_eq(&first.0, &other.0));
        assert_ne!(first, other);
        // Once nobody holds it, an equal text is held anew, not revived.
        let weak = Arc::downgrade(&first.0);
        drop((first, again));
        assert!(weak.upgrade().is_none(), "the pool holds no text itself");
        let later = pool.share(JsonText::from(&runbook));
        assert_eq!(later.value(), runbook);
        // Past its bound it forgets what nobody holds and keeps sharing what is held.
        for i in 0..POOLED_TEXTS_MAX + 10 {
            let _ = pool.share(JsonText::from(json!({ "pod": i })));
        }
        let still = pool.share(JsonText::from(&runbook));
        assert!(Arc::ptr_eq(&later.0, &still.0));
        assert!(pool.texts.lock().unwrap().len() <= POOLED_TEXTS_MAX);
        // A large text is not remembered (its allocation would outlive it).
        let large = json!("x".repeat(POOLED_TEXT_BYTES_MAX));
        let a = pool.share(JsonText::from(&large));
        let b = pool.share(JsonText::from(&large));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
    }

    #[test]
    fn a_tool_result_is_held_as_compact_text_and_reads_back_as_it_came() {
        let value = json!({ "pods": [{ "name": "checkout-api-1", "restarts": 3 }], "ok": true });
        let held = JsonText::from(&value);
        assert_eq!(held.as_str(), value.to_string());
        assert_eq!(held.value(), value);
        #[derive(Deserialize)]
        struct Pods {
            pods: Vec<Value>,
        }
        assert_eq!(held.parse::<Pods>().unwrap().pods.len(), 1);
        // A reader is shown a string as its text, anything else as JSON.
        assert_eq!(
            JsonText::from(json!("plain \"text\"")).display(),
            "plain \"text\""
        );
        assert_eq!(held.display(), held.as_str());
        // In a transcript written out and read back, it is the value, not a string of it.
        let outcome = Outcome::Ok { structured: held };
        let written = serde_json::to_value(&outcome).unwrap();
        assert_eq!(written, json!({ "kind": "ok", "structured": value }));
        assert_eq!(serde_json::from_value::<Outcome>(written).unwrap(), outcome);
    }

    /// A call as a reasoner asks for it (also for the openai reasoner's tests).
    pub(super) fn call(id: &str, tool: &str, arguments: Value) -> Call {
        Call {
            id: id.into(),
            tool: tool.into(),
            arguments: arguments.as_object().cloned().unwrap_or_default(),
            invalid_arguments: None,
        }
    }

    fn turn(calls: Vec<(Call, Outcome)>) -> Turn {
        Turn {
            reasoning: None,
            content: None,
            calls,
            verbatim: None,
        }
    }

    fn ok() -> Outcome {
        Outcome::Ok {
            structured: json!({"pods": []}).into(),
        }
    }

    fn deferred() -> Outcome {
        Outcome::Deferred {
            message: "held".into(),
        }
    }

    fn repeat(of: &str, earlier: Outcome) -> Outcome {
        Outcome::Repeated {
            of: of.into(),
            earlier: Box::new(earlier),
        }
    }

    #[test]
    fn a_call_repeats_only_an_earlier_one_with_its_tool_and_arguments_that_answered() {
        let metrics = call("c1", "get-metrics", json!({"serviceName": "a"}));
        let failed = call("c2", "get-logs", json!({"serviceName": "a"}));
        let earlier = [
            (metrics.clone(), ok()),
            (
                failed.clone(),
                Outcome::Error {
                    message: "timeout".into(),
                },
            ),
        ];
        let again = call("c3", "get-metrics", json!({"serviceName": "a"}));
        assert_eq!(
            repeated(&earlier, &again).map(|(c, _)| c.id.as_str()),
            Some("c1")
        );
        // Other arguments, another tool, a failed call, unreadable arguments: not repeats.
        let other = call("c4", "get-metrics", json!({"serviceName": "b"}));
        assert!(repeated(&earlier, &other).is_none());
        assert!(
            repeated(
                &earlier,
                &call("c5", "get-runbook", json!({"serviceName": "a"}))
            )
            .is_none()
        );
        assert!(
            repeated(
                &earlier,
                &call("c6", "get-logs", json!({"serviceName": "a"}))
            )
            .is_none()
        );
        let mut unreadable = again.clone();
        unreadable.invalid_arguments = Some("not an object".into());
        assert!(repeated(&earlier, &unreadable).is_none());
    }

    #[test]
    fn proposals_are_each_distinct_deferred_call_once_and_repetition_is_whole_turns() {
        let restart = call("c1", "restart-pod", json!({"podName": "a-1"}));
        let notify = call(
            "c2",
            "send-notification",
            json!({"message": "m", "severity": "info"}),
        );
        let mut t = Transcript {
            incident: IncidentBrief {
                id: "i".into(),
                title: "t".into(),
                description: None,
                severity: "high".into(),
                alert_type: None,
                service: None,
                labels: Default::default(),
            },
            tools: Arc::from(Vec::new()),
            turns: vec![
                turn(vec![(call("c0", "get-metrics", json!({})), ok())]),
                turn(vec![
                    (restart.clone(), deferred()),
                    (notify.clone(), deferred()),
                ]),
            ],
        };
        assert!(!t.repeating(1));
        let mut again = notify.clone();
        again.id = "c3".into();
        t.turns.push(turn(vec![(again.clone(), deferred())]));
        assert_eq!(t.proposals(), vec![restart.clone(), notify.clone()]);
        t.turns
            .push(turn(vec![(again.clone(), repeat("c2", deferred()))]));
        assert!(t.repeating(1));
        assert!(!t.repeating(2), "the turn before made a call of its own");
        t.turns.push(turn(vec![(
            call("c5", "get-metrics", json!({})),
            repeat("c0", ok()),
        )]));
        assert!(t.repeating(2));
        assert!(!t.repeating(0));
        assert!(!t.repeating(99));
        // A turn that asked for nothing is not repetition.
        t.turns.push(turn(vec![]));
        assert!(!t.repeating(1));
    }
}
