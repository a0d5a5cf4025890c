//! The GGUF container, read by us: header, metadata, tensor infos, and where each tensor's bytes
//! lie. (candle-core's reader refuses a whole file when one tensor has a type it does not know,
//! IQ4_NL and IQ4_XS among them, which are what people download for ARM; this reader records every
//! type id and refuses only the tensors it cannot convert, by name.)
//!
//! Layout (GGUF versions 2 and 3, little-endian): magic `GGUF`, `u32` version, `u64` tensor
//! count, `u64` metadata count; metadata as (string key, `u32` type, value); tensor infos as
//! (string name, `u32` dimension count, that many `u64` dimensions innermost first, `u32` ggml type,
//! `u64` offset); then the data section, at the next multiple of `general.alignment` (default 32),
//! each tensor at its offset from there. Strings are a `u64` length and UTF-8 bytes.
//!
//! Everything read is bounded by the file's size before anything is allocated, so a corrupt or
//! hostile header fails with a message, never an out-of-memory abort (see `fuzz/`'s `gguf` target).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};

use edgeinfer_kernels::quant::QFormat;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// GGUF's name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

/// A tensor's element type: ggml's type id, with what this build knows of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    /// A block format edgeinfer reads (kept as stored on import).
    Quant(QFormat),
    /// Any other ggml type id (Q8_1, Q8_K, the IQ1–IQ3 types, integer types, …): the tensor
    /// cannot be converted, and says so by its id.
    Other(u32),
}

impl TensorType {
    pub fn from_id(id: u32) -> TensorType {
        match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            30 => TensorType::BF16,
            2 => TensorType::Quant(QFormat::Q4_0),
            3 => TensorType::Quant(QFormat::Q4_1),
            6 => TensorType::Quant(QFormat::Q5_0),
            7 => TensorType::Quant(QFormat::Q5_1),
            8 => TensorType::Quant(QFormat::Q8_0),
            10 => TensorType::Quant(QFormat::Q2K),
            11 => TensorType::Quant(QFormat::Q3K),
            12 => TensorType::Quant(QFormat::Q4K),
            13 => TensorType::Quant(QFormat::Q5K),
            14 => TensorType::Quant(QFormat::Q6K),
            20 => TensorType::Quant(QFormat::Iq4Nl),
            23 => TensorType::Quant(QFormat::Iq4Xs),
            other => TensorType::Other(other),
        }
    }

    /// ggml's name of the type (`Q4_K`, `IQ4_NL`, `F16`, …; `type 16` for ids this build does not
    /// name).
    pub fn name(self) -> String {
        match self {
            TensorType::F32 => "F32".into(),
            TensorType::F16 => "F16".into(),
            TensorType::BF16 => "BF16".into(),
            TensorType::Quant(f) => f.name().to_ascii_uppercase(),
            TensorType::Other(id) => match id {
                9 => "Q8_1".into(),
                15 => "Q8_K".into(),
                16 => "IQ2_XXS".into(),
                17 => "IQ2_XS".into(),
                18 => "IQ3_XXS".into(),
                19 => "IQ1_S".into(),
                21 => "IQ3_S".into(),
                22 => "IQ2_S".into(),
                29 => "IQ1_M".into(),
                34 => "TQ1_0".into(),
                35 => "TQ2_0".into(),
                39 => "MXFP4".into(),
                id => format!("type {id}"),
            },
        }
    }

    /// `(elements per block, bytes per block)`, for the types this build reads.
    fn block(self) -> Option<(usize, usize)> {
        match self {
            TensorType::F32 => Some((1, 4)),
            TensorType::F16 | TensorType::BF16 => Some((1, 2)),
            TensorType::Quant(f) => Some((f.block_elems(), f.bytes_per_block())),
            TensorType::Other(_) => None,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub ty: TensorType,
    /// Outermost first (`[rows, columns]` for a matrix): GGUF's dimensions reversed.
    pub shape: Vec<usize>,
    /// Offset of the first byte in the file.
    pub start: u64,
}

impl TensorInfo {
    /// Bytes of the tensor, when its type is one this build reads and its row length a whole
    /// number of blocks.
    pub fn byte_len(&self) -> Result<usize, String> {
        let (block, bytes) = self.ty.block().ok_or_else(|| {
            format!(
                "{} is a type edgeinfer does not read (re-quantize the model to Q4_K_M, IQ4_NL, Q8_0 or F16 with llama.cpp's llama-quantize)",
                self.ty.name()
            )
        })?;
        let cols = self.shape.last().copied().unwrap_or(1);
        if !cols.is_multiple_of(block) {
            return Err(format!(
                "{} rows of {cols} elements are not whole {block}-element blocks",
                self.ty.name()
            ));
        }
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(bytes))
            .ok_or_else(|| format!("shape {:?} overflows", self.shape))
    }
}

