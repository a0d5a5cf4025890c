//! Inputs the fuzz targets (`fuzz/`) found crashing, replayed through the targets' own code
//! (`fuzz/src/harness.rs`, included here): every file in `fuzz/regressions/<target>/` must run
//! without a panic. Also the writer of the fuzz targets' seed corpora.
//!
//! Seeds: `cargo test --test fuzz_regressions -- --ignored write_fuzz_seeds` rewrites
//! `fuzz/seeds/<target>/` from a tiny random checkpoint, a tiny GGUF and (when present) the real
//! SmolLM2 files: small files only, each a valid input of its target.

mod common;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{temp_dir, TinyLlama};
use edgeinfer::tokenizer::Tokenizer;

const TINY: TinyLlama = TinyLlama {
    hidden: 32,
    intermediate: 64,
    layers: 1,
    heads: 4,
    kv_heads: 2,
    vocab: 288,
    tied: true,
    dtype: safetensors::Dtype::F32,
    seed: 11,
};

fn seeds_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    assert!(bytes.len() < 1 << 20, "seed {target}/{name} is over 1 MB");
    std::fs::write(seeds_dir(target).join(name), bytes).unwrap();
}

/// The `safetensors` target's input: u16 config length, config, weights.
fn safetensors_input(config: &[u8], weights: &[u8]) -> Vec<u8> {
    let n = config.len().min(u16::MAX as usize);
    let mut out = (n as u16).to_le_bytes().to_vec();
    out.extend_from_slice(&config[..n]);
    out.extend_from_slice(weights);
    out
}

/// A tiny byte-level BPE `tokenizer.json` cut from SmolLM2's: its first `n` tokens and the merges
/// among them.
fn small_byte_level_tokenizer(real: &serde_json::Value, n: u64) -> serde_json::Value {
    let mut t = real.clone();
    let vocab = real["model"]["vocab"].as_object().unwrap();
    let kept: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .filter(|(_, id)| id.as_u64().unwrap() < n)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let merges: Vec<serde_json::Value> = real["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
            kept.contains_key(a) && kept.contains_key(b) && kept.contains_key(&format!("{a}{b}"))
        })
        .cloned()
        .collect();
    t["model"]["vocab"] = serde_json::Value::Object(kept);
    t["model"]["merges"] = serde_json::Value::Array(merges);
    let added: Vec<serde_json::Value> = real["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"].as_u64().unwrap() < n)
        .cloned()
        .collect();
    t["added_tokens"] = serde_json::Value::Array(added);
    t
}

