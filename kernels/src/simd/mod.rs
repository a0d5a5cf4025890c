//! What the SIMD variants share: generic drivers that each ISA instantiates with its own loads and
//! dots, and the table entries that check a kernel's contract before running it.
//!
//! - [`dense`]: the dense products' tiles, over an ISA's step ([`dense::Lanes`]) and element loads;
//! - [`vector`]: the element-wise kernels, over its native vector ([`vector::Vector`]);
//! - here: the safe table entries and [`table_of`], which builds a variant's table from them.
//!
//! An ISA supplies its vector operations and loads (one instruction or a few each) and, for the
//! quantized products, its block dots (its own modules); everything else is written once.
//!
//! # How generic code gets each ISA's features
//!
//! An ISA runs a generic driver through a trait method of its own ([`Entries`], [`Activations`],
//! [`MatmulQ::matmul_q`], ...) that is a `#[target_feature]` function calling the driver. Everything below
//! that (the driver, the ISA's loads and dots) is `#[inline(always)]` without a `#[target_feature]` of
//! its own, so it is compiled into the ISA's function with the ISA's features, and the intrinsics
//! (`#[inline]`, `#[target_feature]`) inline into it. A function with fewer features in between would
//! stop that: LLVM does not inline a function into one with fewer target features, so every intrinsic
//! would become a call. The price is that these `unsafe fn`s call intrinsics without an `unsafe` block
//! of their own; memory accesses still get one, with `// SAFETY:`.
//!
//! # Why the safe entries are sound
//!
//! The entries here and [`dense::matmul`] are safe functions generic over an ISA. They are
//! crate-private, and each is only instantiated with an ISA in that ISA's `table()` (through
//! [`table_of`]), which [`crate::Kernels`] builds only after detection confirmed the ISA's features.

pub(crate) mod dense;
pub(crate) mod vector;

use half::{bf16, f16};

use self::dense::{Elem, Lanes};
use self::vector::{Vector, VectorMath};
use crate::dispatch::{Kernels, Variant};
use crate::quant::scalar::{check_matmul_layout, check_matmul_q, check_quantize_q8};
use crate::quant::{rows8, Q8ActsRef, QFormat, QLayout, QWeight};
use crate::scalar;
use crate::weight::WeightRef;

/// Trait methods that are one intrinsic each, for an ISA's vector operations: `fn name(a: T, ...) -> R
/// = intrinsic;` becomes `#[inline(always)] unsafe fn name(a: T, ...) -> R { intrinsic(a, ...) }`.
/// Register-only operations (no memory): their only requirement is the ISA's features, which is the
/// trait methods' contract.
macro_rules! intrinsics {
    ($(fn $name:ident($($a:ident: $t:ty),*) -> $r:ty = $f:path;)+) => {$(
        #[inline(always)]
        unsafe fn $name($($a: $t),*) -> $r {
            $f($($a),*)
        }
    )+};
}
pub(crate) use intrinsics;

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

/// An ISA's product of `F` weights in the `rows8` layout ([`rows8`]). The provided method copies
/// the rows back into `rowsplit` order and runs the ISA's `F` kernel; an ISA with a kernel that
/// reads the layout as it is overrides it.
pub(crate) trait MatmulRows8<F: Format>: MatmulQ<F> + Sized {
    /// # Safety
    /// The CPU has the ISA's features; `check_matmul_layout` accepted `w`, `x`, `yt` for `rows8`.
    unsafe fn matmul_rows8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        rows8::matmul_via_rowsplit(F::FORMAT, matmul_q::<Self, F>, w, x, yt)
    }
}

/// The table entry of `I` for `rows8` `F` weights: [`rows8::matmul_q4_0_rows8_q8`]'s contract.
pub(crate) fn matmul_rows8<I: MatmulRows8<F>, F: Format>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    check_matmul_layout(w, F::FORMAT, QLayout::Rows8, x, yt.len());
    // SAFETY: only instantiated in `I`'s tables, built after detection confirmed `I`'s features;
    // the check proved the plane lengths the kernel indexes.
    unsafe { I::matmul_rows8(w, x, yt) }
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

