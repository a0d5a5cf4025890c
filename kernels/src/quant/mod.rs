//! Block-quantized weights and q8 activations.
//!
//! Weights come in the formats of [`format`](mod@format) (q8_0, q4_0, q4_1 in the `rowsplit`
//! layout) as a borrowed [`QWeight`]. Products against them quantize the activations first, once per
//! matrix input, into [`Q8Acts`] (32-element blocks of `i8` with an f32 scale and the block's integer
//! sum), so the inner loops are integer dot products: `yt[r·n + t] = Σ_b scale_b · idot_b` (see
//! [`scalar`] for the exact math).
//!
//! Kernel entries ([`QMatmulFn`], [`QuantizeQ8Fn`]) are specified in [`scalar`], implemented by every
//! variant under the same names, and sit in the [`Kernels`] table.

pub mod format;
pub mod kquant;
pub mod rows8;
pub mod scalar;

use std::ops::Range;

use half::f16;

pub use format::{QFormat, QLayout, LAYOUT_NAME, LAYOUT_VERSION, QK, QK_K};

use crate::dispatch::Kernels;

/// `yt[r·n + t] = Σ_j w[r, j] · x[t, j]` over all `w.rows` rows and all `x.n` tokens (the transposed
/// output of [`crate::scalar`]'s `matmul_*`, so callers split rows across threads). Panics if the shapes
/// disagree (see [`scalar::check_matmul_q`]).
pub type QMatmulFn = fn(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]);

/// Quantizes `n` rows of `k` activations (`x[t·k + j]`, `k` a multiple of [`QK`]) into q8 blocks:
/// `qs` (`n·k`), `d` and `sum` (`n·k/32` each). See [`scalar::quantize_q8`].
pub type QuantizeQ8Fn =
    fn(x: &[f32], n: usize, k: usize, qs: &mut [i8], d: &mut [f32], sum: &mut [i32]);

/// A malformed quantized tensor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{format} [{rows}, {k}]: k is not a positive multiple of the block size {}", format.block_elems())]
    BlockSize {
        format: QFormat,
        rows: usize,
        k: usize,
    },
    #[error("{format} [{rows}, {k}]: plane `{plane}` has {got} elements, expected {expected}")]
    PlaneLength {
        format: QFormat,
        rows: usize,
        k: usize,
        plane: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "{format} [{rows}, {k}]: cannot be stored in the {layout} layout ({layout} holds q4_0 \
         and q8_0 matrices whose rows are a multiple of 8, at most {} (q4_0) or {} (q8_0) wide)",
        rows8::max_k(QFormat::Q4_0),
        rows8::max_k(QFormat::Q8_0)
    )]
    Layout {
        format: QFormat,
        layout: QLayout,
        rows: usize,
        k: usize,
    },
    #[error("{format} [{rows}, {k}]: size overflows the address space")]
    TooLarge {
        format: QFormat,
        rows: usize,
        k: usize,
    },
}

/// A borrowed `[rows, k]` quantized weight in the `rowsplit` layout (see [`format`](mod@format)), or
/// or in the `rows8` layout (see [`rows8`]).
///
/// Fields are public so a loader can build one from mapped planes; kernels re-check the plane lengths
/// (cheaply, once per call) and panic on a malformed view rather than read out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct QWeight<'a> {
    pub format: QFormat,
    pub rows: usize,
    /// Reduction length (columns), a positive multiple of [`QK`].
    pub k: usize,
    /// Quants, row-major: `rows · k / block_elems · qs_bytes_per_block` bytes.
    pub qs: &'a [u8],
    /// High bits or packed sub-block scales, row-major: `rows · k / block_elems ·
    /// aux_bytes_per_block` bytes (empty for the basic formats and IQ4_NL; see [`kquant`]).
    pub aux: &'a [u8],
    /// Block scales `[rows, k/block_elems]`.
    pub d: &'a [f16],
    /// Block minimums `[rows, k/block_elems]` for the formats with one ([`QFormat::has_min`]);
    /// empty for the others.
    pub m: &'a [f16],
    /// The order of the planes' blocks ([`QLayout::RowSplit`] from [`QWeight::new`]).
    pub layout: QLayout,
}

