//! The GGUF formats kept as stored (q5_0 … iq4_xs, `edgeinfer_kernels::quant::kquant`) end to end:
//! a tiny model whose layer matrices are in one of them loads (its `aux` plane included), and its
//! logits, prefill and decode, agree for every kernel variant at one and three threads with the
//! scalar spec's, and with the same model's matrices dequantized to F32.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{our_logits, temp_dir, worst_cosine, TinyLlama};
use edgeinfer_convert::store::{write_model, Data, Entry, QPlanes, StoredAs};
use edgeinfer_kernels::quant::{QFormat, QLayout, QWeight};
use edgeinfer_kernels::testing::{variants_under_test, QPlanes as KPlanes, Rng};
use edgeinfer_kernels::Kernels;
use edgeinfer_models::state::KvDType;
use safetensors::Dtype;

/// Hidden 256 and intermediate 512, so every K-quant's 256-element super-block fits each matrix.
fn shape() -> TinyLlama {
    TinyLlama {
        hidden: 256,
        intermediate: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 97,
        tied: true,
        dtype: Dtype::F32,
        seed: 23,
    }
}

/// A scale for `format`'s random `d` and minimums that keeps its weights within about ±0.15:
/// 0.15 over the largest `|sub-scale · quant|` the format can hold.
fn scale(format: QFormat) -> f32 {
    let largest = match format {
        QFormat::Q5_0 => 16.0,
        QFormat::Q5_1 => 31.0,
        QFormat::Iq4Nl => 127.0,
        QFormat::Q2K => 45.0,
        QFormat::Q3K => 128.0,
        QFormat::Q4K => 945.0,
        QFormat::Q5K => 1953.0,
        QFormat::Q6K | QFormat::Iq4Xs => 4096.0,
        _ => unreachable!("{format} is not a GGUF format"),
    };
    0.15 / largest
}

/// Writes the tiny model twice: `quant` with its layer matrices as random planes of `format`
/// (small scales, every quant and sub-scale bit pattern), `dense` with those matrices dequantized
/// to F32; the other tensors (embedding, norms) as drawn.
fn write_pair(format: QFormat, quant: &Path, dense: &Path) {
    let t = shape();
    let mut rng = Rng::new(0x9e37 ^ format.block_elems() as u64 ^ format.bytes_per_block() as u64);
    let (mut q_entries, mut d_entries) = (Vec::new(), Vec::new());
    let (mut q_data, mut d_data): (Vec<Data>, Vec<Data>) = (Vec::new(), Vec::new());
    for (name, shape, values) in t.tensors() {
        let matrix = shape.len() == 2 && name.contains("layers.");
        if !matrix {
            let bytes = bytemuck::cast_slice::<f32, u8>(&values).to_vec();
            for (e, d) in [(&mut q_entries, &mut q_data), (&mut d_entries, &mut d_data)] {
                e.push(Entry {
                    name: name.clone(),
                    stored: StoredAs::Dense {
                        dtype: Dtype::F32,
                        shape: shape.clone(),
                    },
                });
                d.push(Data::Dense(bytes.clone()));
            }
            continue;
        }
        let (rows, k) = (shape[0], shape[1]);
        let p = KPlanes::random(&mut rng, format, rows, k, scale(format), scale(format));
        let w: QWeight<'_> = p.view();
        let mut deq = vec![0f32; rows * k];
        for (r, row) in deq.chunks_exact_mut(k).enumerate() {
            w.dequantize_row(r, row);
        }
        q_entries.push(Entry {
            name: name.clone(),
            stored: StoredAs::Quant {
                format,
                rows,
                k,
                layout: QLayout::RowSplit,
            },
        });
        q_data.push(Data::Quant(QPlanes {
            qs: p.qs.clone(),
            d: p.d.clone(),
            m: p.m.clone(),
            aux: p.aux.clone(),
        }));
        d_entries.push(Entry {
            name,
            stored: StoredAs::Dense {
                dtype: Dtype::F32,
                shape,
            },
        });
        d_data.push(Data::Dense(bytemuck::cast_slice::<f32, u8>(&deq).to_vec()));
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    for (dir, entries, data) in [(quant, q_entries, q_data), (dense, d_entries, d_data)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&t.config_json()).unwrap(),
        )
        .unwrap();
        let mut data: Vec<Option<Data>> = data.into_iter().map(Some).collect();
        write_model(&dir.join("model.safetensors"), &entries, &meta, |i, _| {
            Ok::<_, edgeinfer_convert::store::StoreError>(data[i].take().unwrap())
        })
        .unwrap();
    }
}

