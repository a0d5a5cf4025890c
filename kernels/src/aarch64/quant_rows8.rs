//! The products of q4_0, q4_1 and q8_0 weights in the `rows8` layout
//! ([`crate::quant::rows8`]), with `sdot` by element (dotprod; i8mm CPUs run them too).
//!
//! **q4_0.**
//! Per group of eight rows and block, the loop body is: eight 16-byte loads of the group's quants
//! (two `ld1` of four registers), eight `and #0x0f`, sixteen `sdot` by element into two `int32x4`
//! accumulators, `s1` over the bytes as they are and `s2` over their low nibbles (lane `i` of each
//! is pair `i`: rows `8g + i` and `8g + 4 + i`), and the scaling: one load of the eight f16 scales
//! widened by `fcvtl`/`fcvtl2`, times the activation scale, and per four rows one `fsub` and one
//! fused multiply-add. Row A's dot times 16 is `s1 − s2`, row B's `s2 − 8·sx` (see the layout).
//!
//! No accumulator is zeroed and none is converted by `scvtf`: both start from a loaded vector
//! holding the bits of `1.5·2²³` less `8·sx` (computed once per call for every block, on the
//! stack), so after the dots `s2`'s bits are those of the float `1.5·2²³ + B` and `s1`'s of
//! `1.5·2²³ + 16·A + B`, exactly (`|16·A + B| ≤ 17·8·127·32 < 2²²`). Then `f(s1) − f(s2) = 16·A`
//! and `f(s2) − 1.5·2²³ = B` are exact f32 subtractions.
//!
//! **q4_1.** As q4_0, with row A's `s1` started at `1.5·2²³ + 128·sx` (its nibbles are not offset by
//! 8, so `s1 − s2` is then `16·Σ q·x`), `s2` at `1.5·2²³`, and the minimums' term `m·(dx·sx)` added
//! per four rows by one more `fmla` each (the eight minimums widened like the scales).
//!
//! **q8_0.** Per group and block: sixteen 16-byte loads, 16 `sdot` by element into two accumulators
//! (rows `8g..8g+4` and `8g+4..8g+8`), nothing to unpack, and the same scaling; the accumulators
//! start from the bits of `1.5·2²³` (`|idot| ≤ 32·128·127 < 2²²`).
//!
//! **Several tokens** (prefill): the same block loops, run for every token while a group's
//! weights (at most 128 KiB, usually a few) are in cache, each group's accumulator starts
//! recomputed per token; products are read straight from the layout, never reordered.
//!
//! Result: `yt[r] = Σ_b (dw·dx) · idot_b`: the scalar reference's terms (`idot_b` including q4_0's
//! `− 8·sx`), summed in block order per row with fused multiply-adds, row A's `/16` exact at the end.

use core::arch::aarch64::*;

use super::asm::{load_fresh, sdot_lane};
use crate::quant::rows8::{GROUP, ROWS8_MAX_K};
use half::f16;

use crate::quant::{Q8ActsRef, QWeight, QK};

/// `1.5·2²³` as f32 bits (see the module docs).
const MAGIC: i32 = 0x4B40_0000;

/// [`MAGIC`] in four lanes, for [`load_fresh`].
static MAGIC4: [i32; 4] = [MAGIC; 4];