impl<'a> QWeight<'a> {
    /// A checked view of a format without an `aux` plane: `k` a positive multiple of the block
    /// and every plane exactly as long as the layout says.
    pub fn new(
        format: QFormat,
        rows: usize,
        k: usize,
        qs: &'a [u8],
        d: &'a [f16],
        m: &'a [f16],
    ) -> Result<QWeight<'a>, QuantError> {
        QWeight::with_aux(format, rows, k, qs, &[], d, m)
    }

    /// [`QWeight::new`] with the `aux` plane.
    pub fn with_aux(
        format: QFormat,
        rows: usize,
        k: usize,
        qs: &'a [u8],
        aux: &'a [u8],
        d: &'a [f16],
        m: &'a [f16],
    ) -> Result<QWeight<'a>, QuantError> {
        let w = QWeight {
            format,
            rows,
            k,
            qs,
            aux,
            d,
            m,
            layout: QLayout::RowSplit,
        };
        w.validate()?;
        Ok(w)
    }

    /// The same planes read in `layout` (checked as [`QWeight::new`] checks).
    pub fn in_layout(self, layout: QLayout) -> Result<QWeight<'a>, QuantError> {
        let w = QWeight { layout, ..self };
        w.validate()?;
        Ok(w)
    }

    /// Checks what [`QWeight::new`] checks (for views built field by field).
    pub fn validate(&self) -> Result<(), QuantError> {
        let (format, rows, k) = (self.format, self.rows, self.k);
        if k == 0 || !k.is_multiple_of(format.block_elems()) {
            return Err(QuantError::BlockSize { format, rows, k });
        }
        let layout = self.layout;
        if !layout.fits(format, rows, k) {
            return Err(QuantError::Layout {
                format,
                layout,
                rows,
                k,
            });
        }
        let too_large = || QuantError::TooLarge { format, rows, k };
        let elems = rows.checked_mul(k).ok_or_else(too_large)?;
        let scales = elems / format.block_elems();
        let qs_len = scales * format.qs_bytes_per_block();
        let m_len = if format.has_min() { scales } else { 0 };
        for (plane, expected, got) in [
            ("qs", qs_len, self.qs.len()),
            ("aux", scales * format.aux_bytes_per_block(), self.aux.len()),
            ("d", scales, self.d.len()),
            ("m", m_len, self.m.len()),
        ] {
            if expected != got {
                return Err(QuantError::PlaneLength {
                    format,
                    rows,
                    k,
                    plane,
                    expected,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.k / self.format.block_elems()
    }

    /// Bytes of `qs` per row.
    pub fn row_bytes(&self) -> usize {
        self.blocks_per_row() * self.format.qs_bytes_per_block()
    }

    /// Rows `range` as a view of the same planes (no copy). Panics if the range is out of bounds, or
    /// for `rows8` does not start and end on a group of eight.
    pub fn rows(&self, range: Range<usize>) -> QWeight<'a> {
        assert!(
            range.start <= range.end && range.end <= self.rows,
            "QWeight::rows: {range:?} of {} rows",
            self.rows
        );
        assert!(
            self.layout == QLayout::RowSplit
                || (range.start.is_multiple_of(rows8::GROUP)
                    && range.end.is_multiple_of(rows8::GROUP)),
            "QWeight::rows: {range:?} splits a group of eight rows of a rows8 matrix"
        );
        let (nb, rb) = (self.blocks_per_row(), self.row_bytes());
        let m = if self.format.has_min() {
            &self.m[range.start * nb..range.end * nb]
        } else {
            self.m
        };
        let ab = nb * self.format.aux_bytes_per_block();
        QWeight {
            format: self.format,
            rows: range.len(),
            k: self.k,
            qs: &self.qs[range.start * rb..range.end * rb],
            aux: &self.aux[range.start * ab..range.end * ab],
            d: &self.d[range.start * nb..range.end * nb],
            m,
            layout: self.layout,
        }
    }

    /// Row `r` as f32 values into `out` (`k` elements), by the format's value formula.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows,
            "QWeight::dequantize_row: row {r} of {}",
            self.rows
        );
        assert_eq!(
            out.len(),
            self.k,
            "QWeight::dequantize_row: out has {} elements, k={}",
            out.len(),
            self.k
        );
        if !self.format.is_basic() {
            return kquant::dequantize_row(self, r, out);
        }
        let (nb, bb) = (self.blocks_per_row(), self.format.qs_bytes_per_block());
        let mut block = [0u8; QK];
        for (b, o) in out.chunks_exact_mut(QK).enumerate() {
            let (qs, d) = match self.layout {
                QLayout::RowSplit => (&self.qs[(r * nb + b) * bb..][..bb], self.d[r * nb + b]),
                QLayout::Rows8 => {
                    for (j, q) in block[..bb].iter_mut().enumerate() {
                        *q = rows8::block_byte(self.format, self.qs, nb, r, b, j);
                    }
                    (&block[..bb], rows8::block_scale(self.d, nb, r, b))
                }
            };
            let d = f32::from(d);
            match self.format {
                QFormat::Q8_0 => {
                    for (o, &q) in o.iter_mut().zip(qs) {
                        *o = d * f32::from(q as i8);
                    }
                }
                QFormat::Q4_0 => {
                    // ggml's `(q − 8)·d`, so a zero takes the sign of `d` as there.
                    for (j, &q) in qs.iter().enumerate() {
                        o[j] = f32::from(i16::from(q & 15) - 8) * d;
                        o[j + QK / 2] = f32::from(i16::from(q >> 4) - 8) * d;
                    }
                }
                _ => {
                    let m = f32::from(match self.layout {
                        QLayout::RowSplit => self.m[r * nb + b],
                        QLayout::Rows8 => rows8::block_scale(self.m, nb, r, b),
                    });
                    for (j, &q) in qs.iter().enumerate() {
                        o[j] = d * f32::from(q & 15) + m;
                        o[j + QK / 2] = d * f32::from(q >> 4) + m;
                    }
                }
            }
        }
    }
}

