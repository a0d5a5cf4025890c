//! candle-transformers' model of the Llama 3, Qwen2 and Qwen3 architectures as the reference for
//! the tiny random checkpoints of `common` ([`TinyArch`]), and the checks the `parity_*` tests share.
#![allow(dead_code)]

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use edgeinfer::loader::Checkpoint;
use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeOptions};
use edgeinfer_kernels::quant::QFormat;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, Llama, Logits, State};
use safetensors::Dtype;

use crate::common::{check_logits_parity, our_logits, temp_dir, worst_abs_diff, worst_cosine};
pub use crate::common::{Family, TinyArch};

/// Worst cosine between a quantized model's logits and the F32 model's, as `tests/quantized.rs`
/// holds tiny Llama checkpoints (random weights quantize worse than trained ones).
pub const QUANT_FLOORS: [(QFormat, f64); 2] = [(QFormat::Q8_0, 0.9995), (QFormat::Q4_0, 0.98)];

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

/// Writes the checkpoint, runs candle and holds ours to it at every position
/// ([`check_logits_parity`]). Returns the directory.
pub fn check_parity(name: &str, shape: TinyArch) -> std::path::PathBuf {
    let dir = temp_dir(name);
    shape.write(&dir);
    let (prompt, decode) = shape.tokens();
    let all: Vec<u32> = prompt.iter().chain(&decode).copied().collect();
    let reference = candle_logits(shape.family, &dir, &all);
    check_logits_parity(name, &dir, &prompt, &decode, &reference);
    dir
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
        let s = quantize_checkpoint(src, &out, &QuantizeOptions::new(format), &mut |_| {})
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
        let worst = worst_cosine(&ours, &reference);
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
        acts: edgeinfer_kernels::quant::ActQuant::Q8,
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

/// [`check_gguf_import`] on an untied and a tied variant of `base`, named `{prefix}-gguf` and
/// `{prefix}-gguf-tied`, with 260 and 263 tokens: the byte-level vocabulary the importer's tokenizer
/// check needs.
pub fn check_gguf_imports(prefix: &str, base: TinyArch) {
    check_gguf_import(
        &format!("{prefix}-gguf"),
        TinyArch {
            vocab: 260,
            tied: false,
            seed: 9,
            ..base
        },
    );
    check_gguf_import(
        &format!("{prefix}-gguf-tied"),
        TinyArch {
            vocab: 263,
            tied: true,
            seed: 10,
            ..base
        },
    );
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
        Family::Llama3 => panic!("llama3 GGUFs carry rope_freqs; see convert/src/import/tests.rs"),
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
    let opts = edgeinfer_convert::import::ImportOptions::default();
    let summary = edgeinfer_convert::import::import_gguf(&gguf, &out, &opts, &mut |_| {})
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
    let d = worst_abs_diff(&got, &want);
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
