//! Import of tiny synthetic GGUF files, so the importer is tested without the real model.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use edgeinfer_kernels::quant::{QFormat, QLayout};

use super::*;

/// The block formats kept as stored (every ggml type edgeinfer reads), bit-exact.
mod blocks;
/// Q4_K_M, Q5_K_M, Q6_K and IQ4_NL files of every architecture, run as stored.
mod mixtures;

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

/// Deterministic values in about [-1, 1), different per `seed`.
fn noise(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) as f32 * 0.618_034).sin())
        .collect()
}

struct Synth {
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<usize>)>,
    /// GGUF type of each tensor (by name); F32 when it returns `None`.
    types: fn(&str) -> Option<GgmlDType>,
    /// Values: a recognisable ramp, or pseudo-random ones for quantized tests.
    random: bool,
}

/// Dimensions of a synthetic Llama.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    inter: usize,
    layers: usize,
}

const DIMS: Dims = Dims {
    hidden: HIDDEN,
    heads: HEADS,
    kv_heads: KV_HEADS,
    head_dim: HEAD_DIM,
    inter: INTER,
    layers: LAYERS,
};

impl Synth {
    fn llama() -> Synth {
        Synth::llama_with(DIMS)
    }

    fn llama_with(d: Dims) -> Synth {
        let Dims {
            hidden,
            heads,
            kv_heads,
            head_dim,
            inter,
            layers,
        } = d;
        let toks = tokens();
        let mut types = vec![3i32; SPECIALS.len()];
        types.resize(toks.len(), 1);
        let u = |v: usize| Value::U32(v as u32);
        let meta = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", u(layers)),
            ("llama.context_length", u(64)),
            ("llama.embedding_length", u(hidden)),
            ("llama.feed_forward_length", u(inter)),
            ("llama.attention.head_count", u(heads)),
            ("llama.attention.head_count_kv", u(kv_heads)),
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
                vec![tokens().len(), hidden],
            ),
            ("output_norm.weight".into(), vec![hidden]),
        ];
        for l in 0..layers {
            let kv = kv_heads * head_dim;
            for (n, s) in [
                ("attn_norm", vec![hidden]),
                ("ffn_norm", vec![hidden]),
                ("attn_q", vec![heads * head_dim, hidden]),
                ("attn_k", vec![kv, hidden]),
                ("attn_v", vec![kv, hidden]),
                ("attn_output", vec![hidden, heads * head_dim]),
                ("ffn_gate", vec![inter, hidden]),
                ("ffn_up", vec![inter, hidden]),
                ("ffn_down", vec![hidden, inter]),
            ] {
                tensors.push((format!("blk.{l}.{n}.weight"), s));
            }
        }
        Synth {
            meta: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensors,
            types: |_| None,
            random: false,
        }
    }

    /// A synthetic model of `arch` (`qwen2`, `qwen3`): the Llama one with its metadata keys
    /// renamed, its own pre-tokenizer, and the architecture's extra tensors.
    fn arch_with(arch: &str, d: Dims) -> Synth {
        let mut s = Synth::llama_with(d);
        for (k, v) in &mut s.meta {
            if let Some(rest) = k.strip_prefix("llama.") {
                *k = format!("{arch}.{rest}");
            }
            if k == "general.architecture" {
                *v = Value::String(arch.into());
            }
        }
        s.set("tokenizer.ggml.pre", Value::String("qwen2".into()));
        s.set(
            &format!("{arch}.attention.key_length"),
            Value::U32(d.head_dim as u32),
        );
        let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        for l in 0..d.layers {
            let extra: Vec<(&str, usize)> = match arch {
                "qwen2" => vec![("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)],
                _ => vec![
                    ("attn_q_norm.weight", d.head_dim),
                    ("attn_k_norm.weight", d.head_dim),
                ],
            };
            for (n, len) in extra {
                s.tensors.push((format!("blk.{l}.{n}"), vec![len]));
            }
        }
        s
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
                let values = if self.random {
                    noise(rows * cols, n.len())
                } else {
                    ramp(rows, cols)
                };
                let t = Tensor::from_vec(values, s.as_slice(), &Device::Cpu).unwrap();
                let ty = (self.types)(n).unwrap_or(GgmlDType::F32);
                (n.clone(), QTensor::quantize(&t, ty).unwrap())
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
            ..ImportOptions::default()
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
            Box::new(|s| s.set("general.architecture", Value::String("phi3".into()))),
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

/// One layer whose every matrix has rows of whole 32-weight blocks (k = 64 or 256).
const BLOCK_DIMS: Dims = Dims {
    hidden: 64,
    heads: 2,
    kv_heads: 1,
    head_dim: 32,
    inter: 256,
    layers: 1,
};

/// `--layout rows8` keeps Q4_0 blocks exact: its planes, put back into rowsplit order, are the
/// default import's bytes, the metadata names the layout, and the model loads.
#[test]
fn synthetic_rows8_import_is_the_same_blocks() {
    let mut s = Synth::llama_with(BLOCK_DIMS);
    s.random = true;
    s.types = |name| {
        Some(match name.rsplit('.').nth(1)? {
            "token_embd" | "attn_output" => GgmlDType::Q8_0,
            "attn_q" | "attn_k" | "attn_v" | "ffn_gate" | "ffn_up" | "ffn_down" => GgmlDType::Q4_0,
            _ => return None,
        })
    };
    let scratch = Scratch::new("rows8");
    let gguf = scratch.0.join("m.gguf");
    s.write(&gguf);
    let (plain, rows8) = (scratch.0.join("plain"), scratch.0.join("rows8"));
    import_gguf(&gguf, &plain, &ImportOptions::default(), &mut |_| {}).unwrap();
    let opts = ImportOptions {
        layout: QLayout::Rows8,
        ..ImportOptions::default()
    };
    import_gguf(&gguf, &rows8, &opts, &mut |_| {}).unwrap();
    let (a, b) = (
        std::fs::read(plain.join("model.safetensors")).unwrap(),
        std::fs::read(rows8.join("model.safetensors")).unwrap(),
    );
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&b).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta[edgeinfer_models::matrix::VERSION_KEY], "2");
    let mut seen = 0;
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ] {
        assert_eq!(
            meta[&edgeinfer_models::matrix::layout_key(name)],
            "rows8",
            "{name}"
        );
        let [qs, scales, _] = edgeinfer_models::matrix::plane_names(name);
        let (q8, d8) = (sb.tensor(&qs).unwrap(), sb.tensor(&scales).unwrap());
        let (rows, k) = (d8.shape()[0], d8.shape()[1] * 32);
        let d8: Vec<half::f16> = bytemuck::pod_collect_to_vec(d8.data());
        let (mut q1, mut d1) = (vec![0u8; q8.data().len()], vec![half::f16::ZERO; d8.len()]);
        edgeinfer_kernels::quant::rows8::to_rowsplit(
            QFormat::Q4_0,
            rows,
            k,
            q8.data(),
            &d8,
            &mut q1,
            &mut d1,
        );
        assert_eq!(q1, sa.tensor(&qs).unwrap().data(), "{name}");
        assert_eq!(
            bytemuck::cast_slice::<_, u8>(&d1),
            sa.tensor(&scales).unwrap().data(),
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 6);
    // The q8_0 embedding is rows8 too when its row count (the vocabulary) is a multiple of 8.
    let embed = "model.embed_tokens.weight";
    let vocab = sb.tensor(&format!("{embed}.scales")).unwrap().shape()[0];
    assert_eq!(
        meta.get(&edgeinfer_models::matrix::layout_key(embed))
            .map(String::as_str),
        vocab.is_multiple_of(8).then_some("rows8"),
        "vocab {vocab}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rows8.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["matrix_layout"], "rows8");
    let ckpt = edgeinfer::loader::Checkpoint::open(&rows8).unwrap();
    let cfg = edgeinfer_models::Config::from_json(
        &std::fs::read_to_string(rows8.join("config.json")).unwrap(),
    )
    .unwrap();
    edgeinfer_models::Llama::load(cfg, &ckpt.source()).unwrap();
}

/// Imports `s`, checks config.json parses into the architecture and the checkpoint loads with its
/// extra tensors; returns the output directory and the parsed config.
fn import_and_load(
    s: &Synth,
    scratch: &Scratch,
) -> (PathBuf, serde_json::Value, edgeinfer_models::Llama) {
    import(s, &scratch.0).unwrap();
    let out = scratch.0.join("out");
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg = edgeinfer_models::Config::from_json(&text).unwrap();
    let ckpt = edgeinfer::loader::Checkpoint::open(&out).unwrap();
    let model = edgeinfer_models::Llama::load(cfg, &ckpt.source()).unwrap();
    (out, config, model)
}

/// F32 values of a tensor of the written checkpoint.
fn f32_tensor(out: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
    v.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn synthetic_qwen2_biases_no_permutation() {
    let scratch = Scratch::new("qwen2");
    let (out, config, model) = import_and_load(&Synth::arch_with("qwen2", DIMS), &scratch);
    assert_eq!(config["model_type"], "qwen2");
    assert_eq!(config["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(model.config.arch, edgeinfer_models::Arch::Qwen2);
    assert!(model
        .layers
        .iter()
        .all(|l| l.bq.is_some() && l.bv.is_some()));
    // Qwen rows are not permuted by llama.cpp: they come back in file order.
    let rows: Vec<f32> = f32_tensor(&out, "model.layers.1.self_attn.q_proj.weight")
        .iter()
        .step_by(HIDDEN)
        .map(|v| v / 1000.0)
        .collect();
    assert_eq!(rows, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // Synth writes a 1-D ramp as a column (element i = i·1000); biases stay F32 and in order.
    let bias = f32_tensor(&out, "model.layers.0.self_attn.k_proj.bias");
    assert_eq!(bias, [0.0, 1000.0, 2000.0, 3000.0]);
    // The qwen2 pre-tokenizer splits every digit and NFC-normalises.
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let ids = tok.encode("e\u{301}", false).unwrap().get_ids().to_vec();
    let nfc = tok.encode("\u{e9}", false).unwrap().get_ids().to_vec();
    assert_eq!(ids, nfc);
}

#[test]
fn synthetic_qwen3_head_dim_and_qk_norms() {
    let scratch = Scratch::new("qwen3");
    // head_dim 6 is not hidden / heads = 4.
    let d = Dims {
        head_dim: 6,
        ..DIMS
    };
    let (out, config, model) = import_and_load(&Synth::arch_with("qwen3", d), &scratch);
    assert_eq!(config["model_type"], "qwen3");
    assert_eq!(config["head_dim"], 6);
    assert_eq!(model.config.q_dim(), 12);
    assert!(model
        .layers
        .iter()
        .all(|l| l.q_norm.is_some() && l.k_norm.is_some()));
    assert_eq!(
        f32_tensor(&out, "model.layers.1.self_attn.q_norm.weight"),
        [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    );
    // A Qwen3 GGUF without its norms is refused, naming the tensor.
    let mut s = Synth::arch_with("qwen3", d);
    s.tensors.retain(|(n, _)| n != "blk.0.attn_k_norm.weight");
    let e = import(&s, &Scratch::new("qwen3-missing").0).unwrap_err();
    assert!(
        matches!(&e, ImportError::MissingTensor { name, .. } if name == "blk.0.attn_k_norm.weight"),
        "{e}"
    );
}

/// llama.cpp's `rope_freqs.weight` for Llama 3 scaling, as its converter computes it.
fn llama3_rope_freqs(theta: f64, head_dim: usize, factor: f64) -> Vec<f32> {
    let (low, high, orig) = (1.0, 4.0, 8192.0);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < orig / high {
                1.0
            } else if wavelen > orig / low {
                factor as f32
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

#[test]
fn synthetic_llama3_rope_freqs_become_rope_scaling() {
    let dir = Scratch::new("llama3");
    // head_dim 16 at theta 5e5 has wavelengths in all three bands.
    let d = Dims {
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        head_dim: 16,
        ..DIMS
    };
    let write = |factors: Vec<f32>, tag: &str| -> Result<ImportSummary, ImportError> {
        let mut s = Synth::llama_with(d);
        s.set("llama.rope.freq_base", Value::F32(500000.0));
        s.tensors
            .push(("rope_freqs.weight".into(), vec![d.head_dim / 2]));
        let gguf = dir.0.join(format!("{tag}.gguf"));
        s.write(&gguf);
        // Replace the ramp Synth writes with the factors.
        let t = Tensor::from_vec(factors, d.head_dim / 2, &Device::Cpu).unwrap();
        let mut qs: Vec<(String, QTensor)> = Vec::new();
        let mut f = std::fs::File::open(&gguf).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        for name in content.tensor_infos.keys() {
            let q = if name == "rope_freqs.weight" {
                QTensor::quantize(&t, GgmlDType::F32).unwrap()
            } else {
                content.tensor(&mut f, name, &Device::Cpu).unwrap()
            };
            qs.push((name.clone(), q));
        }
        let meta: Vec<(&str, &Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let tensors: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
        let path = dir.0.join(format!("{tag}-f.gguf"));
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &meta, &tensors).unwrap();
        import_gguf(
            &path,
            &dir.0.join(tag),
            &ImportOptions::default(),
            &mut |_| {},
        )
    };
    let freqs = llama3_rope_freqs(500000.0, 16, 32.0);
    assert!(
        freqs.contains(&1.0) && freqs.contains(&32.0) && freqs.iter().any(|&f| f > 1.0 && f < 32.0)
    );
    write(freqs.clone(), "ok").unwrap();
    let text = std::fs::read_to_string(dir.0.join("ok/config.json")).unwrap();
    let cfg = edgeinfer_models::Config::from_json(&text).unwrap();
    let s = cfg.rope_scaling.expect("rope_scaling");
    assert_eq!(
        (s.factor, s.low_freq_factor, s.high_freq_factor),
        (32.0, 1.0, 4.0)
    );
    assert_eq!(s.original_max_position_embeddings, 8192);
    // The model's scaled frequencies are the GGUF's divisors applied to plain RoPE.
    let plain = edgeinfer_models::Config {
        rope_scaling: None,
        ..cfg.clone()
    }
    .rope_inv_freq();
    for ((p, q), f) in plain.iter().zip(cfg.rope_inv_freq()).zip(&freqs) {
        assert!((p / f - q).abs() <= 1e-5 * p, "{p} / {f} vs {q}");
    }
    // All ones is plain RoPE; divisors of another scheme are refused, naming the tensor.
    write(vec![1.0; 8], "ones").unwrap();
    let text = std::fs::read_to_string(dir.0.join("ones/config.json")).unwrap();
    assert_eq!(
        edgeinfer_models::Config::from_json(&text)
            .unwrap()
            .rope_scaling,
        None
    );
    let e = write(vec![2.0; 8], "linear").unwrap_err();
    assert!(
        matches!(&e, ImportError::Metadata { key, .. } if key == "rope_freqs.weight"),
        "{e}"
    );
}

#[test]
fn error_is_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<ImportError>();
}