#[test]
fn tiny_models_in_every_gguf_format_run() {
    let root = temp_dir("gguf-formats");
    let (prompt, decode) = ([1u32, 5, 9, 13, 40, 2], [7u32, 11, 3]);
    for format in QFormat::GGUF {
        let (quant, dense) = (
            root.join(format.name()),
            root.join(format!("{}-f32", format.name())),
        );
        write_pair(format, &quant, &dense);
        let spec = our_logits(&quant, &prompt, &decode, &Kernels::SCALAR, 1, KvDType::F32);
        let f32s = our_logits(&dense, &prompt, &decode, &Kernels::SCALAR, 1, KvDType::F32);
        // q8 activations against f32 ones: close in direction at every position.
        let cos = worst_cosine(&spec, &f32s);
        assert!(cos > 0.999, "{format}: worst cosine against F32 {cos}");
        let scale = spec
            .iter()
            .flatten()
            .fold(0f32, |a, v| a.max(v.abs()))
            .max(1e-6);
        for kern in variants_under_test() {
            for threads in [1, 3] {
                let got = our_logits(&quant, &prompt, &decode, &kern, threads, KvDType::F32);
                let worst = common::worst_abs_diff(&got, &spec);
                assert!(
                    worst <= 1e-4 * scale,
                    "{format}: {} at {threads} threads: max-abs diff {worst:e} (scale {scale:e})",
                    kern.variant
                );
            }
        }
        println!("{format}: worst cosine against F32 {cos:.6}");
    }
    std::fs::remove_dir_all(&root).ok();
}

/// Where a row cannot hold a format's blocks (SmolLM2's 576-wide rows, not a multiple of 256), the
/// matrix takes llama.cpp's fallback of 32-element blocks (q4_k: q4_1 instead of q5_0), and the
/// embedding the output format of its family.
#[test]
fn fallbacks_for_rows_a_super_block_does_not_fit() {
    use edgeinfer_convert::quantize::{fitting_format, output_format};
    use QFormat::*;
    for (asked, fallback) in [
        (Q2K, Q4_0),
        (Q3K, Q4_0),
        (Q4K, Q4_1),
        (Q5K, Q5_1),
        (Q6K, Q8_0),
        (Iq4Xs, Iq4Nl),
        (Q5_0, Q5_0),
        (Q5_1, Q5_1),
        (Iq4Nl, Iq4Nl),
    ] {
        assert_eq!(fitting_format(asked, 576), fallback, "{asked}");
        assert_eq!(fitting_format(asked, 1536), asked, "{asked}");
    }
    for f in [Q5_0, Q5_1, Iq4Nl, Q4_0] {
        assert_eq!(output_format(f), Q8_0, "{f}");
    }
    for f in [Q2K, Q3K, Q4K, Q5K, Iq4Xs] {
        assert_eq!(output_format(f), Q6K, "{f}");
    }
}

