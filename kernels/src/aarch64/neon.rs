//! Plain NEON (Armv8.0 Advanced SIMD) kernels: the dense products ([`crate::simd::dense`]'s tiles
//! stepping `k` by 8, a scalar `k` remainder) and the element-wise kernels.
//!
//! A dense step's accumulator is a pair of 4-lane vectors (low and high half of the step), so that
//! even a one-token tile has 8 independent FMA chains; 4 rows × 2 tokens take 4×2×2 accumulators + 8
//! weight vectors + 2 token vectors of the 32 registers. f16 widens with `fcvtl` (`vcvt_f32_f16`, base
//! Armv8, exact); bf16 with a shift-left-long by 16. Results match [`crate::scalar`] up to summation
//! order and fused multiply-adds.

use core::arch::aarch64::*;

use half::{bf16, f16};

use crate::dispatch::{Kernels, Variant};
use crate::scalar;
use crate::simd::dense::{self, Elem, Lanes};
use crate::simd::{matmul_q, quantize_q8, Q4_0, Q4_1, Q8_0};

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed NEON (always present
/// on aarch64 Linux), which is what makes the safe entries below sound.
pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::Neon,
        matmul_f32: dense::matmul::<Neon, f32>,
        matmul_f16: dense::matmul::<Neon, f16>,
        matmul_bf16: dense::matmul::<Neon, bf16>,
        dot_f32,
        axpy_f32,
        axpy_f16,
        weighted_sum_f32,
        weighted_sum_f16,
        softmax_f32,
        silu_mul_f32,
        rmsnorm_f32,
        quantize_q8: quantize_q8::<Neon>,
        matmul_q8_0_q8: matmul_q::<Neon, Q8_0>,
        matmul_q4_0_q8: matmul_q::<Neon, Q4_0>,
        matmul_q4_1_q8: matmul_q::<Neon, Q4_1>,
        ..Kernels::SCALAR
    }
}

/// The plain NEON variant.
pub(super) struct Neon;

impl Lanes for Neon {
    /// Elements `c..c+4` and `c+4..c+8` of a step.
    type V = (float32x4_t, float32x4_t);
    type Mask = ();
    const STEP: usize = 8;
    const MASKED_TAIL: bool = false;
    const FULL: () = ();

    fn mask(_: usize) {}

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        (vdupq_n_f32(0.0), vdupq_n_f32(0.0))
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
    unsafe fn sum((lo, hi): Self::V) -> f32 {
        vaddvq_f32(vaddq_f32(lo, hi))
    }

    #[target_feature(enable = "neon")]
    unsafe fn matmul<W: Elem<Neon>>(
        w: &[W],
        k: usize,
        x: &[f32],
        n: usize,
        yt: &mut [f32],
        rows: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe { dense::matmul_tiles::<Neon, W, 2>(w, k, x, n, yt, rows) }
    }
}

impl Elem<Neon> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: ()) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller's contract.
        unsafe { Neon::load(p, m) }
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

/// NEON version of [`scalar::dot_f32`].
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only reachable through the NEON tables, built after detection.
    unsafe { dot_f32_neon(a, b) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_neon(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= len {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i+16 <= len, so elements i+4u..i+4u+4 lie in both slices.
            let (va, vb) = unsafe { (vld1q_f32(ap.add(i + 4 * u)), vld1q_f32(bp.add(i + 4 * u))) };
            *s = vfmaq_f32(*s, va, vb);
        }
        i += 16;
    }
    while i + 4 <= len {
        // SAFETY: i+4 <= len.
        let (va, vb) = unsafe { (vld1q_f32(ap.add(i)), vld1q_f32(bp.add(i))) };
        acc[0] = vfmaq_f32(acc[0], va, vb);
        i += 4;
    }
    let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut s = vaddvq_f32(v);
    for j in i..len {
        s += a[j] * b[j];
    }
    s
}

/// NEON version of [`scalar::axpy_f32`] (fused multiply-add, so last-bit differences are expected).
fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only reachable through the NEON tables, built after detection.
    unsafe { axpy(alpha, x, y) }
}

/// NEON version of [`scalar::axpy_f16`].
fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    // SAFETY: only reachable through the NEON tables, built after detection.
    unsafe { axpy(alpha, x, y) }
}

