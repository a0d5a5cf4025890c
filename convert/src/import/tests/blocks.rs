//! Import of every block format edgeinfer reads, kept as stored: planes equal to the GGUF's blocks
//! split, and values equal to candle-core's dequantization (an implementation we did not write).

use super::*;

/// The default (native) import keeps every block type bit-exact (Q/K rows un-permuted whole),
/// copies F16 matrices, writes norms as F32, and the result loads with every matrix dequantizing
/// to candle's values of the GGUF tensor, bit for bit.
#[test]
fn synthetic_native_keeps_blocks() {
    let mut s = Synth::llama_with(BLOCK_DIMS);
    s.random = true;
    s.types = |name| {
        Some(match name.rsplit('.').nth(1)? {
            "token_embd" => GgmlDType::Q8_0,
            "attn_q" => GgmlDType::Q4_1,
            "attn_k" => GgmlDType::Q4_0,
            "attn_v" => GgmlDType::F16,
            "attn_output" => GgmlDType::Q5_1,
            "ffn_gate" => GgmlDType::Q4_1,
            "ffn_up" => GgmlDType::Q5_0,
            "ffn_down" => GgmlDType::Q4K,
            _ => return None,
        })
    };
    let scratch = Scratch::new("native");
    let summary = import(&s, &scratch.0).unwrap();
    let out = scratch.0.join("out");
    println!("{:?}", summary.types);
    assert_eq!(summary.types["q4_1"], 2, "attn_q, ffn_gate");
    assert_eq!(summary.types["q8_0"], 1, "embed");
    assert_eq!(summary.types["q5_1"], 1, "attn_output");
    assert_eq!(summary.types["q5_0"], 1, "ffn_up");
    assert_eq!(summary.types["q4_k"], 1, "ffn_down");
    assert_eq!(summary.types["F16"], 1);
    assert_eq!(summary.types["F32"], 3, "norms");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    // The format holding most parameters: q4_1 (20 480; the q8_0 embedding 16 640).
    assert_eq!(config["quantization_config"]["format"], "q4_1");
    assert_eq!(config["quantization_config"]["formats"]["q4_1"], 2);
    assert_eq!(config["quantization_config"]["layout"], "rowsplit");

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let gguf = scratch.0.join("m.gguf");
    let mut g = gguf::Gguf::open(&gguf).unwrap();
    for (hf, gg, format, heads) in [
        (
            "model.embed_tokens.weight",
            "token_embd.weight",
            QFormat::Q8_0,
            0,
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_q.weight",
            QFormat::Q4_1,
            2,
        ),
        (
            "model.layers.0.self_attn.k_proj.weight",
            "blk.0.attn_k.weight",
            QFormat::Q4_0,
            1,
        ),
        (
            "model.layers.0.self_attn.o_proj.weight",
            "blk.0.attn_output.weight",
            QFormat::Q5_1,
            0,
        ),
        (
            "model.layers.0.mlp.up_proj.weight",
            "blk.0.ffn_up.weight",
            QFormat::Q5_0,
            0,
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            "blk.0.ffn_down.weight",
            QFormat::Q4K,
            0,
        ),
    ] {
        let (_, raw) = g.read_raw(gg).unwrap();
        let shape = g.shape(gg).unwrap();
        let (rows, k) = (shape[0], shape[1]);
        let mut want = weights::split_blocks(format, &raw, rows, k).unwrap();
        let nb = k / format.block_elems();
        if heads > 0 {
            want.qs = gguf::unpermute_rows(&want.qs, heads, rows, nb * format.qs_bytes_per_block());
            want.d = gguf::unpermute_rows(&want.d, heads, rows, nb);
            want.m =
                gguf::unpermute_rows(&want.m, heads, rows, if format.has_min() { nb } else { 0 });
        }
        let [qs, scales, mins] = edgeinfer_models::matrix::plane_names(hf);
        assert_eq!(st.tensor(&qs).unwrap().data(), &want.qs[..], "{hf}");
        assert_eq!(
            st.tensor(&scales).unwrap().data(),
            bytemuck::cast_slice::<_, u8>(&want.d),
            "{hf}"
        );
        if format.has_min() {
            assert_eq!(
                st.tensor(&mins).unwrap().data(),
                bytemuck::cast_slice::<_, u8>(&want.m),
                "{hf}"
            );
        }
        let aux = edgeinfer_models::matrix::aux_name(hf);
        match format.aux_bytes_per_block() {
            0 => assert!(st.tensor(&aux).is_err(), "{hf}"),
            _ => assert_eq!(st.tensor(&aux).unwrap().data(), &want.aux[..], "{hf}"),
        }
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(
            meta[&edgeinfer_models::matrix::format_key(hf)],
            format.name()
        );
    }
    let (_, raw_v) = g.read_raw("blk.0.attn_v.weight").unwrap();
    let v = st.tensor("model.layers.0.self_attn.v_proj.weight").unwrap();
    assert_eq!((v.dtype(), v.data()), (safetensors::Dtype::F16, &raw_v[..]));
    assert_eq!(
        st.tensor("model.norm.weight").unwrap().dtype(),
        safetensors::Dtype::F32
    );

    // Loads, and every kept matrix dequantizes to candle's values of the GGUF tensor exactly.
    let llama = load(&out);
    let layer = &llama.layers[0];
    for (m, gg) in [
        (&layer.wo, "blk.0.attn_output.weight"),
        (&layer.w_up, "blk.0.ffn_up.weight"),
        (&layer.w_down, "blk.0.ffn_down.weight"),
        (&layer.w_gate, "blk.0.ffn_gate.weight"),
    ] {
        same_values(m, &candle_f32(&gguf, gg), gg);
    }
    assert_eq!(layer.w_down.type_name(), "q4_k");
}