/// An ISA's `#[target_feature]` entries into the generic kernels of [`dense`] and [`vector`]
/// (implemented by [`entries`]).
pub(crate) trait Entries: Lanes + Vector {
    /// [`dense::matmul_tiles`] with the ISA's tokens per tile.
    ///
    /// # Safety
    /// The CPU has the ISA's features; `check_matmul` accepted the shapes and returned `rows`.
    unsafe fn matmul<W: Elem<Self>>(
        w: &[W],
        k: usize,
        x: &[f32],
        n: usize,
        yt: &mut [f32],
        rows: usize,
    );

    /// [`vector::dot`].
    ///
    /// # Safety
    /// The CPU has the ISA's features.
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32;

    /// [`vector::axpy`].
    ///
    /// # Safety
    /// The CPU has the ISA's features.
    unsafe fn axpy<W: Elem<Self>>(alpha: f32, x: &[W], y: &mut [f32]);

    /// [`vector::weighted_rows`].
    ///
    /// # Safety
    /// As [`vector::weighted_rows`].
    unsafe fn weighted_rows<W: Elem<Self>>(p: &[f32], v: &[W], out: &mut [f32], r: usize);
}

/// Implements [`Entries`] for `$isa` under `#[target_feature(enable = $features)]`, with dense tiles
/// of `$tokens` tokens.
macro_rules! entries {
    ($isa:ty, $features:literal, $tokens:literal) => {
        impl $crate::simd::Entries for $isa {
            #[target_feature(enable = $features)]
            unsafe fn matmul<W: $crate::simd::dense::Elem<Self>>(
                w: &[W],
                k: usize,
                x: &[f32],
                n: usize,
                yt: &mut [f32],
                rows: usize,
            ) {
                // SAFETY: the caller's contract.
                unsafe {
                    $crate::simd::dense::matmul_tiles::<Self, W, $tokens>(w, k, x, n, yt, rows)
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::dot::<Self>(a, b) }
            }

            #[target_feature(enable = $features)]
            unsafe fn axpy<W: $crate::simd::dense::Elem<Self>>(alpha: f32, x: &[W], y: &mut [f32]) {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::axpy::<Self, W>(alpha, x, y) }
            }

            #[target_feature(enable = $features)]
            unsafe fn weighted_rows<W: $crate::simd::dense::Elem<Self>>(
                p: &[f32],
                v: &[W],
                out: &mut [f32],
                r: usize,
            ) {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::weighted_rows::<Self, W>(p, v, out, r) }
            }
        }
    };
}
pub(crate) use entries;

/// An ISA's own `softmax_f32`, `silu_mul_f32` and `rmsnorm_f32` (implemented by
/// [`activation_entries`]): [`vector::softmax`], [`vector::silu_mul`], [`vector::rmsnorm`] under its
/// `#[target_feature]`. Safety as those functions.
pub(crate) trait Activations: VectorMath {
    unsafe fn softmax(x: &mut [f32]);
    unsafe fn silu_mul(gate: &mut [f32], up: &[f32]);
    unsafe fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]);
}

/// Implements [`Activations`] for `$isa` under `#[target_feature(enable = $features)]`.
macro_rules! activation_entries {
    ($isa:ty, $features:literal) => {
        impl $crate::simd::Activations for $isa {
            #[target_feature(enable = $features)]
            unsafe fn softmax(x: &mut [f32]) {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::softmax::<Self>(x) }
            }

            #[target_feature(enable = $features)]
            unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::silu_mul::<Self>(gate, up) }
            }

            #[target_feature(enable = $features)]
            unsafe fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
                // SAFETY: the caller's contract.
                unsafe { $crate::simd::vector::rmsnorm::<Self>(x, w, eps, out) }
            }
        }
    };
}
pub(crate) use activation_entries;

/// `I`'s [`scalar::dot_f32`].
fn dot_f32<I: Entries>(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only instantiated in `I`'s tables (see the module docs).
    unsafe { I::dot(a, b) }
}

/// `I`'s [`scalar::axpy_f32`] and [`scalar::axpy_f16`].
fn axpy<I: Entries, W: Elem<I>>(alpha: f32, x: &[W], y: &mut [f32]) {
    // SAFETY: only instantiated in `I`'s tables (see the module docs).
    unsafe { I::axpy(alpha, x, y) }
}