/// The dots of one group of eight q4_0 rows (`qs`, `d`: the group's `nb` blocks) with one token's
/// activations (`xq`, `xd`), each block's accumulators starting from `start[b]` (all four lanes:
/// `MAGIC − 8·sx`): rows `8g..8g+4` and `8g+4..8g+8`.
///
/// # Safety
/// The CPU has dotprod; `qs` holds `128·nb` bytes, `d` `8·nb` scales, `xq` `32·nb`, `xd` and
/// `start` `nb` entries.
#[inline(always)]
unsafe fn q4_0_group(
    qs: &[u8],
    d: &[f16],
    xq: &[i8],
    xd: &[f32],
    start: &[[i32; 4]],
) -> (float32x4_t, float32x4_t) {
    let magic = vreinterpretq_f32_s32(vdupq_n_s32(MAGIC));
    let low = vdupq_n_u8(0x0F);
    let (mut acc_a, mut acc_b) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for (b, &dx) in xd.iter().enumerate() {
        // SAFETY: block `b`: 128 quant bytes at 128·b, 8 scales at 8·b, 32 activation quants at
        // 32·b and `start[b]` are inside the slices (the caller's contract).
        unsafe {
            let q = qs.as_ptr().add(128 * b);
            let (p, r) = (vld1q_u8_x4(q), vld1q_u8_x4(q.add(64)));
            let x0 = vld1q_s8(xq.as_ptr().add(QK * b));
            let x1 = vld1q_s8(xq.as_ptr().add(QK * b + 16));
            let raw = |v: uint8x16_t| vreinterpretq_s8_u8(v);
            let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, low));
            let mut s1 = load_fresh(start.as_ptr().add(b).cast());
            let mut s2 = load_fresh(start.as_ptr().add(b).cast());
            s1 = sdot_lane::<0>(s1, raw(p.0), x0);
            s2 = sdot_lane::<0>(s2, lo(p.0), x0);
            s1 = sdot_lane::<1>(s1, raw(p.1), x0);
            s2 = sdot_lane::<1>(s2, lo(p.1), x0);
            s1 = sdot_lane::<2>(s1, raw(p.2), x0);
            s2 = sdot_lane::<2>(s2, lo(p.2), x0);
            s1 = sdot_lane::<3>(s1, raw(p.3), x0);
            s2 = sdot_lane::<3>(s2, lo(p.3), x0);
            s1 = sdot_lane::<0>(s1, raw(r.0), x1);
            s2 = sdot_lane::<0>(s2, lo(r.0), x1);
            s1 = sdot_lane::<1>(s1, raw(r.1), x1);
            s2 = sdot_lane::<1>(s2, lo(r.1), x1);
            s1 = sdot_lane::<2>(s1, raw(r.2), x1);
            s2 = sdot_lane::<2>(s2, lo(r.2), x1);
            s1 = sdot_lane::<3>(s1, raw(r.3), x1);
            s2 = sdot_lane::<3>(s2, lo(r.3), x1);
            let dw = vreinterpretq_f16_u16(vld1q_u16(d.as_ptr().add(GROUP * b).cast::<u16>()));
            let (da, db) = (vcvt_f32_f16(vget_low_f16(dw)), vcvt_high_f32_f16(dw));
            let (f1, f2) = (vreinterpretq_f32_s32(s1), vreinterpretq_f32_s32(s2));
            acc_a = vfmaq_f32(acc_a, vsubq_f32(f1, f2), vmulq_n_f32(da, dx));
            acc_b = vfmaq_f32(acc_b, vsubq_f32(f2, magic), vmulq_n_f32(db, dx));
        }
    }
    (vmulq_n_f32(acc_a, 1.0 / 16.0), acc_b)
}

/// The dots of one group of eight q4_1 rows (`m`: the group's minimums) with one token's
/// activations: as [`q4_0_group`], `start[b]` holding `MAGIC + 128·sx` and `dxs[b]` `dx·sx`.
///
/// # Safety
/// As [`q4_0_group`], `m` holding `8·nb` minimums and `dxs` `nb` entries.
#[inline(always)]
unsafe fn q4_1_group(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    xq: &[i8],
    xd: &[f32],
    start: &[[i32; 4]],
    dxs: &[f32],
) -> (float32x4_t, float32x4_t) {
    let magic = vreinterpretq_f32_s32(vdupq_n_s32(MAGIC));
    let low = vdupq_n_u8(0x0F);
    let (mut acc_a, mut acc_b) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for (b, &dx) in xd.iter().enumerate() {
        // SAFETY: block `b`: 128 quant bytes at 128·b, 8 scales and 8 minimums at 8·b, 32
        // activation quants at 32·b, `start[b]` and `dxs[b]` are inside the slices (the caller's
        // contract).
        unsafe {
            let q = qs.as_ptr().add(128 * b);
            let (p, r) = (vld1q_u8_x4(q), vld1q_u8_x4(q.add(64)));
            let x0 = vld1q_s8(xq.as_ptr().add(QK * b));
            let x1 = vld1q_s8(xq.as_ptr().add(QK * b + 16));
            let raw = |v: uint8x16_t| vreinterpretq_s8_u8(v);
            let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, low));
            let mut s1 = load_fresh(start.as_ptr().add(b).cast());
            let mut s2 = load_fresh(MAGIC4.as_ptr());
            s1 = sdot_lane::<0>(s1, raw(p.0), x0);
            s2 = sdot_lane::<0>(s2, lo(p.0), x0);
            s1 = sdot_lane::<1>(s1, raw(p.1), x0);
            s2 = sdot_lane::<1>(s2, lo(p.1), x0);
            s1 = sdot_lane::<2>(s1, raw(p.2), x0);
            s2 = sdot_lane::<2>(s2, lo(p.2), x0);
            s1 = sdot_lane::<3>(s1, raw(p.3), x0);
            s2 = sdot_lane::<3>(s2, lo(p.3), x0);
            s1 = sdot_lane::<0>(s1, raw(r.0), x1);
            s2 = sdot_lane::<0>(s2, lo(r.0), x1);
            s1 = sdot_lane::<1>(s1, raw(r.1), x1);
            s2 = sdot_lane::<1>(s2, lo(r.1), x1);
            s1 = sdot_lane::<2>(s1, raw(r.2), x1);
            s2 = sdot_lane::<2>(s2, lo(r.2), x1);
            s1 = sdot_lane::<3>(s1, raw(r.3), x1);
            s2 = sdot_lane::<3>(s2, lo(r.3), x1);
            let dw = vreinterpretq_f16_u16(vld1q_u16(d.as_ptr().add(GROUP * b).cast::<u16>()));
            let (da, db) = (vcvt_f32_f16(vget_low_f16(dw)), vcvt_high_f32_f16(dw));
            let mw = vreinterpretq_f16_u16(vld1q_u16(m.as_ptr().add(GROUP * b).cast::<u16>()));
            let (ma, mb) = (vcvt_f32_f16(vget_low_f16(mw)), vcvt_high_f32_f16(mw));
            let (f1, f2) = (vreinterpretq_f32_s32(s1), vreinterpretq_f32_s32(s2));
            let cs = dxs[b];
            acc_a = vfmaq_f32(acc_a, vsubq_f32(f1, f2), vmulq_n_f32(da, dx));
            acc_a = vfmaq_n_f32(acc_a, ma, 16.0 * cs);
            acc_b = vfmaq_f32(acc_b, vsubq_f32(f2, magic), vmulq_n_f32(db, dx));
            acc_b = vfmaq_n_f32(acc_b, mb, cs);
        }
    }
    (vmulq_n_f32(acc_a, 1.0 / 16.0), acc_b)
}

