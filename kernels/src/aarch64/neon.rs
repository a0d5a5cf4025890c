//! Plain NEON (Armv8.0 Advanced SIMD): the vectors and loads of [`crate::simd`]'s kernels, the
//! activation quantizer, and the quantized products of [`super::quant_neon`] and, for the GGUF
//! formats, [`super::quant_gguf`].
//!
//! A dense step is a pair of 4-lane vectors (low and high half of 8 elements), so that even a
//! one-token tile has 8 independent FMA chains; 4 rows × 2 tokens take 4×2×2 accumulators + 8 weight
//! vectors + 2 token vectors of the 32 registers. The element-wise kernels take 4-lane vectors. f16
//! widens with `fcvtl` (`vcvt_f32_f16`, base Armv8, exact); bf16 with a shift-left-long by 16.
//!
//! # Activations (`quantize_q8`, shared by every aarch64 variant)
//!
//! `quantize_q8` produces the scalar bytes exactly: `fmaxnm` is [`f32::max`], `fdiv` is the
//! scalar division, `fcvtas` is [`f32::round`] (ties away from zero) followed by the cast, and the
//! ±127 clamp is applied to the integers.

use core::arch::aarch64::*;

use half::{bf16, f16};

use crate::dispatch::{Kernels, Variant};
use crate::quant::QK;
use crate::simd::dense::{Elem, Lanes};
use crate::simd::vector::{Vector, VectorMath};
use crate::simd::{activation_entries, activations, entries, intrinsics, table_of, QuantizeQ8};

/// The plain NEON variant.
pub(super) struct Neon;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed NEON (always present
/// on aarch64 Linux), which is what makes the table's safe entries sound.
pub(crate) fn table() -> Kernels {
    let base = table_of::<Neon>(Variant::Neon, activations::<Neon>(Kernels::SCALAR));
    super::quant_gguf::table::<Neon, Neon>(base)
}

entries!(Neon, "neon", 2);
activation_entries!(Neon, "neon");

impl Lanes for Neon {
    /// Elements `c..c+4` and `c+4..c+8` of a step.
    type V = (float32x4_t, float32x4_t);
    type Mask = ();
    const STEP: usize = 8;
    const MASKED_TAIL: bool = false;
    const FULL: () = ();
    const WEIGHTED_ROWS: usize = 4;
    const GROUP_STEPS: usize = 2;

    fn mask(_: usize) {}

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        (vdupq_n_f32(0.0), vdupq_n_f32(0.0))
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        (vdupq_n_f32(v), vdupq_n_f32(v))
    }

    #[inline(always)]
    unsafe fn fma(acc: Self::V, w: Self::V, x: Self::V) -> Self::V {
        (vfmaq_f32(acc.0, w.0, x.0), vfmaq_f32(acc.1, w.1, x.1))
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, _: ()) -> Self::V {
        // SAFETY: 8 readable values (the caller's contract); `ld1` needs only element alignment.
        unsafe { (vld1q_f32(p), vld1q_f32(p.add(4))) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V, _: ()) {
        // SAFETY: 8 writable values (the caller's contract).
        unsafe {
            vst1q_f32(p, v.0);
            vst1q_f32(p.add(4), v.1);
        }
    }

    #[inline(always)]
    unsafe fn sum((lo, hi): Self::V) -> f32 {
        vaddvq_f32(vaddq_f32(lo, hi))
    }
}

impl Elem<Neon> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: ()) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller's contract.
        unsafe { <Neon as Lanes>::load(p, m) }
    }
}

impl Elem<Neon> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16, _: ()) -> (float32x4_t, float32x4_t) {
        // SAFETY: 8 readable halves (u16 alignment, as `half::f16` has). `fcvtl` is exact.
        unsafe {
            let h = vld1q_u16(p.cast());
            let lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
            let hi = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)));
            (lo, hi)
        }
    }
}

