//! Writing `model.safetensors`: how each GGUF tensor is stored (see the table in the
//! [module docs](super)), then one tensor at a time converted and streamed out by
//! [`crate::store::write_model`], so peak memory is one tensor, not the model.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use edgeinfer_kernels::quant::{kquant, QFormat, QLayout};
use half::f16;
use safetensors::Dtype;

use super::gguf::{unpermute_rows, Gguf, Rows, TensorPlan};
use super::gguf_file::TensorType;
use super::{ImportDType, ImportError, ImportProgress};
use crate::store::{self, Data, Entry, QPlanes, StoredAs, WriteStats};

/// Every planned tensor is present with its expected shape and of a type this build reads; nothing
/// else is in the file but the tensors `consumed` as metadata (Llama 3's
/// `rope_freqs.weight`).
pub(crate) fn check_plan(
    g: &Gguf,
    plan: &[TensorPlan],
    consumed: &[String],
) -> Result<(), ImportError> {
    for t in plan {
        let got = g.shape(&t.gguf).ok_or_else(|| ImportError::MissingTensor {
            path: g.path.clone(),
            name: t.gguf.clone(),
        })?;
        if got != t.shape {
            return Err(ImportError::Shape {
                path: g.path.clone(),
                name: t.gguf.clone(),
                expected: t.shape.clone(),
                got,
            });
        }
        // The type and shape here; whether the bytes lie inside the file when they are read.
        g.header.tensors[&t.gguf]
            .byte_len()
            .map_err(|reason| ImportError::Tensor {
                path: g.path.clone(),
                name: t.gguf.clone(),
                reason,
            })?;
    }
    let planned: HashSet<&str> = plan
        .iter()
        .map(|t| t.gguf.as_str())
        .chain(consumed.iter().map(String::as_str))
        .collect();
    let mut extra: Vec<&String> = g
        .header
        .tensors
        .keys()
        .filter(|n| !planned.contains(n.as_str()))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(ImportError::UnexpectedTensor {
            path: g.path.clone(),
            name: name.to_string(),
        });
    }
    Ok(())
}

/// How one tensor is converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Dequantize to f32 and encode as this dense dtype.
    Dense(Dtype),
    /// Copy the dense GGUF elements as they are (F32, F16, BF16 under `Native`).
    Copy(Dtype),
    /// Split the ggml blocks into `rowsplit` planes, bit-exact.
    Split(QFormat),
}

/// The conversion of a tensor of GGUF type `ty` and `shape` under `dtype` (`ty` one this build
/// reads: [`check_plan`] refused the others).
pub(crate) fn conversion(ty: TensorType, shape: &[usize], dtype: ImportDType) -> Conversion {
    let dense = |d| Conversion::Dense(d);
    match dtype {
        ImportDType::F32 => return dense(Dtype::F32),
        ImportDType::F16 => return dense(Dtype::F16),
        ImportDType::Bf16 => return dense(Dtype::BF16),
        ImportDType::Native => {}
    }
    if shape.len() != 2 {
        return dense(Dtype::F32);
    }
    match ty {
        TensorType::F32 => Conversion::Copy(Dtype::F32),
        TensorType::F16 => Conversion::Copy(Dtype::F16),
        TensorType::BF16 => Conversion::Copy(Dtype::BF16),
        // Every block format is kept as stored; k is a whole number of blocks (`check_plan`).
        TensorType::Quant(format) => Conversion::Split(format),
        TensorType::Other(_) => dense(Dtype::F32),
    }
}

/// A tensor of the output: the plan, its GGUF type and how it is converted.
pub(crate) struct Planned<'p> {
    pub plan: &'p TensorPlan,
    pub conv: Conversion,
    /// Where its blocks go (`rows8` only for matrices that fit it).
    pub layout: QLayout,
}

