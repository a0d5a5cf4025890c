//! Import the real SmolLM2-135M-Instruct GGUF (dequantized to F32) and check the checkpoint it
//! produces: the rebuilt tokenizer against independently produced token ids, config.json, the Q/K
//! un-permutation and the safetensors alignment.
//!
//! The GGUF comes from `EDGEINFER_GGUF` or `weights/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`scripts/fetch-model.sh` puts it there). Without it the test is skipped with a message, unless
//! `EDGEINFER_REQUIRE_MODEL=1`, which turns the skip into a failure.
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use edgeinfer_convert::import::{
    import_gguf, ImportDType, ImportError, ImportOptions, ImportProgress,
};
use safetensors::SafeTensors;

fn gguf_path() -> Option<PathBuf> {
    common::real_gguf()
}

/// A scratch directory removed when dropped, also when a check fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("import-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn gguf_f32(path: &Path, name: &str) -> Vec<f32> {
    let mut f = fs::File::open(path).unwrap();
    let content = Content::read(&mut f).unwrap();
    let q = content.tensor(&mut f, name, &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn imported_smollm2_checkpoint() {
    let Some(gguf) = gguf_path() else { return };
    let scratch = Scratch::new("smollm2");
    let out = scratch.0.join("SmolLM2-135M-Instruct");

    // F32, so the weights can be compared with candle's dequantization (the default, native import
    // is checked block for block in tests/quantized.rs).
    let opts = ImportOptions {
        dtype: ImportDType::F32,
        ..ImportOptions::default()
    };
    let mut events: Vec<ImportProgress> = Vec::new();
    let summary = import_gguf(&gguf, &out, &opts, &mut |p| events.push(p)).unwrap();
    println!("{summary:?}");

    // Progress: one event per tensor, counting up.
    assert_eq!(
        summary.tensors,
        2 + 30 * 9,
        "embed + final norm + 9 per layer, tied"
    );
    assert_eq!(events.len(), summary.tensors);
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.index, e.total), (i, summary.tensors));
    }
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial files left behind: {leftovers:?}"
    );

    check_config(&out);
    check_tokenizer(&out);
    check_weights(&gguf, &out);
}

fn check_config(out: &Path) {
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["hidden_act"], "silu");
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(
        (c["bos_token_id"].as_u64(), c["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    // Our own loader's config parser accepts it.
    edgeinfer_models::Config::from_json(&fs::read_to_string(out.join("config.json")).unwrap())
        .unwrap();

    let t = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(t["bos_token"], "<|im_start|>");
    assert_eq!(t["eos_token"], "<|im_end|>");
    assert_eq!(t["add_bos_token"], false);
    assert!(t["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    let gen = read_json(&out.join("generation_config.json"));
    assert_eq!(
        (gen["bos_token_id"].as_u64(), gen["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
}

fn check_tokenizer(out: &Path) {
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    // A copy of ../shared/fixtures/smollm2-tokenizer-cases.json, so a clean clone tests the same cases;
    // where the shared original is present, it must not have moved on.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/smollm2-tokenizer-cases.json");
    let cases = read_json(&fixture);
    let shared = root.join("../shared/fixtures/smollm2-tokenizer-cases.json");
    if shared.is_file() {
        assert_eq!(
            read_json(&shared),
            cases,
            "{} differs from {}; copy it again",
            shared.display(),
            fixture.display()
        );
    }
    let cases = cases["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!("encode {text:?}: want {want:?}, got {got:?}"));
        }
        let back = tok.decode(&want, false).unwrap();
        if back != text {
            failures.push(format!("decode {want:?}: want {text:?}, got {back:?}"));
        }
    }
    println!(
        "tokenizer: {}/{} fixture cases pass",
        cases.len() - failures.len().min(cases.len()),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} tokenizer mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_weights(gguf: &Path, out: &Path) {
    let bytes = fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        st.names().iter().all(|n| !n.starts_with("lm_head")),
        "tied model must not have lm_head"
    );

    // Alignment: every tensor's data starts on an 8-byte boundary of the file.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8 + header_len;
    for (name, view) in st.tensors() {
        let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        assert!(offset >= data_start);
        assert_eq!(offset % 8, 0, "{name} starts at byte {offset}");
    }

    // Q and K: HF row h·d + s·d/2 + i is GGUF row h·d + 2i + s (d = 64).
    let d = 64;
    for (hf, gg, heads) in [
        (
            "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_q.weight",
            9,
        ),
        (
            "model.layers.29.self_attn.k_proj.weight",
            "blk.29.attn_k.weight",
            3,
        ),
    ] {
        let ours = f32s(&st.tensor(hf).unwrap());
        let raw = gguf_f32(gguf, gg);
        let cols = 576;
        assert_eq!(ours.len(), heads * d * cols);
        assert_ne!(ours, raw, "{hf} was not permuted");
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..d / 2 {
                    let (r_hf, r_gg) = (h * d + s * d / 2 + i, h * d + 2 * i + s);
                    assert_eq!(
                        ours[r_hf * cols..(r_hf + 1) * cols],
                        raw[r_gg * cols..(r_gg + 1) * cols],
                        "{hf}: row {r_hf} should be GGUF row {r_gg}"
                    );
                }
            }
        }
    }
    // Everything else is copied as is.
    for (hf, gg) in [
        (
            "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_v.weight",
        ),
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
    ] {
        assert_eq!(f32s(&st.tensor(hf).unwrap()), gguf_f32(gguf, gg), "{hf}");
    }
}

#[test]
fn half_precision_and_bad_input() {
    let Some(gguf) = gguf_path() else { return };
    let scratch = Scratch::new("bf16");
    let out = scratch.0.join("bf16");
    let opts = ImportOptions {
        dtype: ImportDType::Bf16,
        ..ImportOptions::default()
    };
    let summary = import_gguf(&gguf, &out, &opts, &mut |_| {}).unwrap();
    assert_eq!(
        read_json(&out.join("config.json"))["torch_dtype"],
        "bfloat16"
    );
    let bytes = fs::read(out.join("model.safetensors")).unwrap();
    assert_eq!(bytes.len() as u64, summary.weights_bytes);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("model.norm.weight").unwrap().dtype(),
        safetensors::Dtype::BF16
    );

    // A truncated copy fails with an error and publishes nothing.
    let cut = scratch.0.join("truncated.gguf");
    let full = fs::read(&gguf).unwrap();
    fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let out2 = scratch.0.join("from-truncated");
    let err = import_gguf(&cut, &out2, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::Tensor { .. }), "{err}");
    let names: Vec<_> = fs::read_dir(&out2)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(names.is_empty(), "left behind: {names:?}");

    // Not a GGUF at all.
    fs::write(&cut, b"definitely not a gguf file").unwrap();
    let err = import_gguf(&cut, &out2, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::Gguf { .. }), "{err}");
}
