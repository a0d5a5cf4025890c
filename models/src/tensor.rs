//! Weights as typed views into memory the model does not own (normally a read-only file mapping).
//!
//! A [`Tensor`] is validated once, when it is made: the byte range lies inside its storage, its length
//! is exactly `shape × dtype size`, and its start is aligned for its element type. After that,
//! [`Tensor::view`] is a free reinterpretation of the bytes — nothing is ever copied.

use std::ops::Range;
use std::sync::Arc;

use edgeinfer_kernels::{DType, WeightRef};
use half::{bf16, f16};

use crate::error::ModelError;

/// Shared, immutable bytes that tensors point into (a `memmap2::Mmap`, or a `Vec<u8>` in tests).
pub type Storage = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where tensors come from: one lookup per name, done at load time.
pub trait TensorSource {
    /// A dense tensor (F32, F16 or BF16).
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError>;

    /// A weight matrix, dense or quantized (see [`crate::matrix`] for how quantized ones are stored).
    /// The default knows only dense tensors.
    fn matrix(&self, name: &str) -> Result<crate::matrix::Matrix, ModelError> {
        self.tensor(name).map(crate::matrix::Matrix::Dense)
    }
}

#[derive(Clone)]
pub struct Tensor {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
    range: Range<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.range.len())
            .finish()
    }
}

impl Tensor {
    /// Validates and wraps `storage[range]` as a tensor of `dtype` and `shape`.
    pub fn new(
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        storage: Storage,
        range: Range<usize>,
    ) -> Result<Tensor, ModelError> {
        let bad = |reason: String| ModelError::TensorData {
            name: name.to_string(),
            reason,
        };
        let elems = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        let bytes = elems
            .checked_mul(dtype.size())
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        if range.start > range.end || range.len() != bytes {
            return Err(bad(format!(
                "holds {} bytes but shape {shape:?} of {dtype} needs {bytes}",
                range.end.saturating_sub(range.start)
            )));
        }
        let all: &[u8] = (*storage).as_ref();
        let data = all.get(range.clone()).ok_or_else(|| {
            bad(format!(
                "bytes {}..{} lie outside the {} bytes available",
                range.start,
                range.end,
                all.len()
            ))
        })?;
        if !(data.as_ptr() as usize).is_multiple_of(dtype.size()) {
            return Err(bad(format!("data is not {}-byte aligned in the file, so it cannot be used in place; re-save the checkpoint", dtype.size())));
        }
        Ok(Tensor {
            name: name.to_string(),
            dtype,
            shape,
            storage,
            range,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Bytes the tensor occupies.
    pub fn byte_len(&self) -> usize {
        self.range.len()
    }

    /// Whether the data starts on a 64-byte cache line.
    pub fn line_aligned(&self) -> bool {
        (*self.storage).as_ref()[self.range.clone()]
            .as_ptr()
            .align_offset(64)
            == 0
    }

    /// Checks the shape, naming the tensor on mismatch.
    pub fn expect_shape(self, expected: &[usize]) -> Result<Tensor, ModelError> {
        if self.shape != expected {
            return Err(ModelError::Shape {
                name: self.name,
                expected: expected.to_vec(),
                got: self.shape,
            });
        }
        Ok(self)
    }

    /// The elements, typed, straight from storage.
    pub fn view(&self) -> WeightRef<'_> {
        let bytes = &(*self.storage).as_ref()[self.range.clone()];
        // Length and alignment were checked in `new`, so these casts cannot fail.
        match self.dtype {
            DType::F32 => WeightRef::F32(bytemuck::cast_slice::<u8, f32>(bytes)),
            DType::F16 => WeightRef::F16(bytemuck::cast_slice::<u8, f16>(bytes)),
            DType::BF16 => WeightRef::BF16(bytemuck::cast_slice::<u8, bf16>(bytes)),
        }
    }
}
