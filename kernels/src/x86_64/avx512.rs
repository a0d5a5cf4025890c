//! AVX-512 VNNI: the vectors and loads of [`crate::simd`]'s kernels, with 16-lane vectors and tails
//! as one masked step whose masked-off lanes are never read. Dense tiles are 4 rows × 4 tokens: 4×4
//! accumulators + 4 weight vectors + 1 token vector of the 32 zmm registers. The activation kernels
//! (`softmax_f32`, `silu_mul_f32`, `rmsnorm_f32`) are AVX2's.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::gguf::{Iq4Nl, Iq4Xs, Q2K, Q3K, Q4K, Q5K, Q5_0, Q5_1, Q6K};
use super::quant_avx512::{matmul_gguf, matmul_tokens_gguf, matmul_tokens_q};
use crate::dispatch::{Kernels, Variant};
use crate::simd::dense::{Elem, Lanes};
use crate::simd::vector::Vector;
use crate::simd::{entries, intrinsics, table_of, Q4_0, Q4_1, Q8_0};

/// The AVX-512 VNNI variant (with AVX2, FMA and F16C).
pub(super) struct Avx512;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed AVX-512 F/BW/VL/VNNI
/// and AVX2/FMA/F16C, which is what makes the table's safe entries sound.
pub(crate) fn table() -> Kernels {
    let base = Kernels {
        matmul_tokens_q8_0_q8: Some(matmul_tokens_q::<Q8_0>),
        matmul_tokens_q4_0_q8: Some(matmul_tokens_q::<Q4_0>),
        matmul_tokens_q4_1_q8: Some(matmul_tokens_q::<Q4_1>),
        ..table_of::<Avx512>(Variant::Avx512Vnni, super::avx2::table())
    };
    // The GGUF formats: the group driver, but several tokens through the prefill kernel.
    Kernels {
        matmul_q5_0_q8: matmul_gguf::<Q5_0>,
        matmul_q5_1_q8: matmul_gguf::<Q5_1>,
        matmul_iq4_nl_q8: matmul_gguf::<Iq4Nl>,
        matmul_q2_k_q8: matmul_gguf::<Q2K>,
        matmul_q3_k_q8: matmul_gguf::<Q3K>,
        matmul_q4_k_q8: matmul_gguf::<Q4K>,
        matmul_q5_k_q8: matmul_gguf::<Q5K>,
        matmul_q6_k_q8: matmul_gguf::<Q6K>,
        matmul_iq4_xs_q8: matmul_gguf::<Iq4Xs>,
        matmul_tokens_q5_0_q8: Some(matmul_tokens_gguf::<Q5_0>),
        matmul_tokens_q5_1_q8: Some(matmul_tokens_gguf::<Q5_1>),
        matmul_tokens_iq4_nl_q8: Some(matmul_tokens_gguf::<Iq4Nl>),
        matmul_tokens_q2_k_q8: Some(matmul_tokens_gguf::<Q2K>),
        matmul_tokens_q3_k_q8: Some(matmul_tokens_gguf::<Q3K>),
        matmul_tokens_q4_k_q8: Some(matmul_tokens_gguf::<Q4K>),
        matmul_tokens_q5_k_q8: Some(matmul_tokens_gguf::<Q5K>),
        matmul_tokens_q6_k_q8: Some(matmul_tokens_gguf::<Q6K>),
        matmul_tokens_iq4_xs_q8: Some(matmul_tokens_gguf::<Iq4Xs>),
        ..super::gguf::table::<Avx512>(base)
    }
}

