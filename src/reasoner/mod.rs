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
pub fn string_args(pairs: &[(&str, &str)]) -> Arguments {
    string_map(pairs).into()
}

fn string_map(pairs: &[(&str, &str)]) -> Map<String, Value> {
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
) -> Arguments {
    let mut args = string_map(&[("alertType", alert_type)]);
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
    args.into()
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
    pub arguments: Arguments,
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
/// A text of [`PACKED_TEXT_BYTES_MIN`] bytes or more is held LZ4-compressed when that
/// saves a quarter of it (a service's logs and metrics from the simulated fleet, 1.6–2 KB
/// each, shrink two- to threefold) and is unpacked by each reader, in microseconds.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Held);

/// Shortest text held compressed: below it the saving does not pay for the unpacking.
pub const PACKED_TEXT_BYTES_MIN: usize = 1024;

/// How a text is held. Which of the two is a function of the text alone, so equal texts
/// are held alike and compare equal.
#[derive(Clone, PartialEq, Eq)]
enum Held {
    Text(Arc<str>),
    /// LZ4 block of the text, its length in front.
    Packed(Arc<[u8]>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Text(text) => text.as_bytes(),
            Held::Packed(packed) => packed,
        }
    }

    fn downgrade(&self) -> WeakHeld {
        match self {
            Held::Text(text) => WeakHeld::Text(Arc::downgrade(text)),
            Held::Packed(packed) => WeakHeld::Packed(Arc::downgrade(packed)),
        }
    }
}

enum WeakHeld {
    Text(std::sync::Weak<str>),
    Packed(std::sync::Weak<[u8]>),
}

impl WeakHeld {
    fn upgrade(&self) -> Option<Held> {
        match self {
            WeakHeld::Text(text) => text.upgrade().map(Held::Text),
            WeakHeld::Packed(packed) => packed.upgrade().map(Held::Packed),
        }
    }

    fn is_held(&self) -> bool {
        match self {
            WeakHeld::Text(text) => text.strong_count() > 0,
            WeakHeld::Packed(packed) => packed.strong_count() > 0,
        }
    }
}

impl std::fmt::Debug for WeakHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_held() { "held" } else { "gone" })
    }
}

impl JsonText {
    fn new(text: String) -> Self {
        if text.len() >= PACKED_TEXT_BYTES_MIN {
            let packed = lz4_flex::block::compress_prepend_size(text.as_bytes());
            if packed.len() <= text.len() / 4 * 3 {
                return JsonText(Held::Packed(packed.into()));
            }
        }
        JsonText(Held::Text(text.into()))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match &self.0 {
            Held::Text(text) => std::borrow::Cow::Borrowed(text),
            // Packed here from a `String`: it unpacks to valid UTF-8.
            Held::Packed(packed) => lz4_flex::block::decompress_size_prepended(packed)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map_or(std::borrow::Cow::Borrowed("null"), std::borrow::Cow::Owned),
        }
    }

    /// Bytes held for the text (less than its length when packed).
    pub fn held_bytes(&self) -> usize {
        self.0.bytes().len()
    }

    /// The text read as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.as_str())
    }

    /// The value (made from a `Value`, the text always reads back).
    pub fn value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }

    /// What a reader is shown: a JSON string as its own text, anything else as JSON.
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        let text = self.as_str();
        match text
            .starts_with('"')
            .then(|| serde_json::from_str::<String>(&text))
        {
            Some(Ok(shown)) => shown.into(),
            _ => text,
        }
    }
}

/// Most distinct texts a [`TextPool`] remembers; past it, it forgets those nobody holds
/// any more, and, if that is not enough, all of them.
const POOLED_TEXTS_MAX: usize = 256;

/// Most bytes of a text a [`TextPool`] takes: a weak reference keeps its allocation (text
/// included) until the pool forgets it, so only small texts are remembered.
const POOLED_TEXT_BYTES_MAX: usize = 16 * 1024;

/// Equal texts held once however many transcripts hold them. Meant for answers that repeat
/// across incidents: what the mapping server answers is the catalog, the same runbook and
/// mapping for every incident of a service, and a storm holds thousands of them. A text
/// equal to one still held elsewhere is swapped for that one ([`TextPool::share`]). The pool
/// holds no text alive itself (weak references): a text goes when its last holder does.
#[derive(Debug, Default)]
pub struct TextPool {
    texts: std::sync::Mutex<std::collections::HashMap<u64, WeakHeld>>,
    hasher: std::hash::RandomState,
}

