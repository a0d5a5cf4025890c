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
use edgeinfer::request::{error_json, usage, Job, PromptKind};
use edgeinfer::Generation;
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
    match app.generate(job).await {
        Ok(g) => {
            app.finish(&ctx, 200, Some(&g), None);
            let out = Out::new(api, &ctx, &app);
            Json(out.whole(&g)).into_response()
        }
        Err(e) => app.fail(&ctx, &e),
    }
}

/// What the generation thread sends to the response stream.
enum Piece {
    Text(String),
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
        let result = worker.pool.generate(&job.prompt(), &job.options, |text| {
            tx.blocking_send(Piece::Text(text.to_string())).is_ok()
        });
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
                Piece::Text(text) => {
                    let chunk = self.out.chunk(&text, None, None);
                    self.queued
                        .push_back(Event::default().data(chunk.to_string()));
                }
                Piece::Done(Ok(g)) => {
                    let last = self.out.chunk("", Some(&g), Some(usage_json(&g)));
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
        }
    }

    fn whole(&self, g: &Generation) -> Value {
        let reason = g.finish_reason.as_str();
        let choice = match self.api {
            Api::Completions => {
                json!({"index": 0, "text": g.text, "logprobs": null, "finish_reason": reason})
            }
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": g.text},
                "logprobs": null,
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

    /// A streamed chunk: a piece of text, or (with `g`) the last one with the finish reason.
    fn chunk(&self, text: &str, g: Option<&Generation>, usage: Option<Value>) -> Value {
        let reason = g.map(|g| g.finish_reason.as_str());
        let choice = match self.api {
            Api::Completions => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
            }
            Api::Chat if g.is_some() => json!({"index": 0, "delta": {}, "finish_reason": reason}),
            Api::Chat => json!({
                "index": 0,
                "delta": {"role": "assistant", "content": text},
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
