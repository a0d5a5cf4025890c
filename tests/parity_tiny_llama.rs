//! Our Llama forward against candle-transformers' Llama on tiny random checkpoints written as
//! safetensors: logits within 1e-4 max-abs for every prompt position and 16 decode steps.

mod common;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use candle_transformers::models::llama as cl;
use common::{max_abs_diff, temp_dir, Rng, TinyLlama};
use edgeinfer::loader::Checkpoint;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, Llama, Logits, State};
use safetensors::Dtype;

const TOL: f32 = 1e-4;
/// Logits of the tiny models are O(1); f16 keys and values (relative rounding 2⁻¹¹ ≈ 5e-4) move them
/// by up to 2.4e-3 here.
const TOL_F16_KV: f32 = 5e-3;
const DECODE_STEPS: usize = 16;

/// candle's logits after each token, fed one at a time through its KV cache.
fn candle_logits(dir: &std::path::Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg: cl::LlamaConfig = serde_json::from_str(&cfg_text).unwrap();
    let cfg = cfg.into_config(false);
    let dev = Device::Cpu;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, CDType::F32, &dev).unwrap();
    let model = cl::Llama::load(vb, &cfg).unwrap();
    let mut cache = cl::Cache::new(true, CDType::F32, &cfg, &dev).unwrap();
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

/// Our logits: the prompt as one batch (all positions), then one token per step.
fn our_logits(
    dir: &std::path::Path,
    prompt: &[u32],
    decode: &[u32],
    kern: &Kernels,
    threads: usize,
    kv_dtype: KvDType,
) -> Vec<Vec<f32>> {
    let ckpt = Checkpoint::open(dir).unwrap();
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
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

fn check(name: &str, shape: TinyLlama) {
    let dir = temp_dir(name);
    shape.write(&dir);
    let mut rng = Rng(shape.seed ^ 0xABCD);
    let prompt: Vec<u32> = (0..11).map(|_| rng.below(shape.vocab) as u32).collect();
    let decode: Vec<u32> = (0..DECODE_STEPS)
        .map(|_| rng.below(shape.vocab) as u32)
        .collect();
    let all: Vec<u32> = prompt.iter().chain(&decode).copied().collect();
    let reference = candle_logits(&dir, &all);
    let mut tables = vec![Kernels::SCALAR];
    let best = Kernels::detect();
    if best.variant != Kernels::SCALAR.variant {
        tables.push(best);
    }
    for kern in &tables {
        // An f32 KV cache keeps the forward comparable to the f32 reference at TOL.
        for threads in [1, 3] {
            let ours = our_logits(&dir, &prompt, &decode, kern, threads, KvDType::F32);
            assert_eq!(ours.len(), reference.len());
            for (pos, (a, b)) in ours.iter().zip(&reference).enumerate() {
                let d = max_abs_diff(a, b);
                assert!(d <= TOL, "{name}: kernels {} threads {threads}: position {pos}: max-abs diff {d:e} > {TOL:e}", kern.variant);
            }
        }
        // The default f16 cache rounds keys and values to 11 significant bits.
        let ours = our_logits(&dir, &prompt, &decode, kern, 1, KvDType::F16);
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0.0, f32::max);
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
    std::fs::remove_dir_all(&dir).ok();
}

fn base() -> TinyLlama {
    TinyLlama {
        hidden: 64,
        intermediate: 160,
        layers: 2,
        heads: 4,
        kv_heads: 4,
        vocab: 97,
        tied: true,
        dtype: Dtype::F32,
        seed: 1,
    }
}

#[test]
fn mha_tied() {
    check("mha_tied", base());
}

#[test]
fn gqa_untied() {
    check(
        "gqa_untied",
        TinyLlama {
            hidden: 96,
            heads: 6,
            kv_heads: 2,
            tied: false,
            layers: 3,
            seed: 2,
            ..base()
        },
    );
}

#[test]
fn odd_sizes_multi_query() {
    // hidden 70 = 5 heads × 14, intermediate and vocab odd, one KV head shared by all.
    check(
        "odd_sizes",
        TinyLlama {
            hidden: 70,
            intermediate: 97,
            heads: 5,
            kv_heads: 1,
            vocab: 131,
            seed: 3,
            ..base()
        },
    );
}

#[test]
fn f16_weights() {
    check(
        "f16",
        TinyLlama {
            dtype: Dtype::F16,
            heads: 8,
            kv_heads: 2,
            seed: 4,
            ..base()
        },
    );
}

#[test]
fn bf16_weights() {
    check(
        "bf16",
        TinyLlama {
            dtype: Dtype::BF16,
            tied: false,
            seed: 5,
            ..base()
        },
    );
}
