//! Our Llama forward against candle-transformers' Llama on tiny random checkpoints written as
//! safetensors: logits within 1e-4 max-abs for every prompt position and 16 decode steps.

mod common;

use candle_core::{DType as CDType, Device, Tensor as CTensor};
use candle_transformers::models::llama as cl;
use common::{check_logits_parity, temp_dir, TinyLlama};
use safetensors::Dtype;

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

fn check(name: &str, shape: TinyLlama) {
    let dir = temp_dir(name);
    shape.write(&dir);
    let (prompt, decode) = shape.as_arch().tokens();
    let all: Vec<u32> = prompt.iter().chain(&decode).copied().collect();
    let reference = candle_logits(&dir, &all);
    check_logits_parity(name, &dir, &prompt, &decode, &reference);
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
