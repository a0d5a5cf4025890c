//! Quantized checkpoints: `quantize_checkpoint` on tiny random models (every format loads, logits stay
//! close to the F32 model's, the file is ordinary safetensors with the layout metadata, bad metadata is
//! refused naming the tensor, a failed run publishes nothing), and on the real SmolLM2-135M-Instruct:
//! the default import's planes are the GGUF's blocks byte for byte, q8_0/q4_0 quantized from the F32
//! import track it, the Q4_1 import tracks candle-transformers' `quantized_llama` on the same GGUF,
//! and loading is fast and light.
//!
//! Real-model tests use `weights/SmolLM2-135M-Instruct` (native import), `…-F32` and the GGUF
//! (`scripts/fetch-model.sh`), or the `EDGEINFER_MODEL_DIR` / `EDGEINFER_F32_MODEL_DIR` /
//! `EDGEINFER_GGUF` overrides; they are skipped with a message when missing, unless
//! `EDGEINFER_REQUIRE_MODEL=1`.

mod common;
#[path = "common/convert.rs"]
mod convert_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::{cosine, load_error, patch_header, temp_dir, worst_cosine, Rng, TinyLlama};
use convert_support::quantize;
use edgeinfer::loader::Checkpoint;
use edgeinfer::{ActQuant, Model, SessionOptions};
use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeError, QuantizeOptions};
use edgeinfer_kernels::quant::QFormat;
use edgeinfer_kernels::Kernels;
use edgeinfer_models::matrix::{format_key, plane_names, LAYOUT_KEY, VERSION_KEY};
use edgeinfer_models::state::KvDType;
use edgeinfer_models::{Config, Llama, ModelError};
use safetensors::{Dtype, SafeTensors};

// ---------------------------------------------------------------------------------------------
// (a) Tiny random checkpoints.
// ---------------------------------------------------------------------------------------------

/// Logits at every position of `tokens`, through the loader and the Llama forward pass.
fn tiny_logits(dir: &Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    common::our_logits(dir, tokens, &[], &Kernels::detect(), 1, KvDType::F32)
}

/// The file opens with the stock `safetensors` crate, holds the planes with the metadata keys, and
/// every tensor starts aligned for its element type (the quants on 8 bytes).
fn check_stock_safetensors(path: &Path, quantized: &[&str], format: QFormat) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("__metadata__");
    assert_eq!(meta[LAYOUT_KEY], "rowsplit");
    assert_eq!(meta[VERSION_KEY], "1");
    for &name in quantized {
        // The embedding and lm_head are q8_0 under the 4-bit formats (see edgeinfer_convert::quantize).
        let outer = name == "model.embed_tokens.weight" || name == "lm_head.weight";
        let format = if outer {
            edgeinfer_convert::quantize::output_format(format)
        } else {
            format
        };
        assert_eq!(meta[&format_key(name)], format.name(), "{name}");
        let [qs, scales, mins] = plane_names(name);
        let qs = st.tensor(&qs).unwrap();
        let want = if format == QFormat::Q8_0 {
            Dtype::I8
        } else {
            Dtype::U8
        };
        assert_eq!(qs.dtype(), want, "{name}");
        assert_eq!(st.tensor(&scales).unwrap().dtype(), Dtype::F16);
        assert_eq!(st.tensor(&mins).is_ok(), format.has_min(), "{name}");
        assert!(st.tensor(name).is_err(), "{name} also stored dense");
    }
    for (name, view) in st.tensors() {
        let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        let align = match view.dtype() {
            Dtype::I8 | Dtype::U8 => 8,
            d => d.bitsize() / 8,
        };
        assert_eq!(offset % align, 0, "{name} starts at byte {offset}");
    }
}

