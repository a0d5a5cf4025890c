//! edgeinfer's compute kernels.
//!
//! Every operation has a scalar reference in [`scalar`] — the specification the SIMD variants must
//! match — and the per-ISA modules implement the same names with the same signatures. A [`Kernels`]
//! table of plain function pointers is chosen once (CPU detection or an explicit name) and kept by the
//! model; nothing checks CPU features per call.
//!
//! Threading belongs to the caller: a kernel computes the rows it is given. [`par`] has the row-splitting
//! helpers the models use.
//!
//! This crate knows nothing about files or models.

/// The public `weighted_sum_f32` / `weighted_sum_f16` of a SIMD module that groups up to four weight
/// rows per pass over the values: the module provides, under `#[target_feature(enable = $features)]`,
/// `weighted_sum(p, v, out)` for one row and `weighted_group::<W, R>(p, v, out)` for `R` rows, both
/// generic over its element trait `$lanes` (implemented for f32 and f16).
macro_rules! grouped_weighted_sum {
    ($features:literal, $lanes:ident, $name:literal) => {
        #[doc = concat!($name, " version of [`scalar::weighted_sum_f32`]: up to four rows share each load of `v`.")]
        pub fn weighted_sum_f32(p: &[f32], rows: usize, v: &[f32], out: &mut [f32]) {
            scalar::weighted_sum_rows(p, rows, v.len(), out, 4, |p, out, r| {
                // SAFETY: only reachable through this module's tables, built after detection;
                // `weighted_sum_rows` passes `r` rows of `seen` and of `hd` with `seen·hd <= v.len()`.
                unsafe { weighted_rows(p, v, out, r) }
            })
        }

        #[doc = concat!($name, " version of [`scalar::weighted_sum_f16`]: up to four rows share each load of `v`.")]
        pub fn weighted_sum_f16(p: &[f32], rows: usize, v: &[f16], out: &mut [f32]) {
            scalar::weighted_sum_rows(p, rows, v.len(), out, 4, |p, out, r| {
                // SAFETY: as for `weighted_sum_f32`.
                unsafe { weighted_rows(p, v, out, r) }
            })
        }

        /// `r` (1..=4) rows: `weighted_group`, or `weighted_sum` for one. Precondition: `p` is `r` rows
        /// of `seen > 0`, `out` `r` rows of `hd > 0`, `v.len() >= seen·hd`.
        #[target_feature(enable = $features)]
        unsafe fn weighted_rows<W: $lanes>(p: &[f32], v: &[W], out: &mut [f32], r: usize) {
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

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;

pub use dispatch::{KernelError, Kernels, Variant};
pub use quant::{QFormat, QWeight};
pub use weight::{DType, WeightRef};