impl Planned<'_> {
    fn entry(&self) -> Entry {
        let name = self.plan.hf.clone();
        let stored = match self.conv {
            Conversion::Dense(dtype) | Conversion::Copy(dtype) => StoredAs::Dense {
                dtype,
                shape: self.plan.shape.clone(),
            },
            Conversion::Split(format) => StoredAs::Quant {
                format,
                rows: self.plan.shape[0],
                k: self.plan.shape[1],
                layout: self.layout,
            },
        };
        Entry { name, stored }
    }
}

/// Decides every tensor's conversion (shapes were checked by [`check_plan`]).
pub(crate) fn plan_conversions<'p>(
    g: &Gguf,
    plan: &'p [TensorPlan],
    dtype: ImportDType,
    layout: QLayout,
) -> Vec<Planned<'p>> {
    plan.iter()
        .map(|t| {
            let conv = conversion(g.header.tensors[&t.gguf].ty, &t.shape, dtype);
            let layout = match conv {
                Conversion::Split(f) if layout.fits(f, t.shape[0], t.shape[1]) => layout,
                _ => QLayout::RowSplit,
            };
            Planned {
                plan: t,
                conv,
                layout,
            }
        })
        .collect()
}

/// `quantization_config` for `config.json` when some matrices are quantized: the format holding most
/// parameters, plus the number of matrices in each format.
pub(crate) fn quantization_config(planned: &[Planned<'_>]) -> Option<serde_json::Value> {
    let mut params: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut top: Option<(usize, QFormat)> = None;
    for p in planned {
        if let Conversion::Split(f) = p.conv {
            let n = p.plan.shape.iter().product::<usize>();
            let e = params.entry(f.name()).or_default();
            *e = (e.0 + 1, e.1 + n);
            if top.is_none_or(|(best, _)| e.1 > best) {
                top = Some((e.1, f));
            }
        }
    }
    let (_, format) = top?;
    let layout = match planned.iter().any(|p| p.layout == QLayout::Rows8) {
        true => QLayout::Rows8,
        false => QLayout::RowSplit,
    };
    let mut q = crate::quantize::quantization_config(format, layout);
    let counts: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(f, (n, _))| (f.to_string(), (*n).into()))
        .collect();
    q["formats"] = counts.into();
    Some(q)
}

pub(crate) struct Written {
    pub stats: WriteStats,
}