#[test]
fn tiny_every_format_loads_and_tracks_f32() {
    // Worst cosine over all positions, per format; random weights quantize worse than trained ones.
    let floors = [
        (QFormat::Q8_0, 0.9995),
        (QFormat::Q4_0, 0.98),
        (QFormat::Q4_1, 0.98),
    ];
    for (shape, tag) in [
        (TinyLlama::small_gqa(11), "tied-f32"),
        (
            TinyLlama {
                tied: false,
                dtype: Dtype::BF16,
                ..TinyLlama::small_gqa(12)
            },
            "untied-bf16",
        ),
    ] {
        let root = temp_dir(&format!("quant-tiny-{tag}"));
        let src = root.join("f32");
        shape.write(&src);
        let mut rng = Rng(shape.seed);
        let tokens: Vec<u32> = (0..12).map(|_| rng.below(shape.vocab) as u32).collect();
        let reference = tiny_logits(&src, &tokens);
        for (format, floor) in floors {
            let out = root.join(format.name());
            let s = quantize(&src, &out, format);
            // Under the 4-bit formats the embedding and an untied lm_head are stored in q8_0.
            let outer = 1 + usize::from(!shape.tied);
            let in_format = 7 * shape.layers + if format == QFormat::Q8_0 { outer } else { 0 };
            assert_eq!(s.quantized, in_format, "{tag} {format}");
            assert!(s.kept_dense.is_empty() && s.skipped.is_empty());
            assert!(s.output_bytes < s.input_bytes, "{s:?}");

            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                    .unwrap();
            let q = &config["quantization_config"];
            assert_eq!(
                (
                    &q["quant_method"],
                    &q["format"],
                    &q["layout"],
                    &q["version"]
                ),
                (
                    &"edgeinfer".into(),
                    &format.name().into(),
                    &"rowsplit".into(),
                    &1.into()
                )
            );

            let mut quantized = vec!["model.embed_tokens.weight".to_string()];
            quantized.push("model.layers.1.self_attn.k_proj.weight".into());
            quantized.push("model.layers.0.mlp.down_proj.weight".into());
            if !shape.tied {
                quantized.push("lm_head.weight".into());
            }
            let names: Vec<&str> = quantized.iter().map(String::as_str).collect();
            check_stock_safetensors(&out.join("model.safetensors"), &names, format);

            let ours = tiny_logits(&out, &tokens);
            let worst = worst_cosine(&ours, &reference);
            println!("{tag} {format}: worst cosine vs the source model {worst:.6}");
            assert!(worst >= floor, "{tag} {format}: cosine {worst} < {floor}");
        }
        std::fs::remove_dir_all(&root).ok();
    }
}

