//! AVX2 kernels for the quantized formats: the loads and block dots that [`super::qtile`] and
//! [`super::qstream`] run for q8_0/q4_0/q4_1 weights × q8 activations, and activation quantization.
//!
//! The integer dots are `vpmaddubsw` (u8 × i8 → pairs of i16) and `vpmaddwd` against ones (→ i32); a
//! group's vectors are then reduced *in integers* by a `vphaddd` tree to one exact i32 per block.
//! `vpmaddubsw` saturates, so the operands keep every i16 sum in range:
//! - q4: two blocks per vector, low nibbles and high nibbles in separate vectors (a 32-byte load, a
//!   shift and two masks per two blocks of a row); the activations are shuffled once per token and
//!   group to match (elements 0..16 of two blocks, then 16..32), and the two halves' pairs are added
//!   (`|·| ≤ 4·15·128`) before `vpmaddwd`: four lanes per block, half the reduction. The dot is of the
//!   nibbles as stored: q4_0 subtracts `8·Σx` after the reduction, q4_1 adds `m·(dx·Σx)`.
//! - q8_0: one block per vector with the sign trick, `|w| × sign(x, w)`: `|pair| ≤ 2·128·127`. This
//!   needs `x ≠ −128`, which the activation contract guarantees (quants in `−127..=127`).
//!
//! Decode streams eight-block units (one group) through [`super::qstream`] where the activations fit
//! its buffers, else takes four-row (q8_0: two-row) tiles.

use core::arch::x86_64::*;

use half::f16;

use super::avx2::Avx2;
use super::hsum;
use super::qstream::{decode_entry, Stream, Units, PREP};
use super::qtile::{self, tile_entries, Fmt, Loads, G};
use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::{intrinsics, MatmulQ, MatmulRows8, QuantizeQ8, Q4_0, Q4_1, Q8_0};

impl<F: Stream<Avx2> + Fmt<Avx2>> MatmulQ<F> for Avx2 {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract (and `decode`'s one token and `k/32 <= PREP` are checked here).
        unsafe {
            if x.n == 1 && w.k / QK <= PREP {
                Self::decode::<F>(w, x, yt)
            } else {
                qtile::matmul::<Self, F>(w, x, yt)
            }
        }
    }
}

tile_entries!(Avx2, "avx2,fma,f16c");

impl Loads for Avx2 {
    /// `v[..LEN]` (`LEN <= 8`) as f32 lanes, the rest zero. F16C conversion is exact.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x8<const LEN: usize>(v: &[f16]) -> __m256 {
        let v = &v[..LEN];
        if LEN == G {
            // SAFETY: `v` holds 8 halves (16 bytes).
            return _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast()) });
        }
        let mut a = [0u16; G];
        for (o, h) in a.iter_mut().zip(v) {
            *o = h.to_bits();
        }
        // SAFETY: `a` is 16 readable bytes.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
    }

    /// `v[..LEN]` (`LEN <= 8`) as lanes, the rest zero.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f32x8<const LEN: usize>(v: &[f32]) -> __m256 {
        let v = &v[..LEN];
        if LEN == G {
            // SAFETY: `v` holds 8 f32.
            return unsafe { _mm256_loadu_ps(v.as_ptr()) };
        }
        let mut a = [0f32; G];
        a[..LEN].copy_from_slice(v);
        // SAFETY: `a` is 8 readable f32.
        unsafe { _mm256_loadu_ps(a.as_ptr()) }
    }

    /// `v[..LEN]` (`LEN <= 8`) as lanes, the rest zero.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn i32x8<const LEN: usize>(v: &[i32]) -> __m256i {
        let v = &v[..LEN];
        if LEN == G {
            // SAFETY: `v` holds 8 i32.
            return unsafe { _mm256_loadu_si256(v.as_ptr().cast()) };
        }
        let mut a = [0i32; G];
        a[..LEN].copy_from_slice(v);
        // SAFETY: `a` is 8 readable i32.
        unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
    }
}

impl Units for Avx2 {
    const UNIT: usize = G;
    type F = __m256;
    type I = __m256i;

    intrinsics! {
        fn mul(a: __m256, b: __m256) -> __m256 = _mm256_mul_ps;
        fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 = _mm256_fmadd_ps;
        fn cvt(v: __m256i) -> __m256 = _mm256_cvtepi32_ps;
        fn sub(a: __m256i, b: __m256i) -> __m256i = _mm256_sub_epi32;
    }

    #[inline(always)]
    unsafe fn f16s<const MASKED: bool>(p: *const f16, blocks: usize) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { f16_lanes(p, if MASKED { blocks } else { G }) }
    }

    #[inline(always)]
    unsafe fn f32s(p: *const f32) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn i32s(p: *const i32) -> __m256i {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn row_sum(t: *const f32, n: usize) -> f32 {
        // SAFETY: the caller's contract.
        unsafe { row_sum(t, n) }
    }

    decode_entry!("avx2,fma,f16c");
}

