//! Our forward on tiny random Qwen2 checkpoints (q/k/v biases, rope_theta 1e6, tied and untied)
//! against candle-transformers' `qwen2`: logits within 1e-4 max-abs (F32) for the prompt and 16
//! decode steps; q8_0/q4_0 quantized copies held to the F32 model like Llama's.

mod arch;
mod common;

use arch::{
    check_decode_allocates_nothing, check_gguf_imports, check_parity, check_quantized, Family,
    TinyArch,
};
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

#[test]
fn missing_bias_or_wrong_norm_shape_is_a_typed_error() {
    use edgeinfer::loader::Checkpoint;
    use edgeinfer_models::{Config, Llama, ModelError};
    let load = |dir: &std::path::Path| {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let ckpt = Checkpoint::open(dir).unwrap();
        Llama::load(Config::from_json(&text).unwrap(), &ckpt.source()).err()
    };
    // Qwen2 without one of its biases.
    let shape = base();
    let dir = common::temp_dir("qwen2-missing-bias");
    shape.write(&dir);
    let mut tensors = shape.tensors();
    tensors.retain(|(n, _, _)| n != "model.layers.1.self_attn.v_proj.bias");
    common::write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F32, None);
    match load(&dir) {
        Some(ModelError::MissingTensor { name }) => {
            assert_eq!(name, "model.layers.1.self_attn.v_proj.bias")
        }
        other => panic!("expected a missing bias, got {other:?}"),
    }
    // Qwen3 whose k_norm has hidden/heads elements instead of head_dim.
    let shape = TinyArch {
        family: Family::Qwen3,
        head_dim: 24,
        ..base()
    };
    shape.write(&dir);
    let mut tensors = shape.tensors();
    for (n, s, v) in &mut tensors {
        if n == "model.layers.0.self_attn.k_norm.weight" {
            *s = vec![16];
            v.truncate(16);
        }
    }
    common::write_safetensors(&dir.join("model.safetensors"), &tensors, Dtype::F32, None);
    match load(&dir) {
        Some(ModelError::Shape {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "model.layers.0.self_attn.k_norm.weight");
            assert_eq!((expected, got), (vec![24], vec![16]));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_import_gives_the_same_model() {
    check_gguf_imports("qwen2", base());
}
