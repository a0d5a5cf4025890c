//! `config.json` and `generation_config.json` for a Hugging Face `LlamaForCausalLM` checkpoint.

use serde_json::{json, Value};

use super::gguf::{Dims, Gguf};
use super::{ImportDType, ImportError};

/// Model hyper-parameters read from `llama.*` metadata, checked against each other.
pub(crate) struct LlamaParams {
    pub dims: Dims,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub context_length: usize,
}

impl LlamaParams {
    pub fn read(g: &Gguf) -> Result<LlamaParams, ImportError> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(ImportError::UnsupportedArchitecture {
                path: g.path.clone(),
                architecture: arch.to_string(),
            });
        }
        let err = |key: &str, reason: String| ImportError::Metadata {
            path: g.path.clone(),
            key: key.to_string(),
            reason,
        };

        let hidden = g.dim("llama.embedding_length")?;
        let heads = g.dim("llama.attention.head_count")?;
        let kv_heads = match g.opt_u64("llama.attention.head_count_kv")? {
            None => heads,
            Some(_) => g.dim("llama.attention.head_count_kv")?,
        };
        if heads % kv_heads != 0 {
            return Err(err(
                "llama.attention.head_count_kv",
                format!("{kv_heads} does not divide head_count {heads}"),
            ));
        }
        let head_dim = match g.opt_u64("llama.attention.key_length")? {
            Some(_) => g.dim("llama.attention.key_length")?,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(err(
                    "llama.attention.head_count",
                    format!("{heads} does not divide embedding_length {hidden}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(
                "llama.attention.key_length",
                format!("head size {head_dim} is odd; rotary embeddings need pairs"),
            ));
        }
        if let Some(rot) = g.opt_u64("llama.rope.dimension_count")? {
            // A partial rotary dimension has no equivalent in the Hugging Face Llama config.
            if rot != head_dim as u64 {
                return Err(err("llama.rope.dimension_count", format!("{rot} differs from the head size {head_dim}; partial rotary is not supported")));
            }
        }
        if let Some(v) = g.opt_u64("llama.attention.value_length")? {
            if v != head_dim as u64 {
                return Err(err(
                    "llama.attention.value_length",
                    format!("{v} differs from key_length {head_dim}"),
                ));
            }
        }
        if let Some(kind) = g.opt_str("llama.rope.scaling.type")? {
            if kind != "none" {
                return Err(err(
                    "llama.rope.scaling.type",
                    format!("rope scaling `{kind}` is not supported"),
                ));
            }
        }
        let vocab = match g.shape("token_embd.weight") {
            Some(s) if s.len() == 2 => s[0],
            Some(s) => {
                return Err(ImportError::Shape {
                    path: g.path.clone(),
                    name: "token_embd.weight".into(),
                    expected: vec![0, hidden],
                    got: s,
                })
            }
            None => {
                return Err(ImportError::MissingTensor {
                    path: g.path.clone(),
                    name: "token_embd.weight".into(),
                })
            }
        };
        if let Some(v) = g.opt_u64("llama.vocab_size")? {
            if v != vocab as u64 {
                return Err(err(
                    "llama.vocab_size",
                    format!("{v} differs from the embedding's {vocab} rows"),
                ));
            }
        }
        Ok(LlamaParams {
            dims: Dims {
                vocab,
                hidden,
                intermediate: g.dim("llama.feed_forward_length")?,
                layers: g.dim("llama.block_count")?,
                heads,
                kv_heads,
                head_dim,
            },
            rms_norm_eps: g
                .opt_f64("llama.attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
            rope_theta: g.opt_f64("llama.rope.freq_base")?.unwrap_or(10_000.0),
            context_length: g.dim("llama.context_length")?,
        })
    }
}

/// Token ids that go into both config files.
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

pub(crate) fn config_json(
    p: &LlamaParams,
    ids: &SpecialIds,
    tied: bool,
    dtype: ImportDType,
    quantization: Option<Value>,
) -> Value {
    let d = &p.dims;
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta,
        "rope_scaling": null,
        "max_position_embeddings": p.context_length,
        "vocab_size": d.vocab,
        "tie_word_embeddings": tied,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "torch_dtype": dtype.torch_name(),
    });
    if let Some(q) = quantization {
        config["quantization_config"] = q;
    }
    config
}

pub(crate) fn generation_config_json(ids: &SpecialIds) -> Value {
    json!({
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
    })
}