/// Tensor `name` of the GGUF at `path` as candle-core reads and dequantizes it: an implementation we
/// did not write.
fn candle_f32(path: &std::path::Path, name: &str) -> Vec<f32> {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let q = content.tensor(&mut f, name, &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

pub(super) fn load(out: &std::path::Path) -> edgeinfer_models::Llama {
    let ckpt = edgeinfer::loader::Checkpoint::open(out).unwrap();
    let cfg = edgeinfer_models::Config::from_json(
        &std::fs::read_to_string(out.join("config.json")).unwrap(),
    )
    .unwrap();
    edgeinfer_models::Llama::load(cfg, &ckpt.source()).unwrap()
}

/// Every row of `m` dequantizes to `want` (row-major), bit for bit.
fn same_values(m: &edgeinfer_models::matrix::Matrix, want: &[f32], what: &str) {
    let [rows, k] = m.shape()[..] else {
        panic!("{what}: a matrix")
    };
    assert_eq!(want.len(), rows * k, "{what}");
    let mut row = vec![0f32; k];
    for r in 0..rows {
        m.row_f32(r, &mut row);
        for (j, (a, b)) in row.iter().zip(&want[r * k..]).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{what} [{r}, {j}]: {a:e} vs {b:e}"
            );
        }
    }
}