/// How a product with quantized weights quantizes its activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActQuant {
    /// One q8 block per 32 activations (an f32 scale, `i8` quants: what llama.cpp does): a relative
    /// rounding of up to 2⁻⁸ of the block's largest value.
    #[default]
    Q8,
    /// Two q8 passes: the q8 blocks, then the rounding error of each block quantized again as a
    /// second set of q8 blocks; the product is the sum of the two. Rounding drops to ~2⁻¹⁶ of the
    /// block's largest value (as good as f32 activations for the logits), with the same kernels:
    /// the weights are still read once (the two passes are two "tokens" of one product), but the
    /// integer arithmetic doubles.
    Q8x2,
}

impl ActQuant {
    pub const ALL: [ActQuant; 2] = [ActQuant::Q8, ActQuant::Q8x2];

    /// `q8` or `q8x2`.
    pub const fn name(self) -> &'static str {
        match self {
            ActQuant::Q8 => "q8",
            ActQuant::Q8x2 => "q8x2",
        }
    }

    /// The inverse of [`ActQuant::name`].
    pub fn from_name(name: &str) -> Option<ActQuant> {
        ActQuant::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Sets of q8 blocks per token: 1 or 2.
    pub const fn passes(self) -> usize {
        match self {
            ActQuant::Q8 => 1,
            ActQuant::Q8x2 => 2,
        }
    }
}

