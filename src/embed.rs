//! Text embeddings from a generative model (OpenAI's `/v1/embeddings`): the mean over the input's
//! tokens of the final-normed hidden state (the rows the lm_head multiplies), L2-normalised.
//!
//! Mean pooling rather than the last token's state: a causal model's last state is shaped to predict
//! the next token, while the mean weighs the whole input; with unit length, a dot product of two
//! embeddings is their cosine similarity. A small decoder is no trained embedding model: the vectors
//! are good for rough similarity, not for retrieval benchmarks.
//!
//! Each call runs the input on its own small state (a KV cache of the input's length), so it does
//! not disturb the generation sessions' prefix caches.

use edgeinfer_models::state::StateOptions;
use edgeinfer_models::{Logits, State, TapSite};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::session::SessionOptions;

/// Most tokens one forward call of an embedding runs (the rows of logits it computes on the way).
const BATCH: usize = 32;

/// The embedding of `tokens` (`[hidden_size]`, unit length). `opts` gives the activation and KV
/// types (as the model's sessions use); its context is ignored.
pub fn embed_tokens(model: &Model, tokens: &[u32], opts: &SessionOptions) -> Result<Vec<f32>> {
    if tokens.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let cfg = model.config();
    let hidden = cfg.hidden_size;
    let mut state = State::new(
        cfg,
        StateOptions {
            ctx: tokens.len(),
            batch: tokens.len().min(BATCH),
            threads: model.threads(),
            // The tap only sees the final norm's rows for tokens whose logits are computed.
            all_logits: true,
            kv_dtype: opts.kv_dtype,
            acts: opts.acts,
        },
    )?;
    let mut sum = vec![0f64; hidden];
    let mut rows = 0usize;
    let mut tap = |t: edgeinfer_models::Tap<'_>| {
        if t.site == TapSite::Head {
            for row in t.rows.chunks_exact(hidden) {
                for (s, &x) in sum.iter_mut().zip(row) {
                    *s += x as f64;
                }
                rows += 1;
            }
        }
    };
    for chunk in tokens.chunks(BATCH) {
        let mut run = || {
            model
                .llama
                .forward_tapped(&model.kernels, &mut state, chunk, Logits::All, &mut tap)
        };
        match &model.pool {
            Some(pool) => pool.install(run)?,
            None => run()?,
        }
    }
    if rows != tokens.len() {
        return Err(Error::Options {
            field: "embedding",
            reason: format!("saw {rows} hidden states for {} tokens", tokens.len()),
        });
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows as f64).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    Ok(mean.iter().map(|x| (x * scale) as f32).collect())
}

/// The embedding of `text`, tokenized as a plain prompt (with the tokenizer's BOS if it adds one).
pub fn embed_text(model: &Model, text: &str, opts: &SessionOptions) -> Result<Vec<f32>> {
    let tok = model.tokenizer();
    let ids = tok.encode(text, tok.add_bos_token())?;
    embed_tokens(model, &ids, opts)
}
