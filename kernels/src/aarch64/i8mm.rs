//! NEON + i8mm (`smmla`) kernels: the quantized products of [`super::quant_i8mm`] (the GGUF
//! formats': [`super::quant_gguf`]), the rest dotprod's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::quantized;

/// The NEON + dotprod + i8mm variant.
pub(super) struct I8mm;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed its features.
pub(crate) fn table() -> Kernels {
    let base = quantized::<I8mm>(Variant::NeonI8mm, super::dotprod::table());
    // The super-block formats run dotprod's tile (every i8mm CPU has dotprod; `movi` starts instead
    // of loaded zeros made Neoverse V1's decode loop slower by llvm-mca too).
    super::quant_gguf::table::<I8mm, super::dotprod::Dotprod>(base)
}
