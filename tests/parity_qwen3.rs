//! Our forward on tiny random Qwen3 checkpoints (per-head q/k RMSNorm before RoPE, explicit head_dim
//! that is not hidden/heads, GQA, tied and untied) against candle-transformers' `qwen3`: logits
//! within 1e-4 max-abs (F32) for the prompt and 16 decode steps; q8_0/q4_0 quantized copies held to
//! the F32 model like Llama's.

mod arch;
mod common;

use arch::{
    check_decode_allocates_nothing, check_gguf_imports, check_parity, check_quantized, Family,
    TinyArch,
};
use safetensors::Dtype;

fn base() -> TinyArch {
    TinyArch {
        family: Family::Qwen3,
        hidden: 64,
        intermediate: 96,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        // q_dim 96 != hidden 64.
        head_dim: 24,
        vocab: 97,
        tied: true,
        dtype: Dtype::F32,
        seed: 31,
    }
}

#[test]
fn head_dim_not_hidden_over_heads_and_quantized() {
    let shape = base();
    let dir = check_parity("qwen3-hd24", shape);
    check_quantized("qwen3-hd24", shape, &dir);
    check_decode_allocates_nothing(&dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn odd_heads_mqa_untied() {
    // 5 heads of 14 (q_dim 70 > hidden 48), one KV head, odd intermediate and vocab.
    let shape = TinyArch {
        hidden: 48,
        intermediate: 77,
        heads: 5,
        kv_heads: 1,
        head_dim: 14,
        vocab: 113,
        tied: false,
        layers: 3,
        seed: 32,
        ..base()
    };
    let dir = check_parity("qwen3-odd", shape);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn f16_gqa3_untied_quantized() {
    // 6 query heads per 2 KV heads, head_dim 16 (q_dim 96 > hidden 64), f16 weights and norms.
    let shape = TinyArch {
        heads: 6,
        kv_heads: 2,
        head_dim: 16,
        tied: false,
        dtype: Dtype::F16,
        seed: 33,
        ..base()
    };
    let dir = check_parity("qwen3-f16", shape);
    check_quantized("qwen3-f16", shape, &dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_import_gives_the_same_model() {
    check_gguf_imports("qwen3", base());
}
