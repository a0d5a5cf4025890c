//! `config.json` and `generation_config.json` for a Hugging Face `LlamaForCausalLM`,
//! `Qwen2ForCausalLM` or `Qwen3ForCausalLM` checkpoint.
//!
//! GGUF metadata keys are prefixed by `general.architecture` (`llama.embedding_length`,
//! `qwen2.embedding_length`, …); the keys themselves are the same for the three.

use edgeinfer_models::Arch;
use serde_json::{json, Value};

use super::gguf::{Dims, Gguf};
use super::{ImportDType, ImportError};

/// llama.cpp stores Llama 3's rope scaling as this tensor of per-frequency divisors instead of
/// metadata.
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

/// Model hyper-parameters read from `<arch>.*` metadata, checked against each other.
pub(crate) struct LlamaParams {
    pub arch: Arch,
    pub dims: Dims,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Llama 3's `rope_scaling` object, recovered from [`ROPE_FREQS`].
    pub rope_scaling: Option<Value>,
    pub context_length: usize,
    /// GGUF tensors read into metadata, not weights of the checkpoint.
    pub consumed: Vec<String>,
}

impl LlamaParams {
    pub fn read(g: &mut Gguf) -> Result<LlamaParams, ImportError> {
        let arch = match g.str("general.architecture")? {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(ImportError::UnsupportedArchitecture {
                    path: g.path.clone(),
                    architecture: other.to_string(),
                })
            }
        };
        let mut params = LlamaParams::read_meta(g, arch)?;
        if g.shape(ROPE_FREQS).is_some() {
            let factors = g.read_f32(ROPE_FREQS)?;
            params.rope_scaling = llama3_scaling(g, &params, &factors)?;
            params.consumed.push(ROPE_FREQS.to_string());
        }
        Ok(params)
    }

    fn read_meta(g: &Gguf, arch: Arch) -> Result<LlamaParams, ImportError> {
        let a = arch.name();
        // Every key of this architecture is `<arch>.<suffix>`.
        let key = |suffix: &str| format!("{a}.{suffix}");
        let err = |suffix: &str, reason: String| ImportError::Metadata {
            path: g.path.clone(),
            key: key(suffix),
            reason,
        };

        let hidden = g.dim(&key("embedding_length"))?;
        let heads = g.dim(&key("attention.head_count"))?;
        let kv_heads = match g.opt_u64(&key("attention.head_count_kv"))? {
            None => heads,
            Some(_) => g.dim(&key("attention.head_count_kv"))?,
        };
        if heads % kv_heads != 0 {
            return Err(err(
                "attention.head_count_kv",
                format!("{kv_heads} does not divide head_count {heads}"),
            ));
        }
        let head_dim = match g.opt_u64(&key("attention.key_length"))? {
            Some(_) => g.dim(&key("attention.key_length"))?,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(err(
                    "attention.head_count",
                    format!("{heads} does not divide embedding_length {hidden}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(
                "attention.key_length",
                format!("head size {head_dim} is odd; rotary embeddings need pairs"),
            ));
        }
        if let Some(rot) = g.opt_u64(&key("rope.dimension_count"))? {
            // A partial rotary dimension has no equivalent in the Hugging Face Llama config.
            if rot != head_dim as u64 {
                return Err(err("rope.dimension_count", format!("{rot} differs from the head size {head_dim}; partial rotary is not supported")));
            }
        }
        if let Some(v) = g.opt_u64(&key("attention.value_length"))? {
            if v != head_dim as u64 {
                return Err(err(
                    "attention.value_length",
                    format!("{v} differs from key_length {head_dim}"),
                ));
            }
        }
        if let Some(kind) = g.opt_str(&key("rope.scaling.type"))? {
            if kind != "none" {
                return Err(err(
                    "rope.scaling.type",
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
        if let Some(v) = g.opt_u64(&key("vocab_size"))? {
            if v != vocab as u64 {
                return Err(err(
                    "vocab_size",
                    format!("{v} differs from the embedding's {vocab} rows"),
                ));
            }
        }
        Ok(LlamaParams {
            arch,
            dims: Dims {
                vocab,
                hidden,
                intermediate: g.dim(&key("feed_forward_length"))?,
                layers: g.dim(&key("block_count"))?,
                heads,
                kv_heads,
                head_dim,
            },
            rms_norm_eps: g
                .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: g.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling: None,
            context_length: g.dim(&key("context_length"))?,
            consumed: Vec::new(),
        })
    }
}

/// Llama 3's `rope_scaling` from llama.cpp's `rope_freqs.weight`: the divisor of each inverse
/// frequency, computed by its converter from `factor`, `low_freq_factor`, `high_freq_factor` and
/// `original_max_position_embeddings` (which it takes as 8192). The divisors do not determine those
/// parameters uniquely, so the published Llama 3.x values are tried (the factor is the largest
/// divisor) and accepted only when they reproduce every divisor; anything else is refused rather
/// than approximated. All divisors 1 is plain RoPE.
fn llama3_scaling(
    g: &Gguf,
    p: &LlamaParams,
    factors: &[f32],
) -> Result<Option<Value>, ImportError> {
    let refuse = |reason: String| ImportError::Metadata {
        path: g.path.clone(),
        key: ROPE_FREQS.into(),
        reason,
    };
    let half = p.dims.head_dim / 2;
    if p.arch != Arch::Llama {
        return Err(refuse(format!(
            "per-frequency rope factors are not supported for {}",
            p.arch.name()
        )));
    }
    if factors.len() != half {
        return Err(refuse(format!(
            "{} values, expected head_dim / 2 = {half}",
            factors.len()
        )));
    }
    if factors.iter().all(|&f| f == 1.0) {
        return Ok(None);
    }
    let factor = factors.iter().copied().fold(f32::MIN, f32::max) as f64;
    let (low, high, orig) = (1.0f64, 4.0f64, 8192.0f64);
    let (low_wavelen, high_wavelen) = (orig / low, orig / high);
    let d = p.dims.head_dim as f64;
    let expected = (0..half).map(|i| {
        let freq = 1.0 / p.rope_theta.powf((2 * i) as f64 / d);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        if wavelen < high_wavelen {
            1.0
        } else if wavelen > low_wavelen {
            factor
        } else {
            let smooth = (orig / wavelen - low) / (high - low);
            1.0 / ((1.0 - smooth) / factor + smooth)
        }
    });
    for (i, (want, &got)) in expected.zip(factors).enumerate() {
        if (want - got as f64).abs() > 1e-4 * want {
            return Err(refuse(format!(
                "factor {i} is {got}, but Llama 3 scaling (factor {factor}, low_freq_factor {low}, \
                 high_freq_factor {high}, original context {orig}) gives {want}; other rope factors are not supported"
            )));
        }
    }
    Ok(Some(json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": orig as u64,
    })))
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
    let (class, model_type) = match p.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta,
        "rope_scaling": p.rope_scaling,
        "max_position_embeddings": p.context_length,
        "vocab_size": d.vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "torch_dtype": dtype.torch_name(),
    });
    let extra = match p.arch {
        // Qwen2's q/k/v biases are implied by the architecture, not a flag.
        Arch::Llama => json!({"attention_bias": false, "mlp_bias": false}),
        Arch::Qwen2 => json!({"use_sliding_window": false, "sliding_window": p.context_length,
                              "max_window_layers": d.layers}),
        Arch::Qwen3 => json!({"attention_bias": false, "use_sliding_window": false,
                              "sliding_window": null, "max_window_layers": d.layers}),
    };
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
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
