//! NEON + dotprod (`sdot`) kernels: the quantized products of [`super::quant_dotprod`], the rest
//! plain NEON's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::quantized;

/// The NEON + dotprod variant.
pub(super) struct Dotprod;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed its features.
pub(crate) fn table() -> Kernels {
    quantized::<Dotprod>(Variant::NeonDotprod, super::neon::table())
}
