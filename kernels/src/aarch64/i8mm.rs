//! NEON + i8mm (`smmla`) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels { variant: Variant::NeonI8mm, ..super::dotprod::table() }
}
