//! `infer quantize --tensor-type PATTERN=TYPE` (`QuantizeOptions::overrides`): matrices named by a
//! pattern are stored in another quantized format or dense dtype, the first matching override wins,
//! the model loads and tracks the F32 one, and a pattern that names nothing is refused.

mod common;

use std::path::Path;

use common::{temp_dir, TinyLlama};
use edgeinfer::loader::Checkpoint;
use edgeinfer_convert::quantize::{
    quantize_checkpoint, QuantizeError, QuantizeOptions, TensorOverride,
};
use edgeinfer_kernels::quant::QFormat;
use edgeinfer_models::{Config, Llama};

fn load(dir: &Path) -> Llama {
    let ckpt = Checkpoint::open(dir).unwrap();
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    Llama::load(cfg, &ckpt.source()).unwrap()
}

fn overrides(specs: &[&str]) -> Vec<TensorOverride> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn overrides_pick_each_matrix_type_first_match_wins() {
    let shape = TinyLlama::small_gqa(21);
    let root = temp_dir("quant-overrides");
    let src = root.join("f32");
    shape.write(&src);
    let out = root.join("q4_0-mixed");
    let opts = QuantizeOptions {
        format: QFormat::Q4_0,
        overrides: overrides(&[
            "layers.1.mlp.down_proj=f16",
            "down_proj=q8_0",
            "v_proj=bf16",
        ]),
        ..QuantizeOptions::new(QFormat::Q4_0)
    };
    let s = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap();
    let names: Vec<&str> = s.overridden.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.self_attn.v_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
        ]
    );
    let m = load(&out);
    assert_eq!(m.layers[0].w_down.type_name(), "q8_0");
    assert_eq!(m.layers[1].w_down.type_name(), "F16");
    assert_eq!(m.layers[0].wv.type_name(), "BF16");
    assert_eq!(m.layers[1].w_up.type_name(), "q4_0");
    assert_eq!(m.embed.type_name(), "q8_0");
    // The converted matrix holds the input's values (to f16 precision).
    let (f32m, mut a, mut b) = (load(&src), vec![0f32; 128], vec![0f32; 128]);
    for r in 0..64 {
        f32m.layers[1].w_down.row_f32(r, &mut a);
        m.layers[1].w_down.row_f32(r, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= x.abs() * 1e-3 + 1e-6,
                "row {r}: {x} vs {y}"
            );
        }
    }

    // A pattern that names no matrix is a mistake (a typo would silently quantize everything).
    let opts = QuantizeOptions {
        format: QFormat::Q8_0,
        overrides: overrides(&["down_proj=f16", "layers.7.=f16"]),
        ..QuantizeOptions::new(QFormat::Q8_0)
    };
    let e = quantize_checkpoint(&src, &root.join("none"), &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, QuantizeError::UnmatchedOverride { pattern, .. } if pattern == "layers.7."),
        "{e:?}"
    );
    assert!(!root.join("none").exists());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn override_syntax_errors_say_what_is_expected() {
    for (spec, says) in [
        ("down_proj", "PATTERN=TYPE"),
        ("=q8_0", "pattern"),
        ("down_proj=q5_x", "unknown type `q5_x`"),
    ] {
        let e = spec.parse::<TensorOverride>().unwrap_err();
        assert!(e.contains(says), "{spec}: {e}");
    }
    assert!("mlp.down_proj=F16".parse::<TensorOverride>().is_ok());
    // Every GGUF block format is written now.
    for to in ["q2_k", "q3_k", "q5_0", "q5_1", "iq4_xs"] {
        assert!(
            format!("down_proj={to}").parse::<TensorOverride>().is_ok(),
            "{to}"
        );
    }
}
