//! Our forward on tiny random Qwen2 checkpoints (q/k/v biases, rope_theta 1e6, tied and untied)
//! against candle-transformers' `qwen2`: logits within 1e-4 max-abs (F32) for the prompt and 16
//! decode steps; q8_0/q4_0 quantized copies held to the F32 model like Llama's.

mod arch;
mod common;

use arch::{check_decode_allocates_nothing, check_parity, check_quantized, Family, TinyArch};
use safetensors::Dtype;

fn base() -> TinyArch {
    TinyArch {
        family: Family::Qwen2,
        hidden: 64,
        intermediate: 96,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 0,
        vocab: 97,
        tied: true,
        dtype: Dtype::F32,
        seed: 21,
    }
}

#[test]
fn gqa_tied_and_quantized() {
    let shape = base();
    let dir = check_parity("qwen2-gqa-tied", shape);
    check_quantized("qwen2-gqa-tied", shape, &dir);
    check_decode_allocates_nothing(&dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn odd_heads_untied() {
    // 7 heads of 10 sharing one KV head (MQA), odd intermediate and vocab.
    let shape = TinyArch {
        hidden: 70,
        intermediate: 83,
        heads: 7,
        kv_heads: 1,
        vocab: 131,
        tied: false,
        layers: 3,
        seed: 22,
        ..base()
    };
    let dir = check_parity("qwen2-odd-untied", shape);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bf16_gqa3_untied_quantized() {
    // 6 query heads per 2 KV heads (ratio 3); bf16 weights and biases.
    let shape = TinyArch {
        hidden: 96,
        heads: 6,
        kv_heads: 2,
        tied: false,
        dtype: Dtype::BF16,
        seed: 23,
        ..base()
    };
    let dir = check_parity("qwen2-bf16", shape);
    check_quantized("qwen2-bf16", shape, &dir);
    std::fs::remove_dir_all(&dir).ok();
}
