//! AVX2 + FMA + F16C kernels: the dense products ([`crate::simd::dense`]'s tiles with 8-lane vectors
//! and a scalar `k` remainder) and the element-wise kernels.
//!
//! Results match [`crate::scalar`] up to summation order: lanes accumulate separately and are added
//! at the end, and multiply-adds are fused.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::hsum;
use crate::dispatch::{Kernels, Variant};
use crate::scalar;
use crate::simd::dense::{self, Elem, Lanes};
use crate::simd::{matmul_q, quantize_q8, Q4_0, Q4_1, Q8_0};

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed AVX2, FMA and F16C,
/// which is what makes the safe entries below sound.
pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::Avx2,
        matmul_f32: dense::matmul::<Avx2, f32>,
        matmul_f16: dense::matmul::<Avx2, f16>,
        matmul_bf16: dense::matmul::<Avx2, bf16>,
        dot_f32,
        axpy_f32,
        axpy_f16,
        weighted_sum_f32,
        weighted_sum_f16,
        softmax_f32,
        silu_mul_f32,
        rmsnorm_f32,
        quantize_q8: quantize_q8::<Avx2>,
        matmul_q8_0_q8: matmul_q::<Avx2, Q8_0>,
        matmul_q4_0_q8: matmul_q::<Avx2, Q4_0>,
        matmul_q4_1_q8: matmul_q::<Avx2, Q4_1>,
        ..Kernels::SCALAR
    }
}

/// The AVX2 + FMA + F16C variant.
pub(super) struct Avx2;

impl Lanes for Avx2 {
    type V = __m256;
    type Mask = ();
    const STEP: usize = 8;
    const MASKED_TAIL: bool = false;
    const FULL: () = ();

    fn mask(_: usize) {}

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }

    #[inline(always)]
    unsafe fn fma(acc: __m256, w: __m256, x: __m256) -> __m256 {
        _mm256_fmadd_ps(w, x, acc)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, _: ()) -> __m256 {
        // SAFETY: 8 readable values (the caller's contract); `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        hsum(v)
    }

    /// Tiles of 4 rows × 2 tokens: 4×2 accumulators + 4 weight vectors + 1 token vector fit the 16
    /// ymm registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn matmul<W: Elem<Avx2>>(
        w: &[W],
        k: usize,
        x: &[f32],
        n: usize,
        yt: &mut [f32],
        rows: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe { dense::matmul_tiles::<Avx2, W, 2>(w, k, x, n, yt, rows) }
    }
}

impl Elem<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: ()) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { Avx2::load(p, m) }
    }
}

impl Elem<Avx2> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16, _: ()) -> __m256 {
        // SAFETY: 8 readable halves are 16 bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

impl Elem<Avx2> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16, _: ()) -> __m256 {
        // SAFETY: 8 readable bf16 are 16 bytes. bf16 is the top half of an f32: widen, shift by 16.
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast()),
            )))
        }
    }
}

/// AVX2 version of [`scalar::dot_f32`].
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only reachable through the AVX2 table, built after detection.
    unsafe { dot_f32_avx2(a, b) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= len {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i+32 <= len, so elements i+8u..i+8u+8 lie in both slices.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_ps(ap.add(i + 8 * u)),
                    _mm256_loadu_ps(bp.add(i + 8 * u)),
                )
            };
            *s = _mm256_fmadd_ps(va, vb, *s);
        }
        i += 32;
    }
    while i + 8 <= len {
        // SAFETY: i+8 <= len.
        let (va, vb) = unsafe { (_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i))) };
        acc[0] = _mm256_fmadd_ps(va, vb, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    for j in i..len {
        s += a[j] * b[j];
    }
    s
}

/// AVX2 version of [`scalar::axpy_f32`] (fused multiply-add, so last-bit differences are expected).
fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX2 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

/// AVX2 version of [`scalar::axpy_f16`].
fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX2 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy<W: Elem<Avx2>>(alpha: f32, x: &[W], y: &mut [f32]) {
    let len = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i+8 <= len, so elements i..i+8 lie in both slices; `y` is borrowed mutably.
        unsafe {
            let v = _mm256_fmadd_ps(va, W::load(xp.add(i), ()), _mm256_loadu_ps(yp.add(i)));
            _mm256_storeu_ps(yp.add(i), v);
        }
        i += 8;
    }
    for j in i..len {
        y[j] += alpha * x[j].to_f32();
    }
}

/// AVX2 version of [`scalar::weighted_sum_f32`]: the rows one at a time.
fn weighted_sum_f32(p: &[f32], rows: usize, v: &[f32], out: &mut [f32]) {
    // SAFETY: only reachable through the AVX2 table, built after detection; `weighted_sum_rows`
    // checked that `v` holds `p.len()` rows of `out.len()` for each (single) row it passes.
    scalar::weighted_sum_rows(p, rows, v.len(), out, 1, |p, out, _| unsafe {
        weighted_sum(p, v, out)
    })
}

/// AVX2 version of [`scalar::weighted_sum_f16`]: the rows one at a time.
fn weighted_sum_f16(p: &[f32], rows: usize, v: &[f16], out: &mut [f32]) {
    // SAFETY: as for `weighted_sum_f32`.
    scalar::weighted_sum_rows(p, rows, v.len(), out, 1, |p, out, _| unsafe {
        weighted_sum(p, v, out)
    })
}

