//! Import of tiny synthetic GGUF files, so the importer is tested without the real model.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::*;

const HIDDEN: usize = 8;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 4;
const INTER: usize = 12;
const LAYERS: usize = 2;
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's byte → printable character map, which byte-level vocabularies are written in.
fn byte_chars() -> Vec<char> {
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let printable = (0x21..=0x7e).contains(&b)
                || (0xa1..=0xac).contains(&b)
                || (0xae..=0xff).contains(&b);
            if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            }
        })
        .collect()
}

fn tokens() -> Vec<String> {
    let mut t: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    t.extend(byte_chars().into_iter().map(String::from));
    t.push("Ġt".into());
    t
}

/// Value `r·1000 + c` at row `r`, column `c`, so rows are recognisable after reordering.
fn ramp(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| ((i / cols) * 1000 + i % cols) as f32)
        .collect()
}

struct Synth {
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<usize>)>,
}

impl Synth {
    fn llama() -> Synth {
        let toks = tokens();
        let mut types = vec![3i32; SPECIALS.len()];
        types.resize(toks.len(), 1);
        let u = |v: usize| Value::U32(v as u32);
        let meta = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", u(LAYERS)),
            ("llama.context_length", u(64)),
            ("llama.embedding_length", u(HIDDEN)),
            ("llama.feed_forward_length", u(INTER)),
            ("llama.attention.head_count", u(HEADS)),
            ("llama.attention.head_count_kv", u(KV_HEADS)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(toks.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                Value::Array(vec![Value::String("Ġ t".into())]),
            ),
            ("tokenizer.ggml.bos_token_id", u(1)),
            ("tokenizer.ggml.eos_token_id", u(2)),
            (
                "tokenizer.chat_template",
                Value::String("{{ messages }}".into()),
            ),
        ];
        let mut tensors = vec![
            (
                "token_embd.weight".to_string(),
                vec![tokens().len(), HIDDEN],
            ),
            ("output_norm.weight".into(), vec![HIDDEN]),
        ];
        for l in 0..LAYERS {
            let kv = KV_HEADS * HEAD_DIM;
            for (n, s) in [
                ("attn_norm", vec![HIDDEN]),
                ("ffn_norm", vec![HIDDEN]),
                ("attn_q", vec![HEADS * HEAD_DIM, HIDDEN]),
                ("attn_k", vec![kv, HIDDEN]),
                ("attn_v", vec![kv, HIDDEN]),
                ("attn_output", vec![HIDDEN, HIDDEN]),
                ("ffn_gate", vec![INTER, HIDDEN]),
                ("ffn_up", vec![INTER, HIDDEN]),
                ("ffn_down", vec![HIDDEN, INTER]),
            ] {
                tensors.push((format!("blk.{l}.{n}.weight"), s));
            }
        }
        Synth {
            meta: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensors,
        }
    }

    fn set(&mut self, key: &str, v: Value) {
        self.meta.retain(|(k, _)| k != key);
        self.meta.push((key.to_string(), v));
    }