/// Decode units of one group: the group prepared for [`Fmt::dot`] in place (nothing to do for q8_0,
/// whose prepared group is its blocks).
macro_rules! stream {
    ($t:ty, $pf_bytes:expr, $pf_nta:expr) => {
        impl Stream<Avx2> for $t {
            const SHIFT: Option<i32> = <Self as Fmt<Avx2>>::SHIFT;
            const PF_BYTES: usize = $pf_bytes;
            const PF_NTA: bool = $pf_nta;

            #[inline(always)]
            unsafe fn prep_unit(a: *mut u8) {
                // SAFETY: one group (256 bytes, aligned for `X`) at `a` (the caller's contract);
                // `load_x` reads it all before the write.
                unsafe {
                    a.cast::<<Self as Fmt<Avx2>>::X>()
                        .write(<Self as Fmt<Avx2>>::load_x::<G>(a.cast()))
                }
            }

            #[inline(always)]
            unsafe fn unit_dots<const MASKED: bool>(
                w: *const u8,
                _aux: *const u8,
                blocks: usize,
                a: *const u8,
            ) -> __m256i {
                // SAFETY: the caller's contract: `blocks` blocks at `w`, of which `load_w::<LEN>`
                // reads only LEN; a prepared group at `a`.
                unsafe {
                    let wv = match (MASKED, blocks) {
                        (false, _) => <Self as Fmt<Avx2>>::load_w::<G>(w),
                        (true, 1) => <Self as Fmt<Avx2>>::load_w::<1>(w),
                        (true, 2) => <Self as Fmt<Avx2>>::load_w::<2>(w),
                        (true, 3) => <Self as Fmt<Avx2>>::load_w::<3>(w),
                        (true, 4) => <Self as Fmt<Avx2>>::load_w::<4>(w),
                        (true, 5) => <Self as Fmt<Avx2>>::load_w::<5>(w),
                        (true, 6) => <Self as Fmt<Avx2>>::load_w::<6>(w),
                        (true, _) => <Self as Fmt<Avx2>>::load_w::<7>(w),
                    };
                    <Self as Fmt<Avx2>>::dot(&wv, &*a.cast())
                }
            }
        }
    };
}

stream!(Q8_0, 8192, true);
stream!(Q4_0, 12288, false);
stream!(Q4_1, 12288, false);

/// Block `b` (32 bytes) of a group at `p`, or zero if `b >= LEN`.
///
/// # Safety
/// `32·LEN` bytes at `p` readable; AVX2 present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block32<const LEN: usize>(p: *const u8, b: usize) -> __m256i {
    if b < LEN {
        // SAFETY: block b < LEN lies inside the caller's range; `loadu` needs no alignment.
        unsafe { _mm256_loadu_si256(p.add(32 * b).cast()) }
    } else {
        _mm256_setzero_si256()
    }
}

impl Fmt<Avx2> for Q8_0 {
    const DECODE_ROWS: usize = 2;
    const SHIFT: Option<i32> = None;
    /// Each block's quants and their magnitudes.
    type W = [(__m256i, __m256i); G];
    type X = [__m256i; G];

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_w<const LEN: usize>(p: *const u8) -> Self::W {
        core::array::from_fn(|b| {
            // SAFETY: as required of the caller.
            let w = unsafe { block32::<LEN>(p, b) };
            (w, _mm256_abs_epi8(w))
        })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_x<const LEN: usize>(p: *const i8) -> Self::X {
        // SAFETY: as required of the caller.
        core::array::from_fn(|b| unsafe { block32::<LEN>(p.cast(), b) })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot(w: &Self::W, x: &Self::X) -> __m256i {
        // |w| (0..=128, unsigned) × x with w's sign (−127..=127): the products w·x, exactly.
        let p: [__m256i; G] = core::array::from_fn(|b| {
            let (wb, aw) = w[b];
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x[b], wb)),
                _mm256_set1_epi16(1),
            )
        });
        // Eight lanes per block → one: [blocks 0..4 | 0..4] partial sums, then [4..8 | 4..8].
        let lo = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        let hi = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }
}

