//! AVX2 + FMA + F16C: the vectors and loads of [`crate::simd`]'s kernels, with 8-lane vectors and
//! tails taken one element at a time. Dense tiles are 4 rows × 2 tokens: 4×2 accumulators + 4 weight
//! vectors + 1 token vector fit the 16 ymm registers; `weighted_sum_*` takes one row at a time.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::hsum;
use crate::dispatch::{Kernels, Variant};
use crate::simd::dense::{Elem, Lanes};
use crate::simd::vector::{Vector, VectorMath};
use crate::simd::{activation_entries, activations, entries, intrinsics, table_of};

/// The AVX2 + FMA + F16C variant.
pub(super) struct Avx2;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed AVX2, FMA and F16C,
/// which is what makes the table's safe entries sound.
pub(crate) fn table() -> Kernels {
    let base = table_of::<Avx2>(Variant::Avx2, activations::<Avx2>(Kernels::SCALAR));
    super::gguf::table::<Avx2>(base)
}

entries!(Avx2, "avx2,fma,f16c", 2);
activation_entries!(Avx2, "avx2,fma,f16c");

impl Lanes for Avx2 {
    type V = __m256;
    type Mask = ();
    const STEP: usize = 8;
    const MASKED_TAIL: bool = false;
    const FULL: () = ();
    const WEIGHTED_ROWS: usize = 1;

    intrinsics! {
        fn zero() -> __m256 = _mm256_setzero_ps;
        fn splat(v: f32) -> __m256 = _mm256_set1_ps;
        fn sum(v: __m256) -> f32 = hsum;
    }

    fn mask(_: usize) {}

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
    unsafe fn store(p: *mut f32, v: __m256, _: ()) {
        // SAFETY: 8 writable values (the caller's contract).
        unsafe { _mm256_storeu_ps(p, v) }
    }
}

impl Elem<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: ()) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { <Avx2 as Lanes>::load(p, m) }
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

impl Vector for Avx2 {
    type F = __m256;
    type M = ();
    const W: usize = 8;
    const MASKED: bool = false;

    intrinsics! {
        fn splat(v: f32) -> __m256 = _mm256_set1_ps;
        fn add(a: __m256, b: __m256) -> __m256 = _mm256_add_ps;
        fn fma(a: __m256, b: __m256, c: __m256) -> __m256 = _mm256_fmadd_ps;
        fn sum(v: __m256) -> f32 = hsum;
    }

    fn lanes(_: usize) {}

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(p, v) }
    }
}

impl VectorMath for Avx2 {
    intrinsics! {
        fn sub(a: __m256, b: __m256) -> __m256 = _mm256_sub_ps;
        fn mul(a: __m256, b: __m256) -> __m256 = _mm256_mul_ps;
        fn div(a: __m256, b: __m256) -> __m256 = _mm256_div_ps;
        fn min(a: __m256, b: __m256) -> __m256 = _mm256_min_ps;
        fn max(a: __m256, b: __m256) -> __m256 = _mm256_max_ps;
        fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 = _mm256_fnmadd_ps;
    }

    #[inline(always)]
    unsafe fn neg(a: __m256) -> __m256 {
        _mm256_sub_ps(_mm256_setzero_ps(), a)
    }

    #[inline(always)]
    unsafe fn round(v: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
    }

    #[inline(always)]
    unsafe fn pow2(n: __m256) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )))
    }
}
