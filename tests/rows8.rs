//! The `rows8` layout end to end: each format quantized in it loads, says so in its metadata, is
//! refused by a version 1 header, and gives the `rowsplit` file's logits (see
//! `edgeinfer_kernels::quant::rows8`).

mod common;
#[path = "common/convert.rs"]
mod convert_support;

use common::{load_error, patch_header, temp_dir, Rng, TinyLlama};
use convert_support::quantize;
use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeOptions};
use edgeinfer_kernels::quant::{QFormat, QLayout};
use edgeinfer_kernels::Kernels;
use edgeinfer_models::matrix::{layout_key, VERSION_KEY};
use edgeinfer_models::state::KvDType;
use edgeinfer_models::ModelError;
use safetensors::SafeTensors;

/// Each format quantized in the `rows8` layout: a version 2 file naming each matrix's layout,
/// refused when its version says 1, and logits (prefill and decode, every kernel variant, one and
/// two threads) equal to the `rowsplit` file's up to the order of f32 additions.
#[test]
fn tiny_rows8_layout_matches_rowsplit() {
    let root = temp_dir("quant-tiny-rows8");
    let src = root.join("f32");
    let shape = TinyLlama::small_gqa(15);
    shape.write(&src);
    let q_proj = "model.layers.0.self_attn.q_proj.weight";
    for format in QFormat::BASIC {
        let (plain, rows8) = (
            root.join(format!("{format}-rowsplit")),
            root.join(format!("{format}-rows8")),
        );
        quantize(&src, &plain, format);
        let opts = QuantizeOptions {
            layout: QLayout::Rows8,
            ..QuantizeOptions::new(format)
        };
        quantize_checkpoint(&src, &rows8, &opts, &mut |_| {}).unwrap();
        let bytes = std::fs::read(rows8.join("model.safetensors")).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().expect("__metadata__");
        assert_eq!(meta[VERSION_KEY], "2", "{format}");
        assert_eq!(meta[&layout_key(q_proj)], "rows8", "{format}");
        // The embedding (q8_0 under the 4-bit formats) is rows8 too when the vocabulary is a
        // multiple of 8.
        assert_eq!(
            meta.get(&layout_key("model.embed_tokens.weight"))
                .map(String::as_str),
            shape.vocab.is_multiple_of(8).then_some("rows8"),
            "{format} vocab {}",
            shape.vocab
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(rows8.join("config.json")).unwrap())
                .unwrap();
        let q = &config["quantization_config"];
        assert_eq!(
            (&q["version"], &q["matrix_layout"]),
            (&2.into(), &"rows8".into())
        );

        let mut rng = Rng(shape.seed);
        let prompt: Vec<u32> = (0..7).map(|_| rng.below(shape.vocab) as u32).collect();
        let decode: Vec<u32> = (0..4).map(|_| rng.below(shape.vocab) as u32).collect();
        for variant in Kernels::available() {
            let kern = Kernels::new(variant).unwrap();
            for threads in [1, 2] {
                let want =
                    common::our_logits(&plain, &prompt, &decode, &kern, threads, KvDType::F32);
                let got =
                    common::our_logits(&rows8, &prompt, &decode, &kern, threads, KvDType::F32);
                assert_eq!(got.len(), want.len());
                for (pos, (g, w)) in got.iter().zip(&want).enumerate() {
                    let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let diff = g
                        .iter()
                        .zip(w)
                        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        diff <= 1e-4 * scale,
                        "{format} {variant} threads={threads} position {pos}: rows8 differs from rowsplit by {diff} (scale {scale})"
                    );
                }
            }
        }
    }

    let rows8 = root.join("q4_0-rows8");
    patch_header(
        &rows8.join("model.safetensors"),
        "\"edgeinfer.quant.version\":\"2\"",
        "\"edgeinfer.quant.version\":\"1\"",
    );
    let e = load_error(&rows8);
    println!("rows8 in a version 1 file: {e}");
    assert!(
        matches!(&e, ModelError::TensorData { reason, .. } if reason.contains("rows8")),
        "{e:?}"
    );
    std::fs::remove_dir_all(&root).ok();
}