/// The dots of one group of eight q8_0 rows with one token's activations (as [`q4_0_group`]).
///
/// # Safety
/// The CPU has dotprod; `qs` holds `256·nb` bytes, `d` `8·nb` scales, `xq` `32·nb`, `xd` `nb`.
#[inline(always)]
unsafe fn q8_0_group(qs: &[u8], d: &[f16], xq: &[i8], xd: &[f32]) -> (float32x4_t, float32x4_t) {
    let magic = vreinterpretq_f32_s32(vdupq_n_s32(MAGIC));
    let (mut acc_a, mut acc_b) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for (b, &dx) in xd.iter().enumerate() {
        // SAFETY: block `b`: 256 quant bytes at 256·b, 8 scales at 8·b, 32 activation quants at
        // 32·b are inside the slices (the caller's contract).
        unsafe {
            let q = qs.as_ptr().add(256 * b).cast::<i8>();
            let x0 = vld1q_s8(xq.as_ptr().add(QK * b));
            let x1 = vld1q_s8(xq.as_ptr().add(QK * b + 16));
            let half = |h: usize, mut s: int32x4_t| {
                let (p, r) = (
                    vld1q_s8_x4(q.add(128 * h)),
                    vld1q_s8_x4(q.add(128 * h + 64)),
                );
                s = sdot_lane::<0>(s, p.0, x0);
                s = sdot_lane::<1>(s, p.1, x0);
                s = sdot_lane::<2>(s, p.2, x0);
                s = sdot_lane::<3>(s, p.3, x0);
                s = sdot_lane::<0>(s, r.0, x1);
                s = sdot_lane::<1>(s, r.1, x1);
                s = sdot_lane::<2>(s, r.2, x1);
                sdot_lane::<3>(s, r.3, x1)
            };
            let s1 = half(0, load_fresh(MAGIC4.as_ptr()));
            let s2 = half(1, load_fresh(MAGIC4.as_ptr()));
            let dw = vreinterpretq_f16_u16(vld1q_u16(d.as_ptr().add(GROUP * b).cast::<u16>()));
            let (da, db) = (vcvt_f32_f16(vget_low_f16(dw)), vcvt_high_f32_f16(dw));
            let (f1, f2) = (vreinterpretq_f32_s32(s1), vreinterpretq_f32_s32(s2));
            acc_a = vfmaq_f32(acc_a, vsubq_f32(f1, magic), vmulq_n_f32(da, dx));
            acc_b = vfmaq_f32(acc_b, vsubq_f32(f2, magic), vmulq_n_f32(db, dx));
        }
    }
    (acc_a, acc_b)
}

