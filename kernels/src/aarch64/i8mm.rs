//! NEON + i8mm (`smmla`) kernels: the quantized products of [`super::quant_i8mm`], the rest
//! dotprod's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::quantized;

/// The NEON + dotprod + i8mm variant.
pub(super) struct I8mm;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed its features.
pub(crate) fn table() -> Kernels {
    quantized::<I8mm>(Variant::NeonI8mm, super::dotprod::table())
}