/// The K-quants kept as stored: each type as the down projection (k = 256), imported, loaded and
/// dequantized against candle's values bit for bit.
#[test]
fn synthetic_k_quants_keep_blocks() {
    type Types = fn(&str) -> Option<GgmlDType>;
    let cases: [(QFormat, Types); 5] = [
        (QFormat::Q2K, |n| down(n, GgmlDType::Q2K)),
        (QFormat::Q3K, |n| down(n, GgmlDType::Q3K)),
        (QFormat::Q4K, |n| down(n, GgmlDType::Q4K)),
        (QFormat::Q5K, |n| down(n, GgmlDType::Q5K)),
        (QFormat::Q6K, |n| down(n, GgmlDType::Q6K)),
    ];
    fn down(name: &str, ty: GgmlDType) -> Option<GgmlDType> {
        match name.rsplit('.').nth(1)? {
            "ffn_down" => Some(ty),
            "token_embd" => Some(GgmlDType::Q8_0),
            _ => None,
        }
    }
    for (format, types) in cases {
        let mut s = Synth::llama_with(BLOCK_DIMS);
        s.random = true;
        s.types = types;
        let scratch = Scratch::new(format.name());
        let summary = import(&s, &scratch.0).unwrap();
        assert_eq!(summary.types[format.name()], 1, "{format}");
        let llama = load(&scratch.0.join("out"));
        let mut g = gguf::Gguf::open(&scratch.0.join("m.gguf")).unwrap();
        let down = &llama.layers[0].w_down;
        assert_eq!(down.type_name(), format.name());
        same_values(
            down,
            &g.read_f32("blk.0.ffn_down.weight").unwrap(),
            format.name(),
        );
    }
}