macro_rules! q4_fmt {
    ($t:ty, $shift:expr) => {
        impl Fmt<Avx2> for $t {
            const DECODE_ROWS: usize = 4;
            const SHIFT: Option<i32> = $shift;
            /// Per pair of blocks: [low nibbles of both], [high nibbles of both].
            type W = [(__m256i, __m256i); G / 2];
            /// Per pair of blocks: [elements 0..16 of both], [16..32 of both].
            type X = [(__m256i, __m256i); G / 2];

            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn load_w<const LEN: usize>(p: *const u8) -> Self::W {
                let m4 = _mm256_set1_epi8(0x0f);
                core::array::from_fn(|i| {
                    let q = if 2 * i + 1 < LEN {
                        // SAFETY: blocks 2i and 2i+1 (32 bytes) lie inside the caller's range.
                        unsafe { _mm256_loadu_si256(p.add(32 * i).cast()) }
                    } else if 2 * i < LEN {
                        // SAFETY: block 2i (16 bytes) lies inside the caller's range.
                        _mm256_zextsi128_si256(unsafe { _mm_loadu_si128(p.add(32 * i).cast()) })
                    } else {
                        _mm256_setzero_si256()
                    };
                    (
                        _mm256_and_si256(q, m4),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
                    )
                })
            }

            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn load_x<const LEN: usize>(p: *const i8) -> Self::X {
                core::array::from_fn(|i| {
                    // SAFETY: as required of the caller.
                    let (a, b) = unsafe {
                        (
                            block32::<LEN>(p.cast(), 2 * i),
                            block32::<LEN>(p.cast(), 2 * i + 1),
                        )
                    };
                    (
                        _mm256_permute2x128_si256::<0x20>(a, b),
                        _mm256_permute2x128_si256::<0x31>(a, b),
                    )
                })
            }

            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn dot(w: &Self::W, x: &Self::X) -> __m256i {
                // Four lanes per block: [2i ×4 | 2i+1 ×4].
                let p: [__m256i; G / 2] = core::array::from_fn(|i| {
                    let pairs = _mm256_add_epi16(
                        _mm256_maddubs_epi16(w[i].0, x[i].0),
                        _mm256_maddubs_epi16(w[i].1, x[i].1),
                    );
                    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
                });
                // → [0, 0, 2, 2 | 1, 1, 3, 3] and [4, 4, 6, 6 | 5, 5, 7, 7] → [0, 2, 4, 6 | 1, 3, 5, 7].
                let s =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
                _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
            }
        }
    };
}

q4_fmt!(Q4_0, Some(3));
q4_fmt!(Q4_1, None);

/// `blocks` (1..=8) halves at `p` as f32 lanes, the rest zero.
///
/// # Safety
/// `blocks` halves readable at `p`; AVX2/F16C present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_lanes(p: *const f16, blocks: usize) -> __m256 {
    // SAFETY: as required of the caller.
    unsafe {
        if blocks == G {
            return _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
        }
        let mut a = [0u16; G];
        core::ptr::copy_nonoverlapping(p.cast::<u16>(), a.as_mut_ptr(), blocks);
        _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().cast()))
    }
}

/// `Σ t[..n]`.
///
/// # Safety
/// `n` f32 at `t` readable; AVX present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_sum(t: *const f32, n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: as required of the caller.
    unsafe {
        while i + G <= n {
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(t.add(i)));
            i += G;
        }
        let mut s = hsum(acc);
        while i < n {
            s += *t.add(i);
            i += 1;
        }
        s
    }
}

impl QuantizeQ8 for Avx2 {
    /// Bit-identical to the scalar spec.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for (b, (db, sb)) in d.iter_mut().zip(sum.iter_mut()).enumerate() {
            // SAFETY: block b's 32 values lie inside x (precondition).
            let v: [__m256; 4] = core::array::from_fn(|u| unsafe {
                _mm256_loadu_ps(x.as_ptr().add(b * QK + 8 * u))
            });
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
            );
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let scale = amax / 127.0;
            *db = scale;
            let out = qs[b * QK..].as_mut_ptr();
            if scale == 0.0 {
                // SAFETY: block b's 32 quants lie inside qs (precondition).
                unsafe { _mm256_storeu_si256(out.cast(), _mm256_setzero_si256()) };
                *sb = 0;
                continue;
            }
            let vs = _mm256_set1_ps(scale);
            let q: [__m256i; 4] = core::array::from_fn(|u| round_clamp(_mm256_div_ps(v[u], vs)));
            *sb = hsum_epi32(_mm256_add_epi32(
                _mm256_add_epi32(q[0], q[1]),
                _mm256_add_epi32(q[2], q[3]),
            ));
            // i32 → i16 → i8 packs interleave the 128-bit halves; the permute restores element order.
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(out.cast(), p) };
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// `clamp(round(v), −127, 127)` with `round` half away from zero ([`f32::round`]), as i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_clamp(v: __m256) -> __m256i {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v − trunc(v) is exact; a fraction of at least one half rounds away from zero.
    let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(v, t));
    let away = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
    let r = _mm256_add_ps(t, _mm256_and_ps(away, one));
    _mm256_cvtps_epi32(_mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    ))
}

/// `rows8` q4_0, q8_0 and q4_1 through the layout's copy into `rowsplit` order (no kernel of its own).
impl MatmulRows8<Q4_0> for Avx2 {}
impl MatmulRows8<Q8_0> for Avx2 {}
impl MatmulRows8<Q4_1> for Avx2 {}
