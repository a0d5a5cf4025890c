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
use half::f16;

use crate::quant::rows8::{GROUP, ROWS8_MAX_K};
use crate::quant::{Q8ActsRef, QWeight, QK};

/// `1.5·2²³` as f32 bits (see the module docs).
const MAGIC: i32 = 0x4B40_0000;

/// [`MAGIC`] in four lanes, for [`load_fresh`].
static MAGIC4: [i32; 4] = [MAGIC; 4];

/// The 16 `sdot` of one block of a group of eight 4-bit rows: `s1` over the 128 bytes at `q` as
/// they are, `s2` over their low nibbles (see the module docs).
///
/// # Safety
/// The CPU has dotprod; 128 bytes at `q` are readable.
#[inline(always)]
unsafe fn q4_block_dots(
    q: *const u8,
    x0: int8x16_t,
    x1: int8x16_t,
    mut s1: int32x4_t,
    mut s2: int32x4_t,
) -> (int32x4_t, int32x4_t) {
    let low = vdupq_n_u8(0x0F);
    // SAFETY: 128 readable bytes (the caller's contract).
    let (p, r) = unsafe { (vld1q_u8_x4(q), vld1q_u8_x4(q.add(64))) };
    let raw = |v: uint8x16_t| vreinterpretq_s8_u8(v);
    let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, low));
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
    (s1, s2)
}

/// Eight f16 values (a block's scales or minimums) at `p` as two `float32x4_t`: rows `8g..8g+4`
/// and `8g+4..8g+8`.
///
/// # Safety
/// 16 bytes at `p` are readable.
#[inline(always)]
unsafe fn widen8(p: *const f16) -> (float32x4_t, float32x4_t) {
    // SAFETY: 16 readable bytes (the caller's contract).
    let h = vreinterpretq_f16_u16(unsafe { vld1q_u16(p.cast::<u16>()) });
    (vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h))
}

/// The dots of one group of eight 4-bit rows (`qs`, `d`: the group's `nb` blocks; `m`: its
/// minimums for q4_1, `MIN`) with one token's activations (`xq`, `xd`): rows `8g..8g+4` and
/// `8g+4..8g+8`. Row A's accumulator starts from `start[b]` (all four lanes: `MAGIC − 8·sx` for
/// q4_0, `MAGIC + 128·sx` for q4_1); row B's from the same for q4_0 and from `MAGIC` for q4_1,
/// whose minimums add `m·dxs[b]` (`dxs[b] = dx·sx`).
///
/// # Safety
/// The CPU has dotprod; `qs` holds `128·nb` bytes, `d` (and with `MIN` `m`) `8·nb` values, `xq`
/// `32·nb`, `xd`, `start` (and with `MIN` `dxs`) `nb` entries.
#[inline(always)]
unsafe fn q4_group<const MIN: bool>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    xq: &[i8],
    xd: &[f32],
    start: &[[i32; 4]],
    dxs: &[f32],
) -> (float32x4_t, float32x4_t) {
    let magic = vreinterpretq_f32_s32(vdupq_n_s32(MAGIC));
    let (mut acc_a, mut acc_b) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for (b, &dx) in xd.iter().enumerate() {
        // SAFETY: block `b`: 128 quant bytes at 128·b, 8 scales (minimums) at 8·b, 32 activation
        // quants at 32·b, `start[b]` and `dxs[b]` are inside the slices (the caller's contract).
        unsafe {
            let x0 = vld1q_s8(xq.as_ptr().add(QK * b));
            let x1 = vld1q_s8(xq.as_ptr().add(QK * b + 16));
            let s1 = load_fresh(start.as_ptr().add(b).cast());
            let s2 = match MIN {
                true => load_fresh(MAGIC4.as_ptr()),
                false => load_fresh(start.as_ptr().add(b).cast()),
            };
            let (s1, s2) = q4_block_dots(qs.as_ptr().add(128 * b), x0, x1, s1, s2);
            let (da, db) = widen8(d.as_ptr().add(GROUP * b));
            let (f1, f2) = (vreinterpretq_f32_s32(s1), vreinterpretq_f32_s32(s2));
            acc_a = vfmaq_f32(acc_a, vsubq_f32(f1, f2), vmulq_n_f32(da, dx));
            acc_b = vfmaq_f32(acc_b, vsubq_f32(f2, magic), vmulq_n_f32(db, dx));
            if MIN {
                let (ma, mb) = widen8(m.as_ptr().add(GROUP * b));
                let cs = dxs[b];
                acc_a = vfmaq_n_f32(acc_a, ma, 16.0 * cs);
                acc_b = vfmaq_n_f32(acc_b, mb, cs);
            }
        }
    }
    (vmulq_n_f32(acc_a, 1.0 / 16.0), acc_b)
}

