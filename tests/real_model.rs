//! The real SmolLM2-135M-Instruct checkpoints: the F32 import's logits against candle-transformers'
//! Llama at every prompt position for an English, a code and a Chinese prompt; then greedy generation
//! (a text continuation and a chat answer) with both the F32 import and the default, natively
//! quantized one (Q4_1 layers, Q8_0 embedding).
//!
//! The model directories come from `EDGEINFER_F32_MODEL_DIR` / `weights/SmolLM2-135M-Instruct-F32` and
//! `EDGEINFER_MODEL_DIR` / `weights/SmolLM2-135M-Instruct` (`scripts/fetch-model.sh` creates both).
//! Without them the tests are skipped with a message, unless `EDGEINFER_REQUIRE_MODEL=1`, which turns
//! the skip into a failure.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use candle_transformers::models::llama as cl;
use common::max_abs_diff;
use edgeinfer::{
    GenerateOptions, Message, Model, ModelOptions, Prompt, SamplerConfig, SessionOptions,
};

/// Largest allowed max-abs logit difference at any prompt position.
const TOL: f32 = 1e-3;

const ENGLISH: &str =
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest.";
const CODE: &str = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n";
const CHINESE: &str = "今天天气很好，我们一起去公园散步吧。";

/// The F32 import, which candle-transformers' Llama can read.
fn model_dir() -> Option<PathBuf> {
    common::real_f32_model_dir()
}

/// The F32 model with the best kernels for this CPU and default threads, loaded once for all tests.
fn model() -> Option<Arc<Model>> {
    static MODEL: OnceLock<Option<Arc<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| model_dir().map(|dir| Model::load(dir).expect("load model")))
        .clone()
}

/// The default (natively quantized) model, loaded once.
fn quant_model() -> Option<Arc<Model>> {
    static MODEL: OnceLock<Option<Arc<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = common::real_model_dir()?;
            assert!(
                common::is_quantized_checkpoint(&dir),
                "{} is not the quantized import (an F32 one from an older fetch-model.sh?); re-run scripts/fetch-model.sh",
                dir.display()
            );
            Some(Model::load(dir).expect("load model"))
        })
        .clone()
}

/// candle's Llama over the same checkpoint, loaded once.
fn candle_model() -> &'static (cl::Llama, cl::Config) {
    static CANDLE: OnceLock<(cl::Llama, cl::Config)> = OnceLock::new();
    CANDLE.get_or_init(|| {
        let dir = model_dir().expect("model directory");
        let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let cfg: cl::LlamaConfig = serde_json::from_str(&cfg_text).unwrap();
        let cfg = cfg.into_config(false);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, CDType::F32, &Device::Cpu)
            .unwrap();
        (cl::Llama::load(vb, &cfg).unwrap(), cfg)
    })
}