#[target_feature(enable = "neon")]
unsafe fn axpy<W: Elem<Neon>>(alpha: f32, x: &[W], y: &mut [f32]) {
    let len = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i+8 <= len, so elements i..i+8 lie in both slices; `y` is borrowed mutably.
        unsafe {
            let (lo, hi) = W::load(xp.add(i), ());
            vst1q_f32(yp.add(i), vfmaq_n_f32(vld1q_f32(yp.add(i)), lo, alpha));
            vst1q_f32(
                yp.add(i + 4),
                vfmaq_n_f32(vld1q_f32(yp.add(i + 4)), hi, alpha),
            );
        }
        i += 8;
    }
    for j in i..len {
        y[j] += alpha * x[j].to_f32();
    }
}

grouped_weighted_sum!("neon", Elem<Neon>, "NEON");

/// `R` rows at once: columns in blocks of 16 (four vectors per row, 4·R accumulators), each block
/// of `v` loaded once per position for all rows; the last `hd % 16` columns one at a time.
/// Precondition: `p.len() = R·seen`, `out.len() = R·hd` with `seen, hd > 0`, `v.len() >= seen·hd`.
#[target_feature(enable = "neon")]
unsafe fn weighted_group<W: Elem<Neon>, const R: usize>(p: &[f32], v: &[W], out: &mut [f32]) {
    let (seen, hd) = (p.len() / R, out.len() / R);
    let vp = v.as_ptr();
    let mut c = 0;
    while c + 16 <= hd {
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for j in 0..seen {
            // SAFETY: position j < seen and columns c..c+16 <= hd lie inside `v` (precondition).
            let ((x0, x1), (x2, x3)) = unsafe {
                (
                    W::load(vp.add(j * hd + c), ()),
                    W::load(vp.add(j * hd + c + 8), ()),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = p[r * seen + j];
                acc[0] = vfmaq_n_f32(acc[0], x0, w);
                acc[1] = vfmaq_n_f32(acc[1], x1, w);
                acc[2] = vfmaq_n_f32(acc[2], x2, w);
                acc[3] = vfmaq_n_f32(acc[3], x3, w);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (a, &acc) in acc.iter().enumerate() {
                // SAFETY: c + 4a + 4 <= c + 16 <= hd, in row r < R of `out`.
                unsafe { vst1q_f32(out.as_mut_ptr().add(r * hd + c + 4 * a), acc) };
            }
        }
        c += 16;
    }
    for r in 0..R {
        for d in c..hd {
            out[r * hd + d] = (0..seen)
                .map(|j| p[r * seen + j] * v[j * hd + d].to_f32())
                .sum();
        }
    }
}

/// Columns in blocks of 32 (eight accumulators held in registers across all rows), then 8, then
/// scalar. Precondition: `v.len() >= p.len() * out.len()`.
#[target_feature(enable = "neon")]
unsafe fn weighted_sum<W: Elem<Neon>>(p: &[f32], v: &[W], out: &mut [f32]) {
    let (hd, vp, op) = (out.len(), v.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    while c + 32 <= hd {
        let mut acc = [vdupq_n_f32(0.0); 8];
        for (j, &pj) in p.iter().enumerate() {
            for a in 0..4 {
                // SAFETY: row j < p.len() and columns c+8a..c+8a+8 <= hd lie inside `v`.
                let (lo, hi) = unsafe { W::load(vp.add(j * hd + c + 8 * a), ()) };
                acc[2 * a] = vfmaq_n_f32(acc[2 * a], lo, pj);
                acc[2 * a + 1] = vfmaq_n_f32(acc[2 * a + 1], hi, pj);
            }
        }
        for (a, acc) in acc.iter().enumerate() {
            // SAFETY: c + 4a + 4 <= c + 32 <= hd = out.len().
            unsafe { vst1q_f32(op.add(c + 4 * a), *acc) };
        }
        c += 32;
    }
    while c + 8 <= hd {
        let (mut lo_acc, mut hi_acc) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for (j, &pj) in p.iter().enumerate() {
            // SAFETY: as above for one 8-column block.
            let (lo, hi) = unsafe { W::load(vp.add(j * hd + c), ()) };
            lo_acc = vfmaq_n_f32(lo_acc, lo, pj);
            hi_acc = vfmaq_n_f32(hi_acc, hi, pj);
        }
        // SAFETY: c + 8 <= hd.
        unsafe {
            vst1q_f32(op.add(c), lo_acc);
            vst1q_f32(op.add(c + 4), hi_acc);
        }
        c += 8;
    }
    for (d, o) in out.iter_mut().enumerate().skip(c) {
        *o = p
            .iter()
            .enumerate()
            .map(|(j, &pj)| pj * v[j * hd + d].to_f32())
            .sum();
    }
}

/// NEON version of [`scalar::softmax_f32`], with `exp` 4 lanes at a time by [`exp4`].
fn softmax_f32(x: &mut [f32]) {
    // SAFETY: only reachable through the NEON tables, built after detection.
    unsafe { softmax(x) }
}

#[target_feature(enable = "neon")]
unsafe fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (len, xp) = (x.len(), x.as_mut_ptr());
    let vmax = vdupq_n_f32(max);
    let mut vsum = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= len {
        // SAFETY: i + 4 <= len.
        unsafe {
            let e = exp4(vsubq_f32(vld1q_f32(xp.add(i)), vmax));
            vst1q_f32(xp.add(i), e);
            vsum = vaddq_f32(vsum, e);
        }
        i += 4;
    }
    let mut sum = vaddvq_f32(vsum);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `e^x` for 4 lanes, as the AVX2 `exp8`: `x = n·ln2 + r`, a degree-6 polynomial for `e^r`, `2^n` in
/// the exponent bits; inputs clamped to [-87.3, 88.7].
#[inline]
#[target_feature(enable = "neon")]
fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.7)), vdupq_n_f32(-87.3));
    let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_145_75));
    let r = vfmsq_f32(r, n, vdupq_n_f32(1.428_606_8e-6));
    let mut p = vdupq_n_f32(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let pow2n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
        vcvtq_s32_f32(n),
        vdupq_n_s32(127),
    )));
    vmulq_f32(p, pow2n)
}

