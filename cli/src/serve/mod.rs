//! `infer serve`: one HTTP server that is both an Alibaba Function Compute custom runtime
//! (`POST /initialize`, `POST /invoke`) and a local OpenAI-compatible server (`POST /v1/completions`,
//! `POST /v1/chat/completions` with SSE streaming, `GET /v1/models`, `POST /v1/embeddings`,
//! `GET /health`, Prometheus `GET /metrics`, and a chat page at `GET /`).
//!
//! The model is loaded once; requests run on sessions of a [`SessionPool`] (at most `--sessions` at
//! once, the rest wait), each generation on tokio's blocking pool so the server keeps answering.
//! One log line per request (JSON unless stdout is a terminal).

mod embeddings;
mod guard;
mod metrics;
mod openai;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{Args, ValueEnum};
use edgeinfer::request::{
    error_code, error_json, GenerateRequest, GenerateResponse, Job, Limits, PromptKind,
    RequestError,
};
use edgeinfer::{Generation, SessionOptions, SessionPool};
use serde_json::json;

use crate::ModelArgs;
use metrics::{Metrics, Observation};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Port to listen on (0: any free port; the address is printed to stderr).
    #[arg(long, env = "FC_SERVER_PORT", default_value_t = 9000)]
    port: u16,
    /// Address to bind [default: 127.0.0.1; 0.0.0.0 under Function Compute, i.e. when
    /// FC_SERVER_PORT or FC_FUNCTION_NAME is set].
    #[arg(long)]
    host: Option<String>,
    /// Require `Authorization: Bearer <key>` on every route but GET /health and GET / (and, under
    /// Function Compute, /initialize and /invoke, which the platform guards); else 401.
    #[arg(long = "api-key", env = "EDGEINFER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in bytes; a larger one is refused with 413.
    #[arg(
        long = "max-body-bytes",
        env = "EDGEINFER_MAX_BODY_BYTES",
        default_value_t = 1 << 20
    )]
    max_body_bytes: usize,
    /// Context size of each session in tokens [default: the model's, at most 4096].
    #[arg(
        short = 'c',
        long = "ctx-size",
        env = "EDGEINFER_MAX_CONTEXT",
        default_value_t = 0,
        hide_default_value = true
    )]
    ctx_size: usize,
    /// Most requests generating at once (each has its own session); more wait for a free one.
    #[arg(long, env = "EDGEINFER_SESSIONS", default_value_t = 4)]
    sessions: usize,
    /// max_tokens of a request that gives none.
    #[arg(
        long = "default-max-tokens",
        env = "EDGEINFER_DEFAULT_MAX_TOKENS",
        default_value_t = 256
    )]
    default_max_tokens: usize,
    /// Longest a generation may run, in milliseconds (0: no limit); then it ends with
    /// finish_reason "deadline" and the text so far.
    #[arg(
        long = "timeout-ms",
        env = "EDGEINFER_REQUEST_TIMEOUT_MS",
        default_value_t = 0
    )]
    timeout_ms: u64,
    /// Log format [default: text on a terminal, else json].
    #[arg(long = "log-format", env = "EDGEINFER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// What every request shares.
pub(crate) struct App {
    pool: SessionPool,
    limits: Limits,
    model_name: String,
    /// When the model was loaded, in Unix seconds (`/v1/models`' `created`).
    created: u64,
    /// Embedding requests running at once, at most `--sessions` (each has a state of its own), so a
    /// flood of them waits instead of growing memory.
    embed_permits: tokio::sync::Semaphore,
    metrics: Metrics,
    next_id: AtomicU64,
    timeout: Option<Duration>,
}

/// One request being answered.
#[derive(Clone)]
pub(crate) struct RequestCtx {
    id: String,
    endpoint: &'static str,
    arrived: Instant,
}

