//! NEON + i8mm (`smmla`) kernels: the quantized products of [`super::quant_i8mm`], the rest
//! dotprod's.

use crate::dispatch::{Kernels, Variant};
use crate::simd::{matmul_q, Q4_0, Q4_1, Q8_0};

/// The NEON + dotprod + i8mm variant.
pub(super) struct I8mm;

pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::NeonI8mm,
        matmul_q8_0_q8: matmul_q::<I8mm, Q8_0>,
        matmul_q4_0_q8: matmul_q::<I8mm, Q4_0>,
        matmul_q4_1_q8: matmul_q::<I8mm, Q4_1>,
        ..super::dotprod::table()
    }
}
