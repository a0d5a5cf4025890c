//! The request and response bodies FaaS handlers speak (`examples/lambda`, `infer serve`), and
//! their validation. No HTTP here: a handler parses a body with [`GenerateRequest::parse`], checks it
//! with [`GenerateRequest::into_job`], runs the [`Job`] on a [`crate::SessionPool`] and answers with
//! [`GenerateResponse::new`].
//!
//! An event is `{"prompt": "…"}` or `{"messages": [{"role", "content"}, …]}` with optional
//! `max_tokens`, `temperature`, `top_p`, `top_k`, `seed` and `stop` (a string or up to four); the
//! answer is `{text, finish_reason, usage, timings}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::Message;
use crate::constraint::Constraint;
use crate::error::Error;
use crate::logprobs::MAX_TOP_LOGPROBS;
use crate::sampler::SamplerConfig;
use crate::session::{GenerateOptions, Generation, Prompt};

/// Most stop strings one request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most prompt bytes (`prompt`, or every message's role and content plus
/// [`MESSAGE_OVERHEAD_BYTES`] each), checked before tokenizing: 64 bytes a token for a 4096-token
/// context, where text averages about 4.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// What each message counts towards [`MAX_PROMPT_BYTES`] besides its role and content (the chat
/// template's markup), so that many empty messages are capped too.
pub const MESSAGE_OVERHEAD_BYTES: usize = 16;

/// A generation request as it arrives; every field optional until [`GenerateRequest::into_job`].
/// Fields that change nothing here ([`IGNORED_FIELDS`]: OpenAI's `model`, `user`, …) are accepted;
/// any other field is refused by name (see [`check_rest`]) rather than silently not done.
#[derive(Clone, Debug, Default)]
pub struct GenerateRequest {
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens` in chat completions.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub min_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events (OpenAI endpoints only).
    pub stream: bool,
    /// Completions wanted; only 1 is supported.
    pub n: Option<u64>,
    /// Chat: `true` to return each token's log-probability; completions: how many alternatives to
    /// list per token (OpenAI's legacy integer form).
    pub logprobs: Option<Logprobs>,
    /// Chat: alternatives listed per token (0..=20), with `logprobs: true`.
    pub top_logprobs: Option<u64>,
    /// OpenAI's penalties on tokens already generated; only 0 is supported for now.
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {name, schema, strict}}`.
    pub response_format: Option<ResponseFormat>,
    /// Tool (function) definitions: parsed, refused until tool calling exists.
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
}

/// `logprobs`: a flag (chat) or a count of alternatives (completions).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Logprobs {
    Flag(bool),
    Count(u64),
}

/// OpenAI's `response_format`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Clone, Debug, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    /// OpenAI's strict mode; a constrained generation always follows the schema exactly.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// One message of a conversation.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What the request asks for.
#[derive(Clone, Debug)]
pub enum JobPrompt {
    Text(String),
    Chat(Vec<Message>),
}

/// A validated request: the prompt and the options to generate with.
#[derive(Clone, Debug)]
pub struct Job {
    pub prompt: JobPrompt,
    pub options: GenerateOptions,
    pub stream: bool,
    /// Log-probabilities wanted: how many alternatives per token (up to
    /// [`crate::logprobs::MAX_TOP_LOGPROBS`]); `None`: no log-probabilities.
    pub logprobs: Option<usize>,
}

impl Job {
    pub fn prompt(&self) -> Prompt<'_> {
        match &self.prompt {
            JobPrompt::Text(t) => Prompt::Text(t),
            JobPrompt::Chat(m) => Prompt::Chat(m),
        }
    }
}

/// Which prompt field a request must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    /// `prompt` or `messages`, exactly one (the FaaS event).
    Either,
    /// `prompt` only (`/v1/completions`).
    Text,
    /// `messages` only (`/v1/chat/completions`).
    Chat,
}

/// Bounds a handler puts on requests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `max_tokens` when the request gives none.
    pub default_max_tokens: usize,
    /// Largest `max_tokens` accepted: the sessions' context length.
    pub max_tokens: usize,
}

