//! NEON + dotprod quantized kernels: [`super::quant_neon`]'s tiles with each block's integer dot taken
//! by two `sdot` (16 products each, accumulated in i32 lanes) instead of widening multiplies.
//!
//! A block's accumulator starts from zeros loaded from memory ([`load_fresh`]): the decode tile is
//! bound by the vector pipes, which a `movi #0` per block would take a slot of, while the load ports
//! have room (Neoverse N1, llvm-mca: q4_0's loop from 3.79 to 3.29 cycles per block-row); not for
//! q8_0 ([`Blocks::ZERO_LOADED`]).

use core::arch::aarch64::*;

use super::asm::{load_fresh, sdot};
use super::dotprod::Dotprod;
use super::quant_neon::{isa, matmul_by_block, BlockDot, Blocks, ByBlock};
use crate::quant::{Q8ActsRef, QFormat, QWeight};
use crate::simd::{MatmulQ, MatmulRows8};

/// Zeros for an accumulator's start (see the module docs).
static ZERO: [i32; 4] = [0; 4];

/// Two `sdot`: lane `i` of the result is `Σ_{h, j<4} w[h][4i+j]·x[h][4i+j]`.
pub(super) struct Sdot;

impl BlockDot for Sdot {
    #[inline(always)]
    unsafe fn dot(w: [int8x16_t; 2], x: [int8x16_t; 2], loaded: bool) -> int32x4_t {
        // SAFETY: the CPU has dotprod (the caller's contract); ZERO holds 16 bytes.
        unsafe {
            let zero = if loaded {
                load_fresh(ZERO.as_ptr())
            } else {
                vdupq_n_s32(0)
            };
            sdot(sdot(zero, w[0], x[0]), w[1], x[1])
        }
    }
}

isa!(Dotprod, "neon,dotprod", ByBlock<Sdot>);

impl<F: Blocks> MatmulQ<F> for Dotprod {
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { matmul_by_block::<F, Dotprod>(w, x, yt) }
    }
}

impl<F: Blocks> MatmulRows8<F> for Dotprod {
    unsafe fn matmul_rows8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { rows8_by_lane(F::FORMAT, w, x, yt) }
    }
}

/// [`super::quant_rows8`]: the layout as it is, for any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted the arguments for `rows8` and `format`.
pub(super) unsafe fn rows8_by_lane(
    format: QFormat,
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        match format {
            QFormat::Q4_0 => super::quant_rows8::q4_0_tokens(w, x, yt),
            QFormat::Q8_0 => super::quant_rows8::q8_0_tokens(w, x, yt),
            QFormat::Q4_1 => super::quant_rows8::q4_1_tokens(w, x, yt),
            // `QWeight::validate` refuses rows8 views of the other formats.
            _ => unreachable!("a rows8 {format} weight"),
        }
    }
}
