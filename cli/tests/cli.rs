//! The `infer` binary end to end on the real model: generation with --json and --dump-logits,
//! seeded sampling, perplexity, inspect, import, two-pass activations, and the errors a user sees
//! without a model.

// The root package's test helpers (the model lives at the repository root, see `repo_root`).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

fn infer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(args)
        .env_remove("EDGEINFER_MODEL")
        .env_remove("EDGEINFER_KERNELS")
        .output()
        .expect("run infer")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = infer(args);
    assert!(
        out.status.success(),
        "infer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "infer {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn run_json_and_dump_logits() {
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let dir = dir.to_str().unwrap();
    let dump = common::temp_dir("cli-logits").join("logits.bin");
    let args = [
        "run",
        "-m",
        dir,
        "--temp",
        "0",
        "-n",
        "4",
        "--ignore-eos",
        "--json",
        "--dump-logits",
        dump.to_str().unwrap(),
        "The capital of France is",
    ];
    let json = ok_json(&args);
    assert!(
        json["text"].as_str().unwrap().starts_with(" Paris"),
        "{json}"
    );
    assert_eq!(json["finish_reason"], "length");
    let t = &json["timings"];
    assert_eq!(t["generated_tokens"], 4);
    assert_eq!(t["prompt_tokens"], 5);
    for key in ["prefill_ms", "decode_ms", "ttft_ms", "decode_tokens_per_s"] {
        assert!(t[key].as_f64().unwrap() >= 0.0, "{key}: {t}");
    }

    // One row per sampled token: the last prompt position, then each generated step but the last.
    let vocab = 49152;
    let bytes = std::fs::read(&dump).unwrap();
    assert_eq!(bytes.len(), 4 * vocab * 4);
    let tokens: Vec<u64> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for (row, token) in bytes.chunks(vocab * 4).zip(&tokens) {
        let logits: Vec<f32> = row
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let argmax = (0..vocab)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(
            argmax as u64, *token,
            "greedy token is the argmax of its logits row"
        );
    }
}

/// `--seed` and `--temp` both reach the sampler: at temperature 1 the same seed gives the same text
/// and another seed another one (were `--seed` ignored, two runs with seed 7 would differ), and at
/// temperature 0 the seed changes nothing (were `--temp` ignored, the default 0.8 would sample).
#[test]
fn same_seed_same_text_other_seed_other_text() {
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let dir = dir.to_str().unwrap();
    let run = |temp: &str, seed: &str| {
        ok_json(&[
            "run",
            "-m",
            dir,
            "--temp",
            temp,
            "--seed",
            seed,
            "-n",
            "12",
            "--json",
            "Once upon a time",
        ])["text"]
            .clone()
    };
    let seven = run("1.0", "7");
    assert_eq!(seven, run("1.0", "7"), "the same seed gave two texts");
    assert_ne!(
        seven,
        run("1.0", "8"),
        "seeds 7 and 8 gave the same text: {seven}"
    );
    assert_eq!(
        run("0", "7"),
        run("0", "8"),
        "greedy text depends on the seed"
    );
}

#[test]
fn chat_streams_the_answer() {
    // The F32 import: the quantized default answers this question with a near-tie first token that
    // goes elsewhere (see tests/real_model.rs, chat_answer_quantized).
    let Some(dir) = common::real_f32_model_dir() else {
        return;
    };
    let out = infer(&[
        "run",
        "-m",
        dir.to_str().unwrap(),
        "--chat",
        "--temp",
        "0",
        "-n",
        "24",
        "What is the capital of France?",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}

#[test]
fn perplexity_json() {
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let text = common::temp_dir("cli-ppl").join("text.txt");
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. The sun rises in the east and sets in the west.").unwrap();
    let json = ok_json(&[
        "perplexity",
        "-m",
        dir.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "--json",
    ]);
    let (ppl, nll) = (
        json["perplexity"].as_f64().unwrap(),
        json["mean_nll"].as_f64().unwrap(),
    );
    assert!(ppl > 1.0 && ppl < 200.0, "{json}");
    assert!((nll.exp() - ppl).abs() < 1e-6 * ppl);
    assert!(json["tokens"].as_u64().unwrap() > 10);
}

#[test]
fn inspect_json() {
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let json = ok_json(&[
        "inspect",
        "-m",
        dir.to_str().unwrap(),
        "-c",
        "1024",
        "--json",
    ]);
    assert_eq!(json["layers"], 30);
    assert_eq!(json["ctx"], 1024);
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 272);
    // The importer starts every tensor (a quantized matrix: its quants) on a 64-byte cache line.
    for t in tensors {
        assert_eq!(t["line_aligned"], true, "{t}");
    }
    assert!(json["session_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn import_then_run() {
    let Some(gguf) = common::real_gguf() else {
        return;
    };
    let out_dir = common::temp_dir("cli-import").join("model");
    let out = infer(&[
        "import",
        "-q",
        gguf.to_str().unwrap(),
        out_dir.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = ok_json(&[
        "run",
        "-m",
        out_dir.to_str().unwrap(),
        "--temp",
        "0",
        "-n",
        "2",
        "--json",
        "The capital of France is",
    ]);
    assert!(
        json["text"].as_str().unwrap().starts_with(" Paris"),
        "{json}"
    );
    std::fs::remove_dir_all(out_dir.parent().unwrap()).ok();
}

#[test]
fn missing_model_says_what_to_do() {
    let out = infer(&["run", "-m", "/nonexistent/model", "hello"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/model") && err.contains("-m/--model"),
        "{err}"
    );

    // The default model, looked for from a directory where it is not.
    let out = Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(["run", "-n", "1", "hello"])
        .current_dir(std::env::temp_dir())
        .env_remove("EDGEINFER_MODEL")
        .output()
        .unwrap();
    if !common::repo_root()
        .join("weights/SmolLM2-135M-Instruct/config.json")
        .is_file()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    }
}

#[test]
fn no_prompt_is_an_error() {
    let out = infer(&["run", "-m", "/nonexistent/model"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prompt"));
}

#[test]
fn two_pass_activations_flag() {
    let out = infer(&["run", "--acts", "q16", "-m", "/nonexistent/model", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected q8 or q8x2"), "{err}");
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let args = [
        "run",
        "-m",
        dir.to_str().unwrap(),
        "--acts",
        "q8x2",
        "--temp",
        "0",
        "-n",
        "4",
    ];
    let json = ok_json(&[&args[..], &["--json", "The capital of France is"]].concat());
    assert!(
        json["text"].as_str().unwrap().starts_with(" Paris"),
        "{json}"
    );
}

/// `infer inspect --check` fails on NaN or Inf weights and names the tensor holding them (the
/// library's side: `tests/bad_input.rs`, `non_finite_weights_are_reported`).
#[test]
fn inspect_check_names_non_finite_weights() {
    const K_PROJ: &str = "model.layers.0.self_attn.k_proj.weight";
    let dir = common::temp_dir("cli-non-finite");
    common::TinyLlama::small(7).write_with_tokenizer(&dir);
    common::poison_tensor(&dir, K_PROJ);

    let out = Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(["inspect", "--check", "-t", "1", "-m"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "inspect --check passed NaN weights");
    assert!(stderr.contains(K_PROJ), "{stderr}");
}