/// A request refused before generation: HTTP 400 (or a Lambda error) with this as the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// `invalid_json`, `invalid_request`, `prompt_too_large` or `context_length_exceeded`.
    pub code: &'static str,
    /// The field at fault, if one is.
    pub param: Option<&'static str>,
    pub message: String,
}

impl RequestError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            code: "invalid_request",
            param: Some(param),
            message: message.into(),
        }
    }

    /// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl GenerateRequest {
    /// Parses a JSON body: malformed JSON is an `invalid_json` error, a field of the wrong type an
    /// `invalid_request` error naming the field.
    pub fn parse(body: &[u8]) -> Result<GenerateRequest, RequestError> {
        let value = serde_json::from_slice(body).map_err(|e| RequestError {
            code: "invalid_json",
            param: None,
            message: format!("request body is not valid JSON: {e}"),
        })?;
        GenerateRequest::from_value(value)
    }

    /// A request from a JSON value (a Lambda event), checking each field's type.
    pub fn from_value(value: Value) -> Result<GenerateRequest, RequestError> {
        let Value::Object(mut obj) = value else {
            return Err(RequestError {
                code: "invalid_json",
                param: None,
                message: "the request must be a JSON object".into(),
            });
        };
        Ok(GenerateRequest {
            prompt: field(&mut obj, "prompt")?,
            messages: field(&mut obj, "messages")?,
            max_tokens: field(&mut obj, "max_tokens")?,
            max_completion_tokens: field(&mut obj, "max_completion_tokens")?,
            temperature: field(&mut obj, "temperature")?,
            top_p: field(&mut obj, "top_p")?,
            top_k: field(&mut obj, "top_k")?,
            min_p: field(&mut obj, "min_p")?,
            seed: field(&mut obj, "seed")?,
            stop: field(&mut obj, "stop")?,
            stream: field(&mut obj, "stream")?.unwrap_or(false),
            n: field(&mut obj, "n")?,
            logprobs: field(&mut obj, "logprobs")?,
            top_logprobs: field(&mut obj, "top_logprobs")?,
            presence_penalty: field(&mut obj, "presence_penalty")?,
            frequency_penalty: field(&mut obj, "frequency_penalty")?,
            response_format: field(&mut obj, "response_format")?,
            tools: field(&mut obj, "tools")?,
            tool_choice: field(&mut obj, "tool_choice")?,
        })
        .and_then(|r| check_rest(obj).map(|()| r))
    }

    /// Checks every field against `limits` and turns the request into a [`Job`].
    pub fn into_job(self, kind: PromptKind, limits: &Limits) -> Result<Job, RequestError> {
        let prompt = match (kind, self.prompt, self.messages) {
            (PromptKind::Chat, Some(_), _) => {
                return Err(RequestError::invalid(
                    "prompt",
                    "chat completions take `messages`, not `prompt`",
                ))
            }
            (PromptKind::Text, _, Some(_)) => {
                return Err(RequestError::invalid(
                    "messages",
                    "completions take `prompt`, not `messages` (use /v1/chat/completions)",
                ))
            }
            (_, Some(_), Some(_)) => {
                return Err(RequestError::invalid(
                    "prompt",
                    "give either `prompt` or `messages`, not both",
                ))
            }
            (_, Some(p), None) if p.is_empty() => {
                return Err(RequestError::invalid("prompt", "`prompt` is empty"))
            }
            (_, Some(p), None) if p.len() > MAX_PROMPT_BYTES => {
                return Err(prompt_too_large("prompt", p.len()))
            }
            (_, Some(p), None) => JobPrompt::Text(p),
            (_, None, Some(m)) => JobPrompt::Chat(check_messages(m)?),
            (PromptKind::Chat, None, None) => {
                return Err(RequestError::invalid("messages", "`messages` is required"))
            }
            (_, None, None) => {
                return Err(RequestError::invalid(
                    "prompt",
                    "`prompt` (or `messages`) is required",
                ))
            }
        };
        if self.n.is_some_and(|n| n != 1) {
            return Err(RequestError::invalid("n", "only n = 1 is supported"));
        }
        let max_tokens = match self.max_tokens.or(self.max_completion_tokens) {
            None => limits.default_max_tokens.min(limits.max_tokens),
            Some(n) if n >= 1 && n <= limits.max_tokens as u64 => n as usize,
            Some(n) => {
                return Err(RequestError::invalid(
                    "max_tokens",
                    format!("max_tokens {n} is outside 1..={}", limits.max_tokens),
                ))
            }
        };
        let mut sampler = SamplerConfig::default();
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(RequestError::invalid(
                    "temperature",
                    format!("temperature {t} is outside [0, 2]"),
                ));
            }
            sampler.temperature = t as f32;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(RequestError::invalid(
                    "top_p",
                    format!("top_p {p} is outside (0, 1]"),
                ));
            }
            sampler.top_p = p as f32;
        }
        if let Some(p) = self.min_p {
            if !(0.0..1.0).contains(&p) {
                return Err(RequestError::invalid(
                    "min_p",
                    format!("min_p {p} is outside [0, 1)"),
                ));
            }
            sampler.min_p = p as f32;
        }
        if let Some(k) = self.top_k {
            sampler.top_k = usize::try_from(k).unwrap_or(usize::MAX);
        }
        if let Some(seed) = self.seed {
            sampler.seed = seed;
        }
        if sampler.temperature == 0.0 {
            sampler = SamplerConfig {
                seed: sampler.seed,
                ..SamplerConfig::greedy()
            };
        }
        sampler
            .validate()
            .map_err(|e| RequestError::invalid("temperature", e.to_string()))?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP_STRINGS {
            return Err(RequestError::invalid(
                "stop",
                format!("at most {MAX_STOP_STRINGS} stop strings"),
            ));
        }
        if stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(RequestError::invalid(
                "stop",
                format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes"),
            ));
        }
        for (name, penalty) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            match penalty {
                None | Some(0.0) => {}
                Some(p) if !(-2.0..=2.0).contains(&p) => {
                    return Err(RequestError::invalid(
                        name,
                        format!("{name} {p} is outside [-2, 2]"),
                    ))
                }
                Some(_) => {}
            }
        }
        sampler.presence_penalty = self.presence_penalty.unwrap_or(0.0) as f32;
        sampler.frequency_penalty = self.frequency_penalty.unwrap_or(0.0) as f32;
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(RequestError::invalid(
                "tools",
                "`tools` (tool calling) is not supported by this server yet",
            ));
        }
        match &self.tool_choice {
            None => {}
            Some(Value::String(c)) if c == "none" || c == "auto" => {}
            Some(_) => {
                return Err(RequestError::invalid(
                    "tool_choice",
                    "`tool_choice` needs `tools`, which this server does not support yet",
                ))
            }
        }
        let logprobs = logprobs(kind, self.logprobs, self.top_logprobs)?;
        let constraint =
            match self.response_format {
                None | Some(ResponseFormat::Text) => None,
                Some(ResponseFormat::JsonObject) => Some(Constraint::JsonObject),
                Some(ResponseFormat::JsonSchema { json_schema }) => match json_schema.schema {
                    Some(schema) if schema.is_object() || schema.is_boolean() => {
                        Some(Constraint::JsonSchema(schema))
                    }
                    _ => return Err(RequestError::invalid(
                        "response_format",
                        "`response_format.json_schema.schema` must be a JSON Schema (an object)",
                    )),
                },
            };
        if logprobs.is_some() && constraint.is_some() {
            return Err(RequestError::invalid(
                "logprobs",
                "`logprobs` with a JSON `response_format` is not supported yet",
            ));
        }
        Ok(Job {
            prompt,
            options: GenerateOptions {
                max_tokens,
                sampler,
                stop,
                constraint,
                ..GenerateOptions::default()
            },
            stream: self.stream,
            logprobs,
        })
    }
}