#[test]
fn tiny_odd_row_length_stays_dense() {
    let shape = TinyLlama {
        intermediate: 80, // down_proj rows are 80 long: not a multiple of 32
        ..TinyLlama::small_gqa(13)
    };
    let root = temp_dir("quant-tiny-odd");
    let src = root.join("f32");
    shape.write(&src);
    let out = root.join("q8");
    let s = quantize(&src, &out, QFormat::Q8_0);
    assert_eq!(
        s.kept_dense,
        [
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.down_proj.weight"
        ]
    );
    let ckpt = Checkpoint::open(&out).unwrap();
    let cfg =
        Config::from_json(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let model = Llama::load(cfg, &ckpt.source()).unwrap();
    assert_eq!(model.layers[0].w_down.type_name(), "F32");
    assert_eq!(model.layers[0].w_up.type_name(), "q8_0");
    let tokens = [3, 1, 4, 1, 5];
    let worst = worst_cosine(&tiny_logits(&out, &tokens), &tiny_logits(&src, &tokens));
    assert!(worst > 0.999, "{worst}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn tiny_bad_metadata_is_refused_naming_the_tensor() {
    let root = temp_dir("quant-tiny-meta");
    let src = root.join("f32");
    TinyLlama::small_gqa(14).write(&src);
    let q_proj = "model.layers.0.self_attn.q_proj.weight";

    let out = root.join("version");
    quantize(&src, &out, QFormat::Q4_0);
    patch_header(
        &out.join("model.safetensors"),
        "\"edgeinfer.quant.version\":\"1\"",
        "\"edgeinfer.quant.version\":\"7\"",
    );
    let e = load_error(&out);
    println!("wrong version: {e}");
    assert!(
        matches!(&e, ModelError::TensorData { name, reason } if name == q_proj && reason.contains("version")),
        "{e:?}"
    );

    let out = root.join("format");
    quantize(&src, &out, QFormat::Q8_0);
    let key = format_key(q_proj);
    patch_header(
        &out.join("model.safetensors"),
        &key,
        &key.replace("qformat", "qformaX"),
    );
    let e = load_error(&out);
    println!("no format key: {e}");
    assert!(
        matches!(&e, ModelError::TensorData { name, reason } if name == q_proj && reason.contains(&key)),
        "{e:?}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Names in `dir`, sorted; empty when it does not exist.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn tiny_failed_quantize_publishes_nothing() {
    let root = temp_dir("quant-tiny-fail");

    // An input missing a tensor: refused before anything is created, naming the tensor.
    let shape = TinyLlama::small_gqa(15);
    let src = root.join("missing");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("config.json"),
        serde_json::to_string(&shape.config_json()).unwrap(),
    )
    .unwrap();
    let mut tensors = shape.tensors();
    tensors.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight");
    common::write_safetensors(&src.join("model.safetensors"), &tensors, Dtype::F32, None);
    let out = root.join("out-missing");
    let opts = QuantizeOptions::new(QFormat::Q4_1);
    let e = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap_err();
    println!("missing tensor: {e}");
    assert!(
        matches!(&e, QuantizeError::Input(inner) if inner.to_string().contains("model.layers.1.mlp.up_proj.weight")),
        "{e:?}"
    );
    assert!(!out.exists(), "output directory created");

    // A write that fails half-way (the weights file cannot be created): the old model in the
    // directory stays as it was and no partial file is left.
    let src = root.join("ok");
    shape.write(&src);
    let out = root.join("out-existing");
    quantize(&src, &out, QFormat::Q8_0);
    let before = std::fs::read(out.join("config.json")).unwrap();
    std::fs::create_dir(out.join("model.safetensors.partial")).unwrap();
    let e = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap_err();
    println!("blocked write: {e}");
    assert!(matches!(e, QuantizeError::Store(_)), "{e:?}");
    assert_eq!(
        listing(&out),
        [
            "config.json",
            "model.safetensors",
            "model.safetensors.partial"
        ]
    );
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);

    // Into a fresh directory that then fails: the directory is removed again.
    let out = root.join("out-fresh");
    let e = quantize_checkpoint(&root.join("missing"), &out, &opts, &mut |_| {});
    assert!(e.is_err() && !out.exists());

    // The input directory itself is refused.
    let e = quantize_checkpoint(&src, &src, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(e, QuantizeError::SameDirectory { .. }), "{e:?}");
    std::fs::remove_dir_all(&root).ok();
}

// ---------------------------------------------------------------------------------------------
// (b) The real model.
// ---------------------------------------------------------------------------------------------

/// The default (natively quantized) import, checked to be one.
fn real_quant_dir() -> Option<PathBuf> {
    let dir = common::real_model_dir()?;
    assert!(
        common::is_quantized_checkpoint(&dir),
        "{} is not the quantized import (an F32 one from an older scripts/fetch-model.sh?); re-run scripts/fetch-model.sh",
        dir.display()
    );
    Some(dir)
}

/// Splits ggml blocks (`d` f16, [`m` f16,] quants) into (qs, d bytes, m bytes), independently of the
/// importer's code.
fn ggml_planes(raw: &[u8], ty: candle_core::quantized::GgmlDType) -> [Vec<u8>; 3] {
    use candle_core::quantized::GgmlDType as G;
    let (block, header) = match ty {
        G::Q8_0 => (34, 2),
        G::Q4_0 => (18, 2),
        G::Q4_1 => (20, 4),
        other => panic!("unexpected GGUF type {other:?}"),
    };
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for b in raw.chunks_exact(block) {
        out[1].extend_from_slice(&b[..2]);
        out[2].extend_from_slice(&b[2..header]);
        out[0].extend_from_slice(&b[header..]);
    }
    out
}

#[test]
fn real_import_planes_are_the_gguf_blocks() {
    let (Some(dir), Some(gguf)) = (real_quant_dir(), common::real_gguf()) else {
        return;
    };
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut f = std::fs::File::open(&gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let dev = candle_core::Device::Cpu;
    // (GGUF name, HF name, heads whose rows llama.cpp permuted)
    for (gg, hf, heads) in [
        ("token_embd.weight", "model.embed_tokens.weight", 0),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            9,
        ),
        (
            "blk.29.attn_k.weight",
            "model.layers.29.self_attn.k_proj.weight",
            3,
        ),
        (
            "blk.7.attn_v.weight",
            "model.layers.7.self_attn.v_proj.weight",
            0,
        ),
        (
            "blk.13.ffn_down.weight",
            "model.layers.13.mlp.down_proj.weight",
            0,
        ),
    ] {
        let q = content.tensor(&mut f, gg, &dev).unwrap();
        let (rows, k) = q.shape().dims2().unwrap();
        let raw = q.data().unwrap();
        let planes = ggml_planes(&raw, q.dtype());
        let [qs, scales, mins] = plane_names(hf);
        let got = [
            st.tensor(&qs).unwrap().data().to_vec(),
            st.tensor(&scales).unwrap().data().to_vec(),
            st.tensor(&mins)
                .map(|t| t.data().to_vec())
                .unwrap_or_default(),
        ];
        for (plane, (want, got)) in planes.iter().zip(&got).enumerate() {
            assert_eq!(want.len(), got.len(), "{hf} plane {plane}");
            let row = want.len() / rows;
            for r_hf in 0..rows {
                // HF row h·d + s·d/2 + i is GGUF row h·d + 2i + s.
                let r_gg = match rows.checked_div(heads) {
                    None => r_hf,
                    Some(d) => {
                        let (h, rest) = (r_hf / d, r_hf % d);
                        let (s, i) = (rest / (d / 2), rest % (d / 2));
                        h * d + 2 * i + s
                    }
                };
                assert_eq!(
                    got[r_hf * row..(r_hf + 1) * row],
                    want[r_gg * row..(r_gg + 1) * row],
                    "{hf} plane {plane} row {r_hf} (GGUF row {r_gg})"
                );
            }
            if heads > 0 && plane == 0 {
                assert_ne!(got, want, "{hf}: rows were not permuted");
            }
        }
        println!(
            "{hf}: {:?} [{rows}, {k}] planes equal the GGUF blocks",
            q.dtype()
        );
    }
}

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
];

