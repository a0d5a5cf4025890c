//! AVX-512 (F, BW, VL, VNNI) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels { variant: Variant::Avx512Vnni, ..super::avx2::table() }
}
