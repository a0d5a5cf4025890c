//! An AWS Lambda function (custom runtime, `provided.al2023`) answering generation events with
//! edgeinfer, on the `lambda_runtime` crate.
//!
//! Init loads the model once (`$EDGEINFER_MODEL`, default `weights/SmolLM2-135M-Instruct`; a missing
//! or broken model is reported to `/runtime/init/error`). Each invocation takes an event
//! `{"prompt" | "messages", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop"}` and answers
//! `{"text", "finish_reason", "usage", "timings"}`. Generation ends before the invocation's deadline
//! (`Lambda-Runtime-Deadline-Ms` minus `$EDGEINFER_DEADLINE_MARGIN_MS`, default 200) with
//! `finish_reason: "deadline"` and the text so far. An invalid event becomes a Lambda error
//! (`errorType` `InvalidRequest`, …) and the function keeps serving. One JSON log line per request.
//!
//! The session (arena and KV cache) is kept between invocations of a warm container, and a prompt
//! that starts like the previous one (the same system prompt) skips recomputing that prefix.
//!
//! Its own package, so the build is lean (no converter, candle, clap or axum): `make lambda-arm64`,
//! or `cargo build --release -p edgeinfer-lambda` (the binary is `bootstrap`, the file Lambda
//! runs).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use edgeinfer::request::{
    env_usize, error_code, GenerateRequest, GenerateResponse, Limits, PromptKind,
};
use edgeinfer::{ActQuant, Model, ModelOptions, SessionOptions, SessionPool};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

const DEFAULT_MODEL: &str = "weights/SmolLM2-135M-Instruct";

/// What every invocation shares: the pool (holding the model) and the limits.
struct Handler {
    pool: SessionPool,
    limits: Limits,
    /// Time kept back from the deadline to post the answer.
    margin: Duration,
    model_name: String,
}

fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    init_logs();
    let handler = match init() {
        Ok(h) => Arc::new(h),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "init failed");
            report_init_error(&err);
            return Err(err);
        }
    };
    tracing::info!(
        model = %handler.model_name,
        init_ms = start.elapsed().as_secs_f64() * 1e3,
        kernels = handler.pool.model().kernels().variant.name(),
        threads = handler.pool.model().threads(),
        ctx = handler.pool.ctx(),
        "ready"
    );
    // One invocation at a time: a current-thread runtime is enough (generation runs on the blocking
    // pool, so the runtime's own thread stays free) and starts faster than a multi-thread one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime
        .block_on(lambda_runtime::run(service_fn(
            move |event: LambdaEvent<Value>| {
                let handler = handler.clone();
                async move { handler.invoke(event).await }
            },
        )))
        .map_err(|e| anyhow!(e))
}

