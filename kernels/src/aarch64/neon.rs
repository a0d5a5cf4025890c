//! Plain NEON (Armv8.0 Advanced SIMD) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels { variant: Variant::Neon, ..Kernels::SCALAR }
}