/// candle's logits after each token, fed one at a time through its KV cache.
fn candle_logits(tokens: &[u32]) -> Vec<Vec<f32>> {
    let (model, cfg) = candle_model();
    let dev = Device::Cpu;
    let mut cache = cl::Cache::new(true, CDType::F32, cfg, &dev).unwrap();
    tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let input = CTensor::new(&[t], &dev).unwrap().unsqueeze(0).unwrap();
            let logits = model.forward(&input, pos, &mut cache).unwrap();
            logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

/// Our logits at every position of `tokens`, evaluated as one batch.
fn our_logits(model: &Arc<Model>, tokens: &[u32]) -> Vec<Vec<f32>> {
    let opts = SessionOptions {
        ctx: tokens.len(),
        batch: tokens.len(),
        all_logits: true,
        // f32 cache: the comparison is with candle's f32 reference.
        kv_dtype: edgeinfer::KvDType::F32,
        ..SessionOptions::default()
    };
    let mut session = model.session(opts).unwrap();
    let mut out = vec![Vec::new(); tokens.len()];
    session
        .evaluate(tokens, |i, logits| out[i] = logits.to_vec())
        .unwrap();
    out
}

/// Checks our logits against candle's at every position of `text`, with the default kernels and,
/// when `scalar` is set, with the scalar kernels too; prints the largest difference seen.
fn parity(name: &str, text: &str, scalar: bool) {
    let Some(model) = model() else { return };
    let start = Instant::now();
    let tok = model.tokenizer();
    let tokens = tok.encode(text, tok.add_bos_token()).unwrap();
    assert!(tokens.len() >= 8, "{name}: only {} tokens", tokens.len());
    let reference = candle_logits(&tokens);
    let mut models = vec![model.clone()];
    if scalar && model.kernels().variant.name() != "scalar" {
        let opts = ModelOptions {
            kernels: Some("scalar".into()),
            ..ModelOptions::default()
        };
        models.push(Model::load_with(model.dir(), &opts).unwrap());
    }
    for m in &models {
        let ours = our_logits(m, &tokens);
        assert_eq!(ours.len(), reference.len());
        let mut worst = (0.0f32, 0);
        for (pos, (a, b)) in ours.iter().zip(&reference).enumerate() {
            let d = max_abs_diff(a, b);
            assert!(
                d <= TOL,
                "{name}: kernels {}: position {pos} of {}: max-abs diff {d:e} > {TOL:e}",
                m.kernels().variant,
                tokens.len()
            );
            if d > worst.0 {
                worst = (d, pos);
            }
        }
        println!(
            "{name}: {} tokens, kernels {}, threads {}: max-abs logit diff vs candle {:.3e} (position {})",
            tokens.len(),
            m.kernels().variant,
            m.threads(),
            worst.0,
            worst.1
        );
    }
    println!("{name}: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn parity_english() {
    parity("english", ENGLISH, true);
}

#[test]
fn parity_code() {
    parity("code", CODE, false);
}

#[test]
fn parity_chinese() {
    parity("chinese", CHINESE, false);
}

fn greedy(model: Option<Arc<Model>>, prompt: &Prompt<'_>, max_tokens: usize) -> Option<String> {
    let model = model?;
    let mut session = model.session(SessionOptions::default()).unwrap();
    let opts = GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    };
    let g = session.generate(prompt, &opts, |_| true).unwrap();
    println!(
        "{}: {prompt:?} -> {:?} ({:?}, {} tokens)",
        model.dir().display(),
        g.text,
        g.finish_reason,
        g.tokens.len()
    );
    Some(g.text)
}

fn check_continuation(model: Option<Arc<Model>>) {
    let Some(text) = greedy(model, &Prompt::Text("The capital of France is"), 32) else {
        return;
    };
    assert!(
        text.starts_with(" Paris"),
        "continuation {text:?} does not start with \" Paris\""
    );
}

fn chat(model: Option<Arc<Model>>) -> Option<String> {
    let messages = [Message::new("user", "What is the capital of France?")];
    greedy(model, &Prompt::Chat(&messages), 32)
}

#[test]
fn greedy_continuation() {
    check_continuation(model());
}

#[test]
fn greedy_continuation_quantized() {
    check_continuation(quant_model());
}

#[test]
fn chat_answer() {
    let Some(text) = chat(model()) else { return };
    assert!(
        text.contains("Paris"),
        "chat answer {text:?} does not mention Paris"
    );
}

/// The quantized model's answer starts "L'Étoile, la Marseillaise, …", as candle-transformers'
/// `quantized_llama` does on the same GGUF (tests/quantized.rs checks they agree): the first token is
/// a near-tie that the 8-bit rounding of activations, which both do before every matmul, flips.
/// With exact f32 activations on the same weights (the F32 import) "The" leads "L" by 0.08 (25.33
/// vs 25.24) and the answer is "The capital of France is Paris."; with q8 activations "L" leads by
/// 0.07–0.28. So this accepts that answer too, and anything else fails.
#[test]
fn chat_answer_quantized() {
    let Some(text) = chat(quant_model()) else {
        return;
    };
    assert!(
        text.contains("Paris") || text.starts_with("L'Étoile"),
        "chat answer {text:?} neither mentions Paris nor is the known near-tie answer"
    );
}
