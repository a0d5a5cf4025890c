//! `config.json`, parsed once into a typed, validated [`Config`].
//!
//! Unknown architectures and options we do not implement are errors: a model must never run wrong.

use serde_json::{Map, Value};

use crate::error::ModelError;

/// Supported architectures (`model_type` in config.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
        }
    }
}

/// The dimensions and constants of a model, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Upper bounds that keep sizes computed from a hostile config far from overflow.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;

impl Config {
    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Config, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::ConfigJson {
            reason: e.to_string(),
        })?;
        let obj = value.as_object().ok_or_else(|| ModelError::ConfigJson {
            reason: "top level is not an object".into(),
        })?;
        Config::from_map(obj)
    }

    fn from_map(obj: &Map<String, Value>) -> Result<Config, ModelError> {
        let f = Fields(obj);
        let model_type = f.str("model_type")?;
        let arch = match model_type.as_str() {
            "llama" => Arch::Llama,
            other => {
                return Err(f.err(
                    "model_type",
                    format!("`{other}` is not supported (supported: llama)"),
                ));
            }
        };
        let hidden_size = f.dim("hidden_size", MAX_DIM)?;
        let num_heads = f.dim("num_attention_heads", MAX_DIM)?;
        let num_kv_heads = f
            .opt_dim("num_key_value_heads", MAX_DIM)?
            .unwrap_or(num_heads);
        let head_dim = match f.opt_dim("head_dim", MAX_DIM)? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(f.err("num_attention_heads", format!("{num_heads} does not divide hidden_size {hidden_size} and no head_dim is given")));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("{head_dim} is odd; rotary embeddings need an even head size"),
            ));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            ));
        }
        let cfg = Config {
            arch,
            hidden_size,
            intermediate_size: f.dim("intermediate_size", MAX_DIM)?,
            num_layers: f.dim("num_hidden_layers", MAX_LAYERS)?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: f.dim("vocab_size", MAX_VOCAB)?,
            rms_norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: f.opt_f32("rope_theta")?.unwrap_or(10_000.0),
            max_position_embeddings: f
                .opt_dim("max_position_embeddings", usize::MAX)?
                .unwrap_or(2048),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: f.opt_ids("bos_token_id")?.and_then(|v| v.first().copied()),
            eos_token_ids: f.opt_ids("eos_token_id")?.unwrap_or_default(),
        };
        if !(cfg.rms_norm_eps > 0.0) {
            return Err(f.err("rms_norm_eps", "must be positive".into()));
        }
        if !(cfg.rope_theta > 0.0) {
            return Err(f.err("rope_theta", "must be positive".into()));
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(f.err(
                    "hidden_act",
                    format!("`{act}` is not supported (supported: silu)"),
                ));
            }
        }
        if !matches!(obj.get("rope_scaling"), None | Some(Value::Null)) {
            return Err(f.err(
                "rope_scaling",
                "rope scaling is not supported yet for this architecture".into(),
            ));
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if f.opt_bool(flag)? == Some(true) {
                return Err(f.err(flag, "biases are not supported for model_type llama".into()));
            }
        }
        Ok(cfg)
    }

    /// Width of the query projection output (`num_heads × head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key and value projection outputs (`num_kv_heads × head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// Typed access to config fields, with errors naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn err(&self, field: &str, reason: String) -> ModelError {
        ModelError::Config {
            field: field.to_string(),
            reason,
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn str(&self, field: &str) -> Result<String, ModelError> {
        self.opt_str(field)?
            .ok_or_else(|| self.err(field, "missing".into()))
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(field, format!("expected a string, found {v}"))),
        }
    }

    fn dim(&self, field: &str, max: usize) -> Result<usize, ModelError> {
        self.opt_dim(field, max)?
            .ok_or_else(|| self.err(field, "missing".into()))
    }

    fn opt_dim(&self, field: &str, max: usize) -> Result<Option<usize>, ModelError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(field, format!("expected a positive integer, found {v}")))?;
        let n = usize::try_from(n).map_err(|_| self.err(field, format!("{n} is too large")))?;
        if n == 0 || n > max {
            return Err(self.err(field, format!("{n} is outside 1..={max}")));
        }
        Ok(Some(n))
    }

    fn opt_f32(&self, field: &str) -> Result<Option<f32>, ModelError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .ok_or_else(|| self.err(field, format!("expected a number, found {v}")))?;
        if !x.is_finite() {
            return Err(self.err(field, "must be finite".into()));
        }
        Ok(Some(x as f32))
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    /// A token id or a list of them.
    fn opt_ids(&self, field: &str) -> Result<Option<Vec<u32>>, ModelError> {
        let one = |v: &Value| -> Result<u32, ModelError> {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(field, format!("expected a token id, found {v}")))
        };
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items.iter().map(one).collect::<Result<_, _>>()?)),
            Some(v) => Ok(Some(vec![one(v)?])),
        }
    }
}
