//! Hostile and broken inputs give a typed `Err` naming the file, tensor or field at fault; never a
//! panic. Each case starts from a valid tiny checkpoint and patches its bytes, header or config.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{temp_dir, TinyLlama};
use edgeinfer::{
    Error, GenerateOptions, Model, ModelOptions, Prompt, SamplerConfig, Session, SessionOptions,
};
use edgeinfer_models::ModelError;
use serde_json::{json, Map, Value};

const SHAPE: TinyLlama = TinyLlama::small(7);

const Q_PROJ: &str = "model.layers.0.self_attn.q_proj.weight";
const K_PROJ: &str = "model.layers.0.self_attn.k_proj.weight";
const V_PROJ: &str = "model.layers.0.self_attn.v_proj.weight";

/// A valid model directory (config, weights, tokenizer) named after the test.
fn model_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    SHAPE.write_with_tokenizer(&dir);
    dir
}

fn opts() -> ModelOptions {
    ModelOptions {
        threads: Some(1),
        kernels: None,
    }
}

/// The error loading `dir` gives; fails the test if it loads.
fn load_err(dir: &Path) -> Error {
    match Model::load_with(dir, &opts()) {
        Ok(_) => panic!("{} loaded, but it should have been refused", dir.display()),
        Err(e) => e,
    }
}

fn assert_names(err: &Error, parts: &[&str]) {
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "error message does not name `{p}`: {msg}");
    }
}

/// The header (as JSON) and data bytes of a safetensors file.
fn read_st(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (read_header_of(&bytes), bytes[8 + n..].to_vec())
}

fn read_header_of(bytes: &[u8]) -> Map<String, Value> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// Writes a safetensors file from a header and data, exactly as given (no validation), padding the
/// header with spaces to a multiple of 8 bytes as the format's writers do.
fn write_st(path: &Path, header: &Map<String, Value>, data: &[u8]) {
    let mut text = serde_json::to_string(header).unwrap().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// Rewrites the header of `dir/model.safetensors` with `patch`, keeping the data.
fn patch_header(dir: &Path, patch: impl FnOnce(&mut Map<String, Value>, usize)) -> PathBuf {
    let path = dir.join("model.safetensors");
    let (mut header, data) = read_st(&path);
    patch(&mut header, data.len());
    write_st(&path, &header, &data);
    path
}

fn offsets(header: &Map<String, Value>, name: &str) -> (u64, u64) {
    let o = &header[name]["data_offsets"];
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

fn patch_config(dir: &Path, patch: impl FnOnce(&mut Map<String, Value>)) -> PathBuf {
    let path = dir.join("config.json");
    let mut cfg = SHAPE.config_json();
    patch(cfg.as_object_mut().unwrap());
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

#[test]
fn valid_checkpoint_loads() {
    let dir = model_dir("valid");
    let model = Model::load_with(&dir, &opts()).unwrap();
    assert_eq!(model.config().vocab_size, SHAPE.vocab);
    assert_eq!(model.tokenizer().vocab_size(), SHAPE.vocab);
    // The test's own writer round-trips a valid file.
    let path = patch_header(&dir, |_, _| {});
    Model::load_with(&dir, &opts()).unwrap();
    assert!(path.is_file());
}

#[test]
fn missing_model_directory() {
    let dir = temp_dir("missing-dir").join("no-such-model");
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::ModelDir { path, .. } if *path == dir),
        "{err:?}"
    );
    assert_names(&err, &[&dir.display().to_string(), "does not exist"]);

    // A file where the directory should be.
    let file = temp_dir("missing-dir-file").join("model");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = load_err(&file);
    assert!(
        matches!(&err, Error::ModelDir { path, .. } if *path == file),
        "{err:?}"
    );
    assert_names(&err, &[&file.display().to_string(), "not a directory"]);

    // A directory without weights.
    let empty = temp_dir("missing-dir-empty");
    let err = load_err(&empty);
    assert!(
        matches!(&err, Error::ModelDir { path, .. } if *path == empty),
        "{err:?}"
    );
    assert_names(&err, &[&empty.display().to_string(), "model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let dir = model_dir("truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_len = bytes.len() - 8 - n;

    // Cut in the middle of the data: the first tensor past the cut is named.
    std::fs::write(&path, &bytes[..8 + n + data_len / 2]).unwrap();
    let err = load_err(&dir);
    let Error::TensorHeader {
        path: p,
        name,
        reason,
    } = &err
    else {
        panic!("expected TensorHeader, got {err:?}")
    };
    assert_eq!(*p, path);
    assert!(reason.contains("truncated"), "{reason}");
    let (start, end) = offsets(&read_header_of(&bytes), name);
    assert!(
        start <= (data_len / 2) as u64 && end > (data_len / 2) as u64,
        "{name} at {start}..{end} is not cut"
    );
    assert_names(&err, &["model.safetensors", name]);

    // Cut one byte short.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::TensorHeader { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors"]);

    // Cut inside the header, and before the header length ends.
    for cut in [8 + n / 2, 8, 5, 0] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::Safetensors { path: p, .. } if *p == path),
            "cut at {cut}: {err:?}"
        );
        assert_names(&err, &["model.safetensors"]);
    }
}

