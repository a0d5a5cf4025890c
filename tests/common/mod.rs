//! Helpers shared by the integration tests: seeded random data, tiny checkpoints on disk and our
//! logits on them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgeinfer::loader::Checkpoint;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, Llama, Logits, ModelError, State};
use safetensors::Dtype;

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
    /// The small GQA checkpoint the quantization tests use: hidden 64 (two 32-blocks), 4 heads over
    /// 2 kv heads, 2 layers, tied F32 weights.
    pub fn small_gqa(seed: u64) -> TinyLlama {
        TinyLlama {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 97,
            tied: true,
            dtype: safetensors::Dtype::F32,
            seed,
        }
    }

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

    /// Hidden 32, 2 layers, 4 heads over 2 KV heads, untied, F32, and 288 tokens: the vocabulary of
    /// [`byte_fallback_tokenizer_json`] with two merged words (the tests that load a whole model).
    pub const fn small(seed: u64) -> TinyLlama {
        TinyLlama {
            hidden: 32,
            intermediate: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 288,
            tied: false,
            dtype: safetensors::Dtype::F32,
            seed,
        }
    }

    /// The same dimensions as a [`TinyArch`] of the Llama layout, which draws the same tensors and
    /// tokens (its `config_json` differs: Llama 3 rope scaling).
    pub fn as_arch(&self) -> TinyArch {
        TinyArch {
            family: Family::Llama3,
            hidden: self.hidden,
            intermediate: self.intermediate,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: 0,
            vocab: self.vocab,
            tied: self.tied,
            dtype: self.dtype,
            seed: self.seed,
        }
    }

    /// Tensor names, shapes and f32 values (deterministic from the seed).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.as_arch().tensors()
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

    /// [`TinyLlama::write`], plus a `tokenizer.json` of `vocab` tokens
    /// ([`byte_fallback_tokenizer_json`]): a directory `Model::load` opens.
    pub fn write_with_tokenizer(&self, dir: &Path) {
        self.write(dir);
        let json = byte_fallback_tokenizer_json(self.vocab).to_string();
        std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny checkpoints of the Llama 3, Qwen2 and Qwen3 layouts, and our logits on them.
// ---------------------------------------------------------------------------------------------

/// F32 logits against candle's F32 model, every prompt position and every decode step.
pub const TOL: f32 = 1e-4;
/// With the default f16 KV cache: logits of the tiny models are O(1); f16 keys and values (relative
/// rounding 2⁻¹¹ ≈ 5e-4) move them by up to 2.4e-3 here.
pub const TOL_F16_KV: f32 = 5e-3;
pub const DECODE_STEPS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `model_type: "llama"` with `rope_scaling: {"rope_type": "llama3", ...}`.
    Llama3,
    /// `"qwen2"`: q/k/v biases.
    Qwen2,
    /// `"qwen3"`: per-head q/k RMSNorm, explicit head_dim.
    Qwen3,
}

/// Shape of a tiny checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct TinyArch {
    pub family: Family,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Qwen3 only; the others use hidden / heads.
    pub head_dim: usize,
    pub vocab: usize,
    pub tied: bool,
    pub dtype: Dtype,
    pub seed: u64,
}