/// Last-position logits of `text`.
fn last_logits(model: &Arc<Model>, text: &str) -> Vec<f32> {
    last_logits_of(model, &tokens_of(model, text))
}

fn tokens_of(model: &Arc<Model>, text: &str) -> Vec<u32> {
    let tok = model.tokenizer();
    tok.encode(text, tok.add_bos_token()).unwrap()
}

/// With two-pass activations the Q4_1 import (exactly the F32 import's weights) gives the F32 model's
/// logits, after the prompt and at each decode step: what is left is f32 summation order and the
/// second pass's 2⁻¹⁶ rounding. One 8-bit pass gives 0.98958 on "The quick brown fox"
/// (docs/accuracy.md, "Quantized weights against F32"), the most sensitive of twelve prompts
/// measured.
#[test]
fn real_two_pass_acts_track_f32() {
    let (Some(q_dir), Some(f32_dir)) = (common::real_model_dir(), common::real_f32_model_dir())
    else {
        return;
    };
    let (quant, f32_model) = (Model::load(&q_dir).unwrap(), Model::load(&f32_dir).unwrap());
    for p in PROMPTS.iter().chain(&["The quick brown fox"]) {
        let ids = tokens_of(&f32_model, p);
        let (want, want_ids) = greedy_logits(&f32_model, &ids, 4, ActQuant::Q8);
        for acts in ActQuant::ALL {
            let (got, got_ids) = greedy_logits(&quant, &ids, 4, acts);
            let worst = worst_cosine(&got, &want);
            println!("{p:?}: {acts} activations: worst cosine over prompt and 3 steps (own greedy tokens) {worst:.7}");
            if acts == ActQuant::Q8x2 {
                assert_eq!(got_ids, want_ids, "{p:?}: greedy tokens");
                assert!(worst >= 0.99999, "{p:?}: q8x2 cosine {worst} < 0.99999");
            }
        }
    }
}