#[test]
fn header_length_past_end_of_file() {
    let dir = model_dir("header-len");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file_len = bytes.len() as u64;
    for bad_len in [
        file_len - 7,
        file_len,
        file_len + 1,
        1 << 40,
        u64::MAX - 7,
        u64::MAX,
    ] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&bad_len.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::Safetensors { path: p, .. } if *p == path),
            "length {bad_len}: {err:?}"
        );
        assert_names(&err, &["model.safetensors", "header length"]);
    }
    // A header length that stops short of the JSON's end.
    let mut b = bytes.clone();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    b[..8].copy_from_slice(&(n - 20).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Safetensors { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors"]);
}

#[test]
fn tensor_offsets_out_of_range() {
    let name = "model.norm.weight";
    let dir = model_dir("offsets-range");
    let cases: [fn(u64, u64, u64) -> Value; 4] = [
        // Moved past the end of the data, same length.
        |s, e, len| json!([len + 64, len + 64 + (e - s)]),
        // End one byte past the data.
        |s, _, len| json!([s + 1, len + 1]),
        // Start after end.
        |s, e, _| json!([e, s]),
        // Huge.
        |_, _, _| json!([u64::MAX - 8, u64::MAX]),
    ];
    for case in cases {
        let path = patch_header(&dir, |h, len| {
            let (s, e) = offsets(h, name);
            h[name]["data_offsets"] = case(s, e, len as u64);
        });
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::TensorHeader { path: p, name: n, .. } if *p == path && n == name),
            "{err:?}"
        );
        assert_names(&err, &["model.safetensors", name, "data offsets"]);
        SHAPE.write(&dir);
    }
}