impl std::fmt::Display for ActQuant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Activations quantized to q8 blocks: an arena allocated once (at the largest `n·k` the model needs) and
/// refilled by [`quantize_acts`] before each quantized product.
///
/// With [`ActQuant::Q8x2`] the `n` tokens become `2n` rows of q8 blocks: rows `0..n` the activations,
/// rows `n..2n` their rounding errors; the caller adds the two halves of the product (see
/// [`crate::par::matmul_q_passes`]).
#[derive(Clone, Debug)]
pub struct Q8Acts {
    /// `[rows][k]` quants.
    qs: Vec<i8>,
    /// `[rows][k/32]` block scales.
    d: Vec<f32>,
    /// `[rows][k/32]` block sums `Σ qs` (for the q4 formats' offsets and the VNNI sign trick).
    sum: Vec<i32>,
    /// `[n][k]` rounding errors of the first pass (Q8x2 only).
    resid: Vec<f32>,
    quant: ActQuant,
    /// Tokens held (rows of q8 blocks: `n · passes`).
    n: usize,
    k: usize,
}

impl Q8Acts {
    /// Room for `max_n` tokens of `max_k` activations (or any `n·k` up to that product) in one q8
    /// pass; holds nothing yet.
    pub fn new(max_n: usize, max_k: usize) -> Q8Acts {
        Q8Acts::with_quant(max_n, max_k, ActQuant::Q8)
    }

    /// Room for `max_n` tokens of `max_k` activations quantized as `quant` says.
    pub fn with_quant(max_n: usize, max_k: usize, quant: ActQuant) -> Q8Acts {
        let cap = max_n
            .checked_mul(max_k)
            .expect("Q8Acts::with_quant: size overflow");
        let rows = cap
            .checked_mul(quant.passes())
            .expect("Q8Acts::with_quant: size overflow");
        Q8Acts {
            qs: vec![0; rows],
            d: vec![0.0; rows / QK],
            sum: vec![0; rows / QK],
            resid: vec![0.0; if quant == ActQuant::Q8x2 { cap } else { 0 }],
            quant,
            n: 0,
            k: 0,
        }
    }

    /// Largest `n·k` this arena holds.
    pub fn capacity(&self) -> usize {
        self.qs.len() / self.quant.passes()
    }

    /// Bytes the arena holds (quants, scales, sums and the residual buffer).
    pub fn bytes(&self) -> usize {
        self.qs.len() + self.d.len() * 4 + self.sum.len() * 4 + self.resid.len() * 4
    }

    /// How the activations are quantized.
    pub fn quant(&self) -> ActQuant {
        self.quant
    }

    /// Tokens currently held.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Activations per token currently held.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The current contents as the view kernels take: `n · passes` rows.
    #[allow(clippy::should_implement_trait)] // returns a view by value, which `AsRef` cannot
    pub fn as_ref(&self) -> Q8ActsRef<'_> {
        let rows = self.n * self.quant.passes();
        let (len, nb) = (rows * self.k, rows * self.k / QK);
        Q8ActsRef {
            qs: &self.qs[..len],
            d: &self.d[..nb],
            sum: &self.sum[..nb],
            n: rows,
            k: self.k,
        }
    }
}

/// A borrowed q8 activation matrix: `n` tokens of `k` values in blocks of [`QK`].
///
/// Contract the kernels rely on for exact results: every quant lies in `-127..=127` (what
/// [`quantize_acts`] produces; `-128` may overflow the AVX2 sign trick) and `sum[t·k/32 + b]` is the
/// sum of block `b`'s quants. Lengths are checked by the kernels.
#[derive(Clone, Copy, Debug)]
pub struct Q8ActsRef<'a> {
    /// `[n][k]` quants.
    pub qs: &'a [i8],
    /// `[n][k/32]` block scales.
    pub d: &'a [f32],
    /// `[n][k/32]` block sums.
    pub sum: &'a [i32],
    pub n: usize,
    pub k: usize,
}

impl<'a> Q8ActsRef<'a> {
    /// Tokens `range` (panics if it is out of `0..n`).
    pub fn tokens(&self, range: std::ops::Range<usize>) -> Q8ActsRef<'a> {
        assert!(
            range.start <= range.end && range.end <= self.n,
            "Q8ActsRef::tokens: {range:?} out of 0..{}",
            self.n
        );
        let nb = self.k / QK;
        Q8ActsRef {
            qs: &self.qs[range.start * self.k..range.end * self.k],
            d: &self.d[range.start * nb..range.end * nb],
            sum: &self.sum[range.start * nb..range.end * nb],
            n: range.len(),
            k: self.k,
        }
    }
}

