//! NEON + dotprod (`sdot`) kernels: the quantized products of [`super::quant_dotprod`], the rest
//! plain NEON's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::{matmul_q, Q4_0, Q4_1, Q8_0};

/// The NEON + dotprod variant.
pub(super) struct Dotprod;

pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::NeonDotprod,
        matmul_q8_0_q8: matmul_q::<Dotprod, Q8_0>,
        matmul_q4_0_q8: matmul_q::<Dotprod, Q4_0>,
        matmul_q4_1_q8: matmul_q::<Dotprod, Q4_1>,
        ..super::neon::table()
    }
}