/// Write `planned` from `gguf` to `path` as safetensors.
pub(crate) fn write_safetensors(
    mut gguf: Gguf,
    planned: &[Planned<'_>],
    path: &Path,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<Written, ImportError> {
    let entries: Vec<Entry> = planned.iter().map(Planned::entry).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let total = planned.len();
    let stats = store::write_model(path, &entries, &meta, |i, _| {
        let data = convert(&mut gguf, &planned[i])?;
        progress(ImportProgress {
            index: i,
            total,
            name: planned[i].plan.hf.clone(),
        });
        Ok::<_, ImportError>(data)
    })?;
    Ok(Written { stats })
}

fn convert(g: &mut Gguf, p: &Planned<'_>) -> Result<Data, ImportError> {
    let t = p.plan;
    let unpermute = |data, row_len| reorder_rows(t, data, row_len);
    let unpermute16 = |data, row_len| reorder_rows::<f16>(t, data, row_len);
    Ok(match p.conv {
        Conversion::Dense(dtype) => {
            let values = reorder_rows::<f32>(t, g.read_f32(&t.gguf)?, cols(t));
            Data::Dense(encode(&values, dtype))
        }
        Conversion::Copy(_) => {
            let (_, raw) = g.read_raw(&t.gguf)?;
            let row_bytes = raw.len() / t.shape[0].max(1);
            Data::Dense(unpermute(raw, row_bytes))
        }
        Conversion::Split(format) => {
            let (_, raw) = g.read_raw(&t.gguf)?;
            let (rows, k) = (t.shape[0], t.shape[1]);
            let planes =
                split_blocks(format, &raw, rows, k).map_err(|reason| ImportError::Metadata {
                    path: g.path.clone(),
                    key: t.gguf.clone(),
                    reason,
                })?;
            let nb = k / format.block_elems();
            Data::Quant(QPlanes {
                qs: unpermute(planes.qs, nb * format.qs_bytes_per_block()),
                d: unpermute16(planes.d, nb),
                m: if format.has_min() {
                    unpermute16(planes.m, nb)
                } else {
                    planes.m
                },
                aux: unpermute(planes.aux, nb * format.aux_bytes_per_block()),
            })
        }
    })
}

/// `data` (rows of `row_len` elements) in Hugging Face row order.
fn reorder_rows<T: Copy>(t: &TensorPlan, data: Vec<T>, row_len: usize) -> Vec<T> {
    match t.rows {
        Rows::AsIs => data,
        Rows::Unpermute { heads } => unpermute_rows(&data, heads, t.shape[0], row_len),
    }
}

/// Elements per row (1 for a 1-D tensor, which is never permuted).
fn cols(t: &TensorPlan) -> usize {
    t.shape.get(1).copied().unwrap_or(1)
}

/// ggml's array of blocks, row-major, split into the `rowsplit` planes by
/// [`QFormat::ggml_fields`]: every field's bytes copied unchanged (the nibble and bit orders are
/// ggml's in both), so joining the planes gives the blocks back.
pub(crate) fn split_blocks(
    format: QFormat,
    raw: &[u8],
    rows: usize,
    k: usize,
) -> Result<QPlanes, String> {
    let blocks = rows * (k / format.block_elems());
    let bb = format.bytes_per_block();
    if raw.len() != blocks * bb {
        return Err(format!(
            "{format} [{rows}, {k}] needs {} bytes of blocks, found {}",
            blocks * bb,
            raw.len()
        ));
    }
    let mut p = QPlanes {
        qs: Vec::with_capacity(blocks * format.qs_bytes_per_block()),
        d: Vec::with_capacity(blocks),
        m: Vec::with_capacity(if format.has_min() { blocks } else { 0 }),
        aux: Vec::with_capacity(blocks * format.aux_bytes_per_block()),
    };
    kquant::split_ggml_blocks(format, raw, &mut p.qs, &mut p.aux, &mut p.d, &mut p.m);
    Ok(p)
}

fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => bytemuck::cast_slice(values).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_table() {
        use Conversion::*;
        let m = [64, 64];
        let n = ImportDType::Native;
        let q = TensorType::Quant;
        for f in QFormat::ALL {
            assert_eq!(conversion(q(f), &[64, 256], n), Split(f), "{f}");
        }
        assert_eq!(TensorType::from_id(20), q(QFormat::Iq4Nl));
        assert_eq!(TensorType::from_id(12), q(QFormat::Q4K));
        assert_eq!(TensorType::from_id(16).name(), "IQ2_XXS");
        assert_eq!(conversion(TensorType::F16, &m, n), Copy(Dtype::F16));
        assert_eq!(conversion(TensorType::F16, &[64], n), Dense(Dtype::F32));
        assert_eq!(conversion(TensorType::F32, &[8, 8], n), Copy(Dtype::F32));
        let f = ImportDType::Bf16;
        assert_eq!(conversion(q(QFormat::Q4_1), &m, f), Dense(Dtype::BF16));
    }

    #[test]
    fn split_q4_1_blocks() {
        // Two blocks of one row: d, m, 16 quant bytes each.
        let mut raw = Vec::new();
        for b in 0..2u8 {
            raw.extend(f16::from_f32(0.5 + b as f32).to_le_bytes());
            raw.extend(f16::from_f32(-1.0 - b as f32).to_le_bytes());
            raw.extend((0..16).map(|j| j + 16 * b));
        }
        let p = split_blocks(QFormat::Q4_1, &raw, 1, 64).unwrap();
        assert_eq!(p.d, [f16::from_f32(0.5), f16::from_f32(1.5)]);
        assert_eq!(p.m, [f16::from_f32(-1.0), f16::from_f32(-2.0)]);
        assert_eq!(p.qs, (0..32).collect::<Vec<u8>>());
        assert!(split_blocks(QFormat::Q4_1, &raw[1..], 1, 64).is_err());
    }
}