/// Quantizes `n` tokens of `k` activations (`x[t·k + j]`) into `out` with the table's kernel, in one
/// or two passes as `out` was made for ([`ActQuant`]).
/// Panics if `k` is not a positive multiple of [`QK`], `x` is shorter than `n·k`, or `out` is too small.
pub fn quantize_acts(kern: &Kernels, x: &[f32], n: usize, k: usize, out: &mut Q8Acts) {
    assert!(
        k > 0 && k.is_multiple_of(QK),
        "quantize_acts: k={k} is not a positive multiple of {QK}"
    );
    let len = n.checked_mul(k).expect("quantize_acts: size overflow");
    assert!(
        len <= out.capacity(),
        "quantize_acts: {n}×{k} does not fit an arena of {}",
        out.capacity()
    );
    let x = &x[..len];
    let (qs, d, sum) = (
        &mut out.qs[..len],
        &mut out.d[..len / QK],
        &mut out.sum[..len / QK],
    );
    quantize_pass(kern, x, n, k, qs, d, sum);
    if out.quant == ActQuant::Q8x2 {
        let resid = &mut out.resid[..len];
        let (qs, d) = (&out.qs[..len], &out.d[..len / QK]);
        let threads = crate::par::threads();
        if threads > 1 && n >= 64 {
            use rayon::prelude::*;
            let per = n.div_ceil(threads) * k;
            resid.par_chunks_mut(per).enumerate().for_each(|(i, r)| {
                let at = i * per..i * per + r.len();
                let blocks = at.start / QK..at.end / QK;
                rounding_error(&x[at.clone()], &qs[at], &d[blocks], r);
            });
        } else {
            rounding_error(x, qs, d, resid);
        }
        let (qs, d, sum) = (
            &mut out.qs[len..2 * len],
            &mut out.d[len / QK..2 * len / QK],
            &mut out.sum[len / QK..2 * len / QK],
        );
        quantize_pass(kern, resid, n, k, qs, d, sum);
    }
    out.n = n;
    out.k = k;
}

/// `r = x − d·q` per 32-block: what a q8 pass left out.
fn rounding_error(x: &[f32], qs: &[i8], d: &[f32], r: &mut [f32]) {
    for (((r, x), q), &d) in r
        .chunks_exact_mut(QK)
        .zip(x.chunks_exact(QK))
        .zip(qs.chunks_exact(QK))
        .zip(d)
    {
        for ((r, &x), &q) in r.iter_mut().zip(x).zip(q) {
            *r = x - d * f32::from(q);
        }
    }
}

/// One q8 pass over `n` tokens: the table's kernel, tokens split across the rayon pool the caller
/// runs in when there are many (none outside a pool: a one-thread session never starts rayon's
/// global pool).
fn quantize_pass(
    kern: &Kernels,
    x: &[f32],
    n: usize,
    k: usize,
    qs: &mut [i8],
    d: &mut [f32],
    sum: &mut [i32],
) {
    let threads = crate::par::threads();
    if threads > 1 && n >= 64 {
        use rayon::prelude::*;
        let per = n.div_ceil(threads);
        let nb = k / QK;
        qs.par_chunks_mut(per * k)
            .zip(d.par_chunks_mut(per * nb))
            .zip(sum.par_chunks_mut(per * nb))
            .enumerate()
            .for_each(|(i, ((qs, d), sum))| {
                let t0 = i * per;
                let nt = d.len() / nb;
                (kern.quantize_q8)(&x[t0 * k..(t0 + nt) * k], nt, k, qs, d, sum);
            });
    } else {
        (kern.quantize_q8)(x, n, k, qs, d, sum);
    }
}
