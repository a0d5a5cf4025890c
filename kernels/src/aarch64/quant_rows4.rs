//! The one-token product of q4_0 weights in the `rows4` layout ([`crate::quant::rows4`]), with
//! `sdot` by element (dotprod; i8mm CPUs run it too).
//!
//! Per group of four rows and block, the loop body is: one 64-byte load of the group's quants, four
//! `shl #4` and four `and #0xf0` (each byte holds two signed nibbles, so this gives `16·(q − 8)` as
//! `i8`), eight `sdot` by element into one `int32x4` whose lane `i` is row `i`'s whole block dot, and
//! four instructions to scale it: the four f16 scales widened (`fcvtl`), times the activation scale,
//! the dot converted to f32, one fused multiply-add. Nothing is reduced across lanes, q4_0's
//! `− 8` costs nothing, and the accumulator starts as a loaded constant rather than a vector-pipe
//! `movi`. The conversion uses the `1.5·2²³` trick: the accumulator starts at the bit pattern of
//! `1.5·2²³`, so after the dots its bits are those of the float `1.5·2²³ + 16·idot` (exact, as
//! `|16·idot| ≤ 2¹⁹ < 2²²`), and one `fsub` (either vector pipe) replaces `scvtf` (two cycles of
//! one pipe on Neoverse N1).
//!
//! Result: `yt[r] = Σ_b (dw·dx) · (16·idot_b) / 16`: the scalar reference's terms, summed in block
//! order per row with fused multiply-adds, the `/16` exact.

use core::arch::aarch64::*;

use super::asm::{load_fresh, sdot_lane};
use crate::quant::{Q8ActsRef, QWeight, QK};

/// `1.5·2²³` as f32 bits, in all four lanes (see the module docs).
static MAGIC: [i32; 4] = [0x4B40_0000; 4];

/// Rows per group (the layout's).
const G: usize = crate::quant::rows4::GROUP;

/// `yt[r] = Σ_j w[r, j]·x[j]` for one token (`x.n == 1`).
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_0, rows4), `x` (one token), `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn matmul_one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    debug_assert_eq!(x.n, 1);
    let nb = w.k / QK;
    let (xq, xd) = (&x.qs[..w.k], &x.d[..nb]);
    for ((qs, d), y) in
        w.qs.chunks_exact(nb * G * QK / 2)
            .zip(w.d.chunks_exact(nb * G))
            .zip(yt.chunks_exact_mut(G))
    {
        let mut acc = vdupq_n_f32(0.0);
        let magic = vreinterpretq_f32_s32(vld1q_s32(MAGIC.as_ptr()));
        for b in 0..nb {
            // SAFETY: block `b` of this group: 64 quant bytes at 64·b and 4 scales at 4·b are inside
            // `qs`/`d` (chunks of `nb` blocks); 32 activation quants at 32·b inside `xq`.
            unsafe {
                let q = qs.as_ptr().add(64 * b);
                let p = vld1q_u8_x4(q);
                let x0 = vld1q_s8(xq.as_ptr().add(QK * b));
                let x1 = vld1q_s8(xq.as_ptr().add(QK * b + 16));
                let hi = vdupq_n_u8(0xF0);
                let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vshlq_n_u8::<4>(v));
                let high = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, hi));
                let mut s = load_fresh(MAGIC.as_ptr());
                s = sdot_lane::<0>(s, lo(p.0), x0);
                s = sdot_lane::<0>(s, high(p.0), x1);
                s = sdot_lane::<1>(s, lo(p.1), x0);
                s = sdot_lane::<1>(s, high(p.1), x1);
                s = sdot_lane::<2>(s, lo(p.2), x0);
                s = sdot_lane::<2>(s, high(p.2), x1);
                s = sdot_lane::<3>(s, lo(p.3), x0);
                s = sdot_lane::<3>(s, high(p.3), x1);
                let dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(
                    d.as_ptr().add(G * b).cast::<u16>(),
                )));
                let dot = vsubq_f32(vreinterpretq_f32_s32(s), magic);
                acc = vfmaq_f32(acc, dot, vmulq_n_f32(dw, xd[b]));
            }
        }
        // SAFETY: `y` has four elements.
        unsafe { vst1q_f32(y.as_mut_ptr(), vmulq_n_f32(acc, 1.0 / 16.0)) };
    }
}