    fn write(&self, path: &Path) {
        let qs: Vec<(String, QTensor)> = self
            .tensors
            .iter()
            .map(|(n, s)| {
                let (rows, cols) = (s[0], s.get(1).copied().unwrap_or(1));
                let t = Tensor::from_vec(ramp(rows, cols), s.as_slice(), &Device::Cpu).unwrap();
                (n.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
            })
            .collect();
        let meta: Vec<(&str, &Value)> = self.meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &meta, &tensors).unwrap();
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "edgeinfer-import-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn import(s: &Synth, dir: &Path) -> Result<ImportSummary, ImportError> {
    let gguf = dir.join("m.gguf");
    s.write(&gguf);
    import_gguf(
        &gguf,
        &dir.join("out"),
        &ImportOptions::default(),
        &mut |_| {},
    )
}

#[test]
fn synthetic_llama_round_trip() {
    let scratch = Scratch::new("ok");
    let summary = import(&Synth::llama(), &scratch.0).unwrap();
    assert_eq!(summary.tensors, 2 + 9 * LAYERS);
    assert!(summary.tie_word_embeddings);
    let out = scratch.0.join("out");

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_key_value_heads"], KV_HEADS);
    assert_eq!(config["head_dim"], HEAD_DIM);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    edgeinfer_models::Config::from_json(&serde_json::to_string(&config).unwrap()).unwrap();

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rows_of = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .step_by(HIDDEN)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) / 1000.0)
            .collect()
    };
    // GGUF rows [a0 b0 a1 b1 | a0' b0' a1' b1'] go back to [a0 a1 b0 b1 | …] within each head.
    assert_eq!(
        rows_of("model.layers.1.self_attn.q_proj.weight"),
        [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    );
    assert_eq!(
        rows_of("model.layers.0.self_attn.k_proj.weight"),
        [0.0, 2.0, 1.0, 3.0]
    );
    assert_eq!(
        rows_of("model.layers.0.self_attn.v_proj.weight"),
        [0.0, 1.0, 2.0, 3.0]
    );

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let ids = |text: &str| tok.encode(text, false).unwrap().get_ids().to_vec();
    let gt = tokens().len() as u32 - 1;
    let (b1, b2) = (
        SPECIALS.len() as u32 + b'1' as u32,
        SPECIALS.len() as u32 + b'2' as u32,
    );
    assert_eq!(ids(" t<|im_start|>12"), [gt, 1, b1, b2]);
    assert_eq!(
        tok.decode(&ids("a <|im_end|>\n"), false).unwrap(),
        "a <|im_end|>\n"
    );
}

#[test]
fn other_pre_tokenizers_load() {
    for pre in ["gpt-2", "llama-bpe"] {
        let scratch = Scratch::new(pre);
        let mut s = Synth::llama();
        s.set("tokenizer.ggml.pre", Value::String(pre.into()));
        import(&s, &scratch.0).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let tok = tokenizers::Tokenizer::from_file(scratch.0.join("out/tokenizer.json")).unwrap();
        // Unlike smollm, neither splits every digit: "12" is one word (here, two byte tokens anyway).
        assert_eq!(
            tok.encode(" t12", false).unwrap().get_ids().len(),
            3,
            "{pre}"
        );
    }
}

#[test]
fn synthetic_f16_output() {
    let scratch = Scratch::new("f16");
    let s = Synth::llama();
    let gguf = scratch.0.join("m.gguf");
    s.write(&gguf);
    let mut events = 0;
    let sum = import_gguf(
        &gguf,
        &scratch.0.join("out"),
        &ImportOptions {
            dtype: ImportDType::F16,
        },
        &mut |_| events += 1,
    )
    .unwrap();
    assert_eq!(events, sum.tensors);
    let bytes = std::fs::read(scratch.0.join("out/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::F16);
    assert_eq!(
        half::f16::from_le_bytes([v.data()[2], v.data()[3]]).to_f32(),
        1.0
    );
}

#[test]
fn synthetic_bad_files_fail_cleanly() {
    type Edit = Box<dyn Fn(&mut Synth)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "arch",
            Box::new(|s| s.set("general.architecture", Value::String("qwen2".into()))),
        ),
        (
            "pre",
            Box::new(|s| s.set("tokenizer.ggml.pre", Value::String("mystery".into()))),
        ),
        (
            "model",
            Box::new(|s| s.set("tokenizer.ggml.model", Value::String("llama".into()))),
        ),
        (
            "heads",
            Box::new(|s| s.set("llama.attention.head_count", Value::U32(3))),
        ),
        (
            "missing",
            Box::new(|s| s.tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight")),
        ),
        (
            "extra",
            Box::new(|s| s.tensors.push(("rope_freqs.weight".into(), vec![2]))),
        ),
        (
            "bos",
            Box::new(|s| s.set("tokenizer.ggml.bos_token_id", Value::U32(100_000))),
        ),
        (
            "merge",
            Box::new(|s| {
                s.set(
                    "tokenizer.ggml.merges",
                    Value::Array(vec![Value::String("nospace".into())]),
                )
            }),
        ),
    ];
    for (tag, edit) in cases {
        let scratch = Scratch::new(tag);
        let mut s = Synth::llama();
        edit(&mut s);
        let err = import(&s, &scratch.0).expect_err(tag);
        println!("{tag}: {err}");
        assert!(
            !scratch.0.join("out").exists(),
            "{tag}: output published or created"
        );
    }
}

#[test]
fn error_is_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<ImportError>();
}
