//! AVX-512 (F, BW, VL, VNNI) kernels: the dense products ([`crate::simd::dense`]'s tiles with
//! 16-lane vectors, 4 rows × 4 tokens in the 32 registers, and the `k` tail as one masked step whose
//! masked-off lanes are never read) and the element-wise kernels that gain from the width; the
//! others are AVX2's.

use core::arch::x86_64::*;

use half::{bf16, f16};

use crate::dispatch::{Kernels, Variant};
use crate::scalar;
use crate::simd::dense::{self, Elem, Lanes};
use crate::simd::{matmul_q, quantize_q8, Q4_0, Q4_1, Q8_0};

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed AVX-512 F/BW/VL/VNNI
/// and AVX2/FMA/F16C, which is what makes the safe entries below sound.
pub(crate) fn table() -> Kernels {
    use super::quant_avx512::matmul_tokens_q;
    Kernels {
        variant: Variant::Avx512Vnni,
        matmul_f32: dense::matmul::<Avx512, f32>,
        matmul_f16: dense::matmul::<Avx512, f16>,
        matmul_bf16: dense::matmul::<Avx512, bf16>,
        dot_f32,
        axpy_f32,
        axpy_f16,
        weighted_sum_f32,
        weighted_sum_f16,
        quantize_q8: quantize_q8::<Avx512>,
        matmul_q8_0_q8: matmul_q::<Avx512, Q8_0>,
        matmul_q4_0_q8: matmul_q::<Avx512, Q4_0>,
        matmul_q4_1_q8: matmul_q::<Avx512, Q4_1>,
        matmul_tokens_q8_0_q8: Some(matmul_tokens_q::<Q8_0>),
        matmul_tokens_q4_0_q8: Some(matmul_tokens_q::<Q4_0>),
        matmul_tokens_q4_1_q8: Some(matmul_tokens_q::<Q4_1>),
        ..super::avx2::table()
    }
}

/// The AVX-512 VNNI variant.
pub(super) struct Avx512;

impl Lanes for Avx512 {
    type V = __m512;
    type Mask = __mmask16;
    const STEP: usize = 16;
    const MASKED_TAIL: bool = true;
    const FULL: __mmask16 = 0xffff;

    fn mask(lanes: usize) -> __mmask16 {
        (1u16 << lanes) - 1
    }

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
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
    unsafe fn sum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
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

    /// Tiles of 4 rows × 4 tokens: 4×4 accumulators + 4 weight vectors + 1 token vector of the 32
    /// zmm registers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn matmul<W: Elem<Avx512>>(
        w: &[W],
        k: usize,
        x: &[f32],
        n: usize,
        yt: &mut [f32],
        rows: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe { dense::matmul_tiles::<Avx512, W, 4>(w, k, x, n, yt, rows) }
    }
}

impl Elem<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { Avx512::load(p, m) }
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

/// AVX-512 version of [`scalar::dot_f32`].
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only reachable through the AVX-512 table, built after detection.
    unsafe { dot_f32_avx512(a, b) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= len {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i+64 <= len, so elements i+16u..i+16u+16 lie in both slices.
            let (va, vb) = unsafe {
                (
                    _mm512_loadu_ps(ap.add(i + 16 * u)),
                    _mm512_loadu_ps(bp.add(i + 16 * u)),
                )
            };
            *s = _mm512_fmadd_ps(va, vb, *s);
        }
        i += 64;
    }
    while i < len {
        let m: __mmask16 = if len - i >= 16 {
            0xffff
        } else {
            (1u16 << (len - i)) - 1
        };
        // SAFETY: the lanes selected by `m` are elements i..min(i+16, len) of both slices.
        let (va, vb) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, ap.add(i)),
                _mm512_maskz_loadu_ps(m, bp.add(i)),
            )
        };
        acc[0] = _mm512_fmadd_ps(va, vb, acc[0]);
        i += 16;
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(v)
}

/// AVX-512 version of [`scalar::axpy_f32`] (fused multiply-add, so last-bit differences are expected).
fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX-512 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

