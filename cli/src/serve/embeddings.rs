//! OpenAI-compatible `POST /v1/embeddings`: `input` a string or a list of strings; each embedding is
//! the mean of the final-normed hidden states of the input's tokens, L2-normalised
//! ([`edgeinfer::embed`]), as floats or (`"encoding_format": "base64"`, the official clients'
//! default) as base64 of little-endian f32s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeinfer::request::RequestError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::App;

/// Most inputs one request may embed.
const MAX_INPUTS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    // Accepted and ignored: one model is served; `user` is the client's business.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

pub(crate) async fn embeddings(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let ctx = app.request("embeddings", None);
    let req: EmbeddingsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let err = RequestError {
                code: "invalid_request",
                param: None,
                message: format!("bad embeddings request: {e}"),
            };
            return app.refuse(&ctx, err);
        }
    };
    let inputs = match req.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    let hidden = app.pool.model().config().hidden_size;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            let msg = format!("encoding_format `{other}`: `float` or `base64`");
            return app.refuse(&ctx, RequestError::invalid("encoding_format", msg));
        }
    };
    let problem = if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        Some((
            "input",
            format!("give 1 to {MAX_INPUTS} inputs, not {}", inputs.len()),
        ))
    } else if inputs.iter().any(String::is_empty) {
        Some(("input", "an input is empty".to_string()))
    } else if req.dimensions.is_some_and(|d| d != hidden as u64) {
        Some((
            "dimensions",
            format!("this model's embeddings have {hidden} dimensions"),
        ))
    } else {
        None
    };
    if let Some((param, msg)) = problem {
        return app.refuse(&ctx, RequestError::invalid(param, msg));
    }
    let Ok(_permit) = app.embed_permits.acquire().await else {
        let e = edgeinfer::Error::PoolBusy {
            max_sessions: app.pool.max_sessions(),
        };
        return app.fail(&ctx, &e);
    };
    let worker = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let model = worker.pool.model();
        let tok = model.tokenizer();
        let opts = worker.pool.session_options();
        let mut out = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        for text in &inputs {
            let ids = tok.encode(text, tok.add_bos_token())?;
            if ids.len() > worker.pool.ctx() {
                return Err(edgeinfer::Error::PromptTooLong {
                    tokens: ids.len(),
                    ctx: worker.pool.ctx(),
                });
            }
            tokens += ids.len();
            out.push(edgeinfer::embed::embed_tokens(model, &ids, &opts)?);
        }
        Ok((out, tokens))
    })
    .await
    .unwrap_or_else(|join| Err(super::thread_failed(join)));
    let (vectors, tokens) = match result {
        Ok(r) => r,
        Err(e) => return app.fail(&ctx, &e),
    };
    app.finish(&ctx, 200, None, None);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": app.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

/// Standard base64 (with padding) of the floats' little-endian bytes, as OpenAI encodes them.
fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3f; 2.0 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }
}