/// The dots of one group of eight q8_0 rows with one token's activations (as [`q4_group`]).
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
            let (da, db) = widen8(d.as_ptr().add(GROUP * b));
            let (f1, f2) = (vreinterpretq_f32_s32(s1), vreinterpretq_f32_s32(s2));
            acc_a = vfmaq_f32(acc_a, vsubq_f32(f1, magic), vmulq_n_f32(da, dx));
            acc_b = vfmaq_f32(acc_b, vsubq_f32(f2, magic), vmulq_n_f32(db, dx));
        }
    }
    (acc_a, acc_b)
}

/// Runs `dots(g, t)` (group `g`'s eight results for token `t`) for every group of eight rows and,
/// inside it, every token, while the group's weights are in cache, and writes them to
/// `yt[r·n + t]`.
#[inline(always)]
fn each_group(
    n: usize,
    yt: &mut [f32],
    mut dots: impl FnMut(usize, usize) -> (float32x4_t, float32x4_t),
) {
    for (g, y) in yt.chunks_exact_mut(GROUP * n).enumerate() {
        for t in 0..n {
            let (a, b) = dots(g, t);
            if n == 1 {
                // SAFETY: `y` has eight elements.
                unsafe {
                    vst1q_f32(y.as_mut_ptr(), a);
                    vst1q_f32(y.as_mut_ptr().add(4), b);
                }
                continue;
            }
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
    }
}

/// [`q4_0_tokens`] and [`q4_1_tokens`] (`MIN`).
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_0 or, with `MIN`, q4_1; rows8),
/// `x`, `yt`.
#[inline(always)]
unsafe fn q4_tokens<const MIN: bool>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (n, k, nb) = (x.n, w.k, w.k / QK);
    let (qs_len, d_len) = (nb * GROUP * QK / 2, nb * GROUP);
    // Per block of the current token: row A's accumulator start (the bits of 1.5·2²³, less 8·sx
    // for q4_0, plus 128·sx for q4_1) and, for q4_1, `dx·sx`. Computed once for one token, else
    // per group and token (a few per cent of the group's work).
    let mut start = [[0i32; 4]; ROWS8_MAX_K / QK];
    let mut dxs = [0f32; ROWS8_MAX_K / QK];
    each_group(n, yt, |g, t| {
        let (xs, xd) = (&x.sum[t * nb..][..nb], &x.d[t * nb..][..nb]);
        if g == 0 || n > 1 {
            for (((s, c), &sx), &dx) in start.iter_mut().zip(&mut dxs).zip(xs).zip(xd) {
                *s = [if MIN {
                    MAGIC + 128 * sx
                } else {
                    MAGIC - 8 * sx
                }; 4];
                if MIN {
                    *c = dx * sx as f32;
                }
            }
        }
        let m = if MIN {
            &w.m[g * d_len..][..d_len]
        } else {
            &[][..]
        };
        // SAFETY: the caller's contract; the slices hold the group's `nb` blocks.
        unsafe {
            q4_group::<MIN>(
                &w.qs[g * qs_len..][..qs_len],
                &w.d[g * d_len..][..d_len],
                m,
                &x.qs[t * k..][..k],
                xd,
                &start[..nb],
                &dxs[..nb],
            )
        }
    })
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q4_0 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_0, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q4_0_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { q4_tokens::<false>(w, x, yt) }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q4_1 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q4_1, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q4_1_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { q4_tokens::<true>(w, x, yt) }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, q8_0 weights in `rows8`, any number of tokens.
///
/// # Safety
/// The CPU has dotprod; `check_matmul_layout` accepted `w` (q8_0, rows8), `x`, `yt`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q8_0_tokens(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (k, nb) = (w.k, w.k / QK);
    let (qs_len, d_len) = (nb * GROUP * QK, nb * GROUP);
    each_group(x.n, yt, |g, t| {
        // SAFETY: the caller's contract; the slices hold the group's `nb` blocks.
        unsafe {
            q8_0_group(
                &w.qs[g * qs_len..][..qs_len],
                &w.d[g * d_len..][..d_len],
                &x.qs[t * k..][..k],
                &x.d[t * nb..][..nb],
            )
        }
    })
}