fn init() -> anyhow::Result<Handler> {
    let dir = std::env::var("EDGEINFER_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string());
    let threads = match env_usize("EDGEINFER_THREADS", 0)? {
        0 => None,
        n => Some(n),
    };
    let model = Model::load_with(
        &dir,
        &ModelOptions {
            threads,
            kernels: None, // $EDGEINFER_KERNELS, else detected
        },
    )
    .with_context(|| format!("loading the model from {dir}"))?;
    let acts = match std::env::var("EDGEINFER_ACTS") {
        Ok(v) => ActQuant::from_name(&v)
            .ok_or_else(|| anyhow!("EDGEINFER_ACTS={v:?}: expected q8 or q8x2"))?,
        Err(_) => ActQuant::Q8,
    };
    let opts = SessionOptions {
        ctx: env_usize("EDGEINFER_MAX_CONTEXT", 0)?,
        acts,
        ..SessionOptions::default()
    };
    let pool = SessionPool::new(model, opts, 1)?;
    let limits = Limits {
        default_max_tokens: env_usize("EDGEINFER_DEFAULT_MAX_TOKENS", 256)?,
        max_tokens: pool.ctx(),
    };
    let margin = Duration::from_millis(env_usize("EDGEINFER_DEADLINE_MARGIN_MS", 200)? as u64);
    let model_name = std::path::Path::new(&dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(dir);
    Ok(Handler {
        pool,
        limits,
        margin,
        model_name,
    })
}

impl Handler {
    async fn invoke(
        self: Arc<Self>,
        event: LambdaEvent<Value>,
    ) -> Result<GenerateResponse, Diagnostic> {
        let arrived = Instant::now();
        let request_id = event.context.request_id.clone();
        let deadline = deadline_instant(event.context.deadline, self.margin, arrived);
        let job = GenerateRequest::from_value(event.payload)
            .and_then(|r| r.into_job(PromptKind::Either, &self.limits));
        let mut job = match job {
            Ok(job) => job,
            Err(e) => {
                self.log(&request_id, None, arrived, Some(e.code));
                return Err(Diagnostic {
                    error_type: error_type(e.code).into(),
                    error_message: e.message,
                });
            }
        };
        job.options.deadline = Some(deadline);
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            this.pool.generate(&job.prompt(), &job.options, |_| true)
        })
        .await;
        match result {
            Ok(Ok(generation)) => {
                self.log(&request_id, Some(&generation), arrived, None);
                let total_ms = arrived.elapsed().as_secs_f64() * 1e3;
                Ok(GenerateResponse::new(&generation, total_ms))
            }
            Ok(Err(err)) => {
                let (code, _) = error_code(&err);
                self.log(&request_id, None, arrived, Some(code));
                Err(Diagnostic {
                    error_type: error_type(code).into(),
                    error_message: err.to_string(),
                })
            }
            Err(join) => {
                self.log(&request_id, None, arrived, Some("internal_error"));
                Err(Diagnostic {
                    error_type: "InternalError".into(),
                    error_message: format!("generation failed: {join}"),
                })
            }
        }
    }

    /// The request's one log line.
    fn log(
        &self,
        request_id: &str,
        g: Option<&edgeinfer::Generation>,
        arrived: Instant,
        error_code: Option<&str>,
    ) {
        let duration_ms = arrived.elapsed().as_secs_f64() * 1e3;
        let t = g.map(|g| g.timings).unwrap_or_default();
        tracing::info!(
            request_id,
            model = %self.model_name,
            prompt_tokens = t.prompt_tokens,
            prompt_tokens_evaluated = t.prompt_tokens_evaluated,
            completion_tokens = t.generated_tokens,
            ttft_ms = t.ttft_ms,
            duration_ms,
            tokens_per_s = t.decode_tokens_per_s(),
            finish_reason = g.map(|g| g.finish_reason.as_str()),
            error_code,
            "request"
        );
    }
}

/// The Lambda `errorType` for a request error code.
fn error_type(code: &str) -> &'static str {
    match code {
        "invalid_json" | "invalid_request" | "prompt_too_large" => "InvalidRequest",
        "context_length_exceeded" => "ContextLengthExceeded",
        "busy" => "Busy",
        _ => "InternalError",
    }
}

/// The invocation deadline (milliseconds since the epoch) as an `Instant`, less `margin`.
fn deadline_instant(deadline_ms: u64, margin: Duration, now: Instant) -> Instant {
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_millis(deadline_ms).saturating_sub(wall_now);
    now + left.saturating_sub(margin)
}

/// JSON lines for CloudWatch; readable text on a terminal.
fn init_logs() {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stdout);
    if std::io::stdout().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    }
}

/// Tells Lambda that init failed (`POST /runtime/init/error`), so the error shows in the console
/// instead of a bare timeout. `lambda_runtime` has no call for this outside SnapStart, and the
/// Runtime API is plain HTTP/1.1 on a local address, so a few lines of std do it.
fn report_init_error(err: &anyhow::Error) {
    use std::io::{Read, Write};
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({
        "errorType": "InitError",
        "errorMessage": format!("{err:#}"),
    })
    .to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InitError\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = std::net::TcpStream::connect(&api).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        Ok(())
    });
    if let Err(e) = sent {
        tracing::error!(error = %e, "could not report the init error to {api}");
    }
}