/// A GGUF written by hand (types candle-core cannot write): `metadata` and `tensors` as
/// `(name, shape outermost first, ggml type id, bytes)`, data aligned to 32 bytes.
pub(super) fn write_gguf(
    path: &Path,
    metadata: &[(&String, &crate::import::gguf_file::Value)],
    tensors: &[(String, Vec<usize>, u32, Vec<u8>)],
) {
    use crate::import::gguf_file::Value as V;
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn type_id(v: &V) -> u32 {
        match v {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::String(_) => 8,
            V::Array(_) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
        }
    }
    fn value(out: &mut Vec<u8>, v: &V) {
        match v {
            V::U8(x) => out.push(*x),
            V::I8(x) => out.push(*x as u8),
            V::U16(x) => out.extend(x.to_le_bytes()),
            V::I16(x) => out.extend(x.to_le_bytes()),
            V::U32(x) => out.extend(x.to_le_bytes()),
            V::I32(x) => out.extend(x.to_le_bytes()),
            V::U64(x) => out.extend(x.to_le_bytes()),
            V::I64(x) => out.extend(x.to_le_bytes()),
            V::F32(x) => out.extend(x.to_le_bytes()),
            V::F64(x) => out.extend(x.to_le_bytes()),
            V::Bool(x) => out.push(u8::from(*x)),
            V::String(s) => string(out, s),
            V::Array(a) => {
                out.extend(a.first().map_or(8, type_id).to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                a.iter().for_each(|v| value(out, v));
            }
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        string(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        value(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, shape, ty, bytes) in tensors {
        string(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (bytes.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, out).unwrap();
}

/// IQ4_NL and IQ4_XS, which candle-core's reader refuses: a GGUF holding them (written by hand)
/// imports with their blocks kept (planes equal to the blocks split, the model loads and
/// dequantizes to the `--dtype f32` import's values), and a tensor of a type edgeinfer does not
/// read is refused by name before anything is written.
#[test]
fn synthetic_iq4_keep_blocks() {
    use crate::import::gguf_file::TensorType;
    let scratch = Scratch::new("iq4");
    let mut s = Synth::llama_with(BLOCK_DIMS);
    s.random = true;
    let base = scratch.0.join("base.gguf");
    s.write(&base);
    let mut g = gguf::Gguf::open(&base).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // attn_q (k = 64) as IQ4_NL, ffn_down (k = 256) as IQ4_XS: random blocks with sane scales.
    let swap = |name: &str| match name {
        "blk.0.attn_q.weight" => Some((20u32, QFormat::Iq4Nl)),
        "blk.0.ffn_down.weight" => Some((23, QFormat::Iq4Xs)),
        _ => None,
    };
    let names: Vec<String> = g.header.tensors.keys().cloned().collect();
    let mut tensors = Vec::new();
    for name in &names {
        let info = g.info(name).unwrap().clone();
        let (ty, raw) = g.read_raw(name).unwrap();
        let id = match ty {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Quant(QFormat::Q8_0) => 8,
            other => panic!("{name}: {other:?} in the base file"),
        };
        let (id, bytes) = match swap(name) {
            None => (id, raw),
            Some((id, f)) => {
                let blocks = info.shape.iter().product::<usize>() / f.block_elems();
                let mut b: Vec<u8> = (0..blocks * f.bytes_per_block())
                    .map(|_| next() as u8)
                    .collect();
                for block in b.chunks_exact_mut(f.bytes_per_block()) {
                    let d = half::f16::from_f32((next() % 1000) as f32 * 1e-6 - 5e-4);
                    block[..2].copy_from_slice(&d.to_le_bytes());
                }
                (id, b)
            }
        };
        tensors.push((name.clone(), info.shape.clone(), id, bytes));
    }
    let meta: Vec<_> = g.header.metadata.iter().collect();
    let path = scratch.0.join("iq4.gguf");
    write_gguf(&path, &meta, &tensors);

    let out = scratch.0.join("out");
    let summary = import_gguf(&path, &out, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(summary.types["iq4_nl"], 1);
    assert_eq!(summary.types["iq4_xs"], 1);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (hf, gg) in [
        (
            "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_q.weight",
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            "blk.0.ffn_down.weight",
        ),
    ] {
        let (id, format) = swap(gg).unwrap();
        let (_, _, _, raw) = tensors.iter().find(|t| t.0 == gg).unwrap();
        let shape = &tensors.iter().find(|t| t.0 == gg).unwrap().1;
        let (rows, k) = (shape[0], shape[1]);
        let mut want = weights::split_blocks(format, raw, rows, k).unwrap();
        if gg.contains("attn_q") {
            let nb = k / format.block_elems();
            want.qs = gguf::unpermute_rows(&want.qs, 2, rows, nb * format.qs_bytes_per_block());
            want.d = gguf::unpermute_rows(&want.d, 2, rows, nb);
            want.aux = gguf::unpermute_rows(&want.aux, 2, rows, nb * format.aux_bytes_per_block());
        }
        let [qs, scales, _] = edgeinfer_models::matrix::plane_names(hf);
        assert_eq!(st.tensor(&qs).unwrap().data(), &want.qs[..], "{hf} ({id})");
        assert_eq!(
            st.tensor(&scales).unwrap().data(),
            bytemuck::cast_slice::<_, u8>(&want.d),
            "{hf}"
        );
        if format.aux_bytes_per_block() > 0 {
            let aux = edgeinfer_models::matrix::aux_name(hf);
            assert_eq!(st.tensor(&aux).unwrap().data(), &want.aux[..], "{hf}");
        }
    }
    // Loads; the down projection dequantizes to the values an F32 import writes.
    let llama = load(&out);
    assert_eq!(llama.layers[0].wq.type_name(), "iq4_nl");
    assert_eq!(llama.layers[0].w_down.type_name(), "iq4_xs");
    let dense = scratch.0.join("dense");
    let opts = ImportOptions {
        dtype: ImportDType::F32,
        ..ImportOptions::default()
    };
    import_gguf(&path, &dense, &opts, &mut |_| {}).unwrap();
    let want = f32_tensor(&dense, "model.layers.0.mlp.down_proj.weight");
    same_values(&llama.layers[0].w_down, &want, "iq4_xs down_proj");

    // A type this build does not read (IQ2_XXS, id 16) is refused by name; nothing is written.
    let mut bad = tensors.clone();
    bad.iter_mut()
        .find(|t| t.0 == "blk.0.ffn_down.weight")
        .unwrap()
        .2 = 16;
    let bad_path = scratch.0.join("iq2.gguf");
    write_gguf(&bad_path, &meta, &bad);
    let err = import_gguf(
        &bad_path,
        &scratch.0.join("bad"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ImportError::Tensor { name, .. } if name == "blk.0.ffn_down.weight")
            && msg.contains("IQ2_XXS"),
        "{msg}"
    );
    assert!(!scratch.0.join("bad").join("config.json").exists());
}