/// How many alternatives per token a request wants with its log-probabilities, if it wants them:
/// chat's `logprobs: true` with `top_logprobs`, or the completions' integer `logprobs`.
fn logprobs(
    kind: PromptKind,
    logprobs: Option<Logprobs>,
    top: Option<u64>,
) -> Result<Option<usize>, RequestError> {
    let max = MAX_TOP_LOGPROBS as u64;
    let n = match (logprobs, top) {
        (None | Some(Logprobs::Flag(false)), None) => return Ok(None),
        // The FaaS answer ({text, finish_reason, usage, timings}) has no place for them.
        (_, _) if kind == PromptKind::Either => {
            return Err(RequestError::invalid(
                "logprobs",
                "log-probabilities are returned by the OpenAI endpoints only",
            ))
        }
        (None | Some(Logprobs::Flag(false)), Some(_)) => {
            return Err(RequestError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        (Some(Logprobs::Flag(true)), top) if kind != PromptKind::Text => top.unwrap_or(0),
        (Some(Logprobs::Count(n)), None) if kind != PromptKind::Chat => n,
        (Some(Logprobs::Count(_)), _) if kind == PromptKind::Chat => {
            return Err(RequestError::invalid(
                "logprobs",
                "chat completions take `logprobs: true` and `top_logprobs: n`",
            ))
        }
        (Some(_), _) => {
            return Err(RequestError::invalid(
                "logprobs",
                "completions take `logprobs: n`, the alternatives to list per token",
            ))
        }
    };
    if n > max {
        let param = if top.is_some() {
            "top_logprobs"
        } else {
            "logprobs"
        };
        return Err(RequestError::invalid(
            param,
            format!("at most {max} alternatives per token"),
        ));
    }
    Ok(Some(n as usize))
}

/// Fields OpenAI clients may send that change nothing here, accepted and ignored: the model name
/// (there is one model), end-user ids and storage/tier hints, `stream_options` (the last streamed
/// chunk always carries the usage).
pub const IGNORED_FIELDS: &[&str] = &[
    "model",
    "user",
    "stream_options",
    "store",
    "metadata",
    "service_tier",
    // Only meaningful with `tools`, which are refused.
    "parallel_tool_calls",
];

/// OpenAI fields this server does not implement, refused with the field as `param` unless given
/// their default (harmless) value.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "logit_bias",
    "echo",
    "best_of",
    "suffix",
    "functions",
    "function_call",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
];

/// Refuses what is left of a request after its known fields were taken: a field we do not implement
/// is named in `param` (so clients show it), an unknown one (a typo) in the message. Defaults that
/// OpenAI clients send explicitly (`echo: false`, `best_of: 1`, `logit_bias: {}`,
/// `functions: []`) are accepted.
fn check_rest(obj: Map<String, Value>) -> Result<(), RequestError> {
    let mut unknown = Vec::new();
    for (name, value) in &obj {
        if IGNORED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let harmless = match (name.as_str(), value) {
            (_, Value::Null) => true,
            ("echo", Value::Bool(false)) => true,
            ("best_of", v) => v.as_u64() == Some(1),
            ("logit_bias", Value::Object(m)) => m.is_empty(),
            ("functions", Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if harmless {
            continue;
        }
        match UNSUPPORTED_FIELDS.iter().find(|f| **f == name.as_str()) {
            Some(f) => {
                return Err(RequestError::invalid(
                    f,
                    format!("`{f}` is not supported by this server"),
                ))
            }
            None => unknown.push(format!("`{name}`")),
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(RequestError {
        code: "invalid_request",
        param: None,
        message: format!("unknown field(s) {}", unknown.join(", ")),
    })
}

/// Field `name` of `obj` as a `T`; absent or null is `None`.
fn field<T: DeserializeOwned>(
    obj: &mut Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, RequestError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
            RequestError::invalid(name, format!("`{name}` has the wrong type or value: {e}"))
        }),
    }
}

/// A prompt over [`MAX_PROMPT_BYTES`].
fn prompt_too_large(param: &'static str, bytes: usize) -> RequestError {
    RequestError {
        code: "prompt_too_large",
        param: Some(param),
        message: format!("`{param}` is {bytes} bytes; at most {MAX_PROMPT_BYTES}"),
    }
}

fn check_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, RequestError> {
    if messages.is_empty() {
        return Err(RequestError::invalid("messages", "`messages` is empty"));
    }
    let bytes = messages.iter().fold(0usize, |n, m| {
        n.saturating_add(m.role.len())
            .saturating_add(m.content.len())
            .saturating_add(MESSAGE_OVERHEAD_BYTES)
    });
    if bytes > MAX_PROMPT_BYTES {
        return Err(prompt_too_large("messages", bytes));
    }
    messages
        .into_iter()
        .map(|m| match m.role.as_str() {
            "system" | "user" | "assistant" => Ok(Message::new(m.role, m.content)),
            other => Err(RequestError::invalid(
                "messages",
                format!("unknown role `{other}` (system, user or assistant)"),
            )),
        })
        .collect()
}

/// How a generation failure is reported: a short code and the HTTP status.
pub fn error_code(err: &Error) -> (&'static str, u16) {
    match err {
        Error::PromptTooLong { .. } => ("context_length_exceeded", 400),
        Error::EmptyPrompt => ("invalid_request", 400),
        Error::PoolBusy { .. } => ("busy", 503),
        // A request option the generation cannot honour: a constraint kind not built yet, or
        // log-probabilities that cannot follow this request's sampling (see `crate::logprobs`).
        Error::Options {
            field: "constraint" | "logprobs",
            ..
        } => ("invalid_request", 400),
        _ => ("internal_error", 500),
    }
}

/// A generation failure as a [`RequestError`]-shaped body with `code`.
pub fn error_json(err: &Error) -> serde_json::Value {
    let (code, _) = error_code(err);
    let kind = if code == "internal_error" {
        "server_error"
    } else {
        "invalid_request_error"
    };
    serde_json::json!({"error": {
        "message": err.to_string(),
        "type": kind,
        "param": null,
        "code": code,
    }})
}

/// Token counts, as OpenAI reports them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// Where the time went, in milliseconds, and how much of the prompt was computed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TimingsBody {
    /// Prompt tokens computed (the rest came from the prefix cache).
    pub prompt_tokens_evaluated: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub tokens_per_s: f64,
}

/// The answer to a FaaS event: `{text, finish_reason, usage, timings}`.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateResponse {
    pub text: String,
    pub finish_reason: &'static str,
    pub usage: Usage,
    pub timings: TimingsBody,
}