/// Columns in blocks of 32 (four accumulators held in registers across all rows), then 8, then scalar.
/// Precondition: `v.len() >= p.len() * out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum<W: Elem<Avx2>>(p: &[f32], v: &[W], out: &mut [f32]) {
    let hd = out.len();
    let vp = v.as_ptr();
    let mut c = 0;
    while c + 32 <= hd {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (j, &pj) in p.iter().enumerate() {
            let w = _mm256_set1_ps(pj);
            for (a, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row j < p.len() and column c + 8a + 8 <= hd lie inside `v` (precondition).
                *acc = _mm256_fmadd_ps(w, unsafe { W::load(vp.add(j * hd + c + 8 * a), ()) }, *acc);
            }
        }
        for (a, acc) in acc.iter().enumerate() {
            // SAFETY: c + 8a + 8 <= hd = out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * a), *acc) };
        }
        c += 32;
    }
    while c + 8 <= hd {
        let mut acc = _mm256_setzero_ps();
        for (j, &pj) in p.iter().enumerate() {
            // SAFETY: as above for one 8-column block.
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(pj),
                unsafe { W::load(vp.add(j * hd + c), ()) },
                acc,
            );
        }
        // SAFETY: c + 8 <= hd.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c), acc) };
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

/// AVX2 version of [`scalar::softmax_f32`]: the same steps, with `exp` evaluated 8 lanes at a time
/// by [`exp8`] (within 2 ulp of `f32::exp` on the range softmax uses).
fn softmax_f32(x: &mut [f32]) {
    // SAFETY: only reachable through the AVX2 table, built after detection.
    unsafe { softmax(x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax(x: &mut [f32]) {
    let (len, xp) = (x.len(), x.as_mut_ptr());
    let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len.
        vm = _mm256_max_ps(vm, unsafe { _mm256_loadu_ps(xp.add(i)) });
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vm) };
    let max = lanes
        .into_iter()
        .chain(x[i..].iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    let vmax = _mm256_set1_ps(max);
    let mut vsum = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), vmax));
            _mm256_storeu_ps(xp.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
        }
        i += 8;
    }
    let mut sum = hsum(vsum);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    // The tail loop above reborrowed `x` mutably, which retires pointers taken from it before
    // (Miri: a Stacked Borrows violation, scripts/miri.sh); take a fresh one.
    let xp = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len.
        unsafe { _mm256_storeu_ps(xp.add(i), _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), inv)) };
        i += 8;
    }
    for v in &mut x[i..] {
        *v *= 1.0 / sum;
    }
}

/// `e^x` for 8 lanes: `x = n·ln2 + r` with |r| ≤ ln2/2, a degree-6 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Inputs below -87.3 give 0 (as softmax wants for far-below-max scores);
/// inputs above 88.7 saturate at `f32::MAX`-ish, which softmax never passes (its inputs are ≤ 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.7)),
        _mm256_set1_ps(-87.3),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // r = x - n·ln2 in two steps (Cody–Waite) to keep r exact enough.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(p, pow2n)
}

/// AVX2 version of [`scalar::silu_mul_f32`], with `exp` from [`exp8`].
fn silu_mul_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    // SAFETY: only reachable through the AVX2 table, built after detection; lengths are equal.
    unsafe { silu_mul(gate, up) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let (len, gp, up_p) = (gate.len(), gate.as_mut_ptr(), up.as_ptr());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len = up.len().
        unsafe {
            let g = _mm256_loadu_ps(gp.add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let v = _mm256_mul_ps(
                _mm256_div_ps(g, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(up_p.add(i)),
            );
            _mm256_storeu_ps(gp.add(i), v);
        }
        i += 8;
    }
    scalar::silu_mul_f32(&mut gate[i..], &up[i..]);
}

/// AVX2 version of [`scalar::rmsnorm_f32`] for F32 norm weights (the others, only in dense F16/BF16
/// checkpoints, take the scalar path). Same panics.
fn rmsnorm_f32(x: &[f32], w: crate::WeightRef<'_>, eps: f32, out: &mut [f32]) {
    scalar::check_rmsnorm(x.len(), w.len(), out.len());
    match w {
        // SAFETY: only reachable through the AVX2 tables, built after detection; lengths are equal.
        crate::WeightRef::F32(w) => unsafe { rmsnorm(x, w, eps, out) },
        _ => scalar::rmsnorm_f32(x, w, eps, out),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let (len, xp, wp, op) = (x.len(), x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= len {
        // SAFETY: i + 16 <= len.
        unsafe {
            let (a, b) = (_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(xp.add(i + 8)));
            acc[0] = _mm256_fmadd_ps(a, a, acc[0]);
            acc[1] = _mm256_fmadd_ps(b, b, acc[1]);
        }
        i += 16;
    }
    let mut ss = hsum(_mm256_add_ps(acc[0], acc[1]));
    for v in &x[i..] {
        ss += v * v;
    }
    let scale = 1.0 / (ss / len as f32 + eps).sqrt();
    let vs = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len, the length of all three slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), vs);
            _mm256_storeu_ps(op.add(i), _mm256_mul_ps(v, _mm256_loadu_ps(wp.add(i))));
        }
        i += 8;
    }
    for j in i..len {
        out[j] = x[j] * scale * w[j];
    }
}