/// How a model quantized from the F32 import is held to it: last-position cosine on each prompt (a
/// guard against a broken quantizer: a wrong scale, row or nibble order gives cosines far below 0.5)
/// and perplexity on [`PPL_TEXT`] (the quality bar; one prompt's last logits are a noisy measure).
///
/// The F32 import is the Q4_1 GGUF dequantized, so these measure quantizing weights that already lie
/// on a 4-bit grid, plus the 8-bit activation quantization every quantized matmul does. The short
/// "The capital of France is" is by far the most sensitive prompt: the activation rounding alone (the
/// native Q4_1 import has exactly the F32 import's weights) costs 0.998–0.9992 there, and > 0.99996
/// on the longer prompts; q8_0 measured 0.9988, 0.99996, 0.99997. q4_0 is a second 4-bit rounding
/// of a q4_1 grid onto a symmetric one: its last-position cosines swing between 0.45 and 0.82 on the
/// short prompt (its top two tokens are within 0.1 of each other) and 0.989–0.9975 on the others as
/// the quantizer changes, while perplexity moves steadily: README.md's first 3 KB gave 44.6 (F32),
/// 67.7 (q4_0, ggml's reference scale), 61.5 (least-squares scale), 56.4 (plus a q8_0 embedding).
/// Limits: (format, cosine floor, perplexity at most this multiple of the F32 model's).
const FROM_F32_LIMITS: [(QFormat, f64, f64); 2] =
    [(QFormat::Q8_0, 0.997, 1.02), (QFormat::Q4_0, 0.6, 1.35)];

const PPL_TEXT: &str = "The history of the city begins with a small settlement on the banks of the river. \
Over the centuries it grew into a busy market town, where farmers from the surrounding villages came \
to sell grain, wool and cheese. In the nineteenth century the railway arrived, and with it new \
factories, schools and a public library. Today the old town is known for its narrow streets, its \
cathedral and its museums, which attract visitors from all over the world. The river is still at the \
heart of the city: in summer, people walk along its banks, and boats carry tourists past the bridges \
and the gardens. Many residents work in universities, hospitals and technology companies, and the \
city has become a centre for research in medicine and engineering.";

/// Perplexity of `text` under `model` (teacher-forced, one window).
fn perplexity(model: &Arc<Model>, text: &str) -> f64 {
    let tok = model.tokenizer();
    let ids = tok.encode(text, tok.add_bos_token()).unwrap();
    let mut session = model
        .session(SessionOptions {
            ctx: ids.len(),
            all_logits: true,
            ..SessionOptions::default()
        })
        .unwrap();
    let mut nll = 0.0f64;
    session
        .evaluate(&ids[..ids.len() - 1], |i, logits| {
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
            nll -= logits[ids[i + 1] as usize] as f64 - max - sum.ln();
        })
        .unwrap();
    (nll / (ids.len() - 1) as f64).exp()
}

#[test]
fn real_quantized_from_f32_tracks_f32() {
    let Some(f32_dir) = common::real_f32_model_dir() else {
        return;
    };
    let f32_model = Model::load(&f32_dir).unwrap();
    let reference: Vec<Vec<f32>> = PROMPTS.iter().map(|p| last_logits(&f32_model, p)).collect();
    let ppl_f32 = perplexity(&f32_model, PPL_TEXT);
    println!("F32: perplexity {ppl_f32:.3}");
    drop(f32_model);
    let root = temp_dir("quant-real");
    for (format, floor, ppl_ratio) in FROM_F32_LIMITS {
        let out = root.join(format.name());
        let start = Instant::now();
        let s = quantize(&f32_dir, &out, format);
        println!(
            "{format}: quantized in {:.1} s, {:.1} MB -> {:.1} MB",
            start.elapsed().as_secs_f64(),
            s.input_bytes as f64 / 1e6,
            s.output_bytes as f64 / 1e6
        );
        let model = Model::load(&out).unwrap();
        for (p, want) in PROMPTS.iter().zip(&reference) {
            let got = last_logits(&model, p);
            let c = cosine(&got, want);
            println!(
                "{format}: {p:?}: cosine {c:.6}, max-abs {:.3}",
                common::max_abs_diff(&got, want)
            );
            assert!(c >= floor, "{format}: {p:?}: cosine {c} < {floor}");
            // Two-pass activations leave only the weights' rounding: issue 3's bar for q8_0.
            let got = greedy_logits(&model, &tokens_of(&model, p), 1, ActQuant::Q8x2).0;
            let c = cosine(&got[0], want);
            println!("{format}: {p:?}: q8x2 activations: cosine {c:.6}");
            if format == QFormat::Q8_0 {
                assert!(c >= 0.999, "{format}: {p:?}: q8x2 cosine {c} < 0.999");
            }
        }
        let ppl = perplexity(&model, PPL_TEXT);
        println!("{format}: perplexity {ppl:.3} ({:.3}x F32)", ppl / ppl_f32);
        assert!(
            ppl <= ppl_f32 * ppl_ratio,
            "{format}: perplexity {ppl} > {ppl_ratio} x {ppl_f32}"
        );
        drop(model);
        std::fs::remove_dir_all(&out).ok();
    }
    std::fs::remove_dir_all(&root).ok();
}