impl GenerateResponse {
    /// The answer for `g`, which took `total_ms` from the request's arrival.
    pub fn new(g: &Generation, total_ms: f64) -> GenerateResponse {
        let t = &g.timings;
        GenerateResponse {
            text: g.text.clone(),
            finish_reason: g.finish_reason.as_str(),
            usage: usage(g),
            timings: TimingsBody {
                prompt_tokens_evaluated: t.prompt_tokens_evaluated,
                prefill_ms: round2(t.prefill_ms),
                decode_ms: round2(t.decode_ms),
                ttft_ms: round2(t.ttft_ms),
                total_ms: round2(total_ms),
                tokens_per_s: round2(t.decode_tokens_per_s()),
            },
        }
    }
}

pub fn usage(g: &Generation) -> Usage {
    Usage {
        prompt_tokens: g.timings.prompt_tokens,
        completion_tokens: g.timings.generated_tokens,
        total_tokens: g.timings.prompt_tokens + g.timings.generated_tokens,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A variable of the environment as a number, `default` when unset; a malformed value is an error
/// naming the variable.
pub fn env_usize(name: &'static str, default: usize) -> Result<usize, Error> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v.trim().parse().map_err(|_| Error::Options {
            field: name,
            reason: format!("`{v}` is not a non-negative integer"),
        }),
    }
}

#[cfg(test)]
mod tests;