pub fn run(args: ServeArgs) -> Result<()> {
    init_logs(args.log_format);
    let model = args.model.load()?;
    let opts = SessionOptions {
        ctx: args.ctx_size,
        // Each session's arena and KV cache resident when it opens: RSS flat while serving
        // (cli/tests/soak.rs), and a machine short of memory fails at the first requests, not later.
        prefault: true,
        ..args.model.session_options()
    };
    let pool = SessionPool::new(model, opts, args.sessions)?;
    // One session ready before the first request, so it allocates nothing.
    pool.prewarm(1)?;
    let model_name = args
        .model
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.model.model.display().to_string());
    let app = Arc::new(App {
        limits: Limits {
            default_max_tokens: args.default_max_tokens,
            max_tokens: pool.ctx(),
        },
        pool,
        model_name,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        embed_permits: tokio::sync::Semaphore::new(args.sessions.max(1)),
        metrics: Metrics::default(),
        next_id: AtomicU64::new(1),
        timeout: (args.timeout_ms > 0).then(|| Duration::from_millis(args.timeout_ms)),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let function_compute = under_function_compute();
    let host = args.host.clone().unwrap_or_else(|| {
        // The platform reaches the container from outside; anywhere else, listen only locally
        // unless asked (an open port would serve the model to the whole network).
        if function_compute {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        }
        .to_string()
    });
    let guard = Arc::new(guard::Guard {
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        function_compute,
        max_body_bytes: args.max_body_bytes,
    });
    runtime.block_on(serve(app, guard, &host, args.port))
}

/// Function Compute's custom runtime sets these in the container.
fn under_function_compute() -> bool {
    ["FC_SERVER_PORT", "FC_FUNCTION_NAME"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

async fn serve(app: Arc<App>, guard: Arc<guard::Guard>, host: &str, port: u16) -> Result<()> {
    let max_body = guard.max_body_bytes;
    let router = Router::new()
        .route("/initialize", post(initialize))
        .route("/invoke", post(invoke))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/", get(chat_page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(app.clone())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check));
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding {host}:{port}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(
        %addr,
        model = %app.model_name,
        ctx = app.pool.ctx(),
        sessions = app.pool.max_sessions(),
        kernels = app.pool.model().kernels().variant.name(),
        threads = app.pool.model().threads(),
        "listening"
    );
    eprintln!("infer serve: listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logs(format: Option<LogFormat>) {
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stdout);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    let _ = result; // A subscriber already set (never, in the binary) keeps working.
}

/// FC calls this once per instance before the first /invoke; the model is already loaded.
async fn initialize(headers: HeaderMap) -> StatusCode {
    let id = fc_request_id(&headers).unwrap_or_default();
    println!("FC Initialize Start RequestId: {id}");
    println!("FC Initialize End RequestId: {id}");
    StatusCode::OK
}

/// FC's invocation: the body is the event (as for the Lambda example), the answer its JSON result.
async fn invoke(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = app.request("invoke", fc_request_id(&headers));
    println!("FC Invoke Start RequestId: {}", ctx.id);
    let response = match app.job(&body, PromptKind::Either) {
        Err(e) => app.refuse(&ctx, e),
        Ok(job) => match app.generate(job).await {
            Ok(g) => {
                let total_ms = ctx.arrived.elapsed().as_secs_f64() * 1e3;
                app.finish(&ctx, 200, Some(&g), None);
                Json(GenerateResponse::new(&g, total_ms)).into_response()
            }
            Err(e) => app.fail(&ctx, &e),
        },
    };
    println!("FC Invoke End RequestId: {}", ctx.id);
    response
}

/// The chat page: static HTML that streams answers from /v1/chat/completions in the browser.
async fn chat_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("chat.html"))
}

async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let stats = app.pool.stats();
    Json(json!({
        "status": "ok",
        "model": app.model_name,
        "ctx": app.pool.ctx(),
        "sessions": {"max": stats.max_sessions, "open": stats.open, "idle": stats.idle},
        "memory": {
            "weights_mapped": stats.memory.weights_mapped,
            "arena": stats.memory.arena,
            "kv_cache": stats.memory.kv_cache,
        },
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.pool.stats());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A generation thread that panicked or was cancelled, as an error.
fn thread_failed(join: tokio::task::JoinError) -> edgeinfer::Error {
    edgeinfer::Error::Options {
        field: "generation",
        reason: format!("the generation thread failed: {join}"),
    }
}

fn fc_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-fc-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl App {
    fn request(&self, endpoint: &'static str, id: Option<String>) -> RequestCtx {
        let id =
            id.unwrap_or_else(|| format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed)));
        RequestCtx {
            id,
            endpoint,
            arrived: Instant::now(),
        }
    }

    /// Parses and validates a body.
    fn job(&self, body: &[u8], kind: PromptKind) -> Result<Job, RequestError> {
        let mut job = GenerateRequest::parse(body)?.into_job(kind, &self.limits)?;
        job.options.deadline = self.timeout.map(|t| Instant::now() + t);
        Ok(job)
    }

    /// Runs `job` to the end on the blocking pool.
    async fn generate(self: &Arc<Self>, job: Job) -> Result<Generation, edgeinfer::Error> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            app.pool.generate(&job.prompt(), &job.options, |_| true)
        })
        .await
        .unwrap_or_else(|join| Err(thread_failed(join)))
    }

    /// A refused request: 400 with the error body.
    fn refuse(&self, ctx: &RequestCtx, e: RequestError) -> Response {
        self.finish(ctx, 400, None, Some(e.code));
        (StatusCode::BAD_REQUEST, Json(e.to_json())).into_response()
    }

    /// A failed generation, recorded: its status and error body.
    fn fail(&self, ctx: &RequestCtx, e: &edgeinfer::Error) -> Response {
        let (code, status) = error_code(e);
        self.finish(ctx, status, None, Some(code));
        App::error_response(e)
    }

    /// The status and error body of a failed generation.
    fn error_response(e: &edgeinfer::Error) -> Response {
        let (_, status) = error_code(e);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(error_json(e))).into_response()
    }

    /// Records a finished request: metrics and its log line.
    fn finish(&self, ctx: &RequestCtx, status: u16, g: Option<&Generation>, error: Option<&str>) {
        let duration_ms = ctx.arrived.elapsed().as_secs_f64() * 1e3;
        let t = g.map(|g| g.timings).unwrap_or_default();
        let finish_reason = g.map(|g| g.finish_reason.as_str());
        self.metrics.record(&Observation {
            endpoint: ctx.endpoint,
            status,
            finish_reason,
            prompt_tokens: t.prompt_tokens,
            prompt_tokens_evaluated: t.prompt_tokens_evaluated,
            completion_tokens: t.generated_tokens,
            ttft_ms: g.filter(|g| !g.tokens.is_empty()).map(|_| t.ttft_ms),
            duration_ms,
        });
        tracing::info!(
            request_id = %ctx.id,
            endpoint = ctx.endpoint,
            status,
            model = %self.model_name,
            prompt_tokens = t.prompt_tokens,
            prompt_tokens_evaluated = t.prompt_tokens_evaluated,
            completion_tokens = t.generated_tokens,
            ttft_ms = t.ttft_ms,
            duration_ms,
            tokens_per_s = t.decode_tokens_per_s(),
            finish_reason,
            error_code = error,
            "request"
        );
    }
}
