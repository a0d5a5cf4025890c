//! What stands between the network and the model: the API key (`--api-key`) and the body size limit
//! (`--max-body-bytes`), both answered with OpenAI-style error bodies so clients show the reason.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Who may call what.
pub(crate) struct Guard {
    /// The key every protected route requires as `Authorization: Bearer <key>`; `None`: open.
    pub api_key: Option<String>,
    /// Under Function Compute the platform authenticates `/initialize` and `/invoke` itself (and
    /// sends no bearer token), so only the OpenAI routes check the key there.
    pub function_compute: bool,
    /// Largest request body, for the error message (the limit itself is axum's `DefaultBodyLimit`).
    pub max_body_bytes: usize,
}

impl Guard {
    /// Routes open to anyone: the health check (load balancers send no key) and the chat page
    /// (static HTML with no secret in it; it asks for the key and sends it with each request).
    fn is_open(&self, method: &Method, path: &str) -> bool {
        match path {
            "/health" => true,
            "/" => method == Method::GET,
            "/initialize" | "/invoke" => self.function_compute,
            _ => false,
        }
    }
}

/// Middleware: refuses a protected route without the right key (401), and turns axum's plain-text
/// 413 for a body over the limit into the OpenAI error shape.
pub(crate) async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(key) = &guard.api_key {
        if !guard.is_open(req.method(), req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()));
            if !ok {
                let message = if given.is_some() {
                    "incorrect API key"
                } else {
                    "this server requires an API key: `Authorization: Bearer <key>`"
                };
                return error(StatusCode::UNAUTHORIZED, "invalid_api_key", message);
            }
        }
    }
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > guard.max_body_bytes as u64);
    let response = if too_large {
        // Refused before reading a byte of it.
        StatusCode::PAYLOAD_TOO_LARGE.into_response()
    } else {
        next.run(req).await
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // A chunked body over the limit is only found while reading it, by the handler's extractor.
        let message = format!(
            "the request body is over {} bytes (--max-body-bytes)",
            guard.max_body_bytes
        );
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", &message);
    }
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": null,
        "code": code,
    }});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// `a == b` in time that depends only on the lengths, so timing the 401s does not reveal how much
/// of a guessed key was right. (The key's length may leak; it is not the secret.)
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"sk-abc", b"sk-abc"));
        assert!(!constant_time_eq(b"sk-abc", b"sk-abd"));
        assert!(!constant_time_eq(b"sk-abc", b"sk-ab"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
