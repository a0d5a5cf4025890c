//! A weight file truncated under a live model must not kill the process with SIGBUS: with the
//! default mapping, the next request (and the next session) fails with `Error::WeightsChanged`;
//! with `WeightsAccess::Copy`, the model keeps working. Each scenario runs in a child process (this
//! test binary, re-executed), so a SIGBUS shows up as a failed exit instead of killing the harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{temp_dir, TinyLlama};
use edgeinfer::loader::WeightsAccess;
use edgeinfer::{
    Error, GenerateOptions, Model, ModelOptions, Prompt, SamplerConfig, SessionOptions,
};

const SHAPE: TinyLlama = TinyLlama::small(5);

const CHILD_ENV: &str = "EDGEINFER_MMAP_SAFETY_CHILD";

fn model_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    SHAPE.write(&dir);
    let mut tokens = common::byte_fallback_tokens();
    tokens.truncate(SHAPE.vocab);
    let json = common::byte_fallback_bpe_json(&tokens, vec![]);
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    dir
}

fn opts() -> ModelOptions {
    ModelOptions {
        threads: Some(1),
        kernels: None,
    }
}

fn generate(model: &std::sync::Arc<Model>) -> edgeinfer::Result<String> {
    let mut session = model.session(SessionOptions::default())?;
    let opts = GenerateOptions {
        max_tokens: 4,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    };
    Ok(session
        .generate(&Prompt::Text("hello world"), &opts, |_| true)?
        .text)
}

/// Cuts the weights file to half its size in place (same inode, as `truncate` or an in-place
/// rewrite by another process would).
fn truncate_in_place(dir: &Path) {
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
}

/// Runs `scenario` in a child process; returns its exit status and output.
fn run_child(scenario: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, scenario)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// The child's side: one scenario, chosen by the parent through the environment.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child() {
    let scenario = std::env::var(CHILD_ENV).expect("run by the parent tests");
    let dir = model_dir(&format!("mmap-{scenario}"));
    match scenario.as_str() {
        "map" => {
            let model = Model::load_with_access(&dir, &opts(), WeightsAccess::Map).unwrap();
            let mut session = model.session(SessionOptions::default()).unwrap();
            generate(&model).unwrap();
            truncate_in_place(&dir);
            // A session opened before the truncation: its next request is refused.
            let gen = GenerateOptions {
                max_tokens: 4,
                ..Default::default()
            };
            let err = session
                .generate(&Prompt::Text("hello again"), &gen, |_| true)
                .unwrap_err();
            assert!(matches!(err, Error::WeightsChanged { .. }), "{err}");
            println!("REQUEST REFUSED: {err}");
            // So is a new session.
            let err = generate(&model).unwrap_err();
            assert!(matches!(err, Error::WeightsChanged { .. }), "{err}");
            assert!(err.to_string().contains("model.safetensors"), "{err}");
            println!("SESSION REFUSED: {err}");
        }
        "copy" => {
            let model = Model::load_with_access(&dir, &opts(), WeightsAccess::Copy).unwrap();
            let before = generate(&model).unwrap();
            truncate_in_place(&dir);
            std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
            model.verify_weights().unwrap();
            let after = generate(&model).unwrap();
            assert_eq!(before, after);
            println!("COPY SERVES: {after:?}");
        }
        other => panic!("unknown scenario {other}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_mapped_weights_are_a_typed_error_not_sigbus() {
    let (status, out) = run_child("map");
    assert!(status.success(), "child failed ({status}):\n{out}");
    assert!(
        out.contains("REQUEST REFUSED") && out.contains("SESSION REFUSED"),
        "{out}"
    );
}

#[test]
fn copied_weights_survive_truncation() {
    let (status, out) = run_child("copy");
    assert!(status.success(), "child failed ({status}):\n{out}");
    assert!(out.contains("COPY SERVES"), "{out}");
}