#[test]
fn overlapping_tensor_offsets() {
    let dir = model_dir("offsets-overlap");
    // v_proj (same shape as k_proj) pointed at k_proj's bytes.
    let path = patch_header(&dir, |h, _| {
        h[V_PROJ]["data_offsets"] = h[K_PROJ]["data_offsets"].clone();
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::TensorHeader { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", K_PROJ, V_PROJ, "overlaps"]);

    // A partial overlap: q_proj shifted 4 bytes into the tensor before it.
    SHAPE.write(&dir);
    let path = patch_header(&dir, |h, _| {
        let (s, e) = offsets(h, Q_PROJ);
        h[Q_PROJ]["data_offsets"] = json!([s - 4, e - 4]);
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::TensorHeader { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", Q_PROJ, "overlaps"]);
}

#[test]
fn tensor_dtype_the_model_cannot_use() {
    let dir = model_dir("dtype");
    // I32 has the same size as F32, so the header is otherwise consistent.
    let path = patch_header(&dir, |h, _| h[Q_PROJ]["dtype"] = json!("I32"));
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Model { path: p, source: ModelError::DType { name, dtype } }
            if *p == path && name == Q_PROJ && dtype == "I32"),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", Q_PROJ, "I32"]);

    // A dtype the format does not know at all.
    SHAPE.write(&dir);
    let path = patch_header(&dir, |h, _| h[Q_PROJ]["dtype"] = json!("Q9_X"));
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::TensorHeader { path: p, name, .. } if *p == path && name == Q_PROJ),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", Q_PROJ]);
}

#[test]
fn tensor_shape_disagrees_with_config() {
    let dir = model_dir("shape");
    let mut tensors = SHAPE.tensors();
    let q = tensors.iter_mut().find(|(n, _, _)| n == Q_PROJ).unwrap();
    q.1 = vec![SHAPE.hidden, SHAPE.hidden / 2];
    q.2.truncate(SHAPE.hidden * SHAPE.hidden / 2);
    let path = dir.join("model.safetensors");
    common::write_safetensors(&path, &tensors, SHAPE.dtype, None);
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Model { path: p, source: ModelError::Shape { name, expected, got } }
            if *p == path && name == Q_PROJ && *expected == [32, 32] && *got == [32, 16]),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", Q_PROJ, "[32, 16]", "[32, 32]"]);

    // Header shape changed without changing the bytes: caught by the byte-length check.
    SHAPE.write(&dir);
    let path = patch_header(&dir, |h, _| h[Q_PROJ]["shape"] = json!([32, 31]));
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::TensorHeader { path: p, name, .. } if *p == path && name == Q_PROJ),
        "{err:?}"
    );
    assert_names(&err, &["model.safetensors", Q_PROJ, "bytes"]);
}

#[test]
fn missing_tensor() {
    let dir = model_dir("missing-tensor");
    let gone = "model.layers.1.mlp.up_proj.weight";
    let tensors: Vec<_> = SHAPE
        .tensors()
        .into_iter()
        .filter(|(n, _, _)| n != gone)
        .collect();
    common::write_safetensors(&dir.join("model.safetensors"), &tensors, SHAPE.dtype, None);
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Model { source: ModelError::MissingTensor { name }, .. } if name == gone),
        "{err:?}"
    );
    assert_names(&err, &[gone, "missing"]);

    // Untied checkpoint without lm_head.
    let tensors: Vec<_> = SHAPE
        .tensors()
        .into_iter()
        .filter(|(n, _, _)| n != "lm_head.weight")
        .collect();
    common::write_safetensors(&dir.join("model.safetensors"), &tensors, SHAPE.dtype, None);
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Model { source: ModelError::MissingTensor { name }, .. } if name == "lm_head.weight"),
        "{err:?}"
    );
    assert_names(&err, &["lm_head.weight"]);
}

#[test]
fn config_invalid_json() {
    let dir = model_dir("config-json");
    let path = dir.join("config.json");
    for text in ["{ \"hidden_size\": 32, ", "", "[1, 2, 3]", "\u{0}\u{1}"] {
        std::fs::write(&path, text).unwrap();
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::Config { path: p, source: ModelError::ConfigJson { .. } } if *p == path),
            "{text:?}: {err:?}"
        );
        assert_names(&err, &["config.json"]);
    }
    std::fs::remove_file(&path).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Io { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err, &["config.json"]);
}

#[test]
fn config_missing_required_field() {
    let dir = model_dir("config-missing");
    for field in [
        "num_hidden_layers",
        "hidden_size",
        "vocab_size",
        "model_type",
    ] {
        let path = patch_config(&dir, |c| {
            c.remove(field);
        });
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::Config { path: p, source: ModelError::Config { field: f, .. } } if *p == path && f == field),
            "{field}: {err:?}"
        );
        assert_names(&err, &["config.json", field, "missing"]);
    }
}

