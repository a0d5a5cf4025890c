//! NEON + i8mm (`smmla`) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::NeonI8mm,
        matmul_q8_0: super::quant_i8mm::matmul_q8_0_q8,
        matmul_q4_0: super::quant_i8mm::matmul_q4_0_q8,
        matmul_q4_1: super::quant_i8mm::matmul_q4_1_q8,
        ..super::dotprod::table()
    }
}
