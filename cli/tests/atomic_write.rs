//! `infer import` and `infer quantize` publish a model directory only once it is whole: a failure
//! mid-write (here: a GGUF whose tensor data is cut off, so the error comes while
//! `model.safetensors` is being written), or a process killed mid-write, never leaves a directory
//! that loads — and an existing model in the output directory survives a failed import.

// The root package's test helpers (the model lives at the repository root, see `repo_root`).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::temp_dir;
use edgeinfer::{Model, ModelOptions};
use edgeinfer_convert::import::{import_gguf, ImportOptions};

fn opts() -> ModelOptions {
    ModelOptions {
        threads: Some(1),
        kernels: None,
    }
}

/// The tiny GGUF of the fuzz seeds (its first byte is the fuzz target's mode byte).
fn tiny_gguf() -> Vec<u8> {
    let seed = common::repo_root().join("fuzz/seeds/gguf/tiny-native");
    std::fs::read(seed).unwrap()[1..].to_vec()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A GGUF whose header is intact but whose last tensors' data is cut off.
fn truncated_gguf(dir: &Path) -> PathBuf {
    let bytes = tiny_gguf();
    let path = dir.join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 4096]).unwrap();
    path
}

#[test]
fn failed_import_publishes_nothing() {
    let dir = temp_dir("atomic-import-fail");
    let gguf = truncated_gguf(&dir);
    let out = dir.join("out");
    let mut written = 0;
    let err = import_gguf(&gguf, &out, &ImportOptions::default(), &mut |_| {
        written += 1
    })
    .expect_err("a GGUF with its data cut off must not import");
    assert!(
        written > 0,
        "the failure should come mid-write, after some tensors: {err}"
    );
    // The directory it created is gone again, partial files included.
    assert!(!out.exists(), "left behind: {:?}", files_in(&out));
    assert!(Model::load_with(&out, &opts()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_import_keeps_the_model_already_there() {
    let dir = temp_dir("atomic-import-keep");
    let good = dir.join("good.gguf");
    std::fs::write(&good, tiny_gguf()).unwrap();
    let out = dir.join("out");
    import_gguf(&good, &out, &ImportOptions::default(), &mut |_| {}).unwrap();
    // Loading writes the tokenizer cache beside the model; snapshot after it.
    Model::load_with(&out, &opts()).unwrap();
    let before: Vec<(String, Vec<u8>)> = files_in(&out)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(out.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();

    let gguf = truncated_gguf(&dir);
    import_gguf(&gguf, &out, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    let after: Vec<(String, Vec<u8>)> = files_in(&out)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(out.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    assert!(
        before == after,
        "the failed import changed {:?}",
        files_in(&out)
    );
    Model::load_with(&out, &opts()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `infer <args>`, kills it (SIGKILL: no destructor runs, `.partial` files stay behind) once
/// `model.safetensors.partial` in `out` has `bytes` or more on disk (the writer sizes the file
/// first, so its length says nothing) — mid-write — and checks what it
/// leaves: nothing in `out` loads as a model. Returns false if the process finished first (the
/// model then must load).
fn kill_mid_write(args: &[&str], out: &Path, bytes: u64) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = out.join("model.safetensors.partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::metadata(&partial).is_ok_and(|m| m.blocks() * 512 >= bytes) {
            let _ = child.kill();
            break;
        }
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.success() {
        Model::load_with(out, &opts()).expect("a finished write must load");
        return false;
    }
    assert!(
        !out.join("config.json").exists(),
        "a killed write left config.json: {:?}",
        files_in(out)
    );
    let err = Model::load_with(out, &opts())
        .err()
        .expect("a killed write must not load");
    eprintln!("killed at >= {bytes} bytes: {:?} -> {err}", files_in(out));
    true
}

#[test]
fn killed_import_leaves_no_loadable_model() {
    let Some(gguf) = common::real_gguf() else {
        return;
    };
    let dir = temp_dir("atomic-import-kill");
    let out = dir.join("out");
    let mut killed = 0;
    for bytes in [0, 1 << 20, 32 << 20] {
        let _ = std::fs::remove_dir_all(&out);
        let args = ["import", gguf.to_str().unwrap(), out.to_str().unwrap()];
        killed += kill_mid_write(&args, &out, bytes) as usize;
    }
    assert!(killed > 0, "no import was killed mid-write");
    // A rerun over the leftovers publishes a whole model.
    let status = Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(["import", gguf.to_str().unwrap(), out.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Model::load_with(&out, &opts()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_quantize_leaves_no_loadable_model() {
    let Some(f32_dir) = common::real_f32_model_dir() else {
        return;
    };
    let dir = temp_dir("atomic-quantize-kill");
    let out = dir.join("out");
    let mut killed = 0;
    for bytes in [0, 1 << 20, 32 << 20] {
        let _ = std::fs::remove_dir_all(&out);
        let args = [
            "quantize",
            f32_dir.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "q8_0",
        ];
        killed += kill_mid_write(&args, &out, bytes) as usize;
    }
    assert!(killed > 0, "no quantize was killed mid-write");
    let _ = std::fs::remove_dir_all(&dir);
}
