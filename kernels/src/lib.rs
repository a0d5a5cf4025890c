//! edgeinfer's compute kernels.
//!
//! Every operation has a scalar reference in [`scalar`] and [`quant::scalar`]: the specification the
//! SIMD variants must match. A [`Kernels`] table of plain function pointers is chosen once (CPU
//! detection or an explicit name, see [`Variant`]) and kept by the model; nothing checks CPU features
//! per call. The SIMD code is private to this crate: its only way out is a table, built only on a CPU
//! that has the variant's features, so every function reachable from outside is safe on any CPU.
//!
//! Threading belongs to the caller: a kernel computes the rows it is given. [`par`] has the row-splitting
//! helpers the models use.
//!
//! This crate knows nothing about files or models.
//!
//! # Names
//!
//! A kernel is named `<op>_<weights>_<acts>`, the same in its scalar function, its [`Kernels`] field,
//! its benchmark (`<name>/<variant>/<rows>x<k>_n<tokens>`) and its tests:
//! - `op`: `matmul` (`yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, any number of tokens: one token is decode),
//!   `matmul_tokens` (the same sums token-major, `y[t·rows + r]`), `dot`, `axpy`, `weighted_sum`,
//!   `rmsnorm`, `softmax`, `silu_mul`, `rope`, `quantize`;
//! - `weights`: the format of the first operand: `f32`, `f16`, `bf16` (dense), `q8_0`, `q4_0`, `q4_1`
//!   (block-quantized, see [`quant::format`]); for an op on one vector, its element type;
//! - `acts`: the format of the activations, left out when they are f32; `q8` is the q8 activation block
//!   (an f32 scale, 32 `i8` quants and their `i32` sum, see [`quant::Q8ActsRef`]), which is not the q8_0
//!   weight format. `quantize_q8` makes it from f32 activations.
//!
//! So `matmul_f16` is f16 weights × f32 activations, `matmul_q4_0_q8` q4_0 weights × q8 activations and
//! `matmul_tokens_q4_0_q8` the same product token-major. The ISA is never in a name: it is the table's
//! [`Variant`] (`scalar`, `avx2`, `avx512_vnni`, `neon`, `neon_dotprod`, `neon_i8mm`). Helpers over a
//! table for a format chosen at run time drop the format to `q`: [`Kernels::matmul_q`],
//! [`par::matmul_q`], [`par::matmul_tokens_q`].

/// The public `weighted_sum_f32` / `weighted_sum_f16` of a SIMD module that groups up to four weight
/// rows per pass over the values: the module provides, under `#[target_feature(enable = $features)]`,
/// `weighted_sum(p, v, out)` for one row and `weighted_group::<W, R>(p, v, out)` for `R` rows, both
/// generic over its element trait `$elem` (implemented for f32 and f16).
macro_rules! grouped_weighted_sum {
    ($features:literal, $elem:path, $name:literal) => {
        #[doc = concat!($name, " version of [`scalar::weighted_sum_f32`]: up to four rows share each load of `v`.")]
        fn weighted_sum_f32(p: &[f32], rows: usize, v: &[f32], out: &mut [f32]) {
            scalar::weighted_sum_rows(p, rows, v.len(), out, 4, |p, out, r| {
                // SAFETY: only reachable through this module's tables, built after detection;
                // `weighted_sum_rows` passes `r` rows of `seen` and of `hd` with `seen·hd <= v.len()`.
                unsafe { weighted_rows(p, v, out, r) }
            })
        }

        #[doc = concat!($name, " version of [`scalar::weighted_sum_f16`]: up to four rows share each load of `v`.")]
        fn weighted_sum_f16(p: &[f32], rows: usize, v: &[f16], out: &mut [f32]) {
            scalar::weighted_sum_rows(p, rows, v.len(), out, 4, |p, out, r| {
                // SAFETY: as for `weighted_sum_f32`.
                unsafe { weighted_rows(p, v, out, r) }
            })
        }

        /// `r` (1..=4) rows: `weighted_group`, or `weighted_sum` for one. Precondition: `p` is `r` rows
        /// of `seen > 0`, `out` `r` rows of `hd > 0`, `v.len() >= seen·hd`.
        #[target_feature(enable = $features)]
        unsafe fn weighted_rows<W: $elem>(p: &[f32], v: &[W], out: &mut [f32], r: usize) {
            // SAFETY: forwarded precondition.
            unsafe {
                match r {
                    1 => weighted_sum(p, v, out),
                    2 => weighted_group::<W, 2>(p, v, out),
                    3 => weighted_group::<W, 3>(p, v, out),
                    _ => weighted_group::<W, 4>(p, v, out),
                }
            }
        }
    };
}

pub mod detect;
pub mod dispatch;
pub mod par;
pub mod quant;
pub mod scalar;
pub mod testing;
pub mod weight;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod simd;

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
mod aarch64;

pub use dispatch::{KernelError, Kernels, Variant};
pub use quant::{QFormat, QWeight};
pub use weight::{DType, WeightRef};