/// A parsed header.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    /// File size, which bounds every tensor.
    pub file_len: u64,
}

/// Deepest nesting of metadata arrays accepted (GGUF writers use one level).
const MAX_DEPTH: usize = 4;

struct Reader<'r, R> {
    r: &'r mut R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<'_, R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(format!(
                "{what} of {n} bytes at byte {} runs past the end of the file ({} bytes)",
                self.pos, self.len
            ));
        }
        let mut buf = vec![0; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what} at byte {}: {e}", self.pos))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let b = self.bytes(N as u64, what)?;
        Ok(b.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| format!("{what} at byte {} is not UTF-8", self.pos))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => Value::Bool(match self.array::<1>(what)?[0] {
                0 => false,
                1 => true,
                b => return Err(format!("{what}: {b} is not a bool")),
            }),
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{what}: arrays nested more than {MAX_DEPTH} deep"));
                }
                let inner = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte: a count beyond the bytes left is corrupt.
                if n > self.len.saturating_sub(self.pos) {
                    return Err(format!(
                        "{what}: an array of {n} elements cannot fit in the rest of the file"
                    ));
                }
                let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    out.push(self.value(inner, what, depth + 1)?);
                }
                Value::Array(out)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("{what}: unknown metadata type {other}")),
        })
    }
}

/// Reads the header of the GGUF in `r` (of `file_len` bytes), positioned at its start.
pub fn read_header<R: Read>(r: &mut R, file_len: u64) -> Result<Header, String> {
    let mut rd = Reader {
        r,
        pos: 0,
        len: file_len,
    };
    if &rd.array::<4>("the magic number")? != b"GGUF" {
        return Err("does not start with `GGUF`".into());
    }
    let version = rd.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version}; versions 2 and 3 are read (convert older files with llama.cpp)"
        ));
    }
    let tensor_count = rd.u64("the tensor count")?;
    let kv_count = rd.u64("the metadata count")?;
    let mut metadata = HashMap::new();
    for i in 0..kv_count {
        let key = rd.string(&format!("metadata key {i}"))?;
        let ty = rd.u32(&format!("the type of `{key}`"))?;
        let v = rd.value(ty, &format!("metadata `{key}`"), 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(format!("metadata `{key}` appears twice"));
        }
    }
    let mut infos = Vec::new();
    for i in 0..tensor_count {
        let name = rd.string(&format!("the name of tensor {i}"))?;
        let what = format!("tensor `{name}`");
        let dims = rd.u32(&what)?;
        if dims > 4 {
            return Err(format!("{what} has {dims} dimensions (GGUF allows 4)"));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            let d = rd.u64(&what)?;
            shape.push(usize::try_from(d).map_err(|_| format!("{what}: dimension {d} too large"))?);
        }
        shape.reverse();
        let ty = TensorType::from_id(rd.u32(&what)?);
        let offset = rd.u64(&what)?;
        infos.push((name, shape, ty, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
        Some(v) => return Err(format!("`general.alignment` is {v:?}, not a power of two")),
    };
    let data = rd.pos.div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, shape, ty, offset) in infos {
        // Whether the bytes lie inside the file is checked per tensor when it is used
        // (`TensorInfo::byte_len` and `read_tensor`), so that the error names the tensor.
        let start = data
            .checked_add(offset)
            .ok_or_else(|| format!("tensor `{name}`: offset {offset} overflows"))?;
        let info = TensorInfo { ty, shape, start };
        if tensors.insert(name.clone(), info).is_some() {
            return Err(format!("tensor `{name}` appears twice"));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        file_len,
    })
}

/// The bytes of tensor `info` from `r` (the whole file), checked against the file's size.
pub fn read_tensor<R: Read + Seek>(
    r: &mut R,
    h: &Header,
    info: &TensorInfo,
) -> Result<Vec<u8>, String> {
    let len = info.byte_len()?;
    if (len as u64) > h.file_len.saturating_sub(info.start) {
        return Err(format!(
            "its {len} bytes at byte {} run past the end of the file ({} bytes)",
            info.start, h.file_len
        ));
    }
    r.seek(SeekFrom::Start(info.start))
        .map_err(|e| format!("seeking to byte {}: {e}", info.start))?;
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)
        .map_err(|e| format!("reading {len} bytes at byte {}: {e}", info.start))?;
    Ok(buf)
}
