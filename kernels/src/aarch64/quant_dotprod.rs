//! NEON + dotprod quantized kernels: [`super::quant_neon`]'s tiles with each block's integer dot taken
//! by two `sdot` (16 products each, accumulated in i32 lanes) instead of widening multiplies.

use core::arch::aarch64::*;

use super::asm::sdot;
use super::quant_neon::{matmul_by_block, BlockDot, Blocks, ByBlock, Isa, Q4_0, Q4_1, Q8_0};
use crate::quant::scalar::check_qmatmul;
use crate::quant::{Q8ActsRef, QWeight};

/// Two `sdot`: lane `i` of the result is `Σ_{h, j<4} w[h][4i+j]·x[h][4i+j]`.
pub(super) struct Sdot;

impl BlockDot for Sdot {
    #[inline(always)]
    unsafe fn dot(w: [int8x16_t; 2], x: [int8x16_t; 2]) -> int32x4_t {
        // SAFETY: the CPU has dotprod (the caller's contract).
        unsafe { sdot(sdot(vdupq_n_s32(0), w[0], x[0]), w[1], x[1]) }
    }
}

pub(super) struct Dotprod;

impl Isa for Dotprod {
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn tile<F: Blocks, const R: usize, const T: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
        r: usize,
        t: usize,
    ) {
        // SAFETY: the caller's contract (which includes dotprod, all `Sdot` needs).
        unsafe { super::quant_neon::tile::<F, ByBlock<Sdot>, R, T>(w, x, yt, r, t) }
    }
}

macro_rules! matmul_entry {
    ($name:ident, $format:ident) => {
        /// dotprod version of the [`crate::quant::scalar`] function of the same name (same contract,
        /// same panics).
        pub fn $name(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
            check_qmatmul(w, $format::FORMAT, x, yt.len());
            // SAFETY: only reachable through the dotprod and i8mm tables, built after detection
            // confirmed NEON and dotprod; `check_qmatmul` proved the plane lengths the tiles index.
            unsafe { matmul_by_block::<$format, Dotprod>(w, x, yt) }
        }
    };
}

matmul_entry!(matmul_q8_0_q8, Q8_0);
matmul_entry!(matmul_q4_0_q8, Q4_0);
matmul_entry!(matmul_q4_1_q8, Q4_1);
