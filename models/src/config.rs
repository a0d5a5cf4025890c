//! `config.json`, parsed once into a typed, validated [`Config`].
//!
//! Unknown architectures and options we do not implement are errors: a model must never run wrong.

use serde_json::{Map, Value};

use crate::error::ModelError;

/// Supported architectures (`model_type` in config.json).
///
/// All three share one forward pass ([`crate::llama`]); they differ only in data the config and the
/// checkpoint carry: Qwen2 adds biases to the q/k/v projections, Qwen3 RMS-normalises each query and
/// key head before RoPE and gives `head_dim` explicitly, Llama 3 scales the rotary frequencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3.x, SmolLM2, TinyLlama (`model_type: "llama"`).
    Llama,
    /// Qwen2 and Qwen2.5 (`"qwen2"`).
    Qwen2,
    /// Qwen3 dense models (`"qwen3"`).
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Whether the q/k/v projections have biases (`self_attn.{q,k,v}_proj.bias`).
    pub fn qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// Whether each query and key head is RMS-normalised before RoPE (`self_attn.{q,k}_norm.weight`).
    pub fn qk_norm(self) -> bool {
        self == Arch::Qwen3
    }
}

/// Llama 3.x's rotary frequency scaling (`rope_scaling` with `rope_type: "llama3"`): long wavelengths
/// are divided by `factor`, short ones kept, and the band between blended smoothly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
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
    /// `None` for plain RoPE.
    pub rope_scaling: Option<Llama3RopeScaling>,
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
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(f.err(
                    "model_type",
                    format!("`{other}` is not supported (supported: llama, qwen2, qwen3)"),
                ));
            }
        };
        let hidden_size = f.dim("hidden_size", MAX_DIM)?;
        let num_heads = f.dim("num_attention_heads", MAX_DIM)?;
        let num_kv_heads = f
            .opt_dim("num_key_value_heads", MAX_DIM)?
            .unwrap_or(num_heads);
        let head_dim = head_dim(&f, arch, hidden_size, num_heads)?;
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
            rope_scaling: rope_scaling(&f, arch)?,
            max_position_embeddings: f
                .opt_dim("max_position_embeddings", usize::MAX)?
                .unwrap_or(2048),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: f.opt_ids("bos_token_id")?.and_then(|v| v.first().copied()),
            eos_token_ids: f.opt_ids("eos_token_id")?.unwrap_or_default(),
        };
        if cfg.rms_norm_eps.is_nan() || cfg.rms_norm_eps <= 0.0 {
            return Err(f.err("rms_norm_eps", "must be positive".into()));
        }
        if cfg.rope_theta.is_nan() || cfg.rope_theta <= 0.0 {
            return Err(f.err("rope_theta", "must be positive".into()));
        }
        refuse_unsupported(&f, &cfg)?;
        Ok(cfg)
    }

    /// Rotary inverse frequency of each pair `i < head_dim / 2`: `theta^(-2i/d)` (computed in f32
    /// like the reference implementations), then Llama 3's scaling when the config asks for it.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim as f32;
        let plain = (0..self.head_dim / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f32 / d));
        let Some(s) = self.rope_scaling else {
            return plain.collect();
        };
        let orig = s.original_max_position_embeddings as f32;
        let (low_wavelen, high_wavelen) = (orig / s.low_freq_factor, orig / s.high_freq_factor);
        plain
            .map(|freq| {
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < high_wavelen {
                    freq
                } else if wavelen > low_wavelen {
                    freq / s.factor
                } else {
                    let smooth = (orig / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * freq / s.factor + smooth * freq
                }
            })
            .collect()
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

/// `head_dim`, given or (except for Qwen3) `hidden_size / num_heads`; it must be even.
fn head_dim(
    f: &Fields<'_>,
    arch: Arch,
    hidden_size: usize,
    num_heads: usize,
) -> Result<usize, ModelError> {
    let head_dim = match f.opt_dim("head_dim", MAX_DIM)? {
        Some(d) => d,
        // Qwen3's config class defaults head_dim to 128, not hidden/heads: never guess.
        None if arch == Arch::Qwen3 => return Err(f.err("head_dim", "missing".into())),
        None => {
            if !hidden_size.is_multiple_of(num_heads) {
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
    Ok(head_dim)
}

/// Options that change the result and that this implementation does not have are errors.
fn refuse_unsupported(f: &Fields<'_>, cfg: &Config) -> Result<(), ModelError> {
    let arch = cfg.arch;
    if let Some(act) = f.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(f.err(
                "hidden_act",
                format!("`{act}` is not supported (supported: silu)"),
            ));
        }
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if f.opt_bool(flag)? == Some(true) {
            return Err(f.err(
                flag,
                format!(
                    "`{flag}: true` is not supported for model_type {}",
                    arch.name()
                ),
            ));
        }
    }
    if arch != Arch::Llama && f.opt_bool("use_sliding_window")? == Some(true) {
        // Sliding-window attention changes the result once the context exceeds the window.
        let window = f.opt_dim("sliding_window", usize::MAX)?;
        if window.is_none_or(|w| w < cfg.max_position_embeddings) {
            return Err(f.err(
                "use_sliding_window",
                format!(
                    "sliding-window attention (window {}) is not supported",
                    window.map_or("unset".into(), |w| w.to_string())
                ),
            ));
        }
    }
    Ok(())
}

/// `rope_scaling`: absent, null or `default` is plain RoPE; `llama3` (Llama architecture only) is
/// parsed and checked; anything else is refused.
fn rope_scaling(f: &Fields<'_>, arch: Arch) -> Result<Option<Llama3RopeScaling>, ModelError> {
    const FIELD: &str = "rope_scaling";
    let obj = match f.get(FIELD) {
        None => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(v) => return Err(f.err(FIELD, format!("expected an object or null, found {v}"))),
    };
    let s = Fields(obj);
    let kind = match (s.opt_str("rope_type"), s.opt_str("type")) {
        (Ok(Some(k)), _) | (_, Ok(Some(k))) => k,
        _ => return Err(f.err(FIELD, "has no string `rope_type`".into())),
    };
    let field = |name: &str| format!("{FIELD}.{name}");
    // Errors inside the object name the nested field.
    let nested = |e: ModelError| match e {
        ModelError::Config {
            field: inner,
            reason,
        } => ModelError::Config {
            field: field(&inner),
            reason,
        },
        other => other,
    };
    match kind.as_str() {
        "default" => Ok(None),
        "llama3" if arch == Arch::Llama => {
            let positive = |name: &str| -> Result<f32, ModelError> {
                match s.opt_f32(name).map_err(nested)? {
                    Some(x) if x > 0.0 => Ok(x),
                    Some(x) => Err(f.err(&field(name), format!("{x} is not positive"))),
                    None => Err(f.err(&field(name), "missing".into())),
                }
            };
            let scaling = Llama3RopeScaling {
                factor: positive("factor")?,
                low_freq_factor: positive("low_freq_factor")?,
                high_freq_factor: positive("high_freq_factor")?,
                original_max_position_embeddings: s
                    .dim("original_max_position_embeddings", usize::MAX)
                    .map_err(nested)?,
            };
            if scaling.high_freq_factor <= scaling.low_freq_factor {
                return Err(f.err(
                    &field("high_freq_factor"),
                    format!(
                        "{} must exceed low_freq_factor {}",
                        scaling.high_freq_factor, scaling.low_freq_factor
                    ),
                ));
            }
            Ok(Some(scaling))
        }
        other => Err(f.err(
            &field("rope_type"),
            format!(
                "rope scaling `{other}` is not supported for model_type {} (supported: {})",
                arch.name(),
                if arch == Arch::Llama {
                    "llama3"
                } else {
                    "none"
                }
            ),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base(model_type: &str) -> Value {
        serde_json::json!({
            "model_type": model_type, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "head_dim": 16, "max_position_embeddings": 4096,
        })
    }

    fn parse(v: &Value) -> Result<Config, ModelError> {
        Config::from_json(&v.to_string())
    }

    /// The field a config error names.
    fn field_of(v: Value) -> String {
        match parse(&v) {
            Err(ModelError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn with(mut v: Value, key: &str, x: Value) -> Value {
        v[key] = x;
        v
    }

    #[test]
    fn architectures() {
        for (t, arch) in [
            ("llama", Arch::Llama),
            ("qwen2", Arch::Qwen2),
            ("qwen3", Arch::Qwen3),
        ] {
            let c = parse(&base(t)).unwrap();
            assert_eq!((c.arch, c.arch.name()), (arch, t));
            assert_eq!(c.rope_scaling, None);
        }
        assert!(Arch::Qwen2.qkv_bias() && !Arch::Qwen3.qkv_bias() && !Arch::Llama.qkv_bias());
        assert!(Arch::Qwen3.qk_norm() && !Arch::Qwen2.qk_norm());
        assert_eq!(field_of(base("mistral")), "model_type");
        assert_eq!(field_of(base("phi3")), "model_type");
        let mut no_head_dim = base("qwen3");
        no_head_dim.as_object_mut().unwrap().remove("head_dim");
        assert_eq!(field_of(no_head_dim), "head_dim");
    }

    #[test]
    fn llama3_rope_scaling() {
        let scaling = serde_json::json!({"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let mut v = with(base("llama"), "rope_scaling", scaling.clone());
        v["head_dim"] = 64.into();
        v["rope_theta"] = 500000.0.into();
        let c = parse(&v).unwrap();
        let s = c.rope_scaling.unwrap();
        assert_eq!((s.factor, s.original_max_position_embeddings), (32.0, 8192));
        // Short wavelengths kept, long ones divided by the factor, a blend in between.
        let plain = Config {
            rope_scaling: None,
            ..c.clone()
        }
        .rope_inv_freq();
        let scaled = c.rope_inv_freq();
        assert_eq!(scaled[0], plain[0]);
        assert_eq!(scaled[31], plain[31] / 32.0);
        let mid = (1..31)
            .find(|&i| scaled[i] != plain[i] && scaled[i] != plain[i] / 32.0)
            .expect("a blended frequency");
        assert!(scaled[mid] < plain[mid] && scaled[mid] > plain[mid] / 32.0);
        // `type` is the older spelling.
        let mut old = scaling.clone();
        old.as_object_mut().unwrap().remove("rope_type");
        old["type"] = "llama3".into();
        assert!(parse(&with(base("llama"), "rope_scaling", old))
            .unwrap()
            .rope_scaling
            .is_some());
        // "default" is plain RoPE.
        let default = serde_json::json!({"rope_type": "default"});
        let c = parse(&with(base("llama"), "rope_scaling", default)).unwrap();
        assert_eq!(c.rope_scaling, None);
    }

    #[test]
    fn unsupported_options_name_the_field() {
        let rs = |x: Value| with(base("llama"), "rope_scaling", x);
        let yarn = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        assert_eq!(field_of(rs(yarn.clone())), "rope_scaling.rope_type");
        assert_eq!(
            field_of(rs(serde_json::json!({"type": "linear", "factor": 2.0}))),
            "rope_scaling.rope_type"
        );
        assert_eq!(
            field_of(rs(serde_json::json!({"factor": 2.0}))),
            "rope_scaling"
        );
        assert_eq!(field_of(rs(serde_json::json!("llama3"))), "rope_scaling");
        let llama3 = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0});
        assert_eq!(
            field_of(rs(llama3.clone())),
            "rope_scaling.original_max_position_embeddings"
        );
        let mut bad = llama3.clone();
        bad["original_max_position_embeddings"] = 8192.into();
        bad["high_freq_factor"] = 0.5.into();
        assert_eq!(field_of(rs(bad.clone())), "rope_scaling.high_freq_factor");
        bad["factor"] = (-1.0).into();
        assert_eq!(field_of(rs(bad)), "rope_scaling.factor");
        // llama3 scaling is Llama's; Qwen YaRN is refused.
        let mut ok = llama3;
        ok["original_max_position_embeddings"] = 8192.into();
        assert_eq!(
            field_of(with(base("qwen2"), "rope_scaling", ok)),
            "rope_scaling.rope_type"
        );
        assert_eq!(
            field_of(with(base("qwen2"), "rope_scaling", yarn)),
            "rope_scaling.rope_type"
        );
        // Biases beyond the architecture's own.
        for t in ["llama", "qwen3"] {
            assert_eq!(
                field_of(with(base(t), "attention_bias", true.into())),
                "attention_bias"
            );
        }
        assert_eq!(
            field_of(with(base("qwen2"), "mlp_bias", true.into())),
            "mlp_bias"
        );
        assert!(parse(&with(base("qwen3"), "attention_bias", false.into())).is_ok());
        // Sliding windows: refused when they would cut the context, ignored when disabled.
        let sw = |t: &str, on: bool, w: usize| {
            let v = with(base(t), "use_sliding_window", on.into());
            with(v, "sliding_window", w.into())
        };
        assert_eq!(field_of(sw("qwen2", true, 1024)), "use_sliding_window");
        assert_eq!(field_of(sw("qwen3", true, 1024)), "use_sliding_window");
        assert!(parse(&sw("qwen2", true, 4096)).is_ok());
        assert!(parse(&sw("qwen2", false, 1024)).is_ok());
        assert_eq!(
            field_of(with(base("qwen2"), "hidden_act", "gelu".into())),
            "hidden_act"
        );
    }
}
