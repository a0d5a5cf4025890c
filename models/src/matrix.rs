//! Weight matrices as the forward pass uses them: dense (F32/F16/BF16) or block-quantized
//! (q8_0/q4_0/q4_1 in the kernels' `rowsplit` layout), both views into the mapped file.
//!
//! # How quantized weights are stored in safetensors
//! A quantized matrix `W` (`[rows, k]`, `k` a multiple of 32) named `name` is stored as ordinary
//! safetensors tensors — so stock readers still open the file — holding exactly the bytes the
//! kernels read:
//!
//! | tensor | dtype | shape | |
//! |---|---|---|---|
//! | `name.qs` | I8 (q8_0) / U8 (q4_0, q4_1) | `[rows, k]` / `[rows, k/2]` | quants, row-major |
//! | `name.scales` | F16 | `[rows, k/32]` | block scales `d` |
//! | `name.mins` | F16 | `[rows, k/32]` | block minimums `m` (q4_1 only) |
//!
//! and the file's `__metadata__` says how to read them: `edgeinfer.quant.layout` = `rowsplit`,
//! `edgeinfer.quant.version` = `1` or `2`, per matrix `edgeinfer.qformat.<name>` = `q8_0`, `q4_0` or
//! `q4_1`, and in version 2 files `edgeinfer.qlayout.<name>` = `rows8` for a matrix whose blocks
//! are interleaved by eight rows (absent: `rowsplit`). A file whose layout or version this build does
//! not know is refused, never misread. The block formats and the layouts are documented in
//! `edgeinfer_kernels::quant::format` and `::rows8`.

use std::ops::Range;

use edgeinfer_kernels::quant::{self, ActQuant, Q8Acts, QFormat, QLayout, QWeight};
use edgeinfer_kernels::{par, Kernels, WeightRef};
use half::f16;

use crate::error::ModelError;
use crate::tensor::{Storage, Tensor};

/// `__metadata__` key naming the quantized layout.
pub const LAYOUT_KEY: &str = "edgeinfer.quant.layout";
/// `__metadata__` key holding the layout version.
pub const VERSION_KEY: &str = "edgeinfer.quant.version";

/// `__metadata__` key holding the format of the quantized matrix `name`.
pub fn format_key(name: &str) -> String {
    format!("edgeinfer.qformat.{name}")
}

/// `__metadata__` key holding the layout of the quantized matrix `name` (version 2 files; absent
/// means `rowsplit`).
pub fn layout_key(name: &str) -> String {
    format!("edgeinfer.qlayout.{name}")
}

/// Names of the three safetensors tensors of the quantized matrix `name`: quants, scales and
/// minimums (the fourth plane of the GGUF formats is [`aux_name`]).
pub fn plane_names(name: &str) -> [String; 3] {
    [
        format!("{name}.qs"),
        format!("{name}.scales"),
        format!("{name}.mins"),
    ]
}

/// Name of the `aux` plane (high bits or packed sub-block scales) of the quantized matrix `name`,
/// for the formats that have one ([`QFormat::aux_bytes_per_block`]).
pub fn aux_name(name: &str) -> String {
    format!("{name}.aux")
}

/// A quantized matrix: three validated byte ranges of one storage.
#[derive(Clone)]
pub struct QTensor {
    name: String,
    format: QFormat,
    layout: QLayout,
    rows: usize,
    k: usize,
    storage: Storage,
    qs: Range<usize>,
    aux: Range<usize>,
    d: Range<usize>,
    m: Option<Range<usize>>,
}

impl std::fmt::Debug for QTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QTensor")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("layout", &self.layout)
            .field("shape", &[self.rows, self.k])
            .finish()
    }
}

