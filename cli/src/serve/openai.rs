//! OpenAI-compatible `POST /v1/completions` and `POST /v1/chat/completions`, whole or streamed as
//! server-sent events (`"stream": true`: one `data:` chunk per piece of text, a last chunk with the
//! finish reason and usage, then `data: [DONE]`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeinfer::logprobs::{generate_with_logprobs, TokenLogprob};
use edgeinfer::request::{error_json, usage, Job, PromptKind};
use edgeinfer::{Generation, Model};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{App, RequestCtx};

/// Which OpenAI endpoint: they differ only in the shape of their JSON.
#[derive(Clone, Copy)]
enum Api {
    Completions,
    Chat,
}

pub(crate) async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(app, Api::Completions, &headers, &body).await
}

pub(crate) async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(app, Api::Chat, &headers, &body).await
}

/// `GET /v1/models`: the one model served, under the name the answers' `model` field gives.
pub(crate) async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_name,
            "object": "model",
            "created": app.created,
            "owned_by": "edgeinfer",
        }],
    }))
}

async fn respond(app: Arc<App>, api: Api, headers: &HeaderMap, body: &[u8]) -> Response {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ctx = app.request(api.endpoint(), id);
    let job = match app.job(body, api.prompt_kind()) {
        Ok(job) => job,
        Err(e) => return app.refuse(&ctx, e),
    };
    if job.stream {
        return stream(app, api, ctx, job).await;
    }
    let result = match job.logprobs {
        None => app.generate(job).await.map(|g| (g, None)),
        Some(_) => {
            let worker = app.clone();
            tokio::task::spawn_blocking(move || worker.generate_logprobs(&job, |_, _| true))
                .await
                .unwrap_or_else(|join| Err(super::thread_failed(join)))
                .map(|(g, lp)| (g, Some(lp)))
        }
    };
    match result {
        Ok((g, lp)) => {
            app.finish(&ctx, 200, Some(&g), None);
            let out = Out::new(api, &ctx, &app);
            Json(out.whole(&g, lp.as_deref())).into_response()
        }
        Err(e) => app.fail(&ctx, &e),
    }
}

impl App {
    /// Generates `job` (which wants log-probabilities) on this thread, `on_text` as for
    /// [`generate_with_logprobs`].
    fn generate_logprobs(
        &self,
        job: &Job,
        on_text: impl FnMut(&str, Vec<TokenLogprob>) -> bool,
    ) -> edgeinfer::Result<(Generation, Vec<TokenLogprob>)> {
        let top = job.logprobs.unwrap_or(0);
        generate_with_logprobs(&self.pool, &job.prompt(), &job.options, top, on_text)
    }
}

/// What the generation thread sends to the response stream.
enum Piece {
    /// A piece of text and the log-probabilities of the tokens drawn for it, if asked for.
    Text(String, Option<Vec<TokenLogprob>>),
    Done(edgeinfer::Result<Generation>),
}

/// Streams the generation as SSE. Waits for the first piece first, so an error found before any
/// text (a prompt over the context) is an ordinary HTTP error. A client that goes away drops the
/// stream, the generation thread's next send fails and generation ends (`cancelled`). The
/// generation thread records the request (metrics, log line), since the stream may be gone by then.
async fn stream(app: Arc<App>, api: Api, ctx: RequestCtx, job: Job) -> Response {
    let (tx, mut rx) = mpsc::channel::<Piece>(64);
    let worker = app.clone();
    let worker_ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let result = match job.logprobs {
            None => worker.pool.generate(&job.prompt(), &job.options, |text| {
                tx.blocking_send(Piece::Text(text.to_string(), None))
                    .is_ok()
            }),
            Some(_) => worker
                .generate_logprobs(&job, |text, lp| {
                    tx.blocking_send(Piece::Text(text.to_string(), Some(lp)))
                        .is_ok()
                })
                .map(|(g, _)| g),
        };
        match &result {
            Ok(g) => worker.finish(&worker_ctx, 200, Some(g), None),
            Err(e) => {
                let (code, status) = edgeinfer::request::error_code(e);
                worker.finish(&worker_ctx, status, None, Some(code));
            }
        }
        let _ = tx.blocking_send(Piece::Done(result));
    });
    let first = match rx.recv().await {
        // Already recorded by the generation thread.
        Some(Piece::Done(Err(e))) => return App::error_response(&e),
        Some(p) => p,
        None => {
            let e = edgeinfer::Error::Options {
                field: "generation",
                reason: "the generation thread ended without an answer".into(),
            };
            return app.fail(&ctx, &e);
        }
    };
    let out = Out::new(api, &ctx, &app);
    let state = StreamState {
        out,
        rx,
        pending: VecDeque::from([first]),
        queued: VecDeque::new(),
        done: false,
        token_bytes: 0,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct StreamState {
    out: Out,
    rx: mpsc::Receiver<Piece>,
    /// Pieces received but not yet turned into events (the first one).
    pending: VecDeque<Piece>,
    /// Events ready to send.
    queued: VecDeque<Event>,
    done: bool,
    /// Bytes of the tokens streamed so far (completions' `text_offset`).
    token_bytes: usize,
}

impl StreamState {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let piece = match self.pending.pop_front() {
                Some(p) => p,
                None => self.rx.recv().await?,
            };
            match piece {
                Piece::Text(text, lp) => {
                    let lp = lp.as_deref().map(|lp| {
                        let at = self.token_bytes;
                        self.token_bytes += lp
                            .iter()
                            .map(|t| self.out.token(t.token).1.len())
                            .sum::<usize>();
                        (lp, at)
                    });
                    let chunk = self.out.chunk(&text, lp, None, None);
                    self.queued
                        .push_back(Event::default().data(chunk.to_string()));
                }
                Piece::Done(Ok(g)) => {
                    let last = self.out.chunk("", None, Some(&g), Some(usage_json(&g)));
                    self.queued
                        .push_back(Event::default().data(last.to_string()));
                    self.queued.push_back(Event::default().data("[DONE]"));
                    self.done = true;
                }
                Piece::Done(Err(e)) => {
                    self.queued
                        .push_back(Event::default().data(error_json(&e).to_string()));
                    self.queued.push_back(Event::default().data("[DONE]"));
                    self.done = true;
                }
            }
        }
    }
}