impl Elem<Neon> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16, _: ()) -> (float32x4_t, float32x4_t) {
        // SAFETY: 8 readable bf16 (u16 alignment). bf16 is the top half of an f32: shift left by 16.
        unsafe {
            let h = vld1q_u16(p.cast());
            let lo = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h)));
            let hi = vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h));
            (lo, hi)
        }
    }
}

impl Vector for Neon {
    type F = float32x4_t;
    type M = ();
    const W: usize = 4;
    const MASKED: bool = false;

    intrinsics! {
        fn splat(v: f32) -> float32x4_t = vdupq_n_f32;
        fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t = vaddq_f32;
        fn sum(v: float32x4_t) -> f32 = vaddvq_f32;
    }

    fn lanes(_: usize) {}

    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: the caller's contract.
        unsafe { vld1q_f32(p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller's contract.
        unsafe { vst1q_f32(p, v) }
    }

    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
}

impl VectorMath for Neon {
    intrinsics! {
        fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t = vsubq_f32;
        fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t = vmulq_f32;
        fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t = vdivq_f32;
        fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t = vminq_f32;
        fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t = vmaxq_f32;
        fn neg(a: float32x4_t) -> float32x4_t = vnegq_f32;
        fn round(v: float32x4_t) -> float32x4_t = vrndnq_f32;
    }

    #[inline(always)]
    unsafe fn fnma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmsq_f32(c, a, b)
    }

    #[inline(always)]
    unsafe fn pow2(n: float32x4_t) -> float32x4_t {
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127),
        )))
    }
}

impl QuantizeQ8 for Neon {
    /// The same bytes as the scalar spec (see the module docs).
    #[target_feature(enable = "neon")]
    unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
        let (xp, qp) = (x.as_ptr(), qs.as_mut_ptr());
        for (blk, (db, sb)) in d.iter_mut().zip(sum.iter_mut()).enumerate() {
            let mut v = [vdupq_n_f32(0.0); QK / 4];
            for (u, v) in v.iter_mut().enumerate() {
                // SAFETY: block `blk` holds 32 values of x (precondition).
                *v = unsafe { vld1q_f32(xp.add(blk * QK + 4 * u)) };
            }
            // `fmaxnm` returns the number when one operand is NaN, as `f32::max` does; from +0 as the scalar.
            let mut m = vdupq_n_f32(0.0);
            for v in v {
                m = vmaxnmq_f32(m, vabsq_f32(v));
            }
            let amax = vmaxnmvq_f32(m);
            let scale = amax / 127.0;
            let mut q = [vdupq_n_s8(0); 2];
            let mut s = vdupq_n_s32(0);
            if scale != 0.0 {
                let (sv, lim) = (vdupq_n_f32(scale), vdupq_n_s32(127));
                let mut qi = [vdupq_n_s32(0); QK / 4];
                for (qi, v) in qi.iter_mut().zip(v) {
                    // fdiv is the scalar's division; fcvtas rounds half away from zero (`f32::round`).
                    let r = vcvtaq_s32_f32(vdivq_f32(v, sv));
                    *qi = vmaxq_s32(vminq_s32(r, lim), vnegq_s32(lim));
                    s = vaddq_s32(s, *qi);
                }
                for (h, q) in q.iter_mut().enumerate() {
                    let a = vcombine_s16(vmovn_s32(qi[4 * h]), vmovn_s32(qi[4 * h + 1]));
                    let b = vcombine_s16(vmovn_s32(qi[4 * h + 2]), vmovn_s32(qi[4 * h + 3]));
                    *q = vcombine_s8(vmovn_s16(a), vmovn_s16(b));
                }
            }
            // SAFETY: block `blk` holds 32 quants of qs (precondition).
            unsafe {
                vst1q_s8(qp.add(blk * QK), q[0]);
                vst1q_s8(qp.add(blk * QK + 16), q[1]);
            }
            *db = scale;
            *sb = vaddvq_s32(s);
        }
    }
}