impl QTensor {
    /// Validates and wraps the planes `storage[qs]`, `storage[aux]` (empty for the formats
    /// without one), `storage[d]` and (formats with minimums) `storage[m]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        format: QFormat,
        layout: QLayout,
        rows: usize,
        k: usize,
        storage: Storage,
        qs: Range<usize>,
        aux: Range<usize>,
        d: Range<usize>,
        m: Option<Range<usize>>,
    ) -> Result<QTensor, ModelError> {
        let bad = |reason: String| ModelError::TensorData {
            name: name.to_string(),
            reason,
        };
        let block = format.block_elems();
        if k == 0 || !k.is_multiple_of(block) {
            return Err(bad(format!(
                "{k} columns is not a positive multiple of {}'s {block}-element block",
                format.name()
            )));
        }
        if m.is_some() != format.has_min() {
            return Err(bad(format!(
                "{} {} minimums",
                format.name(),
                if format.has_min() { "needs" } else { "has no" }
            )));
        }
        let t = QTensor {
            name: name.to_string(),
            format,
            layout,
            rows,
            k,
            storage,
            qs,
            aux,
            d,
            m,
        };
        let all: &[u8] = (*t.storage).as_ref();
        for r in [Some(&t.qs), Some(&t.aux), Some(&t.d), t.m.as_ref()]
            .into_iter()
            .flatten()
        {
            if r.start > r.end || r.end > all.len() {
                return Err(bad(format!(
                    "bytes {}..{} lie outside the {} bytes available",
                    r.start,
                    r.end,
                    all.len()
                )));
            }
        }
        for r in [Some(&t.d), t.m.as_ref()].into_iter().flatten() {
            if r.len() % 2 != 0 || !(all[r.clone()].as_ptr() as usize).is_multiple_of(2) {
                return Err(bad("f16 scales are not 2-byte aligned in the file".into()));
            }
        }
        QWeight::with_aux(
            format,
            rows,
            k,
            &all[t.qs.clone()],
            &all[t.aux.clone()],
            f16s(&all[t.d.clone()]),
            t.m.as_ref().map_or(&[][..], |m| f16s(&all[m.clone()])),
        )
        .and_then(|w| w.in_layout(layout))
        .map_err(|e| bad(e.to_string()))?;
        Ok(t)
    }

    pub fn format(&self) -> QFormat {
        self.format
    }

    /// The kernels' view (validated in [`QTensor::new`]).
    pub fn view(&self) -> QWeight<'_> {
        let all: &[u8] = (*self.storage).as_ref();
        QWeight {
            format: self.format,
            rows: self.rows,
            k: self.k,
            qs: &all[self.qs.clone()],
            aux: &all[self.aux.clone()],
            d: f16s(&all[self.d.clone()]),
            m: self.m.as_ref().map_or(&[][..], |m| f16s(&all[m.clone()])),
            layout: self.layout,
        }
    }
}

/// `y = x·Wᵀ` (token-major) for activations already quantized; `scratch` holds `rows × n` floats
/// (`rows × 2n` for two-pass activations).
fn product_q(kern: &Kernels, q: &QTensor, acts: &Q8Acts, y: &mut [f32], scratch: &mut [f32]) {
    let (w, x) = (q.view(), acts.as_ref());
    if acts.quant() == ActQuant::Q8x2 {
        return par::matmul_q_passes(kern, &w, &x, y, scratch);
    }
    let n = x.n;
    if n == 1 {
        return par::matmul_q(kern, &w, &x, &mut y[..w.rows]);
    }
    if par::matmul_tokens_q(kern, &w, &x, &mut y[..w.rows * n]) {
        return;
    }
    let yt = &mut scratch[..w.rows * n];
    par::matmul_q(kern, &w, &x, yt);
    par::transpose(yt, w.rows, n, y);
}

fn f16s(bytes: &[u8]) -> &[f16] {
    // Alignment and even length are checked in `QTensor::new` before any view exists.
    bytemuck::cast_slice(bytes)
}

/// A weight matrix `[rows, k]`, dense or quantized.
#[derive(Clone, Debug)]
pub enum Matrix {
    Dense(Tensor),
    Quant(QTensor),
}

impl Matrix {
    pub fn name(&self) -> &str {
        match self {
            Matrix::Dense(t) => t.name(),
            Matrix::Quant(q) => &q.name,
        }
    }

