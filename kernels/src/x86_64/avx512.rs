//! AVX-512 (F, BW, VL, VNNI) kernels.
//!
//! Same tiling as [`super::avx2`] with 16-lane vectors and 32 registers, so a tile is [`ROWS`] rows ×
//! [`TOKENS`] tokens. The `k` tail is one masked step (masked-off lanes are never read), so there is no
//! scalar remainder. VNNI int8 kernels arrive with the quantized formats; until then this table's
//! integer entries would be AVX2's.

use core::arch::x86_64::*;

use half::{bf16, f16};

use crate::dispatch::{Kernels, Variant};
use crate::scalar;

/// Weight rows per tile.
const ROWS: usize = 4;
/// Tokens per tile: 4×4 accumulators + 4 weight vectors + 1 token vector of 32 zmm registers.
const TOKENS: usize = 4;

/// Only called by [`Kernels::new`]/[`Kernels::detect`] after detection confirmed AVX-512 F/BW/VL/VNNI
/// and AVX2/FMA/F16C, which is what makes the safe wrappers below sound.
pub(crate) fn table() -> Kernels {
    Kernels {
        variant: Variant::Avx512Vnni,
        matmul_f32,
        matmul_f16,
        matmul_bf16,
        dot_f32,
        axpy_f32,
        axpy_f16,
        weighted_sum_f32,
        weighted_sum_f16,
        quantize_acts: super::quant_avx512::quantize_q8_acts,
        matmul_q8_0: super::quant_avx512::matmul_q8_0_q8,
        matmul_q4_0: super::quant_avx512::matmul_q4_0_q8,
        matmul_q4_1: super::quant_avx512::matmul_q4_1_q8,
        matmul_q8_0_tokens: Some(super::quant_avx512::matmul_tokens_q8_0_q8),
        matmul_q4_0_tokens: Some(super::quant_avx512::matmul_tokens_q4_0_q8),
        matmul_q4_1_tokens: Some(super::quant_avx512::matmul_tokens_q4_1_q8),
        ..super::avx2::table()
    }
}

/// A weight element type that loads as 16 f32 lanes.
trait Lanes16: Copy {
    /// Converts the elements at `p` whose bit in `m` is set to f32 (the others are zero and not read).
    ///
    /// # Safety
    /// The selected elements must be readable; the CPU must have AVX-512 F/BW/VL.
    unsafe fn load16(p: *const Self, m: __mmask16) -> __m512;
}

impl Lanes16 for f32 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn load16(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected elements are readable; masked lanes do not fault.
        unsafe {
            if m == 0xffff {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(m, p)
            }
        }
    }
}

/// Sixteen 16-bit words at `p`, those whose bit in `m` is clear zero and not read.
///
/// # Safety
/// The selected words must be readable; the CPU must have AVX-512 BW/VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_words(p: *const i16, m: __mmask16) -> __m256i {
    if m == 0xffff {
        // SAFETY: all sixteen words are selected, hence readable (caller).
        unsafe { _mm256_loadu_si256(p.cast()) }
    } else {
        // SAFETY: masked lanes do not fault; the selected ones are readable (caller).
        unsafe { _mm256_maskz_loadu_epi16(m, p) }
    }
}

impl Lanes16 for f16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn load16(p: *const f16, m: __mmask16) -> __m512 {
        // SAFETY: as for f32; a 16-bit load (masked only for a row's tail: masked word loads are
        // slow on some cores, Zen 4 among them) then an exact half→single conversion.
        unsafe { _mm512_cvtph_ps(load_words(p.cast(), m)) }
    }
}

impl Lanes16 for bf16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn load16(p: *const bf16, m: __mmask16) -> __m512 {
        // SAFETY: as for f16; bf16 is the top half of an f32, so widen and shift by 16.
        unsafe {
            let h = load_words(p.cast(), m);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

macro_rules! matmul_wrapper {
    ($name:ident, $t:ty) => {
        /// AVX-512 version of [`scalar::matmul_f32`] and friends (same contract, same panics).
        pub fn $name(w: &[$t], k: usize, x: &[f32], n: usize, yt: &mut [f32]) {
            let rows = scalar::check_matmul(w.len(), k, x.len(), n, yt.len());
            // SAFETY: this function is only reachable through the AVX-512 table, built after detection
            // confirmed its features; `check_matmul` proved the slice lengths `matmul` relies on.
            unsafe { matmul(w, k, x, n, yt, rows) }
        }
    };
}

matmul_wrapper!(matmul_f32, f32);
matmul_wrapper!(matmul_f16, f16);
matmul_wrapper!(matmul_bf16, bf16);

/// Preconditions: `w.len() == rows*k`, `x.len() >= n*k`, `yt.len() == rows*n`, `k > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn matmul<W: Lanes16>(w: &[W], k: usize, x: &[f32], n: usize, yt: &mut [f32], rows: usize) {
    // LOOP 2: row tiles (independent: a caller may split these across threads).
    let mut r = 0;
    while r + ROWS <= rows {
        // SAFETY: rows r..r+ROWS exist by the loop bounds; tokens are bounded inside.
        unsafe { row_tile::<W, ROWS>(w, k, x, n, yt, r) };
        r += ROWS;
    }
    match rows - r {
        // SAFETY: as above, with the remaining 1..3 rows.
        3 => unsafe { row_tile::<W, 3>(w, k, x, n, yt, r) },
        // SAFETY: as above.
        2 => unsafe { row_tile::<W, 2>(w, k, x, n, yt, r) },
        // SAFETY: as above.
        1 => unsafe { row_tile::<W, 1>(w, k, x, n, yt, r) },
        _ => {}
    }
}

/// Rows `r..r+R` against every token. Requires `(r+R)*k <= w.len()` and the `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn row_tile<W: Lanes16, const R: usize>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
    r: usize,
) {
    // LOOP 1: token tiles, then a tile for each of the 0..3 remaining tokens.
    let mut t = 0;
    while t + TOKENS <= n {
        // SAFETY: tokens t..t+TOKENS < n, rows by the caller.
        unsafe { tile::<W, R, TOKENS>(w, k, x, n, yt, r, t) };
        t += TOKENS;
    }
    match n - t {
        // SAFETY: tokens t..n exist, rows by the caller.
        3 => unsafe { tile::<W, R, 3>(w, k, x, n, yt, r, t) },
        // SAFETY: as above.
        2 => unsafe { tile::<W, R, 2>(w, k, x, n, yt, r, t) },
        // SAFETY: as above.
        1 => unsafe { tile::<W, R, 1>(w, k, x, n, yt, r, t) },
        _ => {}
    }
}

