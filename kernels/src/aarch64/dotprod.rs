//! NEON + dotprod (`sdot`) kernels.

use crate::dispatch::{Kernels, Variant};

pub(crate) fn table() -> Kernels {
    Kernels { variant: Variant::NeonDotprod, ..super::neon::table() }
}