    /// `[rows, k]` (a dense tensor's own shape, whatever its rank).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Matrix::Dense(t) => t.shape().to_vec(),
            Matrix::Quant(q) => vec![q.rows, q.k],
        }
    }

    /// `F32`, `F16`, `BF16` or a quantized format's name (`q4_0`, `q4_k`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Matrix::Dense(t) => t.dtype().name(),
            Matrix::Quant(q) => q.format.name(),
        }
    }

    /// The block layout of a quantized matrix (`None` for a dense one).
    pub fn layout(&self) -> Option<QLayout> {
        match self {
            Matrix::Dense(_) => None,
            Matrix::Quant(q) => Some(q.layout),
        }
    }

    /// Whether the weights (a quantized matrix's quants) start on a 64-byte cache line, where the
    /// kernels' widest loads never span two lines.
    pub fn line_aligned(&self) -> bool {
        match self {
            Matrix::Dense(t) => t.line_aligned(),
            Matrix::Quant(q) => q.view().qs.as_ptr().align_offset(64) == 0,
        }
    }

    /// Bytes the weights occupy in the file.
    pub fn byte_len(&self) -> usize {
        match self {
            Matrix::Dense(t) => t.byte_len(),
            Matrix::Quant(q) => {
                q.qs.len() + q.aux.len() + q.d.len() + q.m.as_ref().map_or(0, |m| m.len())
            }
        }
    }

    /// Checks the shape, naming the matrix on mismatch.
    pub fn expect_shape(self, expected: &[usize]) -> Result<Matrix, ModelError> {
        match self {
            Matrix::Dense(t) => t.expect_shape(expected).map(Matrix::Dense),
            Matrix::Quant(q) if [q.rows, q.k] == expected => Ok(Matrix::Quant(q)),
            Matrix::Quant(q) => Err(ModelError::Shape {
                name: q.name.clone(),
                expected: expected.to_vec(),
                got: vec![q.rows, q.k],
            }),
        }
    }

    /// Row `r` as f32 (embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        match self {
            Matrix::Dense(t) => t.view().rows(r..r + 1, out.len()).to_f32(out),
            Matrix::Quant(q) => q.view().dequantize_row(r, out),
        }
    }

    /// `y[t, r] = Σ_j W[r, j] · x[t, j]` for `n` tokens of `k` inputs, rows split across the current
    /// rayon pool. `scratch` holds `rows × n` floats; `acts` is the q8 activation arena.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        kern: &Kernels,
        k: usize,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        scratch: &mut [f32],
        acts: &mut Q8Acts,
    ) {
        match self {
            Matrix::Dense(t) => par::matmul(kern, t.view(), k, x, n, y, scratch),
            Matrix::Quant(q) => {
                quant::quantize_acts(kern, &x[..n * k], n, k, acts);
                product_q(kern, q, acts, y, scratch);
            }
        }
    }

    /// `outs[i] = x·mats[i]ᵀ` for matrices that read the same input (q/k/v, gate/up): like one
    /// [`Matrix::matmul`] each, but when they are all quantized the activations are quantized once,
    /// and for one token the products share one parallel region.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_group(
        kern: &Kernels,
        mats: &[&Matrix],
        k: usize,
        x: &[f32],
        n: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut [f32],
        acts: &mut Q8Acts,
    ) {
        let all_quant = mats.iter().all(|m| matches!(m, Matrix::Quant(_)));
        if !all_quant || mats.len() != outs.len() {
            for (m, y) in mats.iter().zip(outs.iter_mut()) {
                m.matmul(kern, k, x, n, y, scratch, acts);
            }
            return;
        }
        fn quantized(m: &Matrix) -> &QTensor {
            match m {
                Matrix::Quant(q) => q,
                Matrix::Dense(_) => unreachable!("all quantized"),
            }
        }
        quant::quantize_acts(kern, &x[..n * k], n, k, acts);
        if n == 1 && (2..=3).contains(&mats.len()) {
            let last = mats.len() - 1;
            let ws = [0, 1, last].map(|i| quantized(mats[i]).view());
            return par::matmul_q_group(kern, &ws[..mats.len()], &acts.as_ref(), outs);
        }
        for (m, y) in mats.iter().zip(outs.iter_mut()) {
            product_q(kern, quantized(m), acts, y, scratch);
        }
    }

    /// The dense view, for code paths that only take dense weights.
    pub fn dense(&self) -> Option<WeightRef<'_>> {
        match self {
            Matrix::Dense(t) => Some(t.view()),
            Matrix::Quant(_) => None,
        }
    }
}
