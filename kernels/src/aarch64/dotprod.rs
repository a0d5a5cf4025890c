//! NEON + dotprod (`sdot`) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::NeonDotprod,
        matmul_q8_0: super::quant_dotprod::matmul_q8_0_q8,
        matmul_q4_0: super::quant_dotprod::matmul_q4_0_q8,
        matmul_q4_1: super::quant_dotprod::matmul_q4_1_q8,
        ..super::neon::table()
    }
}