impl TinyArch {
    pub fn head_dim(&self) -> usize {
        match self.family {
            Family::Qwen3 => self.head_dim,
            _ => self.hidden / self.heads,
        }
    }

    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 256,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
        });
        let extra = match self.family {
            // A small original context puts the tiny heads' wavelengths in all three bands of the
            // scaling (kept, blended, divided by `factor`) at the positions the test visits.
            Family::Llama3 => serde_json::json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            }),
            Family::Qwen2 => serde_json::json!({
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "rope_theta": 1000000.0,
                "sliding_window": 256,
                "max_window_layers": self.layers,
                "use_sliding_window": false,
            }),
            Family::Qwen3 => serde_json::json!({
                "architectures": ["Qwen3ForCausalLM"],
                "model_type": "qwen3",
                "head_dim": self.head_dim,
                "attention_bias": false,
                "rope_theta": 1000000.0,
                "sliding_window": null,
                "max_window_layers": self.layers,
                "use_sliding_window": false,
            }),
        };
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// Tensor names, shapes and f32 values (deterministic from the seed).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut rng = Rng(self.seed);
        let hd = self.head_dim();
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
            if self.family == Family::Qwen2 {
                add(p("self_attn.q_proj.bias"), vec![q], 0.5, 0.0);
                add(p("self_attn.k_proj.bias"), vec![kv], 0.5, 0.0);
                add(p("self_attn.v_proj.bias"), vec![kv], 0.5, 0.0);
            }
            if self.family == Family::Qwen3 {
                add(p("self_attn.q_norm.weight"), vec![hd], 0.3, 1.0);
                add(p("self_attn.k_norm.weight"), vec![hd], 0.3, 1.0);
            }
            let s_q = 1.0 / (q as f32).sqrt();
            add(p("self_attn.o_proj.weight"), vec![h, q], s_q, 0.0);
            add(p("post_attention_layernorm.weight"), vec![h], 0.2, 1.0);
            add(p("mlp.gate_proj.weight"), vec![i, h], s_in, 0.0);
            add(p("mlp.up_proj.weight"), vec![i, h], s_in, 0.0);
            let s_i = 1.0 / (i as f32).sqrt();
            add(p("mlp.down_proj.weight"), vec![h, i], s_i, 0.0);
        }
        add("model.norm.weight".into(), vec![h], 0.2, 1.0);
        if !self.tied {
            let s_in = 1.0 / (h as f32).sqrt();
            add("lm_head.weight".into(), vec![self.vocab, h], s_in, 0.0);
        }
        out
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let text = serde_json::to_string_pretty(&self.config_json()).unwrap();
        std::fs::write(dir.join("config.json"), text).unwrap();
        write_safetensors(
            &dir.join("model.safetensors"),
            &self.tensors(),
            self.dtype,
            None,
        );
    }

    /// A prompt of 11 tokens and 16 decode tokens.
    pub fn tokens(&self) -> (Vec<u32>, Vec<u32>) {
        let mut rng = Rng(self.seed ^ 0xABCD);
        let mut take = |n: usize| (0..n).map(|_| rng.below(self.vocab) as u32).collect();
        (take(11), take(DECODE_STEPS))
    }
}

/// Our logits: the prompt as one batch (all positions), then one token per step.
pub fn our_logits(
    dir: &Path,
    prompt: &[u32],
    decode: &[u32],
    kern: &Kernels,
    threads: usize,
    kv_dtype: KvDType,
) -> Vec<Vec<f32>> {
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    our_logits_with(dir, cfg, prompt, decode, kern, threads, kv_dtype)
}

/// [`our_logits`] with the config given (tests change one field to show the check notices).
pub fn our_logits_with(
    dir: &Path,
    cfg: Config,
    prompt: &[u32],
    decode: &[u32],
    kern: &Kernels,
    threads: usize,
    kv_dtype: KvDType,
) -> Vec<Vec<f32>> {
    let ckpt = Checkpoint::open(dir).unwrap();
    let model = Llama::load(cfg.clone(), &ckpt.source()).unwrap();
    let opts = StateOptions {
        ctx: 64,
        batch: prompt.len(),
        threads,
        all_logits: true,
        kv_dtype,
        acts: edgeinfer_kernels::quant::ActQuant::Q8,
    };
    let mut state = State::new(&cfg, opts).unwrap();
    let vocab = cfg.vocab_size;
    let mut out = Vec::new();
    let mut run = || {
        model
            .forward(kern, &mut state, prompt, Logits::All)
            .unwrap();
        for t in 0..prompt.len() {
            out.push(state.logits()[t * vocab..(t + 1) * vocab].to_vec());
        }
        for &tok in decode {
            model
                .forward(kern, &mut state, &[tok], Logits::Last)
                .unwrap();
            out.push(state.logits()[..vocab].to_vec());
        }
    };
    if threads > 1 {
        edgeinfer_kernels::testing::pool(threads).install(run);
    } else {
        run();
    }
    out
}

