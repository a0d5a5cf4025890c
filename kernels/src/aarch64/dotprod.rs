//! NEON + dotprod (`sdot`) kernels: the quantized products of [`super::quant_dotprod`] (and of
//! [`super::quant_gguf`] for the GGUF formats), the rest plain NEON's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::quantized;

/// The NEON + dotprod variant.
pub(super) struct Dotprod;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed its features.
pub(crate) fn table() -> Kernels {
    let base = quantized::<Dotprod>(Variant::NeonDotprod, super::neon::table());
    super::quant_gguf::table::<Dotprod, Dotprod>(base)
}
