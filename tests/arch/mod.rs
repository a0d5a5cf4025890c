//! Tiny random checkpoints of the Llama 3, Qwen2 and Qwen3 architectures, candle-transformers' model
//! of the same architecture as the reference, and the checks the `parity_*` tests share.
#![allow(dead_code)]

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use edgeinfer::loader::Checkpoint;
use edgeinfer::quantize::{quantize_checkpoint, QuantizeOptions};
use edgeinfer_kernels::quant::QFormat;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, Llama, Logits, State};
use safetensors::Dtype;

use crate::common::{max_abs_diff, temp_dir, write_safetensors, Rng};

/// F32 logits against candle's F32 model, every prompt position and every decode step.
pub const TOL: f32 = 1e-4;
/// With the default f16 KV cache (keys and values rounded to 11 significant bits).
pub const TOL_F16_KV: f32 = 5e-3;
pub const DECODE_STEPS: usize = 16;
/// Worst cosine between a quantized model's logits and the F32 model's, as `tests/quantized.rs`
/// holds tiny Llama checkpoints (random weights quantize worse than trained ones).
pub const QUANT_FLOORS: [(QFormat, f64); 2] = [(QFormat::Q8_0, 0.9995), (QFormat::Q4_0, 0.98)];

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

/// candle-transformers' logits after each token, fed one at a time through its KV cache.
pub fn candle_logits(family: Family, dir: &Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    use candle_transformers::models::{llama, qwen2, qwen3};
    let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let dev = Device::Cpu;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, CDType::F32, &dev).unwrap();
    let input = |t: u32| CTensor::new(&[t], &dev).unwrap().unsqueeze(0).unwrap();
    let flat = |logits: CTensor| logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    match family {
        Family::Llama3 => {
            let cfg: llama::LlamaConfig = serde_json::from_str(&cfg_text).unwrap();
            assert!(
                cfg.rope_scaling.is_some(),
                "candle did not read rope_scaling"
            );
            let cfg = cfg.into_config(false);
            let model = llama::Llama::load(vb, &cfg).unwrap();
            let mut cache = llama::Cache::new(true, CDType::F32, &cfg, &dev).unwrap();
            let mut step =
                |(pos, &t): (usize, &u32)| flat(model.forward(&input(t), pos, &mut cache).unwrap());
            tokens.iter().enumerate().map(&mut step).collect()
        }
        Family::Qwen2 => {
            let cfg: qwen2::Config = serde_json::from_str(&cfg_text).unwrap();
            let mut model = qwen2::ModelForCausalLM::new(&cfg, vb).unwrap();
            let mut step = |(pos, &t): (usize, &u32)| flat(model.forward(&input(t), pos).unwrap());
            tokens.iter().enumerate().map(&mut step).collect()
        }
        Family::Qwen3 => {
            let cfg: qwen3::Config = serde_json::from_str(&cfg_text).unwrap();
            let mut model = qwen3::ModelForCausalLM::new(&cfg, vb).unwrap();
            let mut step = |(pos, &t): (usize, &u32)| flat(model.forward(&input(t), pos).unwrap());
            tokens.iter().enumerate().map(&mut step).collect()
        }
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
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(run);
    } else {
        run();
    }
    out
}

fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// Writes the checkpoint, runs candle and ours (scalar and the best kernels, 1 and 3 threads, f32 and
/// f16 KV cache) and holds every position to [`TOL`] / [`TOL_F16_KV`]. Returns the directory.
pub fn check_parity(name: &str, shape: TinyArch) -> std::path::PathBuf {
    let dir = temp_dir(name);
    shape.write(&dir);
    let (prompt, decode) = shape.tokens();
    let all: Vec<u32> = prompt.iter().chain(&decode).copied().collect();
    let reference = candle_logits(shape.family, &dir, &all);
    let mut tables = vec![Kernels::SCALAR];
    let best = Kernels::detect();
    if best.variant != Kernels::SCALAR.variant {
        tables.push(best);
    }
    for kern in &tables {
        for threads in [1, 3] {
            let ours = our_logits(&dir, &prompt, &decode, kern, threads, KvDType::F32);
            for (pos, (a, b)) in ours.iter().zip(&reference).enumerate() {
                let d = max_abs_diff(a, b);
                assert!(d <= TOL, "{name}: kernels {} threads {threads}: position {pos}: max-abs diff {d:e} > {TOL:e}", kern.variant);
            }
            println!(
                "{name}: kernels {} threads {threads}: max-abs diff {:e}",
                kern.variant,
                worst(&ours, &reference)
            );
        }
        let ours = our_logits(&dir, &prompt, &decode, kern, 1, KvDType::F16);
        let w = worst(&ours, &reference);
        println!(
            "{name}: kernels {}: f16 KV cache: max-abs diff {w:e}",
            kern.variant
        );
        assert!(
            w <= TOL_F16_KV,
            "{name}: kernels {}: f16 KV: {w:e} > {TOL_F16_KV:e}",
            kern.variant
        );
    }
    dir
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Quantizes the F32 checkpoint in `src` with `infer quantize`'s code to each of [`QUANT_FLOORS`] and
/// holds the logits to the F32 model's by cosine. Vectors (norms, biases) must stay F32 and every
/// matrix must be quantized (the shapes are multiples of the 32-element block).
pub fn check_quantized(name: &str, shape: TinyArch, src: &Path) {
    let (prompt, decode) = shape.tokens();
    let kern = Kernels::detect();
    let reference = our_logits(src, &prompt, &decode, &kern, 1, KvDType::F32);
    for (format, floor) in QUANT_FLOORS {
        let out = src.with_file_name(format!("{name}-{}", format.name()));
        let s = quantize_checkpoint(src, &out, &QuantizeOptions { format }, &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: quantize to {format}: {e}"));
        assert!(
            s.kept_dense.is_empty() && s.skipped.is_empty(),
            "{name}: {s:?}"
        );
        // Under q4_0 the embedding and an untied lm_head are stored in q8_0 (counted apart).
        let outer = 1 + usize::from(!shape.tied);
        let in_format = 7 * shape.layers + if format == QFormat::Q8_0 { outer } else { 0 };
        assert_eq!(s.quantized, in_format, "{name} {format}");
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (tname, view) in st.tensors() {
            if tname.ends_with(".bias") || tname.ends_with("norm.weight") {
                assert_eq!(view.dtype(), Dtype::F32, "{name}: {tname} was not kept F32");
            }
        }
        let ours = our_logits(&out, &prompt, &decode, &kern, 1, KvDType::F32);
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0, f64::min);
        println!("{name} {format}: worst cosine vs the F32 model {worst:.6} (floor {floor})");
        assert!(worst >= floor, "{name} {format}: cosine {worst} < {floor}");
        std::fs::remove_dir_all(&out).ok();
    }
}

/// Counts this thread's allocator calls while switched on, so a test can prove that decoding a
/// token through the Qwen2 bias and Qwen3 q/k-norm stages allocates nothing (`tests/zero_alloc.rs`
/// does the same for the whole session on Llama).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        pub static MEASURING: Cell<bool> = const { Cell::new(false) };
        pub static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    fn record() {
        if MEASURING.try_with(Cell::get).unwrap_or(false) {
            let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        }
    }

    // SAFETY: every call is forwarded unchanged to `System`; the bookkeeping neither allocates nor
    // unwinds.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            record();
            // SAFETY: same contract, passed through.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            record();
            // SAFETY: same contract, passed through.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            record();
            // SAFETY: same contract, passed through.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            record();
            // SAFETY: same contract, passed through.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

/// Loads the checkpoint in `dir`, prefills and warms up, then checks that 16 single-token forward
/// calls make no allocator call on this thread.
pub fn check_decode_allocates_nothing(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = Config::from_json(&text).unwrap();
    let ckpt = Checkpoint::open(dir).unwrap();
    let model = Llama::load(cfg.clone(), &ckpt.source()).unwrap();
    let opts = StateOptions {
        ctx: 64,
        batch: 8,
        threads: 1,
        all_logits: false,
        kv_dtype: KvDType::F16,
    };
    let mut state = State::new(&cfg, opts).unwrap();
    let kern = Kernels::detect();
    model
        .forward(&kern, &mut state, &[1, 2, 3, 4], Logits::Last)
        .unwrap();
    model
        .forward(&kern, &mut state, &[5], Logits::Last)
        .unwrap();
    // The counter sees an allocation when there is one.
    counting::MEASURING.with(|m| m.set(true));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    counting::MEASURING.with(|m| m.set(false));
    assert_eq!(
        counting::CALLS.with(Cell::get),
        2,
        "the counting allocator is not counting"
    );
    counting::CALLS.with(|c| c.set(0));
    counting::MEASURING.with(|m| m.set(true));
    for t in 0..16u32 {
        if let Err(e) = model.forward(&kern, &mut state, &[t % 7], Logits::Last) {
            counting::MEASURING.with(|m| m.set(false));
            panic!("decode step {t}: {e}");
        }
    }
    counting::MEASURING.with(|m| m.set(false));
    let calls = counting::CALLS.with(Cell::get);
    assert_eq!(calls, 0, "{}: decoding allocated", dir.display());
}

/// GGUF name of a Hugging Face tensor name, as llama.cpp's converter writes it.
fn gguf_name(hf: &str) -> String {
    const LAYER: [(&str, &str); 14] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("self_attn.q_norm.weight", "attn_q_norm.weight"),
        ("self_attn.k_norm.weight", "attn_k_norm.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, suffix) = rest.split_once('.').unwrap();
    let (_, g) = LAYER.iter().find(|(h, _)| *h == suffix).unwrap();
    format!("blk.{layer}.{g}")
}

/// Writes the tiny Qwen checkpoint as a GGUF the way llama.cpp's converter would (F32 tensors, the
/// architecture's metadata keys, a byte-level vocabulary of `shape.vocab` tokens), imports it with
/// `infer import`'s code, and checks the imported checkpoint gives the original's logits.
pub fn check_gguf_import(name: &str, shape: TinyArch) {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    let arch = match shape.family {
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
        Family::Llama3 => panic!("llama3 GGUFs carry rope_freqs; see src/import/tests.rs"),
    };
    let root = temp_dir(name);
    let hf = root.join("hf");
    shape.write(&hf);

    // A byte-level vocabulary: 3 specials, the 256 byte characters, then filler words.
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    let mut extra = 0;
    for b in 0u32..256 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        tokens.push(char::from_u32(c).unwrap().to_string());
    }
    assert!(shape.vocab >= tokens.len(), "vocab too small for bytes");
    for i in tokens.len()..shape.vocab {
        tokens.push(format!("w{i}"));
    }
    let mut types = vec![3i32; 3];
    types.resize(tokens.len(), 1);
    let u = |v: usize| Value::U32(v as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("block_count"), u(shape.layers)),
        (k("context_length"), u(256)),
        (k("embedding_length"), u(shape.hidden)),
        (k("feed_forward_length"), u(shape.intermediate)),
        (k("attention.head_count"), u(shape.heads)),
        (k("attention.head_count_kv"), u(shape.kv_heads)),
        (k("rope.freq_base"), Value::F32(1_000_000.0)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(Vec::new())),
        ("tokenizer.ggml.eos_token_id".into(), u(2)),
    ];
    let template = format!(
        "{}/tests/fixtures/templates/{}.jinja",
        env!("CARGO_MANIFEST_DIR"),
        if arch == "qwen2" { "qwen2.5" } else { "qwen3" }
    );
    let template = std::fs::read_to_string(template).unwrap();
    meta.push(("tokenizer.chat_template".into(), Value::String(template)));
    if shape.family == Family::Qwen3 {
        meta.push((k("attention.key_length"), u(shape.head_dim())));
        meta.push((k("attention.value_length"), u(shape.head_dim())));
    }
    let dev = Device::Cpu;
    let qs: Vec<(String, QTensor)> = shape
        .tensors()
        .into_iter()
        .map(|(n, s, v)| {
            // The GGUF holds what the checkpoint holds, rounded as the checkpoint's dtype rounds.
            let v: Vec<f32> = match shape.dtype {
                Dtype::F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
                Dtype::BF16 => v
                    .iter()
                    .map(|x| half::bf16::from_f32(*x).to_f32())
                    .collect(),
                _ => v,
            };
            let t = CTensor::from_vec(v, s.as_slice(), &dev).unwrap();
            (
                gguf_name(&n),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let gguf = root.join("m.gguf");
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(&gguf).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    drop(f);

    let out = root.join("imported");
    let opts = edgeinfer::import::ImportOptions::default();
    let summary = edgeinfer::import::import_gguf(&gguf, &out, &opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: import: {e}"));
    assert_eq!(summary.tie_word_embeddings, shape.tied);
    let cfg =
        Config::from_json(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg.arch.name(), arch);
    assert_eq!(cfg.head_dim, shape.head_dim());

    let (prompt, decode) = shape.tokens();
    let kern = Kernels::detect();
    let want = our_logits(&hf, &prompt, &decode, &kern, 1, KvDType::F32);
    let got = our_logits(&out, &prompt, &decode, &kern, 1, KvDType::F32);
    let d = worst(&got, &want);
    println!("{name}: imported GGUF vs the checkpoint it was made from: max-abs {d:e}");
    assert!(d <= 1e-5, "{name}: imported model differs by {d:e}");

    // The whole stack on the imported directory: Model::load, the model's own chat template (from
    // the GGUF), its tokenizer (the special tokens encode whole), greedy generation.
    let model = edgeinfer::Model::load(&out).unwrap();
    let tok = model.tokenizer();
    println!(
        "{name}: tokenizer: {}",
        tok.unsupported_reason()
            .map_or("our byte-level BPE".to_string(), |r| format!(
                "tokenizers crate ({r})"
            ))
    );
    let template = tok.chat_template().expect("the GGUF's chat template");
    let msgs = [
        edgeinfer::Message::new("system", "Be brief."),
        edgeinfer::Message::new("user", "Hi 12"),
    ];
    let text = template.render(&msgs, true).unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one token: {ids:?}");
    assert_eq!(
        ids.iter().filter(|&&t| t == 2).count(),
        2,
        "two <|im_end|>: {ids:?}"
    );
    let mut session = model.session(edgeinfer::SessionOptions::default()).unwrap();
    let opts = edgeinfer::GenerateOptions {
        max_tokens: 4,
        sampler: edgeinfer::SamplerConfig::greedy(),
        ..Default::default()
    };
    let out_gen = session
        .generate(&edgeinfer::Prompt::Chat(&msgs), &opts, |_| true)
        .unwrap();
    assert!(
        out_gen.timings.generated_tokens >= 1,
        "{name}: nothing generated"
    );
    drop(session);
    drop(model);
    std::fs::remove_dir_all(&root).ok();
}
