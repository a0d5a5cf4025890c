//! NEON + i8mm quantized kernels: [`super::quant_neon`]'s tiles with the integer dots of 2 rows × 2
//! tokens taken by `smmla`, which multiplies a 2×8 by an 8×2 matrix of i8 into 2×2 i32 lanes.
//!
//! The `rowsplit` layout keeps each row's quants contiguous (no interleaved copy), so a row pair's
//! operand is built per 16-byte load: `zip1`/`zip2` on 64-bit lanes put 8 bytes of row `i` next to the
//! same 8 bytes of row `i+1`; tokens are paired the same way. Four `smmla` cover a 32-element block.
//! A group of four blocks then holds, per 2×2 pair, four vectors `[r0t0, r0t1, r1t0, r1t1]` (one per
//! block); a 4×4 transpose turns them into the per-(row, token) "lane = block" vectors the shared
//! scaling code takes.
//!
//! Odd tails (a last row or token) and decode (`n == 1`, nothing to pair a token with) use `sdot`
//! instead: every i8mm CPU has dotprod (detection requires both).

use core::arch::aarch64::*;

use super::asm::smmla;
use super::dotprod::Dotprod;
use super::i8mm::I8mm;
use super::quant_dotprod::{rows8_by_lane, Sdot};
use super::quant_neon::{
    four_blocks, isa, matmul, matmul_by_block, Blocks, ByBlock, Dots, Isums, OneBlock, Tile,
};
use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::{MatmulQ, MatmulRows8};

/// Rows × tokens of the main tile: two `smmla` pairs per block; the four blocks' 2×2 partial dots of
/// both stay in registers alongside the paired operands.
const ROWS: usize = 4;
const TOKENS: usize = 2;

/// Pairs two 32-element blocks for `smmla`: output `h` holds elements `8h..8h+8` of `a`, then of `b`.
#[inline]
#[target_feature(enable = "neon")]
fn pair(a: [int8x16_t; 2], b: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let (a, b) = (
        a.map(|v| vreinterpretq_s64_s8(v)),
        b.map(|v| vreinterpretq_s64_s8(v)),
    );
    [
        vzip1q_s64(a[0], b[0]),
        vzip2q_s64(a[0], b[0]),
        vzip1q_s64(a[1], b[1]),
        vzip2q_s64(a[1], b[1]),
    ]
    .map(|v| vreinterpretq_s8_s64(v))
}

/// Transposes four `[r0t0, r0t1, r1t0, r1t1]` vectors (one per block) into the four pairs' vectors of
/// four blocks: `[r0t0, r0t1, r1t0, r1t1]`, each `[block 0, 1, 2, 3]`.
#[inline]
#[target_feature(enable = "neon")]
fn transpose(v: [int32x4_t; 4]) -> [int32x4_t; 4] {
    let t0 = vreinterpretq_s64_s32(vtrn1q_s32(v[0], v[1]));
    let t1 = vreinterpretq_s64_s32(vtrn2q_s32(v[0], v[1]));
    let t2 = vreinterpretq_s64_s32(vtrn1q_s32(v[2], v[3]));
    let t3 = vreinterpretq_s64_s32(vtrn2q_s32(v[2], v[3]));
    [
        vzip1q_s64(t0, t2),
        vzip1q_s64(t1, t3),
        vzip2q_s64(t0, t2),
        vzip2q_s64(t1, t3),
    ]
    .map(|v| vreinterpretq_s32_s64(v))
}

/// [`Isums`] by `smmla` for even `R` and `T`, else by `sdot` ([`ByBlock<Sdot>`]).
pub(super) struct Mmla;

impl Isums for Mmla {
    #[inline(always)]
    unsafe fn isums<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
        g: usize,
    ) -> Dots<R, T> {
        if !R.is_multiple_of(2) || !T.is_multiple_of(2) {
            // SAFETY: the caller's contract; the CPU has dotprod as well (see the module docs).
            return unsafe { ByBlock::<Sdot>::isums::<F, R, T>(t, b, g) };
        }
        // SAFETY: blocks b..b+g exist and the CPU has i8mm (the caller's contract).
        let p = unsafe { four_blocks::<Self, F, R, T>(t, b, g) };
        let mut out = [[vdupq_n_s32(0); T]; R];
        for ip in 0..R / 2 {
            for jp in 0..T / 2 {
                let [a, b, c, d] =
                    transpose([p[0][ip][jp], p[1][ip][jp], p[2][ip][jp], p[3][ip][jp]]);
                out[2 * ip][2 * jp] = a;
                out[2 * ip][2 * jp + 1] = b;
                out[2 * ip + 1][2 * jp] = c;
                out[2 * ip + 1][2 * jp + 1] = d;
            }
        }
        out
    }
}

impl OneBlock for Mmla {
    /// Block `b` of rows `2ip, 2ip+1` × tokens `2jp, 2jp+1` at `[ip][jp]` (for `ip < R/2`, `jp < T/2`; the
    /// rest is zero: array lengths cannot be `R/2` on stable Rust) as `[r0t0, r0t1, r1t0, r1t1]`.
    ///
    /// # Safety
    /// `R`, `T` even; block `b` exists in every row and token of `tile`; the CPU has i8mm.
    #[inline(always)]
    unsafe fn block<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
    ) -> Dots<R, T> {
        let mut wz = [[vdupq_n_s8(0); 4]; R];
        for (ip, wz) in wz.iter_mut().take(R / 2).enumerate() {
            let (off, aoff) = (b * F::QB, b * F::AB);
            // SAFETY: block b exists in every row of the t (the caller's contract).
            *wz = unsafe {
                pair(
                    F::load(t.wq[2 * ip].add(off), t.wa[2 * ip].add(aoff)),
                    F::load(t.wq[2 * ip + 1].add(off), t.wa[2 * ip + 1].add(aoff)),
                )
            };
        }
        let mut xz = [[vdupq_n_s8(0); 4]; T];
        for (jp, xz) in xz.iter_mut().take(T / 2).enumerate() {
            let (p0, p1, off) = (t.xq[2 * jp], t.xq[2 * jp + 1], b * QK);
            // SAFETY: block b (32 quants) exists in every token of the t.
            *xz = unsafe {
                pair(
                    [vld1q_s8(p0.add(off)), vld1q_s8(p0.add(off + 16))],
                    [vld1q_s8(p1.add(off)), vld1q_s8(p1.add(off + 16))],
                )
            };
        }
        let mut out = [[vdupq_n_s32(0); T]; R];
        for ip in 0..R / 2 {
            for jp in 0..T / 2 {
                for h in 0..4 {
                    // SAFETY: the CPU has i8mm (the caller's contract).
                    out[ip][jp] = unsafe { smmla(out[ip][jp], wz[ip][h], xz[jp][h]) };
                }
            }
        }
        out
    }
}

isa!(I8mm, "neon,dotprod,i8mm", Mmla);

impl<F: Blocks> MatmulQ<F> for I8mm {
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract; every i8mm CPU has dotprod (detection requires both).
        unsafe {
            if x.n == 1 {
                matmul_by_block::<F, Dotprod>(w, x, yt)
            } else {
                matmul::<F, I8mm, ROWS, TOKENS>(w, x, yt)
            }
        }
    }
}

impl<F: Blocks> MatmulRows8<F> for I8mm {
    unsafe fn matmul_rows8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract; every i8mm CPU has dotprod.
        unsafe { rows8_by_lane(F::FORMAT, w, x, yt) }
    }
}