/// NEON version of [`scalar::silu_mul_f32`], with `exp` from [`exp4`].
fn silu_mul_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    // SAFETY: only reachable through the NEON tables, built after detection; lengths are equal.
    unsafe { silu_mul(gate, up) }
}

#[target_feature(enable = "neon")]
unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let (len, gp, up_p) = (gate.len(), gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i + 4 <= len {
        // SAFETY: i + 4 <= len = up.len().
        unsafe {
            let g = vld1q_f32(gp.add(i));
            let e = exp4(vnegq_f32(g));
            let v = vmulq_f32(
                vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0), e)),
                vld1q_f32(up_p.add(i)),
            );
            vst1q_f32(gp.add(i), v);
        }
        i += 4;
    }
    scalar::silu_mul_f32(&mut gate[i..], &up[i..]);
}

/// NEON version of [`scalar::rmsnorm_f32`] for F32 norm weights (the others, only in dense F16/BF16
/// checkpoints, take the scalar path). Same panics.
fn rmsnorm_f32(x: &[f32], w: crate::WeightRef<'_>, eps: f32, out: &mut [f32]) {
    scalar::check_rmsnorm(x.len(), w.len(), out.len());
    match w {
        // SAFETY: only reachable through the NEON tables, built after detection; lengths are equal.
        crate::WeightRef::F32(w) => unsafe { rmsnorm(x, w, eps, out) },
        _ => scalar::rmsnorm_f32(x, w, eps, out),
    }
}

#[target_feature(enable = "neon")]
unsafe fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let (len, xp, wp, op) = (x.len(), x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len.
        unsafe {
            let (a, b) = (vld1q_f32(xp.add(i)), vld1q_f32(xp.add(i + 4)));
            acc[0] = vfmaq_f32(acc[0], a, a);
            acc[1] = vfmaq_f32(acc[1], b, b);
        }
        i += 8;
    }
    let mut ss = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for v in &x[i..] {
        ss += v * v;
    }
    let scale = 1.0 / (ss / len as f32 + eps).sqrt();
    let vs = vdupq_n_f32(scale);
    let mut i = 0;
    while i + 4 <= len {
        // SAFETY: i + 4 <= len, the length of all three slices.
        unsafe {
            let v = vmulq_f32(vld1q_f32(xp.add(i)), vs);
            vst1q_f32(op.add(i), vmulq_f32(v, vld1q_f32(wp.add(i))));
        }
        i += 4;
    }
    for j in i..len {
        out[j] = x[j] * scale * w[j];
    }
}