/// candle-transformers' quantized Llama over the GGUF itself: last-position logits of `tokens`
/// (prefilled as one batch), then `steps` greedy tokens.
fn candle_quantized(gguf: &Path, tokens: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dev = Device::Cpu;
    let mut f = std::fs::File::open(gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut model = ModelWeights::from_gguf(content, &mut f, &dev).unwrap();
    let run = |model: &mut ModelWeights, toks: &[u32], pos: usize| -> Vec<f32> {
        let x = Tensor::new(toks, &dev).unwrap().unsqueeze(0).unwrap();
        let logits = model.forward(&x, pos).unwrap();
        logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
    };
    let first = run(&mut model, tokens, 0);
    let mut out = Vec::new();
    let mut logits = first.clone();
    for i in 0..steps {
        let next = argmax(&logits);
        out.push(next);
        if i + 1 < steps {
            logits = run(&mut model, &[next], tokens.len() + i);
        }
    }
    (first, out)
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32
}

/// Our greedy continuation of `tokens`: `steps` tokens (EOS not special), F32 KV cache.
fn our_greedy(model: &Arc<Model>, tokens: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    let (logits, out) = greedy_logits(model, tokens, steps, ActQuant::Q8);
    (logits.into_iter().next().unwrap(), out)
}

/// The logits after the prompt and after each of `steps − 1` greedy decode steps, and the `steps`
/// greedy tokens; F32 KV cache, activations as `acts` says.
fn greedy_logits(
    model: &Arc<Model>,
    tokens: &[u32],
    steps: usize,
    acts: ActQuant,
) -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut s = model
        .session(SessionOptions {
            ctx: 256,
            kv_dtype: KvDType::F32,
            acts,
            ..SessionOptions::default()
        })
        .unwrap();
    s.prefill(tokens).unwrap();
    let mut logits = vec![s.logits().to_vec()];
    let mut out = Vec::new();
    let mut next = argmax(&logits[0]);
    for i in 0..steps {
        out.push(next);
        if i + 1 < steps {
            logits.push(s.step(next).unwrap().to_vec());
            next = argmax(logits.last().unwrap());
        }
    }
    (logits, out)
}

/// Largest allowed max-abs difference between our last-position logits on the imported Q4_1 model
/// and candle's `quantized_llama` on the GGUF (logits span about -35..37 on these prompts).
///
/// Both use the same weights bit for bit, and both quantize activations to 8-bit blocks of 32 before
/// each matmul, but not identically: candle rounds to ggml's `Q8_1`/`Q8_0` blocks with f16 scales and
/// f16 block sums, we keep f32 scales, and summation orders differ. A scale that differs by 2⁻¹¹
/// moves a few percent of the quants by one step, so the two roundings are nearly independent
/// noise, and 30 layers carry it to the logits. Measured against the exact f32 math on the same
/// weights (the F32 import), each is off by about as much: ours max-abs 0.86–0.89 / 0.71–0.81 /
/// 0.55–0.57 (cosine 0.9979–0.9992 / 0.99997 / 0.99998), candle 0.70 / 1.03 / 0.54 (0.9986 /
/// 0.99995 / 0.99998); ours vs candle 1.04–1.33 / 0.81–0.97 / 0.57–0.61 (cosine 0.9945–0.9976 /
/// 0.99995 / 0.99997), the ranges over kernel revisions (summation orders). Hence 2.0 and 0.99:
/// above that noise, below what a wrong block, row, scale or nibble gives (several units, cosines
/// < 0.9). The test also checks that ours is not much further from the f32 math than candle's is.
const CANDLE_Q_TOL: f32 = 2.0;
/// Minimum cosine between the same two logit vectors.
const CANDLE_Q_COSINE: f64 = 0.99;

