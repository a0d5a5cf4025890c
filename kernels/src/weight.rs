//! Typed, borrowed views of weight matrices as they lie in the mapped file.

use half::{bf16, f16};

/// Element types a weight can have on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A row-major block of weights: `len / cols` rows of `cols` elements.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> WeightRef<'a> {
    pub fn dtype(&self) -> DType {
        match self {
            WeightRef::F32(_) => DType::F32,
            WeightRef::F16(_) => DType::F16,
            WeightRef::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightRef::F32(w) => w.len(),
            WeightRef::F16(w) => w.len(),
            WeightRef::BF16(w) => w.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `range` (in elements, not bytes).
    pub fn slice(&self, range: std::ops::Range<usize>) -> WeightRef<'a> {
        match *self {
            WeightRef::F32(w) => WeightRef::F32(&w[range]),
            WeightRef::F16(w) => WeightRef::F16(&w[range]),
            WeightRef::BF16(w) => WeightRef::BF16(&w[range]),
        }
    }

    /// Rows `rows` of a matrix with `cols` columns.
    pub fn rows(&self, rows: std::ops::Range<usize>, cols: usize) -> WeightRef<'a> {
        self.slice(rows.start * cols..rows.end * cols)
    }

    /// Converts elements into `out` (which sets how many).
    pub fn to_f32(&self, out: &mut [f32]) {
        match self {
            WeightRef::F32(w) => out.copy_from_slice(&w[..out.len()]),
            WeightRef::F16(w) => {
                for (o, v) in out.iter_mut().zip(w.iter()) {
                    *o = v.to_f32();
                }
            }
            WeightRef::BF16(w) => {
                for (o, v) in out.iter_mut().zip(w.iter()) {
                    *o = v.to_f32();
                }
            }
        }
    }

    /// One element as f32 (slow path; for tests and small vectors).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            WeightRef::F32(w) => w[i],
            WeightRef::F16(w) => w[i].to_f32(),
            WeightRef::BF16(w) => w[i].to_f32(),
        }
    }
}