entries!(Avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", 4);

/// The first `lanes` (`<= 16`) lanes.
#[inline(always)]
fn mask16(lanes: usize) -> __mmask16 {
    ((1u32 << lanes) - 1) as u16
}

impl Lanes for Avx512 {
    type V = __m512;
    type Mask = __mmask16;
    const STEP: usize = 16;
    const MASKED_TAIL: bool = true;
    const FULL: __mmask16 = 0xffff;
    const WEIGHTED_ROWS: usize = 4;

    intrinsics! {
        fn zero() -> __m512 = _mm512_setzero_ps;
        fn splat(v: f32) -> __m512 = _mm512_set1_ps;
        fn sum(v: __m512) -> f32 = _mm512_reduce_add_ps;
    }

    fn mask(lanes: usize) -> __mmask16 {
        mask16(lanes)
    }

    #[inline(always)]
    unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
        _mm512_fmadd_ps(w, x, acc)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected elements are readable; masked lanes do not fault.
        unsafe {
            if m == 0xffff {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(m, p)
            }
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512, m: __mmask16) {
        // SAFETY: the caller guarantees the selected elements are writable; masked lanes are not
        // written.
        unsafe {
            if m == 0xffff {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, m, v)
            }
        }
    }

    /// Sixteen sums at once through an add tree for whole-row tiles of several tokens (short rows,
    /// e.g. attention's 64-wide heads, would otherwise spend more on separate reductions than on the
    /// products).
    #[inline(always)]
    unsafe fn sums<const R: usize, const T: usize>(
        acc: &[[__m512; R]; T],
    ) -> Option<[[f32; R]; T]> {
        if R != 4 || T == 1 {
            return None;
        }
        let mut v = [_mm512_setzero_ps(); 16];
        for (m, v) in v.iter_mut().enumerate().take(4 * T) {
            *v = acc[m / 4][m % 4];
        }
        let mut sums = [0f32; 16];
        // SAFETY: `sums` is 64 writable bytes.
        unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), sum16(&v)) };
        let mut out = [[0.0; R]; T];
        for (m, &s) in sums.iter().enumerate().take(4 * T) {
            out[m / 4][m % 4] = s;
        }
        Some(out)
    }

    #[inline(always)]
    unsafe fn weighted_one<W: Elem<Self>>(p: &[f32], v: &[W], out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { two_rows(p, v, out) }
    }
}

impl Elem<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { <Avx512 as Lanes>::load(p, m) }
    }
}

/// Sixteen 16-bit words at `p`, those whose bit in `m` is clear zero and not read.
///
/// # Safety
/// The selected words must be readable; the CPU must have AVX-512 BW/VL.
#[inline(always)]
unsafe fn load_words(p: *const i16, m: __mmask16) -> __m256i {
    if m == 0xffff {
        // SAFETY: all sixteen words are selected, hence readable (caller).
        unsafe { _mm256_loadu_si256(p.cast()) }
    } else {
        // SAFETY: masked lanes do not fault; the selected ones are readable (caller).
        unsafe { _mm256_maskz_loadu_epi16(m, p) }
    }
}

impl Elem<Avx512> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16, m: __mmask16) -> __m512 {
        // SAFETY: as for f32; a 16-bit load (masked only for a row's tail: masked word loads are
        // slow on some cores, Zen 4 among them) then an exact half→single conversion.
        unsafe { _mm512_cvtph_ps(load_words(p.cast(), m)) }
    }
}