#[test]
fn real_q4_1_import_tracks_candle_quantized_llama() {
    /// Logit margin under which candle's greedy pick may differ from ours.
    const NEAR_TIE: f32 = 0.5;
    let (Some(dir), Some(gguf)) = (real_quant_dir(), common::real_gguf()) else {
        return;
    };
    let model = Model::load(&dir).unwrap();
    let f32_model = common::real_f32_model_dir().map(|d| Model::load(d).unwrap());
    let tok = model.tokenizer();
    let text = |t: &[u32]| tok.decode(t).unwrap();
    let chat = [edgeinfer::Message::new(
        "user",
        "What is the capital of France?",
    )];
    let chat_tokens = model
        .session(SessionOptions::default())
        .unwrap()
        .tokenize(&edgeinfer::Prompt::Chat(&chat))
        .unwrap();
    let mut cases: Vec<(String, Vec<u32>)> = PROMPTS
        .iter()
        .map(|p| {
            (
                format!("{p:?}"),
                tok.encode(p, tok.add_bos_token()).unwrap(),
            )
        })
        .collect();
    cases.push(("chat".into(), chat_tokens));
    for (i, (name, tokens)) in cases.iter().enumerate() {
        let steps = if i == 0 { 32 } else { 8 };
        let (theirs, their_tokens) = candle_quantized(&gguf, tokens, steps);
        let (ours, our_tokens) = our_greedy(&model, tokens, steps);
        let (d, c) = (common::max_abs_diff(&ours, &theirs), cosine(&ours, &theirs));
        println!("{name}: ours vs candle max-abs {d:.4}, cosine {c:.6} (tolerance {CANDLE_Q_TOL}, {CANDLE_Q_COSINE})");
        println!(
            "  ours:   {:?}\n  candle: {:?}",
            text(&our_tokens),
            text(&their_tokens)
        );
        if let Some(f) = &f32_model {
            let exact = last_logits_of(f, tokens);
            let (co, cc) = (cosine(&ours, &exact), cosine(&theirs, &exact));
            println!(
                "  vs the f32 math on the same weights: ours max-abs {:.3} cosine {co:.6}, candle {:.3} {cc:.6}",
                common::max_abs_diff(&ours, &exact),
                common::max_abs_diff(&theirs, &exact)
            );
            assert!(
                1.0 - co <= 3.0 * (1.0 - cc) + 1e-3,
                "{name}: ours is further from the f32 math ({co}) than candle ({cc})"
            );
        }
        assert!(d <= CANDLE_Q_TOL, "{name}: max-abs {d} > {CANDLE_Q_TOL}");
        assert!(
            c >= CANDLE_Q_COSINE,
            "{name}: cosine {c} < {CANDLE_Q_COSINE}"
        );
        // Both pick the same first token, unless it is a near-tie in candle's own logits (the chat
        // answer's first token is one: "L" vs "The", and summation order decides).
        let (a, b) = (our_tokens[0] as usize, their_tokens[0] as usize);
        let margin = theirs[b] - theirs[a];
        println!("  first tokens: ours {a}, candle {b}; candle's margin between them {margin:.3}");
        assert!(
            a == b || margin <= NEAR_TIE,
            "{name}: first greedy token {a} vs candle's {b}, which candle prefers by {margin}"
        );
        if i == 0 {
            assert!(
                text(&our_tokens).starts_with(" Paris"),
                "{:?}",
                text(&our_tokens)
            );
        }
    }
}

/// Last-position logits of `tokens` (F32 KV cache).
fn last_logits_of(model: &Arc<Model>, tokens: &[u32]) -> Vec<f32> {
    our_greedy(model, tokens, 1).0
}

// ---------------------------------------------------------------------------------------------
// (c) Load time and memory.
// ---------------------------------------------------------------------------------------------

/// `VmRSS`, `RssAnon` and `RssFile` of this process in kB (Linux; zeros elsewhere).
fn rss_kb() -> [u64; 3] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    [field("VmRSS:"), field("RssAnon:"), field("RssFile:")]
}

/// Reads every file of `dir` through one small buffer, so its pages are in the page cache without
/// growing this process.
fn warm_page_cache(dir: &Path) {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(dir).unwrap() {
        let mut f = std::fs::File::open(e.unwrap().path()).unwrap();
        while f.read(&mut buf).unwrap() > 0 {}
    }
}