/// `yt[(r+i)*n + t+j] = Σ_c w[(r+i)*k + c] · x[(t+j)*k + c]` for `i < R`, `j < T`.
/// Requires `(r+R)*k <= w.len()`, `(t+T)*k <= x.len()`, `(r+R-1)*n + t+T <= yt.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile<W: Lanes16, const R: usize, const T: usize>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
    r: usize,
    t: usize,
) {
    debug_assert!(
        (r + R) * k <= w.len() && (t + T) * k <= x.len() && (r + R - 1) * n + t + T <= yt.len()
    );
    let wp = w[r * k..].as_ptr();
    let xp = x[t * k..].as_ptr();
    // Token-major: acc[j][i] sums row i × token j.
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let mut wv = [_mm512_setzero_ps(); R];
    // LOOP 0: k in steps of 16 lanes; the last step masks off lanes past k.
    let mut c = 0;
    while c < k {
        let m: __mmask16 = if k - c >= 16 {
            0xffff
        } else {
            (1u16 << (k - c)) - 1
        };
        for (i, v) in wv.iter_mut().enumerate() {
            // SAFETY: the lanes selected by `m` are elements c..min(c+16, k) of row i, inside w.
            *v = unsafe { W::load16(wp.add(i * k + c), m) };
        }
        for (j, acc_j) in acc.iter_mut().enumerate() {
            // SAFETY: the lanes selected by `m` are elements c..min(c+16, k) of token j, inside x.
            let xv = unsafe { _mm512_maskz_loadu_ps(m, xp.add(j * k + c)) };
            for (a, &wi) in acc_j.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(wi, xv, *a);
            }
        }
        c += 16;
    }
    if R == 4 && T > 1 {
        // Up to sixteen sums at once through an add tree (short rows, e.g. attention's 64-wide heads,
        // would otherwise spend more on separate reductions than on the products).
        let mut sums = [0f32; 16];
        let v: [__m512; 16] = core::array::from_fn(|m| {
            if m / 4 < T {
                acc[m / 4][m % 4]
            } else {
                _mm512_setzero_ps()
            }
        });
        // SAFETY: `sums` is 64 writable bytes.
        unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), sum16(&v)) };
        for (m, &s) in sums.iter().enumerate().take(4 * T) {
            yt[(r + m % 4) * n + t + m / 4] = s;
        }
        return;
    }
    for (j, acc_j) in acc.iter().enumerate() {
        for (i, &a) in acc_j.iter().enumerate() {
            yt[(r + i) * n + t + j] = _mm512_reduce_add_ps(a);
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
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
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
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX-512 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

/// AVX-512 version of [`scalar::axpy_f16`].
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    // SAFETY: only reachable through the AVX-512 table, built after detection.
    unsafe { axpy(alpha, x, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn axpy<W: Lanes16>(alpha: f32, x: &[W], y: &mut [f32]) {
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
                W::load16(xp.add(i), m),
                _mm512_maskz_loadu_ps(m, yp.add(i)),
            );
            _mm512_mask_storeu_ps(yp.add(i), m, v);
        }
        i += 16;
    }
}

grouped_weighted_sum!(
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    Lanes16,
    "AVX-512"
);

/// `R` rows at once: columns in blocks of 64 (four vectors, the last masked to the row's end), each
/// block of `v` loaded once per position for all `R` rows (4·R independent FMA chains).
/// Precondition: `p.len() = R·seen`, `out.len() = R·hd` with `seen, hd > 0`, `v.len() >= seen·hd`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn weighted_group<W: Lanes16, const R: usize>(p: &[f32], v: &[W], out: &mut [f32]) {
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
                    unsafe { W::load16(vp.add(j * hd + c + 16 * a), m[a]) }
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
unsafe fn weighted_sum<W: Lanes16>(p: &[f32], v: &[W], out: &mut [f32]) {
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
                        let x = unsafe { W::load16(vp.add((j + u) * hd + c + 16 * a), m[a]) };
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
