//! AVX2 + FMA + F16C kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels { variant: Variant::Avx2, ..Kernels::SCALAR }
}