/// A tiny Llama GGUF with byte tokens and Q8_0 matrices.
fn tiny_gguf(path: &Path) {
    let (hidden, inter, heads, kv_heads, vocab) = (32usize, 64usize, 4usize, 2usize, 259usize);
    let mut tokens: Vec<Value> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| Value::String(s.to_string()))
        .collect();
    // GPT-2's byte-to-char map: printable Latin-1 bytes stand for themselves, others from U+0100.
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
        tokens.push(Value::String(c.to_string()));
    }
    let mut types = vec![Value::I32(3); 3];
    types.resize(vocab, Value::I32(1));
    let u = |v: usize| Value::U32(v as u32);
    let meta = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", u(1)),
        ("llama.context_length", u(64)),
        ("llama.embedding_length", u(hidden)),
        ("llama.feed_forward_length", u(inter)),
        ("llama.attention.head_count", u(heads)),
        ("llama.attention.head_count_kv", u(kv_heads)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", u(1)),
        ("tokenizer.ggml.eos_token_id", u(2)),
        (
            "tokenizer.chat_template",
            Value::String("{% for m in messages %}{{ m['content'] }}{% endfor %}".into()),
        ),
    ];
    let hd = hidden / heads;
    let mut shapes = vec![
        ("token_embd.weight".to_string(), vec![vocab, hidden]),
        ("output_norm.weight".to_string(), vec![hidden]),
    ];
    for (n, s) in [
        ("attn_norm", vec![hidden]),
        ("ffn_norm", vec![hidden]),
        ("attn_q", vec![heads * hd, hidden]),
        ("attn_k", vec![kv_heads * hd, hidden]),
        ("attn_v", vec![kv_heads * hd, hidden]),
        ("attn_output", vec![hidden, heads * hd]),
        ("ffn_gate", vec![inter, hidden]),
        ("ffn_up", vec![inter, hidden]),
        ("ffn_down", vec![hidden, inter]),
    ] {
        shapes.push((format!("blk.0.{n}.weight"), s));
    }
    let qs: Vec<(String, QTensor)> = shapes
        .iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
                .collect();
            let t = Tensor::from_vec(v, s.as_slice(), &Device::Cpu).unwrap();
            let ty = if s.len() == 1 {
                GgmlDType::F32
            } else {
                GgmlDType::Q8_0
            };
            (n.clone(), QTensor::quantize(&t, ty).unwrap())
        })
        .collect();
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta, &tensors).unwrap();
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    let dir = temp_dir("fuzz-seeds");
    let tiny = dir.join("tiny");
    TINY.write(&tiny);
    let config = std::fs::read(tiny.join("config.json")).unwrap();
    let weights = std::fs::read(tiny.join("model.safetensors")).unwrap();

    // config
    write_seed("config", "tiny.json", &config);
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/SmolLM2-135M-Instruct");
    let real_config = std::fs::read(real.join("config.json")).ok();
    if let Some(c) = &real_config {
        write_seed("config", "smollm2.json", c);
    }

    // safetensors: tiny F32, tiny q8_0 and q4_1, the real model's header alone (its data cut off).
    write_seed(
        "safetensors",
        "tiny-f32",
        &safetensors_input(&config, &weights),
    );
    for (name, format) in [("q8_0", "q8_0"), ("q4_1", "q4_1")] {
        let out = dir.join(name);
        let opts = edgeinfer_convert::quantize::QuantizeOptions::new(
            edgeinfer_kernels::quant::QFormat::from_name(format).unwrap(),
        );
        edgeinfer_convert::quantize::quantize_checkpoint(&tiny, &out, &opts, &mut |_| {}).unwrap();
        let c = std::fs::read(out.join("config.json")).unwrap();
        let w = std::fs::read(out.join("model.safetensors")).unwrap();
        write_seed(
            "safetensors",
            &format!("tiny-{name}"),
            &safetensors_input(&c, &w),
        );
    }
    if let (Some(c), Ok(w)) = (&real_config, std::fs::read(real.join("model.safetensors"))) {
        let n = u64::from_le_bytes(w[..8].try_into().unwrap()) as usize;
        write_seed(
            "safetensors",
            "smollm2-header",
            &safetensors_input(c, &w[..8 + n]),
        );
    }

    // tokenizer: a small byte-level BPE cut from SmolLM2's (JSON and cache payload), and the test
    // suite's SentencePiece-style byte-fallback BPE.
    let text = "Hello, world! 12345 naïve café — 你好 <|im_start|>user\n\t  x";
    let mut sp_tokens: Vec<String> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sp_tokens.extend((0..=255u32).map(|b| format!("<0x{b:02X}>")));
    sp_tokens.push("▁".into());
    sp_tokens.extend(('a'..='z').map(String::from));
    let sp = common::byte_fallback_bpe_json(&sp_tokens, vec![]);
    let mut seed = vec![0u8];
    seed.extend_from_slice(sp.to_string().as_bytes());
    seed.extend_from_slice(b"\xff\xff");
    seed.extend_from_slice(text.as_bytes());
    write_seed("tokenizer", "sentencepiece-json", &seed);
    if let Ok(t) = std::fs::read(real.join("tokenizer.json")) {
        let real_tok: serde_json::Value = serde_json::from_slice(&t).unwrap();
        let small = small_byte_level_tokenizer(&real_tok, 600).to_string();
        let cfg = std::fs::read(real.join("tokenizer_config.json")).unwrap();
        let mut seed = vec![0u8];
        seed.extend_from_slice(small.as_bytes());
        seed.push(0xFF);
        seed.extend_from_slice(&cfg);
        seed.push(0xFF);
        seed.extend_from_slice(text.as_bytes());
        write_seed("tokenizer", "byte-level-json", &seed);
        let tok = Tokenizer::from_bytes(small.as_bytes(), None).unwrap();
        let payload = tok.cache_payload().expect("a byte-level BPE has a cache");
        assert!(Tokenizer::from_cache_payload(&payload).is_some());
        let mut seed = vec![1u8];
        seed.extend_from_slice(&payload);
        seed.push(0xFF);
        seed.extend_from_slice(text.as_bytes());
        write_seed("tokenizer", "byte-level-cache", &seed);
    }

    // gguf: the tiny GGUF, imported natively and as F32.
    let g = dir.join("tiny.gguf");
    tiny_gguf(&g);
    let bytes = std::fs::read(&g).unwrap();
    for (mode, name) in [(0u8, "tiny-native"), (1, "tiny-f32")] {
        let mut seed = vec![mode];
        seed.extend_from_slice(&bytes);
        write_seed("gguf", name, &seed);
    }
    let out = dir.join("imported");
    edgeinfer_convert::import::import_gguf(&g, &out, &Default::default(), &mut |_| {}).unwrap();

    // chat: messages through the built-in ChatML template, and SmolLM2's own template.
    let msgs: &[&[u8]] = &[
        b"system",
        b"Be brief.",
        b"user",
        b"What is {{ 7*7 }}?",
        b"assistant",
        b"49",
    ];
    let mut seed = vec![2u8];
    seed.extend_from_slice(&msgs.join(&0xFFu8));
    write_seed("chat", "chatml", &seed);
    if let Ok(cfg) = std::fs::read(real.join("tokenizer_config.json")) {
        let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        let template = cfg["chat_template"].as_str().unwrap();
        let mut seed = vec![3u8];
        seed.extend_from_slice(template.as_bytes());
        seed.push(0xFF);
        seed.extend_from_slice(&msgs.join(&0xFFu8));
        write_seed("chat", "smollm2-template", &seed);
    }

    // event and openai: requests with every field; the OpenAI ones after their mode byte.
    let prompt = r#"{"prompt":"Hello","max_tokens":8,"temperature":0.7,"top_p":0.9,"top_k":40,"seed":1,"stop":["\n","END"]}"#;
    let chat = r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":4,"stop":"x","min_p":0.05}"#;
    write_seed("event", "prompt.json", prompt.as_bytes());
    write_seed("event", "messages.json", chat.as_bytes());
    let completions = r#"{"model":"smollm2","prompt":"Once upon","max_tokens":4,"stream":true,"n":1,"temperature":0}"#;
    let chat = r#"{"model":"smollm2","messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":4,"stop":["a","b"],"seed":7,"stream":false}"#;
    write_seed(
        "openai",
        "completions",
        &[b"\0", completions.as_bytes()].concat(),
    );
    write_seed("openai", "chat", &[b"\x01", chat.as_bytes()].concat());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs every saved input of `target` through `run`; names the file that fails.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}

