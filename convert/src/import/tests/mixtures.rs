//! The mixtures people download (Q4_K_M, Q5_K_M, Q6_K, IQ4_NL as llama-quantize writes them), for
//! every architecture the importer reads: each tensor keeps the GGUF's type (the embedding and the
//! untied output included), and the model runs as stored, its logits over a prompt and two decode
//! steps agreeing in direction with the same file imported as F32 (which only moves the
//! activations' rounding: the weights' values are the same).
//!
//! The K-quant blocks come from candle-core's quantizer (an implementation we did not write); the
//! IQ4_NL ones, which candle does not write, from ours (`quantize::kquants`), joined into ggml
//! blocks and written into the file by hand.

use std::collections::BTreeMap;

use edgeinfer_kernels::quant::{kquant, ActQuant, QWeight};
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, Llama, Logits, State};

use super::blocks::write_gguf;
use super::*;
use crate::import::gguf_file::TensorType;

/// Widths that are multiples of 256, so every matrix (and the embedding) can be a K-quant.
const MIX_DIMS: Dims = Dims {
    hidden: 256,
    heads: 4,
    kv_heads: 2,
    head_dim: 64,
    inter: 512,
    layers: 2,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mix {
    Q4KM,
    Q5KM,
    Q6K,
    Iq4Nl,
}

/// The ggml type llama-quantize gives tensor `name` in `mix` (`None`: F32), as its rules do for a
/// two-layer model: the output in Q6_K; in the "M" mixtures the value and down projections of the
/// first layer (a "more bits" layer) in Q6_K and the rest, embedding included, in the base K-quant;
/// Q6_K everything; IQ4_NL every matrix but the output (written as Q8_0 here and replaced by IQ4_NL
/// blocks afterwards, see [`with_iq4_nl`]).
fn mix_type(mix: Mix, name: &str) -> Option<GgmlDType> {
    let kind = name.rsplit('.').nth(1)?;
    let layer0 = name.starts_with("blk.0.");
    let matrix = matches!(
        kind,
        "token_embd"
            | "attn_q"
            | "attn_k"
            | "attn_v"
            | "attn_output"
            | "ffn_gate"
            | "ffn_up"
            | "ffn_down"
    );
    if kind == "output" {
        return Some(GgmlDType::Q6K);
    }
    if !matrix || name.ends_with(".bias") {
        return None;
    }
    let more = layer0 && matches!(kind, "attn_v" | "ffn_down");
    Some(match mix {
        Mix::Q4KM if more => GgmlDType::Q6K,
        Mix::Q4KM => GgmlDType::Q4K,
        Mix::Q5KM if more => GgmlDType::Q6K,
        Mix::Q5KM => GgmlDType::Q5K,
        Mix::Q6K => GgmlDType::Q6K,
        Mix::Iq4Nl => GgmlDType::Q8_0,
    })
}

/// The synthetic model of `arch` with an untied output, tensor types as `mix` has them.
fn synth(arch: &str, mix: Mix) -> Synth {
    let mut s = match arch {
        "llama" => Synth::llama_with(MIX_DIMS),
        _ => Synth::arch_with(arch, MIX_DIMS),
    };
    s.random = true;
    s.tensors.push((
        "output.weight".into(),
        vec![tokens().len(), MIX_DIMS.hidden],
    ));
    s.types = match mix {
        Mix::Q4KM => |n| mix_type(Mix::Q4KM, n),
        Mix::Q5KM => |n| mix_type(Mix::Q5KM, n),
        Mix::Q6K => |n| mix_type(Mix::Q6K, n),
        Mix::Iq4Nl => |n| mix_type(Mix::Iq4Nl, n),
    };
    s
}

/// Rewrites `base` into `path` with every Q8_0 matrix as IQ4_NL blocks of its values, quantized by
/// our quantizer (ggml type 20).
fn with_iq4_nl(base: &Path, path: &Path) {
    let mut g = gguf::Gguf::open(base).unwrap();
    let names: Vec<String> = g.header.tensors.keys().cloned().collect();
    let f = QFormat::Iq4Nl;
    let mut tensors = Vec::new();
    for name in &names {
        let info = g.info(name).unwrap().clone();
        let (ty, raw) = g.read_raw(name).unwrap();
        let (id, bytes) = match ty {
            TensorType::F32 => (0, raw),
            TensorType::Quant(QFormat::Q6K) => (14, raw),
            TensorType::Quant(QFormat::Q8_0) => {
                let values = g.read_f32(name).unwrap();
                let k = info.shape[info.shape.len() - 1];
                let rows = values.len() / k;
                let nb = k / f.block_elems();
                let (mut qs, mut aux) = (vec![0u8; rows * nb * 16], Vec::new());
                let (mut d, mut m) = (vec![half::f16::ZERO; rows * nb], Vec::new());
                for (r, row) in values.chunks_exact(k).enumerate() {
                    crate::quantize::kquants::quantize_row(
                        f,
                        row,
                        None,
                        &mut qs[r * nb * 16..(r + 1) * nb * 16],
                        &mut aux,
                        &mut d[r * nb..(r + 1) * nb],
                        &mut m,
                    );
                }
                let w = QWeight::with_aux(f, rows, k, &qs, &aux, &d, &m).unwrap();
                let mut blocks = Vec::new();
                for b in 0..rows * nb {
                    kquant::ggml_block(&w, b, &mut blocks);
                }
                (20, blocks)
            }
            other => panic!("{name}: {other:?} in the base file"),
        };
        tensors.push((name.clone(), info.shape.clone(), id, bytes));
    }
    let meta: Vec<_> = g.header.metadata.iter().collect();
    write_gguf(path, &meta, &tensors);
}

/// Logits of the model at `dir` over a prompt (every position) and two decode steps, with q8x2
/// activations (close to f32 ones, so the comparison sees the weights).
fn logits(dir: &Path, kern: &Kernels) -> Vec<Vec<f32>> {
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ckpt = edgeinfer::loader::Checkpoint::open(dir).unwrap();
    let model = Llama::load(cfg.clone(), &ckpt.source()).unwrap();
    let prompt = [1u32, 70, 101, 108, 200, 33, 2, 90];
    let opts = StateOptions {
        ctx: 32,
        batch: prompt.len(),
        threads: 1,
        all_logits: true,
        kv_dtype: KvDType::F32,
        acts: ActQuant::Q8x2,
    };
    let mut state = State::new(&cfg, opts).unwrap();
    let vocab = cfg.vocab_size;
    model
        .forward(kern, &mut state, &prompt, Logits::All)
        .unwrap();
    let mut out: Vec<Vec<f32>> = state.logits()[..prompt.len() * vocab]
        .chunks_exact(vocab)
        .map(<[f32]>::to_vec)
        .collect();
    for tok in [5u32, 150] {
        model
            .forward(kern, &mut state, &[tok], Logits::Last)
            .unwrap();
        out.push(state.logits()[..vocab].to_vec());
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn gguf_mixtures_of_every_architecture_run_as_stored() {
    let kern = Kernels::detect();
    for arch in ["llama", "qwen2", "qwen3"] {
        for mix in [Mix::Q4KM, Mix::Q5KM, Mix::Q6K, Mix::Iq4Nl] {
            let what = format!("{arch} {mix:?}");
            let scratch = Scratch::new(&format!("mix-{arch}-{mix:?}"));
            let s = synth(arch, mix);
            let path = scratch.0.join("m.gguf");
            s.write(&path);
            if mix == Mix::Iq4Nl {
                let base = scratch.0.join("base.gguf");
                std::fs::rename(&path, &base).unwrap();
                with_iq4_nl(&base, &path);
            }
            let (quant, dense) = (scratch.0.join("quant"), scratch.0.join("dense"));
            let summary = import_gguf(&path, &quant, &ImportOptions::default(), &mut |_| {})
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let f32_opts = ImportOptions {
                dtype: ImportDType::F32,
                ..ImportOptions::default()
            };
            import_gguf(&path, &dense, &f32_opts, &mut |_| {}).unwrap();

            // Every tensor kept in the file's type: 2 layers × 7 matrices, the embedding, the output.
            let mut want: BTreeMap<&str, usize> = BTreeMap::new();
            match mix {
                Mix::Q4KM | Mix::Q5KM => {
                    let base = if mix == Mix::Q4KM { "q4_k" } else { "q5_k" };
                    want.insert(base, 13);
                    want.insert("q6_k", 3);
                }
                Mix::Q6K => {
                    want.insert("q6_k", 16);
                }
                Mix::Iq4Nl => {
                    want.insert("iq4_nl", 15);
                    want.insert("q6_k", 1);
                }
            }
            for (ty, n) in &want {
                assert_eq!(
                    summary.types.get(*ty),
                    Some(n),
                    "{what}: {:?}",
                    summary.types
                );
            }
            let model = super::blocks::load(&quant);
            let head = model.lm_head.as_ref().expect("an untied output");
            assert_eq!(head.type_name(), "q6_k", "{what}: output");
            let embed = if mix == Mix::Iq4Nl {
                "iq4_nl"
            } else {
                want.keys().next().unwrap()
            };
            assert_eq!(model.embed.type_name(), embed, "{what}: embedding");

            let (q, d) = (logits(&quant, &kern), logits(&dense, &kern));
            let worst = q
                .iter()
                .zip(&d)
                .map(|(a, b)| cosine(a, b))
                .fold(1.0, f64::min);
            assert!(worst > 0.9999, "{what}: worst cosine against F32 {worst}");
            println!(
                "{what}: {:?}, worst cosine against F32 {worst:.6}",
                summary.types
            );
        }
    }
}
