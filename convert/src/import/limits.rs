//! Bounds on GGUF metadata that sizes work before any tensor is looked up. Found by `fuzz/`'s
//! `gguf` target: a `block_count` of 2^32 − 1 built a plan of four billion layers and ran out of
//! memory before the first missing tensor was noticed.

use super::gguf::{Dims, Gguf};
use super::ImportError;

/// Largest width, head count or head size accepted (as `edgeinfer_models::Config` accepts).
const MAX_DIM: usize = 1 << 20;
/// Largest vocabulary accepted (as `edgeinfer_models::Config` accepts).
const MAX_VOCAB: usize = 1 << 22;
/// Tensors every layer has in the file (norms, q/k/v/o, gate/up/down).
const TENSORS_PER_LAYER: usize = 9;

/// Refuses dimensions no file could back: more layers than the file has tensors for, or sizes
/// beyond what the loader would accept.
pub(super) fn check_dims(g: &Gguf, d: &Dims) -> Result<(), ImportError> {
    let bad = |key: &str, reason: String| ImportError::Metadata {
        path: g.path.clone(),
        key: key.to_string(),
        reason,
    };
    let tensors = g.header.tensors.len();
    if d.layers
        .checked_mul(TENSORS_PER_LAYER)
        .is_none_or(|n| n > tensors)
    {
        return Err(bad(
            "block_count",
            format!(
                "{} layers need at least {TENSORS_PER_LAYER} tensors each, but the file has {tensors}",
                d.layers
            ),
        ));
    }
    for (key, v) in [
        ("embedding_length", d.hidden),
        ("feed_forward_length", d.intermediate),
        ("attention.head_count", d.heads),
        ("attention.head_count_kv", d.kv_heads),
        ("attention.key_length", d.head_dim),
    ] {
        if v > MAX_DIM {
            return Err(bad(key, format!("{v} is more than {MAX_DIM}")));
        }
    }
    if d.vocab > MAX_VOCAB {
        return Err(bad(
            "tokenizer.ggml.tokens",
            format!("a vocabulary of {} is more than {MAX_VOCAB}", d.vocab),
        ));
    }
    Ok(())
}