/// The fields every answer of one request repeats.
struct Out {
    api: Api,
    id: String,
    created: u64,
    model: String,
    /// For the tokens' text in log-probabilities.
    llm: Arc<Model>,
}

impl Out {
    fn new(api: Api, ctx: &RequestCtx, app: &App) -> Out {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let prefix = match api {
            Api::Completions => "cmpl",
            Api::Chat => "chatcmpl",
        };
        Out {
            api,
            id: format!("{prefix}-{}", ctx.id),
            created,
            model: app.model_name.clone(),
            llm: app.pool.model().clone(),
        }
    }

    /// A token as OpenAI shows it: its text (lossy where a token is part of a UTF-8 character) and
    /// its exact bytes.
    fn token(&self, id: u32) -> (String, &[u8]) {
        let bytes = self.llm.tokenizer().token_bytes(id).unwrap_or_default();
        (String::from_utf8_lossy(bytes).into_owned(), bytes)
    }

    /// `choices[].logprobs` for `tokens`, in the shape of this API; `text_offset` (completions) counts
    /// from `offset`, the bytes of text before them.
    fn logprobs(&self, tokens: &[TokenLogprob], offset: usize) -> Value {
        match self.api {
            Api::Chat => {
                let content: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let (text, bytes) = self.token(t.token);
                        let top: Vec<Value> = t
                            .top
                            .iter()
                            .map(|&(id, lp)| {
                                let (text, bytes) = self.token(id);
                                json!({"token": text, "logprob": lp, "bytes": bytes})
                            })
                            .collect();
                        json!({"token": text, "logprob": t.logprob, "bytes": bytes,
                               "top_logprobs": top})
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Api::Completions => {
                let mut texts = Vec::with_capacity(tokens.len());
                let mut offsets = Vec::with_capacity(tokens.len());
                let mut at = offset;
                for t in tokens {
                    let (text, bytes) = self.token(t.token);
                    offsets.push(at);
                    at += bytes.len();
                    texts.push(text);
                }
                let lps: Vec<f32> = tokens.iter().map(|t| t.logprob).collect();
                let tops: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let top: serde_json::Map<String, Value> = t
                            .top
                            .iter()
                            .map(|&(id, lp)| (self.token(id).0, json!(lp)))
                            .collect();
                        Value::Object(top)
                    })
                    .collect();
                json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops,
                       "text_offset": offsets})
            }
        }
    }

    fn whole(&self, g: &Generation, lp: Option<&[TokenLogprob]>) -> Value {
        let reason = g.finish_reason.as_str();
        let logprobs = lp.map_or(Value::Null, |lp| self.logprobs(lp, 0));
        let choice = match self.api {
            Api::Completions => {
                json!({"index": 0, "text": g.text, "logprobs": logprobs, "finish_reason": reason})
            }
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": g.text},
                "logprobs": logprobs,
                "finish_reason": reason,
            }),
        };
        json!({
            "id": self.id,
            "object": self.api.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage_json(g),
        })
    }

    /// A streamed chunk: a piece of text (with its tokens' log-probabilities if asked for, and the
    /// bytes of the tokens before them), or (with `g`) the last one with the finish reason.
    fn chunk(
        &self,
        text: &str,
        lp: Option<(&[TokenLogprob], usize)>,
        g: Option<&Generation>,
        usage: Option<Value>,
    ) -> Value {
        let reason = g.map(|g| g.finish_reason.as_str());
        let logprobs = lp.map_or(Value::Null, |(lp, at)| self.logprobs(lp, at));
        let choice = match self.api {
            Api::Completions => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason})
            }
            Api::Chat if g.is_some() => json!({"index": 0, "delta": {}, "finish_reason": reason}),
            Api::Chat => json!({
                "index": 0,
                "delta": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": null,
            }),
        };
        json!({
            "id": self.id,
            "object": self.api.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        })
    }
}

fn usage_json(g: &Generation) -> Value {
    serde_json::to_value(usage(g)).unwrap_or(Value::Null)
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat_completions",
        }
    }

    fn prompt_kind(self) -> PromptKind {
        match self {
            Api::Completions => PromptKind::Text,
            Api::Chat => PromptKind::Chat,
        }
    }

    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }
}