impl TextPool {
    /// `text`, or an equal text already held elsewhere.
    pub fn share(&self, text: JsonText) -> JsonText {
        use std::hash::BuildHasher;
        let bytes = text.0.bytes();
        if bytes.len() > POOLED_TEXT_BYTES_MAX {
            return text;
        }
        let hash = self.hasher.hash_one(bytes);
        let Ok(mut texts) = self.texts.lock() else {
            return text;
        };
        if let Some(held) = texts.get(&hash).and_then(WeakHeld::upgrade)
            && held == text.0
        {
            return JsonText(held);
        }
        if texts.len() >= POOLED_TEXTS_MAX {
            texts.retain(|_, held| held.is_held());
            if texts.len() >= POOLED_TEXTS_MAX {
                texts.clear();
            }
        }
        texts.insert(hash, text.0.downgrade());
        text
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> Self {
        JsonText::new(value.to_string())
    }
}

impl From<Value> for JsonText {
    fn from(value: Value) -> Self {
        JsonText::from(&value)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
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

/// A call's arguments: a JSON object held as its compact text. `serde_json` writes a map's
/// keys in order, so equal arguments are equal texts and comparing them (is this call a
/// repeat, is this the agent's own read) compares strings. Held as a map, a call's
/// arguments took a tree node of about 600 bytes per object, and a storm holds every
/// call of thousands of transcripts; readers parse the little they need.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct Arguments(Arc<str>);

impl Arguments {
    /// The compact JSON text of the object.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object, e.g. to send.
    pub fn object(&self) -> Map<String, Value> {
        // Written from a map (`From`), so it reads back as one.
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.object().remove(key)
    }

    /// The value of `key` when it is a string.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        &*self.0 == "{}"
    }

    /// The arguments `value` holds when it is an object; none (`{}`) when it is not.
    pub fn of_object(value: &Value) -> Arguments {
        match value {
            // A `Value`'s map writes its keys in order, as `From<Map>` does.
            Value::Object(_) => Arguments(value.to_string().into()),
            _ => Arguments::default(),
        }
    }
}

impl Default for Arguments {
    fn default() -> Self {
        Map::new().into()
    }
}

impl From<Map<String, Value>> for Arguments {
    fn from(map: Map<String, Value>) -> Self {
        Arguments(Value::Object(map).to_string().into())
    }
}

impl std::fmt::Debug for Arguments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Arguments> for Map<String, Value> {
    fn from(arguments: Arguments) -> Self {
        arguments.object()
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
    pub fn latest_ok(&self, tool: &str, matches: impl Fn(&Arguments) -> bool) -> Option<&JsonText> {
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

    /// Whether two texts are one allocation.
    fn same(a: &JsonText, b: &JsonText) -> bool {
        std::ptr::eq(a.0.bytes(), b.0.bytes())
    }

    /// `bytes` of text that LZ4 cannot shrink by a quarter.
    fn incompressible(bytes: usize) -> String {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    }

    /// A log page as `get-logs` answers it: many similar lines.
    fn log_page(lines: usize) -> Value {
        let lines: Vec<Value> = (0..lines)
            .map(|i| {
                json!({ "at": format!("2026-11-27T19:39:{:02}.747705303Z", i % 60),
                        "pod": "checkout-api-jw7m9-xx6v2", "level": "error",
                        "message": format!("java.lang.OutOfMemoryError: Java heap space ({i})"),
                        "source": "application" })
            })
            .collect();
        json!({ "service": "checkout-api", "lines": lines })
    }

    #[test]
    fn equal_texts_are_held_once_and_a_text_nobody_holds_is_not_kept() {
        let pool = TextPool::default();
        let runbook = json!({ "service": "checkout-api", "steps": ["a", "b"] });
        let first = pool.share(JsonText::from(&runbook));
        let again = pool.share(JsonText::from(&runbook));
        assert!(same(&first, &again), "an equal text is the one held");
        let other = pool.share(JsonText::from(json!({ "service": "payments-db" })));
        assert!(!same(&first, &other));
        assert_ne!(first, other);
        // Once nobody holds it, an equal text is held anew, not revived.
        let weak = first.0.downgrade();
        drop((first, again));
        assert!(weak.upgrade().is_none(), "the pool holds no text itself");
        let later = pool.share(JsonText::from(&runbook));
        assert_eq!(later.value(), runbook);
        // Past its bound it forgets what nobody holds and keeps sharing what is held.
        for i in 0..POOLED_TEXTS_MAX + 10 {
            let _ = pool.share(JsonText::from(json!({ "pod": i })));
        }
        let still = pool.share(JsonText::from(&runbook));
        assert!(same(&later, &still));
        assert!(pool.texts.lock().unwrap().len() <= POOLED_TEXTS_MAX);
        // A packed text is shared like any other.
        let logs = log_page(40);
        let (a, b) = (
            pool.share(JsonText::from(&logs)),
            pool.share(JsonText::from(&logs)),
        );
        assert!(matches!(a.0, Held::Packed(_)) && same(&a, &b));
        // A large text is not remembered (its allocation would outlive it).
        let large = json!(incompressible(POOLED_TEXT_BYTES_MAX));
        let a = pool.share(JsonText::from(&large));
        let b = pool.share(JsonText::from(&large));
        assert!(!same(&a, &b));
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

    #[test]
    fn a_large_result_is_held_packed_and_reads_back_as_it_came() {
        let logs = log_page(40);
        let text = logs.to_string();
        let held = JsonText::from(&logs);
        assert!(
            held.held_bytes() * 3 < text.len(),
            "{} bytes held for {}",
            held.held_bytes(),
            text.len()
        );
        assert_eq!(held.as_str(), text);
        assert_eq!(held.value(), logs);
        assert_eq!(format!("{held:?}"), text);
        assert_eq!(held, JsonText::from(&logs), "equal texts are equal packed");
        assert_ne!(held, JsonText::from(log_page(41)));
        let written = serde_json::to_value(Outcome::Ok { structured: held }).unwrap();
        assert_eq!(written["structured"], logs);
        // A string is shown as its text, packed or not.
        let long = "OOMKilled; back-off restarting failed container. ".repeat(40);
        assert_eq!(JsonText::from(json!(long)).display(), long);
        // What does not shrink by a quarter, and what is short, is held as it is.
        let noise = JsonText::from(json!(incompressible(4 * PACKED_TEXT_BYTES_MIN)));
        assert!(matches!(noise.0, Held::Text(_)));
        let short = JsonText::from(json!("x".repeat(PACKED_TEXT_BYTES_MIN - 10)));
        assert!(matches!(short.0, Held::Text(_)));
    }

    #[test]
    fn arguments_are_one_text_per_object_whatever_order_they_came_in() {
        let a: Arguments = serde_json::from_str(r#"{"b": 1, "a": {"y": "2", "x": [3]}}"#).unwrap();
        let b: Arguments = serde_json::from_str(r#"{"a": {"x": [3], "y": "2"}, "b": 1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), r#"{"a":{"x":[3],"y":"2"},"b":1}"#);
        assert_eq!(a.get("b"), Some(json!(1)));
        assert_eq!(a.string("b"), None, "not a string");
        assert_eq!(
            string_args(&[("podName", "p")])
                .string("podName")
                .as_deref(),
            Some("p")
        );
        assert_ne!(a, string_args(&[("b", "1")]));
        assert!(Arguments::default().is_empty() && !a.is_empty());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"a": {"x": [3], "y": "2"}, "b": 1})
        );
        // A number is the number it was written as: 1 and 1.0 are two arguments, as in a map.
        let one: Arguments = serde_json::from_str(r#"{"n": 1}"#).unwrap();
        let one_point_o: Arguments = serde_json::from_str(r#"{"n": 1.0}"#).unwrap();
        assert_ne!(one, one_point_o);
        // A long page draft reads back whole.
        let long = "OOMKilled; back-off restarting failed container. ".repeat(60);
        let page = string_args(&[("message", &long), ("severity", "critical")]);
        assert_eq!(page, page.clone());
        assert_eq!(page.string("message"), Some(long.clone()));
        assert_eq!(page.object()["message"], json!(long));
        // From a JSON value: the same text as from its map; anything else is no arguments.
        let value = json!({"b": 1, "a": {"y": "2", "x": [3]}});
        assert_eq!(Arguments::of_object(&value), a);
        assert!(Arguments::of_object(&json!([1])).is_empty());
        // Anything but an object is not arguments.
        assert!(serde_json::from_str::<Arguments>("[1]").is_err());
        assert!(serde_json::from_str::<Arguments>("\"{}\"").is_err());
    }

    /// A call as a reasoner asks for it (also for the openai reasoner's tests).
    pub(super) fn call(id: &str, tool: &str, arguments: Value) -> Call {
        Call {
            id: id.into(),
            tool: tool.into(),
            arguments: Arguments::of_object(&arguments),
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
