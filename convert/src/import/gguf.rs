//! Reading a GGUF file: typed metadata access, the llama.cpp → Hugging Face tensor-name map, and
//! dequantization with llama.cpp's Q/K row permutation undone.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use edgeinfer_kernels::quant::QWeight;
use edgeinfer_models::Arch;
use half::{bf16, f16};

use super::gguf_file::{self, Header, TensorInfo, TensorType, Value};
use super::ImportError;

/// An open GGUF file: its parsed header and a reader positioned anywhere.
pub(crate) struct Gguf {
    pub path: PathBuf,
    pub header: Header,
    reader: BufReader<File>,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Gguf, ImportError> {
        let io = |source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let header =
            gguf_file::read_header(&mut reader, len).map_err(|reason| ImportError::Gguf {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(Gguf {
            path: path.to_path_buf(),
            header,
            reader,
        })
    }

    /// The header entry of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.get(name)
    }

    fn meta_err(&self, key: &str, reason: impl Into<String>) -> ImportError {
        ImportError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata.get(key)
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => {
                Err(self.meta_err(key, format!("expected a string, found {:?}", v.type_name())))
            }
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, ImportError> {
        self.opt_str(key)?
            .ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// Any non-negative integer type (writers disagree on u32 vs u64 vs i32).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_u64(v).map(Some).ok_or_else(|| {
                self.meta_err(key, format!("expected a non-negative integer, found {v:?}"))
            }),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64, ImportError> {
        self.opt_u64(key)?
            .ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A dimension: a positive integer that fits a `usize`.
    pub fn dim(&self, key: &str) -> Result<usize, ImportError> {
        let v = self.u64(key)?;
        usize::try_from(v)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| self.meta_err(key, format!("{v} is not a valid dimension")))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            // Through the shortest decimal form, so that an f32 `1e-5` is written as 1e-5, not 9.99999974e-6.
            Some(Value::F32(v)) => Ok(Some(v.to_string().parse().unwrap_or(f64::from(*v)))),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(v) => {
                Err(self.meta_err(key, format!("expected a float, found {:?}", v.type_name())))
            }
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => {
                Err(self.meta_err(key, format!("expected a bool, found {:?}", v.type_name())))
            }
        }
    }