/// AVX-512 version of [`scalar::axpy_f16`].
fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX-512 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn axpy<W: Elem<Avx512>>(alpha: f32, x: &[W], y: &mut [f32]) {
    let len = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i < len {
        let m: __mmask16 = if len - i >= 16 {
            0xffff
        } else {
            (1u16 << (len - i)) - 1
        };
        // SAFETY: the lanes selected by `m` are elements i..min(i+16, len) of both slices; masked
        // lanes are neither read nor written, and `y` is borrowed mutably.
        unsafe {
            let v = _mm512_fmadd_ps(
                va,
                W::load(xp.add(i), m),
                _mm512_maskz_loadu_ps(m, yp.add(i)),
            );
            _mm512_mask_storeu_ps(yp.add(i), m, v);
        }
        i += 16;
    }
}

grouped_weighted_sum!(
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    Elem<Avx512>,
    "AVX-512"
);

/// `R` rows at once: columns in blocks of 64 (four vectors, the last masked to the row's end), each
/// block of `v` loaded once per position for all `R` rows (4·R independent FMA chains).
/// Precondition: `p.len() = R·seen`, `out.len() = R·hd` with `seen, hd > 0`, `v.len() >= seen·hd`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn weighted_group<W: Elem<Avx512>, const R: usize>(p: &[f32], v: &[W], out: &mut [f32]) {
    let (seen, hd) = (p.len() / R, out.len() / R);
    let vp = v.as_ptr();
    for c in (0..hd).step_by(64) {
        let m: [__mmask16; 4] = core::array::from_fn(|a| {
            let lanes = hd.saturating_sub(c + 16 * a).min(16);
            ((1u32 << lanes) - 1) as u16
        });
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for j in 0..seen {
            let x: [__m512; 4] = core::array::from_fn(|a| {
                if m[a] == 0 {
                    _mm512_setzero_ps()
                } else {
                    // SAFETY: position j < seen and the lanes selected by m[a] are columns below hd
                    // of that position, inside `v` (precondition).
                    unsafe { W::load(vp.add(j * hd + c + 16 * a), m[a]) }
                }
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(p[r * seen + j]);
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    *acc = _mm512_fmadd_ps(w, x, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (a, (&ma, &acc)) in m.iter().zip(acc).enumerate() {
                // `wrapping_add`: a wholly masked-off vector's address may lie past the end.
                let at = out.as_mut_ptr().wrapping_add(r * hd + c + 16 * a);
                // SAFETY: the lanes selected by ma are columns below hd of row r < R of `out`.
                unsafe { _mm512_mask_storeu_ps(at, ma, acc) };
            }
        }
    }
}

/// Columns in blocks of 64 (four vectors, the last masked to the row's end), rows two at a time into
/// two sets of accumulators (eight independent FMA chains), added at the end.
/// Precondition: `v.len() >= p.len() * out.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn weighted_sum<W: Elem<Avx512>>(p: &[f32], v: &[W], out: &mut [f32]) {
    let hd = out.len();
    let vp = v.as_ptr();
    let rows = p.len();
    for c in (0..hd).step_by(64) {
        let mask = |a: usize| -> __mmask16 {
            let lanes = hd.saturating_sub(c + 16 * a).min(16);
            ((1u32 << lanes) - 1) as u16
        };
        let m: [__mmask16; 4] = core::array::from_fn(mask);
        let mut acc = [[_mm512_setzero_ps(); 4]; 2];
        let mut j = 0;
        while j < rows {
            let two = (rows - j).min(2);
            for (u, acc) in acc.iter_mut().enumerate().take(two) {
                let w = _mm512_set1_ps(p[j + u]);
                for (a, acc) in acc.iter_mut().enumerate() {
                    if m[a] != 0 {
                        // SAFETY: row j+u < rows and the lanes selected by m[a] are columns below
                        // hd of that row, inside `v` (precondition).
                        let x = unsafe { W::load(vp.add((j + u) * hd + c + 16 * a), m[a]) };
                        *acc = _mm512_fmadd_ps(w, x, *acc);
                    }
                }
            }
            j += two;
        }
        for (a, &ma) in m.iter().enumerate() {
            // SAFETY: the lanes selected by ma are columns below hd = out.len().
            unsafe {
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().wrapping_add(c + 16 * a),
                    ma,
                    _mm512_add_ps(acc[0][a], acc[1][a]),
                )
            };
        }
    }
}