impl Elem<Avx512> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16, m: __mmask16) -> __m512 {
        // SAFETY: as for f16; bf16 is the top half of an f32, so widen and shift by 16.
        unsafe {
            let h = load_words(p.cast(), m);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

impl Vector for Avx512 {
    type F = __m512;
    type M = __mmask16;
    const W: usize = 16;
    const MASKED: bool = true;

    intrinsics! {
        fn splat(v: f32) -> __m512 = _mm512_set1_ps;
        fn add(a: __m512, b: __m512) -> __m512 = _mm512_add_ps;
        fn fma(a: __m512, b: __m512, c: __m512) -> __m512 = _mm512_fmadd_ps;
        fn sum(v: __m512) -> f32 = _mm512_reduce_add_ps;
    }

    fn lanes(n: usize) -> __mmask16 {
        mask16(n)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_lanes(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller's contract; masked lanes do not fault.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller's contract.
        unsafe { _mm512_storeu_ps(p, v) }
    }
}

/// Lane `m` of the result is the sum of the sixteen lanes of `v[m]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn sum16(v: &[__m512; 16]) -> __m512 {
    // Per 128-bit lane L, four vectors at a time: w[g] lane L = [Σ_L v[4g], Σ_L v[4g+1], Σ_L v[4g+2],
    // Σ_L v[4g+3]], where Σ_L sums the four floats of lane L.
    let w: [__m512; 4] = core::array::from_fn(|g| {
        let pair = |a: __m512, b: __m512| {
            _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
        };
        let (s01, s23) = (
            pair(v[4 * g], v[4 * g + 1]),
            pair(v[4 * g + 2], v[4 * g + 3]),
        );
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(s01, s23),
            _mm512_shuffle_ps::<0xee>(s01, s23),
        )
    });
    // Then the four lanes of each w[g] summed, w[g]'s total landing in lane g.
    let half = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xee>(a, b),
        )
    };
    let (y01, y23) = (half(w[0], w[1]), half(w[2], w[3]));
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(y01, y23),
        _mm512_shuffle_f32x4::<0xdd>(y01, y23),
    )
}

/// `weighted_sum_*` for one row: columns in blocks of 64 (four vectors; the last block masked to the
/// row's end), the row's weights two at a time into two sets of accumulators (eight independent FMA
/// chains), added at the end. Precondition: `v.len() >= p.len() * out.len()`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL; the precondition.
#[inline(always)]
unsafe fn two_rows<W: Elem<Avx512>>(p: &[f32], v: &[W], out: &mut [f32]) {
    let hd = out.len();
    let mut c = 0;
    while c + 64 <= hd {
        // SAFETY: columns c..c+64 lie below hd (the precondition for the rest).
        unsafe { two_rows_block(p, v, out, c, [16; 4]) };
        c += 64;
    }
    if c < hd {
        let lanes = core::array::from_fn(|a| hd.saturating_sub(c + 16 * a).min(16));
        // SAFETY: `lanes` counts the columns below hd of each vector.
        unsafe { two_rows_block(p, v, out, c, lanes) };
    }
}

/// The columns `c + 16a ..+ lanes[a]` of [`two_rows`].
///
/// # Safety
/// As [`two_rows`], and those columns lie below `out.len()`.
#[inline(always)]
unsafe fn two_rows_block<W: Elem<Avx512>>(
    p: &[f32],
    v: &[W],
    out: &mut [f32],
    c: usize,
    lanes: [usize; 4],
) {
    let (hd, rows, vp) = (out.len(), p.len(), v.as_ptr());
    let m = lanes.map(mask16);
    let mut acc = [[_mm512_setzero_ps(); 4]; 2];
    let mut j = 0;
    while j < rows {
        let two = (rows - j).min(2);
        for (u, acc) in acc.iter_mut().enumerate().take(two) {
            let w = _mm512_set1_ps(p[j + u]);
            for (a, acc) in acc.iter_mut().enumerate() {
                if lanes[a] > 0 {
                    // SAFETY: row j+u < rows and the lanes selected by m[a] are columns below hd of
                    // that row, inside `v` (precondition).
                    let x = unsafe { W::load(vp.add((j + u) * hd + c + 16 * a), m[a]) };
                    *acc = _mm512_fmadd_ps(w, x, *acc);
                }
            }
        }
        j += two;
    }
    for (a, &ma) in m.iter().enumerate() {
        if lanes[a] > 0 {
            // SAFETY: the lanes selected by ma are columns below hd = out.len().
            unsafe {
                <Avx512 as Lanes>::store(
                    out.as_mut_ptr().add(c + 16 * a),
                    _mm512_add_ps(acc[0][a], acc[1][a]),
                    ma,
                )
            };
        }
    }
}