/// Largest [`max_abs_diff`] over corresponding rows (the same number of rows).
pub fn worst_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// Holds our logits for `prompt` then `decode` (the checkpoint in `dir`) to `reference`, a row per
/// token: scalar and the best kernels, 1 and 3 threads with an f32 KV cache within [`TOL`] at every
/// position, and with the default f16 cache within [`TOL_F16_KV`].
pub fn check_logits_parity(
    name: &str,
    dir: &Path,
    prompt: &[u32],
    decode: &[u32],
    reference: &[Vec<f32>],
) {
    let mut tables = vec![Kernels::SCALAR];
    let best = Kernels::detect();
    if best.variant != Kernels::SCALAR.variant {
        tables.push(best);
    }
    for kern in &tables {
        // An f32 KV cache keeps the forward comparable to the f32 reference at TOL.
        for threads in [1, 3] {
            let ours = our_logits(dir, prompt, decode, kern, threads, KvDType::F32);
            assert_eq!(ours.len(), reference.len());
            for (pos, (a, b)) in ours.iter().zip(reference).enumerate() {
                let d = max_abs_diff(a, b);
                assert!(d <= TOL, "{name}: kernels {} threads {threads}: position {pos}: max-abs diff {d:e} > {TOL:e}", kern.variant);
            }
            println!(
                "{name}: kernels {} threads {threads}: max-abs diff {:e}",
                kern.variant,
                worst_abs_diff(&ours, reference)
            );
        }
        // The default f16 cache rounds keys and values to 11 significant bits.
        let ours = our_logits(dir, prompt, decode, kern, 1, KvDType::F16);
        let worst = worst_abs_diff(&ours, reference);
        println!(
            "{name}: kernels {}: f16 KV cache: max-abs diff {worst:e}",
            kern.variant
        );
        assert!(
            worst <= TOL_F16_KV,
            "{name}: kernels {}: f16 KV cache: max-abs diff {worst:e} > {TOL_F16_KV:e}",
            kern.variant
        );
    }
}

/// Cosine similarity, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Smallest [`cosine`] over corresponding rows.
pub fn worst_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| cosine(x, y))
        .fold(1.0, f64::min)
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

/// Puts NaN in element 0 and +Inf in element 2 of the F32 tensor `name` of `dir/model.safetensors`,
/// rewriting the file through a new file and a rename, as the loading contract asks.
pub fn poison_tensor(dir: &Path, name: &str) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + n + start;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    bytes[at + 8..at + 12].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let tmp = dir.join("model.safetensors.new");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
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

/// The repository root, where `weights/` and `fuzz/` are: the directory of the package including this
/// file (the root package, `cli/` or `examples/lambda/`) or the first one above it holding it.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/common/mod.rs").is_file())
        .expect("tests/common/mod.rs is in a directory above the package")
}

/// A file of the real model (`weights/…` by default, or the path in `$env_var`), or `None` with a
/// "SKIPPED" message when it is missing — unless `EDGEINFER_REQUIRE_MODEL=1`, which makes a missing
/// model a failure (CI sets it).
pub fn real_model_path(env_var: &str, default: &str, probe: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
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

/// `<unk> <s> </s>`, the 256 `<0xNN>` bytes (so random ids exercise partial UTF-8), `▁` and the
/// letters: 286 tokens for [`byte_fallback_bpe_json`].
pub fn byte_fallback_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend((0..=255u32).map(|b| format!("<0x{b:02X}>")));
    tokens.push("▁".into());
    tokens.extend(('a'..='z').map(String::from));
    tokens
}

/// A SentencePiece-style BPE with byte fallback and exactly `vocab` tokens (286..=312):
/// [`byte_fallback_tokens`], then merged words `▁a`, `▁b`, ...
pub fn byte_fallback_tokenizer_json(vocab: usize) -> serde_json::Value {
    let mut tokens = byte_fallback_tokens();
    let mut merges = Vec::new();
    for c in 'a'..='z' {
        if tokens.len() >= vocab {
            break;
        }
        tokens.push(format!("▁{c}"));
        merges.push(serde_json::json!(["▁", c.to_string()]));
    }
    assert_eq!(
        tokens.len(),
        vocab,
        "tokenizer_json supports vocabularies of 286..=312 tokens"
    );
    byte_fallback_bpe_json(&tokens, merges)
}

/// Replaces `from` by `to` (same length) in the safetensors header of `path`.
pub fn patch_header(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = bytes[..n]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the header"));
    bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// The error loading `dir` gives (panics if it loads).
pub fn load_error(dir: &Path) -> ModelError {
    let ckpt = Checkpoint::open(dir).unwrap();
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    match Llama::load(cfg, &ckpt.source()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}