#[test]
fn safetensors_regressions() {
    replay("safetensors", harness::safetensors);
}

#[test]
fn config_regressions() {
    replay("config", harness::config);
}

#[test]
fn tokenizer_regressions() {
    replay("tokenizer", harness::tokenizer);
}

#[test]
fn gguf_regressions() {
    replay("gguf", harness::gguf);
}

#[test]
fn chat_regressions() {
    replay("chat", harness::chat);
}

#[test]
fn event_regressions() {
    replay("event", harness::event);
}

#[test]
fn openai_regressions() {
    replay("openai", harness::openai);
}

/// `tokenizers` panics ("Helper") on a JSON syntax error inside the `decoder` object; the guard in
/// front of it turns that into an error.
#[test]
fn tokenizer_json_syntax_error_in_decoder_is_an_error() {
    let json = br#"{"version": "1.0", "decoder": {"type": "ByteLevel" "add_prefix_space": false}, "model": {"type": "BPE", "vocab": {}, "merges": []}}"#;
    let Err(err) = Tokenizer::from_bytes(json, None) else {
        panic!("must be refused");
    };
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

/// `llama.block_count = 2^32 - 1` made the importer plan four billion layers (out of memory) before
/// noticing the tensors are missing.
#[test]
fn gguf_block_count_beyond_the_tensors_is_an_error() {
    let seed = std::fs::read(seeds_dir("gguf").join("tiny-native")).unwrap();
    let dir = temp_dir("fuzz-block-count");
    let path = dir.join("hostile.gguf");
    // The seed's `llama.block_count` (u32 1) right after its key.
    let key = b"llama.block_count";
    let at = seed.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    let mut bytes = seed[1..].to_vec();
    bytes[at - 1..at + 3].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = edgeinfer_convert::import::import_gguf(
        &path,
        &dir.join("out"),
        &Default::default(),
        &mut |_| {},
    )
    .expect_err("must be refused");
    assert!(err.to_string().contains("block_count"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
