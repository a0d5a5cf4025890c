//! `infer quantize --calibration FILE` (`Calibration::Text`): GPTQ-style rounding weighted by the
//! source model's activations on a text, on tiny random checkpoints.

mod common;

use std::path::Path;

use common::{temp_dir, worst_cosine, TinyLlama};
use edgeinfer::Model;
use edgeinfer_convert::quantize::{
    quantize_checkpoint, Calibration, QuantizeError, QuantizeOptions,
};
use edgeinfer_kernels::quant::QFormat;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::KvDType;

/// Logits at every position of `tokens` (one thread, f32 cache).
fn logits(dir: &Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    common::our_logits(dir, tokens, &[], &Kernels::detect(), 1, KvDType::F32)
}

fn plain(src: &Path, out: &Path, format: QFormat) -> Option<usize> {
    quantize_checkpoint(src, out, &QuantizeOptions::new(format), &mut |_| {})
        .unwrap()
        .calibration_tokens
}

/// `--calibration`: GPTQ-style rounding weighted by the source model's activations on a text. On
/// tiny random models (tied, and untied so the lm_head is calibrated too) the result is a valid
/// checkpoint of the same format whose logits on words of the calibration text track the source
/// better than plain rounding's; without a tokenizer it is a typed error naming the input directory.
#[test]
fn tiny_calibrated_rounding_tracks_f32() {
    let text = "the cat sat on the mat.\n\nthe dog ran to the park and back again.\n\n\
                a bird sang in the tall tree by the river.";
    for (shape, tag) in [
        (
            TinyLlama {
                vocab: 300, // what the tokenizer fixture needs
                ..TinyLlama::small_gqa(21)
            },
            "tied",
        ),
        (
            TinyLlama {
                vocab: 300,
                tied: false,
                ..TinyLlama::small_gqa(22)
            },
            "untied",
        ),
    ] {
        let root = temp_dir(&format!("quant-calib-{tag}"));
        let src = root.join("f32");
        shape.write_with_tokenizer(&src);
        let tokens = Model::load(&src)
            .unwrap()
            .tokenizer()
            .encode("the dog sat in the tall tree.", false)
            .unwrap();
        let reference = logits(&src, &tokens);
        for format in [QFormat::Q8_0, QFormat::Q4_0, QFormat::Q4_1] {
            let opts = QuantizeOptions {
                calibration: Calibration::Text(text.into()),
                ..QuantizeOptions::new(format)
            };
            let out = root.join(format!("{format}-gptq"));
            let s = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap();
            assert!(
                s.calibration_tokens.unwrap() > 20,
                "{:?}",
                s.calibration_tokens
            );
            let plain_dir = root.join(format!("{format}-plain"));
            assert_eq!(plain(&src, &plain_dir, format), None);
            let (c, p) = (
                worst_cosine(&logits(&out, &tokens), &reference),
                worst_cosine(&logits(&plain_dir, &tokens), &reference),
            );
            println!("{tag} {format}: worst cosine calibrated {c:.6}, plain {p:.6}");
            assert!(
                c >= p - 0.002,
                "{tag} {format}: calibrated {c} vs plain {p}"
            );
        }
        // No tokenizer, no calibration: a typed error, nothing published.
        std::fs::remove_file(src.join("tokenizer.json")).unwrap();
        let out = root.join("no-tokenizer");
        let opts = QuantizeOptions {
            calibration: Calibration::Text(text.into()),
            ..QuantizeOptions::new(QFormat::Q8_0)
        };
        match quantize_checkpoint(&src, &out, &opts, &mut |_| {}) {
            Err(QuantizeError::Calibration { path, reason }) => {
                assert_eq!(path, src);
                assert!(reason.contains("tokenizer"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!out.join("model.safetensors").exists());
        std::fs::remove_dir_all(&root).ok();
    }
}