#[test]
fn config_invalid_value() {
    let dir = model_dir("config-value");
    let cases: [(&str, Value, &str); 8] = [
        ("hidden_size", json!(0), "hidden_size"),
        ("hidden_size", json!(30), "num_attention_heads"), // 4 heads do not divide 30
        ("hidden_size", json!("32"), "hidden_size"),
        ("hidden_size", json!(-32), "hidden_size"),
        ("num_hidden_layers", json!(1u64 << 40), "num_hidden_layers"),
        ("num_key_value_heads", json!(3), "num_key_value_heads"),
        ("rms_norm_eps", json!(-1.0), "rms_norm_eps"),
        ("model_type", json!("gpt2"), "model_type"),
    ];
    for (field, value, blamed) in cases {
        let path = patch_config(&dir, |c| {
            c.insert(field.into(), value.clone());
        });
        let err = load_err(&dir);
        assert!(
            matches!(&err, Error::Config { path: p, source: ModelError::Config { field: f, .. } } if *p == path && f == blamed),
            "{field} = {value}: {err:?}"
        );
        assert_names(&err, &["config.json", blamed]);
    }
    // A config that disagrees with the weights is a shape error on the first tensor it affects.
    patch_config(&dir, |c| {
        c.insert("intermediate_size".into(), json!(48));
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, Error::Model { source: ModelError::Shape { name, .. }, .. } if name == "model.layers.0.mlp.gate_proj.weight"),
        "{err:?}"
    );
    assert_names(&err, &["model.layers.0.mlp.gate_proj.weight", "[48, 32]"]);
}

#[test]
fn missing_or_invalid_tokenizer() {
    let dir = model_dir("tokenizer");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, b"{\"model\": 3}").unwrap();
    let err = load_err(&dir);
    assert!(matches!(&err, Error::Tokenizer(_)), "{err:?}");
    assert_names(&err, &["tokenizer.json"]);
    std::fs::remove_file(&path).unwrap();
    let err = load_err(&dir);
    assert!(matches!(&err, Error::Tokenizer(_)), "{err:?}");
    assert_names(&err, &["tokenizer.json"]);
}

fn session(name: &str, ctx: usize) -> (Arc<Model>, Session) {
    let model = Model::load_with(model_dir(name), &opts()).unwrap();
    let session = model
        .session(SessionOptions {
            ctx,
            batch: 4,
            ..SessionOptions::default()
        })
        .unwrap();
    (model, session)
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eos: false,
        ..GenerateOptions::default()
    }
}

#[test]
fn prompt_longer_than_context() {
    let ctx = 8;
    let (_model, mut s) = session("prompt-long", ctx);
    let long: Vec<u32> = (10..10 + ctx as u32 + 1).collect();

    let err = s.prefill(&long).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session(ModelError::ContextOverflow { needed: 9, ctx: 8 })
        ),
        "{err:?}"
    );
    assert_names(&err, &["9 positions", "holds 8"]);
    assert!(
        s.tokens().is_empty(),
        "a refused prefill must not change the session"
    );

    let err = s
        .generate(&Prompt::Tokens(&long), &greedy(4), |_| true)
        .unwrap_err();
    assert!(
        matches!(err, Error::PromptTooLong { tokens: 9, ctx: 8 }),
        "{err:?}"
    );
    assert_names(&err, &["9 tokens", "holds 8"]);

    let text = "a b c d e f g h i j k l";
    let err = s
        .generate(&Prompt::Text(text), &greedy(4), |_| true)
        .unwrap_err();
    assert!(
        matches!(err, Error::PromptTooLong { ctx: 8, .. }),
        "{err:?}"
    );

    // Filling the context exactly works; one more step overflows.
    s.prefill(&long[..ctx - 1]).unwrap();
    s.step(long[ctx - 1]).unwrap();
    let err = s.step(3).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session(ModelError::ContextOverflow { needed: 9, ctx: 8 })
        ),
        "{err:?}"
    );
    let err = s.prefill(&[3]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session(ModelError::ContextOverflow { needed: 9, ctx: 8 })
        ),
        "{err:?}"
    );

    // Generation that reaches the end of the context stops there instead of failing.
    s.reset();
    let out = s
        .generate(&Prompt::Tokens(&long[..6]), &greedy(100), |_| true)
        .unwrap();
    assert!(
        out.tokens.len() <= ctx - 6 + 1,
        "{} tokens generated in a context of {ctx}",
        out.tokens.len()
    );
    assert!(s.tokens().len() <= ctx);
}