/// Writes a group's eight results for token `t` of `n` into `yt` (`yt[r·n + t]` for the group's
/// rows `r`, `y` being the group's `8n` outputs).
#[inline(always)]
fn store(y: &mut [f32], n: usize, t: usize, (a, b): (float32x4_t, float32x4_t)) {
    let mut v = [0.0f32; GROUP];
    // SAFETY: `v` has eight elements.
    unsafe {
        vst1q_f32(v.as_mut_ptr(), a);
        vst1q_f32(v.as_mut_ptr().add(4), b);
    }
    for (r, v) in v.into_iter().enumerate() {
        y[r * n + t] = v;
    }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q4_0 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_0, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q4_0_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (n, k, nb) = (x.n, w.k, w.k / QK);
    // Each block's accumulator start, in all four lanes: the bits of 1.5·2²³, less 8·sx.
    let mut start = [[0i32; 4]; ROWS8_MAX_K / QK];
    let starts = |start: &mut [[i32; 4]], t: usize| {
        for (s, &sx) in start[..nb].iter_mut().zip(&x.sum[t * nb..][..nb]) {
            *s = [MAGIC - 8 * sx; 4];
        }
    };
    if n == 1 {
        starts(&mut start, 0);
    }
    for ((qs, d), y) in
        w.qs.chunks_exact(nb * GROUP * QK / 2)
            .zip(w.d.chunks_exact(nb * GROUP))
            .zip(yt.chunks_exact_mut(GROUP * n))
    {
        for t in 0..n {
            if n > 1 {
                starts(&mut start, t);
            }
            let (xq, xd) = (&x.qs[t * k..][..k], &x.d[t * nb..][..nb]);
            // SAFETY: the caller's contract; the chunks hold the group's `nb` blocks.
            let acc = unsafe { q4_0_group(qs, d, xq, xd, &start[..nb]) };
            if n == 1 {
                // SAFETY: `y` has eight elements.
                unsafe {
                    vst1q_f32(y.as_mut_ptr(), acc.0);
                    vst1q_f32(y.as_mut_ptr().add(4), acc.1);
                }
            } else {
                store(y, n, t, acc);
            }
        }
    }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q4_1 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_1, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q4_1_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (n, k, nb) = (x.n, w.k, w.k / QK);
    // Row A's accumulator start (the bits of 1.5·2²³, plus 128·sx) and `dx·sx`, per block.
    let mut start = [[0i32; 4]; ROWS8_MAX_K / QK];
    let mut dxs = [0f32; ROWS8_MAX_K / QK];
    let starts = |start: &mut [[i32; 4]], dxs: &mut [f32], t: usize| {
        let (xs, xd) = (&x.sum[t * nb..][..nb], &x.d[t * nb..][..nb]);
        for (((s, c), &sx), &dx) in start[..nb].iter_mut().zip(&mut dxs[..nb]).zip(xs).zip(xd) {
            *s = [MAGIC + 128 * sx; 4];
            *c = dx * sx as f32;
        }
    };
    if n == 1 {
        starts(&mut start, &mut dxs, 0);
    }
    for (((qs, d), m), y) in
        w.qs.chunks_exact(nb * GROUP * QK / 2)
            .zip(w.d.chunks_exact(nb * GROUP))
            .zip(w.m.chunks_exact(nb * GROUP))
            .zip(yt.chunks_exact_mut(GROUP * n))
    {
        for t in 0..n {
            if n > 1 {
                starts(&mut start, &mut dxs, t);
            }
            let (xq, xd) = (&x.qs[t * k..][..k], &x.d[t * nb..][..nb]);
            // SAFETY: the caller's contract; the chunks hold the group's `nb` blocks.
            let acc = unsafe { q4_1_group(qs, d, m, xq, xd, &start[..nb], &dxs[..nb]) };
            if n == 1 {
                // SAFETY: `y` has eight elements.
                unsafe {
                    vst1q_f32(y.as_mut_ptr(), acc.0);
                    vst1q_f32(y.as_mut_ptr().add(4), acc.1);
                }
            } else {
                store(y, n, t, acc);
            }
        }
    }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q8_0 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q8_0, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q8_0_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (n, k, nb) = (x.n, w.k, w.k / QK);
    for ((qs, d), y) in
        w.qs.chunks_exact(nb * GROUP * QK)
            .zip(w.d.chunks_exact(nb * GROUP))
            .zip(yt.chunks_exact_mut(GROUP * n))
    {
        for t in 0..n {
            let (xq, xd) = (&x.qs[t * k..][..k], &x.d[t * nb..][..nb]);
            // SAFETY: the caller's contract; the chunks hold the group's `nb` blocks.
            let acc = unsafe { q8_0_group(qs, d, xq, xd) };
            if n == 1 {
                // SAFETY: `y` has eight elements.
                unsafe {
                    vst1q_f32(y.as_mut_ptr(), acc.0);
                    vst1q_f32(y.as_mut_ptr().add(4), acc.1);
                }
            } else {
                store(y, n, t, acc);
            }
        }
    }
}
