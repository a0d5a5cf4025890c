//! Our forward on tiny random Llama 3 checkpoints (`rope_scaling` of type `llama3`, rope_theta 5e5,
//! GQA, tied and untied) against candle-transformers' `llama` with the same scaling: logits within
//! 1e-4 max-abs (F32) for the prompt and 16 decode steps; q8_0/q4_0 quantized copies held to the F32
//! model like Llama's. The scaling is chosen so that it changes the logits well beyond the tolerance.

mod arch;
mod common;

use arch::{check_parity, check_quantized, Family, TinyArch};
use common::our_logits_with;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::KvDType;
use edgeinfer_models::Config;
use safetensors::Dtype;

fn base() -> TinyArch {
    TinyArch {
        family: Family::Llama3,
        hidden: 96,
        intermediate: 128,
        layers: 2,
        heads: 6,
        kv_heads: 2,
        head_dim: 0,
        vocab: 97,
        tied: true,
        dtype: Dtype::F32,
        seed: 41,
    }
}

#[test]
fn gqa3_tied_and_quantized() {
    let shape = base();
    let dir = check_parity("llama3-gqa3", shape);
    check_quantized("llama3-gqa3", shape, &dir);

    // Without the scaling the same checkpoint gives visibly different logits: the check above
    // really tests the scaled frequencies.
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = Config::from_json(&text).unwrap();
    assert!(cfg.rope_scaling.is_some());
    let plain = Config {
        rope_scaling: None,
        ..cfg.clone()
    };
    let (prompt, decode) = shape.tokens();
    let k = Kernels::SCALAR;
    let scaled = our_logits_with(&dir, cfg, &prompt, &decode, &k, 1, KvDType::F32);
    let unscaled = our_logits_with(&dir, plain, &prompt, &decode, &k, 1, KvDType::F32);
    let d = scaled
        .iter()
        .zip(&unscaled)
        .map(|(a, b)| common::max_abs_diff(a, b))
        .fold(0.0, f32::max);
    println!("llama3 scaling moves the logits by up to {d:e}");
    assert!(
        d > 1e-2,
        "the llama3 scaling does not change the logits ({d:e})"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn odd_heads_mqa_untied() {
    // 5 heads of 16 sharing one KV head, odd intermediate and vocab.
    let shape = TinyArch {
        hidden: 80,
        intermediate: 97,
        heads: 5,
        kv_heads: 1,
        vocab: 131,
        tied: false,
        layers: 3,
        seed: 42,
        ..base()
    };
    let dir = check_parity("llama3-odd", shape);
    std::fs::remove_dir_all(&dir).ok();
}