/// q4_k_m where the narrow rows fall back on q4_1 (hidden 64, as SmolLM2's 576): a value
/// projection that cannot hold q6_k keeps q4_1 (not q8_0), and the down projections are upgraded
/// in llama.cpp's layer order only while the layers' matrices stay within 4.9 bits per weight:
/// here the first layer's alone (4.843 bits before, 4.884 after).
#[test]
fn q4_k_m_upgrades_within_its_budget() {
    use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeOptions};
    let root = temp_dir("gguf-q4km-budget");
    let src = root.join("f32");
    let t = TinyLlama {
        hidden: 64,
        intermediate: 1024,
        layers: 16,
        ..shape()
    };
    t.write(&src);
    let out = root.join("q4_k_m");
    let opts = QuantizeOptions::from_type_name("q4_k_m").unwrap();
    let s = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap();
    let want: BTreeMap<String, usize> = [("q4_1", 6 * 16), ("q4_k", 15), ("q6_k", 1), ("q8_0", 1)]
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    assert_eq!(s.formats, want);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let key = |n: &str| edgeinfer_models::matrix::format_key(n);
    assert_eq!(meta[&key("model.layers.0.mlp.down_proj.weight")], "q6_k");
    assert_eq!(meta[&key("model.layers.0.self_attn.v_proj.weight")], "q4_1");
    std::fs::remove_dir_all(&root).ok();
}

/// `infer quantize` to the GGUF formats it writes: q4_k_m puts the value and down projections of
/// llama.cpp's "more bits" layers and the (tied) embedding in q6_k, the rest in q4_k; each
/// uniform format writes every matrix in it; every result loads and keeps the F32 model's logits
/// in direction.
#[test]
fn quantize_writes_gguf_formats_and_mixtures() {
    use edgeinfer_convert::quantize::{more_bits, quantize_checkpoint, QuantizeOptions};
    let root = temp_dir("gguf-quantize");
    let src = root.join("f32");
    let t = TinyLlama {
        layers: 8,
        ..shape()
    };
    t.write(&src);
    let (prompt, decode) = ([1u32, 5, 9, 13, 40, 2], [7u32, 11]);
    let reference = our_logits(&src, &prompt, &decode, &Kernels::SCALAR, 1, KvDType::F32);
    for name in [
        "q4_k_m", "q5_k_m", "q4_k", "q5_k", "q6_k", "iq4_nl", "q5_0", "q5_1", "q2_k", "q3_k",
        "iq4_xs",
    ] {
        let out = root.join(name);
        let opts = QuantizeOptions::from_type_name(name).unwrap();
        let s = quantize_checkpoint(&src, &out, &opts, &mut |_| {}).unwrap();
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let format_of = |n: &str| meta[&edgeinfer_models::matrix::format_key(n)].clone();
        for l in 0..t.layers {
            let base = opts.format.name();
            let more = name.ends_with("_m") && more_bits(l, t.layers);
            let want = |upgraded: bool| if upgraded { "q6_k" } else { base };
            let p = format!("model.layers.{l}.");
            assert_eq!(
                format_of(&format!("{p}self_attn.q_proj.weight")),
                base,
                "{name}"
            );
            assert_eq!(
                format_of(&format!("{p}self_attn.v_proj.weight")),
                want(more),
                "{name} {l}"
            );
            assert_eq!(
                format_of(&format!("{p}mlp.down_proj.weight")),
                want(more),
                "{name} {l}"
            );
        }
        let got = our_logits(&out, &prompt, &decode, &Kernels::SCALAR, 1, KvDType::F32);
        let cos = worst_cosine(&got, &reference);
        println!("{name}: {:?}; worst cosine against F32 {cos:.5}", s.formats);
        // Two and three bits per weight of random weights move the logits further.
        let bar = match name {
            "q2_k" => 0.9,
            "q3_k" => 0.97,
            _ => 0.99,
        };
        assert!(cos > bar, "{name}: worst cosine {cos}");
    }
    // q4_k_m on the layers of the more-bits rule: 0 of 8 (first eighth), 7 (last), and 3, 6.
    assert_eq!(
        (0..8).filter(|&i| more_bits(i, 8)).collect::<Vec<_>>(),
        [0, 3, 6, 7]
    );
    std::fs::remove_dir_all(&root).ok();
}