/// The measurement itself, run alone in a child process by [`real_load_time_and_rss`] so that other
/// tests' threads, allocations and mappings do not count. Prints one `LOAD_PROBE {json}` line.
#[test]
#[ignore = "run by real_load_time_and_rss in a child process"]
fn load_probe() {
    let Some(dir) = std::env::var_os("EDGEINFER_LOAD_PROBE_DIR").map(PathBuf::from) else {
        return;
    };
    warm_page_cache(&dir);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    // Parts, in Model::load's order.
    let rss0 = rss_kb();
    let t = Instant::now();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let open_ms = ms(t);
    let t = Instant::now();
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let config_ms = ms(t);
    let t = Instant::now();
    let llama = Llama::load(cfg, &ckpt.source()).unwrap();
    let views_ms = ms(t);
    let rss_weights = rss_kb();
    let t = Instant::now();
    let tok = edgeinfer::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let tokenizer_ms = ms(t);
    let rss_parts = rss_kb();
    drop((tok, llama, ckpt));

    // The whole thing, twice (the second with everything warm).
    let mut totals = Vec::new();
    let before = rss_kb();
    let mut after = before;
    for _ in 0..2 {
        let t = Instant::now();
        let model = Model::load(&dir).unwrap();
        totals.push(ms(t));
        after = rss_kb();
        drop(model);
    }
    let json = serde_json::json!({
        "checkpoint_open_ms": open_ms,
        "config_ms": config_ms,
        "tensor_views_ms": views_ms,
        "tokenizer_ms": tokenizer_ms,
        "model_load_ms": totals,
        "rss_baseline_kb": rss0,
        "rss_after_weights_kb": rss_weights,
        "rss_after_tokenizer_kb": rss_parts,
        "rss_before_model_load_kb": before,
        "rss_after_model_load_kb": after,
    });
    println!("LOAD_PROBE {json}");
}

#[test]
fn real_load_time_and_rss() {
    let Some(dir) = real_quant_dir() else {
        return;
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "load_probe", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("EDGEINFER_LOAD_PROBE_DIR", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("LOAD_PROBE ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no LOAD_PROBE line in {stdout}"));
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    let f = |k: &str| j[k].as_f64().unwrap();
    let kb = |k: &str, i: usize| j[k][i].as_f64().unwrap();
    let mb = |a: &str, b: &str, i: usize| (kb(b, i) - kb(a, i)) / 1024.0;
    println!(
        "load of {} (warm page cache): checkpoint open+validate {:.2} ms, config {:.2} ms, tensor views {:.2} ms, tokenizer {:.2} ms; Model::load {:.1} ms, then {:.1} ms",
        dir.display(),
        f("checkpoint_open_ms"),
        f("config_ms"),
        f("tensor_views_ms"),
        f("tokenizer_ms"),
        j["model_load_ms"][0].as_f64().unwrap(),
        j["model_load_ms"][1].as_f64().unwrap(),
    );
    println!(
        "RSS: baseline {:.1} MB; weights +{:.2} MB (anon +{:.2}, file +{:.2}); tokenizer +{:.2} MB; Model::load +{:.2} MB (anon +{:.2}, file +{:.2})",
        kb("rss_baseline_kb", 0) / 1024.0,
        mb("rss_baseline_kb", "rss_after_weights_kb", 0),
        mb("rss_baseline_kb", "rss_after_weights_kb", 1),
        mb("rss_baseline_kb", "rss_after_weights_kb", 2),
        mb("rss_after_weights_kb", "rss_after_tokenizer_kb", 0),
        mb("rss_before_model_load_kb", "rss_after_model_load_kb", 0),
        mb("rss_before_model_load_kb", "rss_after_model_load_kb", 1),
        mb("rss_before_model_load_kb", "rss_after_model_load_kb", 2),
    );
    // The weights part is what this format is for: the 97 MB file is mapped, not read.
    assert!(
        f("checkpoint_open_ms") + f("tensor_views_ms") < 50.0,
        "opening the checkpoint took {} + {} ms",
        f("checkpoint_open_ms"),
        f("tensor_views_ms")
    );
    assert!(
        mb("rss_baseline_kb", "rss_after_weights_kb", 0) < 10.0,
        "mapping the weights grew RSS by {} MB",
        mb("rss_baseline_kb", "rss_after_weights_kb", 0)
    );
}
