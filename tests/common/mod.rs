//! Helpers shared by the integration tests: seeded random data and tiny checkpoints on disk.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SplitMix64: small, seeded, identical everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Shape of a tiny Llama checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct TinyLlama {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
    pub dtype: safetensors::Dtype,
    pub seed: u64,
}

impl TinyLlama {
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 256,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
        })
    }

    /// Tensor names, shapes and f32 values (deterministic from the seed).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut rng = Rng(self.seed);
        let hd = self.hidden / self.heads;
        let (h, i, q, kv) = (
            self.hidden,
            self.intermediate,
            self.heads * hd,
            self.kv_heads * hd,
        );
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let v = (0..n).map(|_| offset + scale * rng.unit()).collect();
            out.push((name, shape, v));
        };
        add(
            "model.embed_tokens.weight".into(),
            vec![self.vocab, h],
            1.0,
            0.0,
        );
        for l in 0..self.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let s_in = 1.0 / (h as f32).sqrt();
            add(p("input_layernorm.weight"), vec![h], 0.2, 1.0);
            add(p("self_attn.q_proj.weight"), vec![q, h], 2.0 * s_in, 0.0);
            add(p("self_attn.k_proj.weight"), vec![kv, h], 2.0 * s_in, 0.0);
            add(p("self_attn.v_proj.weight"), vec![kv, h], s_in, 0.0);
            add(
                p("self_attn.o_proj.weight"),
                vec![h, q],
                1.0 / (q as f32).sqrt(),
                0.0,
            );
            add(p("post_attention_layernorm.weight"), vec![h], 0.2, 1.0);
            add(p("mlp.gate_proj.weight"), vec![i, h], s_in, 0.0);
            add(p("mlp.up_proj.weight"), vec![i, h], s_in, 0.0);
            add(
                p("mlp.down_proj.weight"),
                vec![h, i],
                1.0 / (i as f32).sqrt(),
                0.0,
            );
        }
        add("model.norm.weight".into(), vec![h], 0.2, 1.0);
        if !self.tied {
            add(
                "lm_head.weight".into(),
                vec![self.vocab, h],
                1.0 / (h as f32).sqrt(),
                0.0,
            );
        }
        out
    }

    /// Writes `config.json` and `model.safetensors` into `dir`; returns the safetensors path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config_json()).unwrap(),
        )
        .unwrap();
        let tensors = self.tensors();
        let path = dir.join("model.safetensors");
        write_safetensors(&path, &tensors, self.dtype, None);
        path
    }
}

/// Encodes f32 values as `dtype` little-endian bytes.
pub fn encode(values: &[f32], dtype: safetensors::Dtype) -> Vec<u8> {
    match dtype {
        safetensors::Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        safetensors::Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        safetensors::Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("unsupported test dtype {other:?}"),
    }
}

pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: safetensors::Dtype,
    meta: Option<HashMap<String, String>>,
) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), encode(v, dtype)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

/// A fresh, empty temporary directory unique to this test process and `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgeinfer-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A file of the real model (`weights/…` by default, or the path in `$env_var`), or `None` with a
/// "SKIPPED" message when it is missing — unless `EDGEINFER_REQUIRE_MODEL=1`, which makes a missing
/// model a failure (CI sets it).
pub fn real_model_path(env_var: &str, default: &str, probe: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default));
    let probe = if probe.is_empty() {
        path.clone()
    } else {
        path.join(probe)
    };
    if probe.is_file() {
        return Some(path);
    }
    let msg = format!(
        "{} not found (set {env_var} or run scripts/fetch-model.sh)",
        path.display()
    );
    if std::env::var("EDGEINFER_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!("{msg}; EDGEINFER_REQUIRE_MODEL=1 makes this a failure");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The default SmolLM2-135M-Instruct checkpoint: the GGUF imported natively (Q4_1 layers, Q8_0
/// embedding, bit-exact), what `infer run` uses.
pub fn real_model_dir() -> Option<PathBuf> {
    real_model_path(
        "EDGEINFER_MODEL_DIR",
        "weights/SmolLM2-135M-Instruct",
        "config.json",
    )
}

/// The same GGUF imported with `--dtype f32` (dequantized), for comparisons with candle-transformers'
/// f32 Llama.
pub fn real_f32_model_dir() -> Option<PathBuf> {
    real_model_path(
        "EDGEINFER_F32_MODEL_DIR",
        "weights/SmolLM2-135M-Instruct-F32",
        "config.json",
    )
}

/// Whether a checkpoint directory's `config.json` says its matrices are quantized.
pub fn is_quantized_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .map(|t| t.contains("\"quantization_config\""))
        .unwrap_or(false)
}

/// The SmolLM2-135M-Instruct GGUF that `scripts/fetch-model.sh` downloads.
pub fn real_gguf() -> Option<PathBuf> {
    real_model_path(
        "EDGEINFER_GGUF",
        "weights/SmolLM2-135M-Instruct.Q4_1.gguf",
        "",
    )
}

/// A SentencePiece-style byte-fallback BPE `tokenizer.json` (Llama 2 layout: `▁` for spaces, `<unk>`,
/// `<s>`, `</s>` as ids 0–2) over `tokens` (index = id) and `merges`.
pub fn byte_fallback_bpe_json(
    tokens: &[String],
    merges: Vec<serde_json::Value>,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let vocab_map: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab_map, "merges": merges}
    })
}