#[test]
fn token_outside_vocabulary() {
    let (_model, mut s) = session("bad-token", 16);
    let vocab = SHAPE.vocab as u32;

    let err = s.prefill(&[1, 5, vocab]).unwrap_err();
    assert!(
        matches!(err, Error::Session(ModelError::InvalidToken { id, vocab: 288 }) if id == vocab),
        "{err:?}"
    );
    assert_names(&err, &["token id 288", "vocabulary", "288"]);
    assert!(
        s.tokens().is_empty(),
        "a refused prefill must not change the session"
    );

    let err = s.step(u32::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session(ModelError::InvalidToken { id: u32::MAX, .. })
        ),
        "{err:?}"
    );
    assert_names(&err, &[&u32::MAX.to_string()]);

    let err = s
        .generate(&Prompt::Tokens(&[1, 9999]), &greedy(4), |_| true)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session(ModelError::InvalidToken { id: 9999, .. })
        ),
        "{err:?}"
    );

    // The session is still usable afterwards.
    s.prefill(&[1, 5, 6]).unwrap();
    assert_eq!(s.tokens(), &[1, 5, 6]);
    let logits = s.step(7).unwrap();
    assert_eq!(logits.len(), SHAPE.vocab);
    assert!(logits.iter().all(|l| l.is_finite()));
}

/// `Model::non_finite_weights` names the tensors holding NaN or Inf (`infer inspect --check` too:
/// `cli/tests/cli.rs`, `inspect_check_names_non_finite_weights`).
#[test]
fn non_finite_weights_are_reported() {
    let dir = model_dir("non-finite");
    let clean = Model::load_with(&dir, &opts()).unwrap();
    assert!(clean.non_finite_weights().unwrap().is_empty());
    drop(clean);

    common::poison_tensor(&dir, K_PROJ);

    let model = Model::load_with(&dir, &opts()).unwrap();
    let bad = model.non_finite_weights().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(
        (bad[0].name.as_str(), bad[0].nan, bad[0].inf, bad[0].first),
        (K_PROJ, 1, 1, Some(0))
    );
}

/// An in-memory checkpoint gets the loader's checks: a hostile header is refused, not trusted.
#[test]
fn in_memory_validation_refuses_hostile_headers() {
    let dir = model_dir("in-memory");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let name = std::path::PathBuf::from("model.safetensors");
    edgeinfer::loader::validate_in_memory(&config, vec![(name.clone(), weights.clone())]).unwrap();

    let (mut header, data) = {
        let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        (read_header_of(&weights), weights[8 + n..].to_vec())
    };
    header[Q_PROJ]["data_offsets"] = json!([0u64, u64::MAX]);
    let tmp = dir.join("hostile.safetensors");
    write_st(&tmp, &header, &data);
    let hostile = std::fs::read(&tmp).unwrap();
    let err = edgeinfer::loader::validate_in_memory(&config, vec![(name, hostile)])
        .err()
        .expect("hostile offsets accepted");
    assert!(matches!(err, Error::TensorHeader { .. }), "{err:?}");
    assert_names(&err, &[Q_PROJ]);
}