    pub fn opt_token_id(&self, key: &str, vocab: usize) -> Result<Option<u32>, ImportError> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(id) if id < vocab as u64 => Ok(Some(id as u32)),
            Some(id) => Err(self.meta_err(
                key,
                format!("token id {id} is outside the vocabulary of {vocab}"),
            )),
        }
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, ImportError> {
        let arr = self.array(key)?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(self.meta_err(
                    key,
                    format!("element {i}: expected a string, found {:?}", v.type_name()),
                )),
            })
            .collect()
    }

    pub fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i64>>, ImportError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        let arr = self.array(key)?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                value_i64(v).ok_or_else(|| {
                    self.meta_err(
                        key,
                        format!("element {i}: expected an integer, found {v:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn array(&self, key: &str) -> Result<&Vec<Value>, ImportError> {
        match self.get(key) {
            None => Err(self.meta_err(key, "missing")),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => {
                Err(self.meta_err(key, format!("expected an array, found {:?}", v.type_name())))
            }
        }
    }

    /// The shape of a tensor, outermost first (`[out, in]`).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|t| t.shape.clone())
    }

    fn tensor_err(&self, name: &str, reason: String) -> ImportError {
        ImportError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            reason,
        }
    }

    /// One tensor's bytes exactly as stored: ggml blocks for quantized types, little-endian elements
    /// for dense ones, row-major in `shape(name)` order.
    pub fn read_raw(&mut self, name: &str) -> Result<(TensorType, Vec<u8>), ImportError> {
        let info = self
            .info(name)
            .cloned()
            .ok_or_else(|| self.tensor_err(name, "not in the file".into()))?;
        let bytes = gguf_file::read_tensor(&mut self.reader, &self.header, &info)
            .map_err(|reason| self.tensor_err(name, reason))?;
        Ok((info.ty, bytes))
    }

    /// Read and dequantize one tensor to f32, row-major in `shape(name)` order (the block formats
    /// by the kernels' dequantizers, which give ggml's values bit for bit).
    pub fn read_f32(&mut self, name: &str) -> Result<Vec<f32>, ImportError> {
        let (ty, raw) = self.read_raw(name)?;
        Ok(match ty {
            TensorType::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TensorType::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            TensorType::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            TensorType::Quant(format) => {
                let shape = self.shape(name).unwrap_or_default();
                let k = shape.last().copied().unwrap_or(1);
                let rows = shape.iter().rev().skip(1).product::<usize>();
                let p = super::weights::split_blocks(format, &raw, rows, k)
                    .map_err(|reason| self.tensor_err(name, reason))?;
                let w = QWeight::with_aux(format, rows, k, &p.qs, &p.aux, &p.d, &p.m)
                    .map_err(|e| self.tensor_err(name, e.to_string()))?;
                let mut out = vec![0f32; rows * k];
                for (r, row) in out.chunks_exact_mut(k).enumerate() {
                    w.dequantize_row(r, row);
                }
                out
            }
            // `read_raw` refuses the types this build cannot read.
            TensorType::Other(_) => unreachable!("read_raw returned a {} tensor", ty.name()),
        })
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn value_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

/// How a tensor's rows must be reordered on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    AsIs,
    /// Undo llama.cpp's rotary interleave; the value is the number of heads the rows split into.
    Unpermute {
        heads: usize,
    },
}

/// One tensor to copy: GGUF name, Hugging Face name, expected `[out, in]` shape.
#[derive(Clone, Debug)]
pub(crate) struct TensorPlan {
    pub gguf: String,
    pub hf: String,
    pub shape: Vec<usize>,
    pub rows: Rows,
}

/// Dimensions the tensor plan needs.
pub(crate) struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Every tensor a GGUF of `arch` must hold, in checkpoint order. `tied` is true when there is no
/// `output.weight` and the output projection reuses the embedding.
///
/// Only llama.cpp's `llama` models have their Q/K rows permuted (it runs them with adjacent-pair
/// RoPE); Qwen2 and Qwen3 use the NeoX (half-rotation) RoPE that Hugging Face uses, so their rows are
/// stored as they are. Qwen2 adds `attn_{q,k,v}.bias`, Qwen3 `attn_{q,k}_norm.weight` (per head).
pub(crate) fn plan(arch: Arch, d: &Dims, tied: bool) -> Vec<TensorPlan> {
    let q_dim = d.heads * d.head_dim;
    let kv_dim = d.kv_heads * d.head_dim;
    let permuted = |heads| match arch {
        Arch::Llama => Rows::Unpermute { heads },
        Arch::Qwen2 | Arch::Qwen3 => Rows::AsIs,
    };
    let t = |gguf: String, hf: String, shape: Vec<usize>, rows| TensorPlan {
        gguf,
        hf,
        shape,
        rows,
    };
    let mut plan = vec![t(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![d.vocab, d.hidden],
        Rows::AsIs,
    )];
    for l in 0..d.layers {
        // (GGUF name, Hugging Face name, shape, row order), weights unless the names say otherwise.
        let mut add = |gguf: &str, hf: &str, shape: Vec<usize>, rows| {
            let full = |n: &str| {
                if n.ends_with(".bias") {
                    n.to_string()
                } else {
                    format!("{n}.weight")
                }
            };
            plan.push(t(
                format!("blk.{l}.{}", full(gguf)),
                format!("model.layers.{l}.{}", full(hf)),
                shape,
                rows,
            ));
        };
        add("attn_norm", "input_layernorm", vec![d.hidden], Rows::AsIs);
        add(
            "attn_q",
            "self_attn.q_proj",
            vec![q_dim, d.hidden],
            permuted(d.heads),
        );
        add(
            "attn_k",
            "self_attn.k_proj",
            vec![kv_dim, d.hidden],
            permuted(d.kv_heads),
        );
        add(
            "attn_v",
            "self_attn.v_proj",
            vec![kv_dim, d.hidden],
            Rows::AsIs,
        );
        if arch.qkv_bias() {
            add(
                "attn_q.bias",
                "self_attn.q_proj.bias",
                vec![q_dim],
                Rows::AsIs,
            );
            add(
                "attn_k.bias",
                "self_attn.k_proj.bias",
                vec![kv_dim],
                Rows::AsIs,
            );
            add(
                "attn_v.bias",
                "self_attn.v_proj.bias",
                vec![kv_dim],
                Rows::AsIs,
            );
        }
        if arch.qk_norm() {
            add(
                "attn_q_norm",
                "self_attn.q_norm",
                vec![d.head_dim],
                Rows::AsIs,
            );
            add(
                "attn_k_norm",
                "self_attn.k_norm",
                vec![d.head_dim],
                Rows::AsIs,
            );
        }
        add(
            "attn_output",
            "self_attn.o_proj",
            vec![d.hidden, q_dim],
            Rows::AsIs,
        );
        add(
            "ffn_norm",
            "post_attention_layernorm",
            vec![d.hidden],
            Rows::AsIs,
        );
        add(
            "ffn_gate",
            "mlp.gate_proj",
            vec![d.intermediate, d.hidden],
            Rows::AsIs,
        );
        add(
            "ffn_up",
            "mlp.up_proj",
            vec![d.intermediate, d.hidden],
            Rows::AsIs,
        );
        add(
            "ffn_down",
            "mlp.down_proj",
            vec![d.hidden, d.intermediate],
            Rows::AsIs,
        );
    }
    plan.push(t(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![d.hidden],
        Rows::AsIs,
    ));
    if !tied {
        plan.push(t(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![d.vocab, d.hidden],
            Rows::AsIs,
        ));
    }
    plan
}

/// Invert llama.cpp's Q/K permutation.
///
/// Hugging Face Llama rotates the two halves of each head (`x[i]` pairs with `x[i + d/2]`); llama.cpp
/// rotates adjacent pairs (`x[2i]` with `x[2i + 1]`), so its converter reorders the rows of
/// `q_proj`/`k_proj` within each head of `d` rows:
///
/// `gguf[h·d + 2i + s] = hf[h·d + s·d/2 + i]`   for `s ∈ {0, 1}`, `i < d/2`.
///
/// This returns `hf` from `gguf`. `data` is `rows × cols` row-major; `rows = heads × d` with `d` even
/// (the caller checks shapes before calling).
pub(crate) fn unpermute_rows<T: Copy>(
    data: &[T],
    heads: usize,
    rows: usize,
    cols: usize,
) -> Vec<T> {
    debug_assert_eq!(data.len(), rows * cols);
    let d = rows / heads;
    let half = d / 2;
    let mut out = Vec::with_capacity(data.len());
    // Destination rows in order: head h, half s, index i is GGUF row h·d + 2i + s.
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                let src = h * d + 2 * i + s;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward permutation as llama.cpp's converter writes it: reshape(heads, 2, d/2, cols), swap axes 1 and 2.
    fn permute_rows(hf: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
        let d = rows / heads;
        let half = d / 2;
        let mut out = vec![0f32; hf.len()];
        for h in 0..heads {
            for i in 0..half {
                for s in 0..2 {
                    let dst = h * d + i * 2 + s;
                    let src = h * d + s * half + i;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_permute() {
        for (heads, d, cols) in [(1, 2, 1), (3, 4, 5), (9, 64, 3), (2, 8, 1)] {
            let rows = heads * d;
            let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let gguf = permute_rows(&hf, heads, rows, cols);
            assert_eq!(
                unpermute_rows(&gguf, heads, rows, cols),
                hf,
                "heads={heads} d={d} cols={cols}"
            );
        }
    }

    #[test]
    fn unpermute_row_mapping() {
        // One head of 4 rows, one column: gguf rows [a0, b0, a1, b1] become [a0, a1, b0, b1].
        assert_eq!(
            unpermute_rows(&[0.0, 1.0, 2.0, 3.0], 1, 4, 1),
            vec![0.0, 2.0, 1.0, 3.0]
        );
    }
}
