//! What the SIMD variants share: generic drivers that each ISA instantiates with its own loads and
//! dots, and the table entries that check a kernel's contract before running it.
//!
//! # How generic code gets each ISA's features
//!
//! An ISA runs a generic driver through a trait method of its own (e.g. [`dense::Lanes::matmul`],
//! [`MatmulQ::matmul_q`]) that is a `#[target_feature]` function calling the driver. Everything below
//! that (the driver, the ISA's loads and dots) is `#[inline(always)]` without a `#[target_feature]` of
//! its own, so it is compiled into the ISA's function with the ISA's features, and the intrinsics
//! (`#[inline]`, `#[target_feature]`) inline into it. A function with fewer features in between would
//! stop that: LLVM does not inline a function into one with fewer target features, so every intrinsic
//! would become a call. The price is that these `unsafe fn`s call intrinsics without an `unsafe` block
//! of their own; memory accesses still get one, with `// SAFETY:`.
//!
//! # Why the safe entries are sound
//!
//! The entries here ([`dense::matmul`], [`matmul_q`], [`quantize_q8`]) are safe functions generic over
//! an ISA. They are crate-private, and each is only instantiated with an ISA in that ISA's `table()`,
//! which [`crate::Kernels`] builds only after detection confirmed the ISA's features.

pub(crate) mod dense;

use crate::quant::scalar::{check_matmul_q, check_quantize_q8};
use crate::quant::{Q8ActsRef, QFormat, QWeight};

/// A weight format as a type, so that generic kernels are compiled once per format.
pub(crate) trait Format {
    const FORMAT: QFormat;
    /// Quant bytes per block.
    const QB: usize = Self::FORMAT.qs_bytes_per_block();
    /// Whether the block term has q4_1's `(m·dx)·sx` part.
    const MIN: bool = Self::FORMAT.has_min();
}

pub(crate) struct Q8_0;
pub(crate) struct Q4_0;
pub(crate) struct Q4_1;

impl Format for Q8_0 {
    const FORMAT: QFormat = QFormat::Q8_0;
}

impl Format for Q4_0 {
    const FORMAT: QFormat = QFormat::Q4_0;
}

impl Format for Q4_1 {
    const FORMAT: QFormat = QFormat::Q4_1;
}

/// An ISA's product of `F` weights and q8 activations.
pub(crate) trait MatmulQ<F: Format> {
    /// # Safety
    /// The CPU has the ISA's features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`.
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]);
}

/// The table entry of `I` for `F` weights: [`crate::quant::scalar`]'s `matmul_<F>_q8` (same
/// contract, same panics).
pub(crate) fn matmul_q<I: MatmulQ<F>, F: Format>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    check_matmul_q(w, F::FORMAT, x, yt.len());
    // SAFETY: only instantiated in `I`'s tables, built after detection confirmed `I`'s features;
    // `check_matmul_q` proved the plane lengths the kernel indexes.
    unsafe { I::matmul_q(w, x, yt) }
}

/// An ISA's activation quantizer.
pub(crate) trait QuantizeQ8 {
    /// [`crate::quant::scalar::quantize_q8`] of `x.len() / 32` blocks, producing the same bytes.
    ///
    /// # Safety
    /// The CPU has the ISA's features; `x.len() == qs.len() == 32·d.len() == 32·sum.len()`.
    unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]);
}

/// The table entry of `I`: [`crate::quant::scalar::quantize_q8`] (same contract, same panics).
pub(crate) fn quantize_q8<I: QuantizeQ8>(
    x: &[f32],
    n: usize,
    k: usize,
    qs: &mut [i8],
    d: &mut [f32],
    sum: &mut [i32],
) {
    let len = check_quantize_q8(x.len(), n, k, qs.len(), d.len(), sum.len());
    // SAFETY: only instantiated in `I`'s tables (see the module docs); the check proved that `x`
    // holds `len` values and `qs`, `d`, `sum` exactly `len`, `len / 32`, `len / 32`.
    unsafe { I::quantize_q8(&x[..len], qs, d, sum) }
}