/// `I`'s [`scalar::weighted_sum_f32`] and [`scalar::weighted_sum_f16`] (same panics).
fn weighted_sum<I: Entries, W: Elem<I>>(p: &[f32], rows: usize, v: &[W], out: &mut [f32]) {
    scalar::weighted_sum_rows(p, rows, v.len(), out, I::WEIGHTED_ROWS, |p, out, r| {
        // SAFETY: only instantiated in `I`'s tables (see the module docs); `weighted_sum_rows`
        // passes `r` rows of `seen` and of `hd` with `seen, hd > 0` and `seen·hd <= v.len()`.
        unsafe { I::weighted_rows(p, v, out, r) }
    })
}

/// `I`'s [`scalar::softmax_f32`].
fn softmax_f32<I: Activations>(x: &mut [f32]) {
    // SAFETY: only instantiated in `I`'s tables (see the module docs).
    unsafe { I::softmax(x) }
}

/// `I`'s [`scalar::silu_mul_f32`] (same panics).
fn silu_mul_f32<I: Activations>(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    // SAFETY: only instantiated in `I`'s tables (see the module docs); the lengths are equal.
    unsafe { I::silu_mul(gate, up) }
}

/// `I`'s [`scalar::rmsnorm_f32`] for F32 norm weights (the others, only in dense F16/BF16
/// checkpoints, take the scalar path). Same panics.
fn rmsnorm_f32<I: Activations>(x: &[f32], w: WeightRef<'_>, eps: f32, out: &mut [f32]) {
    scalar::check_rmsnorm(x.len(), w.len(), out.len());
    match w {
        // SAFETY: only instantiated in `I`'s tables (see the module docs); the lengths are equal.
        WeightRef::F32(w) => unsafe { I::rmsnorm(x, w, eps, out) },
        _ => scalar::rmsnorm_f32(x, w, eps, out),
    }
}

/// `base` as `variant`, with `I`'s products (dense and quantized), activation quantization, `dot`,
/// `axpy` and `weighted_sum`.
///
/// Only for an ISA whose features detection confirmed (see the module docs).
pub(crate) fn table_of<I>(variant: Variant, base: Kernels) -> Kernels
where
    I: Entries + QuantizeQ8 + MatmulQ<Q8_0> + MatmulQ<Q4_0> + MatmulQ<Q4_1>,
    I: MatmulRows8<Q4_0> + MatmulRows8<Q8_0> + MatmulRows8<Q4_1>,
    f32: Elem<I>,
    f16: Elem<I>,
    bf16: Elem<I>,
{
    Kernels {
        matmul_f32: dense::matmul::<I, f32>,
        matmul_f16: dense::matmul::<I, f16>,
        matmul_bf16: dense::matmul::<I, bf16>,
        dot_f32: dot_f32::<I>,
        axpy_f32: axpy::<I, f32>,
        axpy_f16: axpy::<I, f16>,
        weighted_sum_f32: weighted_sum::<I, f32>,
        weighted_sum_f16: weighted_sum::<I, f16>,
        quantize_q8: quantize_q8::<I>,
        ..quantized::<I>(variant, base)
    }
}

/// `base` as `variant`, with `I`'s quantized products (for variants that differ from `base` only
/// there). Only for an ISA whose features detection confirmed.
pub(crate) fn quantized<I>(variant: Variant, base: Kernels) -> Kernels
where
    I: MatmulQ<Q8_0> + MatmulQ<Q4_0> + MatmulQ<Q4_1>,
    I: MatmulRows8<Q4_0> + MatmulRows8<Q8_0> + MatmulRows8<Q4_1>,
{
    Kernels {
        variant,
        matmul_q8_0_q8: matmul_q::<I, Q8_0>,
        matmul_q4_0_q8: matmul_q::<I, Q4_0>,
        matmul_q4_1_q8: matmul_q::<I, Q4_1>,
        matmul_q4_0_rows8_q8: matmul_rows8::<I, Q4_0>,
        matmul_q8_0_rows8_q8: matmul_rows8::<I, Q8_0>,
        matmul_q4_1_rows8_q8: matmul_rows8::<I, Q4_1>,
        ..base
    }
}

/// `base` with `I`'s `softmax_f32`, `silu_mul_f32` and `rmsnorm_f32`. Only for an ISA whose features
/// detection confirmed.
pub(crate) fn activations<I: Activations>(base: Kernels) -> Kernels {
    Kernels {
        softmax_f32: softmax_f32::<I>,
        silu_mul_f32: silu_mul_f32::<I>,
        rmsnorm_f32: rmsnorm_f32::<I>,
        ..base
    }
}
