//! AVX2 group decodes and integer dots of the GGUF formats for [`super::gguf`].
//!
//! A group's eight activation blocks are eight vectors of 32 weights in the activations' own order
//! (no activation shuffles): each is one `vpmaddubsw` against the block's quants, then `vpmaddwd`,
//! then one `vphaddd` tree reduces the eight vectors to eight exact i32, one per activation block.
//! `vpmaddubsw` saturates, so its operands keep every pair sum in range:
//! - unsigned quants (q4_k, q5_k, q5_0, q5_1: `0..=31`; q6_k `0..=63`; q3_k `0..=7`; q2_k `0..=3`)
//!   against the i8 activations: `|pair| <= 2·63·128`. The formats' offsets come back in integers
//!   after the reduction: q5_0's `−16·Σx` from the block sums, q6_k's `−32` and q3_k's `−4` from the
//!   16-element sums ([`super::gguf::Acts::s16`]) weighted by the sub-block scales.
//! - the IQ4 formats' signed table values (`−127..=113`): `|x| × sign(K, x)` (`|pair| <= 2·128·127`;
//!   `K` is never −128, so negating it is exact, and `|x|` is exact as u8 for every i8).
//!
//! Scales: one per activation block (q4_k, q5_k, iq4_xs) multiply the exact block dot as f32 (the
//! product stays below 2²⁴, so it is the spec's integer `A`); the 16-element sub-blocks of q2_k,
//! q3_k and q6_k are weighted inside `vpmaddwd`, against a vector of the two scales of the block.

use core::arch::x86_64::*;

use half::f16;

use super::avx2::Avx2;
use super::gguf::{
    acc_terms, f16_splat, f16x8, gguf_entry, iq4xs_scales, k4_scales, q3k_scales, Acts, Group,
    Iq4Nl, Iq4Xs, Q2K, Q3K, Q4K, Q5K, Q5_0, Q5_1, Q6K,
};
use super::qstream::{Stream, Units, PREP};
use crate::quant::kquant::IQ4_NL_VALUES;
use crate::quant::{Q8ActsRef, QWeight, QK};

gguf_entry!(Avx2, "avx2,fma,f16c");

/// A group of formats with one scale (or none) per activation block.
#[derive(Clone, Copy)]
pub(super) struct W32 {
    /// Activation block `j`'s 32 weights.
    q: [__m256i; 8],
    /// Block scales and minimums (q4_k, q5_k, iq4_xs), as f32.
    sc: __m256,
    mn: __m256,
    /// `d` and `dmin` (`m`), per lane.
    d: __m256,
    dm: __m256,
}

/// A group of a format with 16-element sub-blocks (q2_k, q3_k, q6_k).
#[derive(Clone, Copy)]
pub(super) struct W16 {
    q: [__m256i; 8],
    /// Activation block `j`'s two sub-block scales: `s[2j]` in the low eight words, `s[2j+1]` in
    /// the high eight.
    pairs: [__m256i; 8],
    /// The sixteen sub-block scales (i16) and (q2_k) minimums.
    s: __m256i,
    mn: __m256i,
    d: __m256,
    dm: __m256,
}

/// Lane `j` = the sum of the eight lanes of `p[j]` (wrapping adds; every sum here is far below
/// 2³¹, so exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum8(p: [__m256i; 8]) -> __m256i {
    let a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    let b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    // a = [0L, 1L, 2L, 3L | 0H, 1H, 2H, 3H] (L, H: sums of the low, high four lanes), b likewise.
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    )
}

/// Activation block `j` of a group's quants.
///
/// # Safety
/// The group readable at `x.q`; AVX2 present.
#[inline(always)]
unsafe fn xq(x: &Acts, j: usize) -> __m256i {
    // SAFETY: as required of the caller; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(x.q.add(32 * j).cast()) }
}

/// Eight exact dots of unsigned quants with the activations, pairs weighted by `s[j]` (ones for
/// one scale per block).
///
/// # Safety
/// As [`xq`].
#[inline(always)]
unsafe fn udots(q: &[__m256i; 8], s: &[__m256i; 8], x: &Acts) -> __m256i {
    let mut p = [_mm256_setzero_si256(); 8];
    for (j, p) in p.iter_mut().enumerate() {
        // SAFETY: as required of the caller.
        *p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], unsafe { xq(x, j) }), s[j]);
    }
    sum8(p)
}

/// Eight exact dots of signed quants (`−127..=127`) with the activations.
///
/// # Safety
/// As [`xq`].
#[inline(always)]
unsafe fn sdots(q: &[__m256i; 8], x: &Acts) -> __m256i {
    let one = _mm256_set1_epi16(1);
    let mut p = [_mm256_setzero_si256(); 8];
    for (j, p) in p.iter_mut().enumerate() {
        // SAFETY: as required of the caller.
        let v = unsafe { xq(x, j) };
        *p = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(q[j], v)),
            one,
        );
    }
    sum8(p)
}

/// The 16 bytes at `p` as a 32-element block: low nibbles (elements 0..16), then high nibbles.
///
/// # Safety
/// 16 bytes readable at `p`; AVX2 present.
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    // SAFETY: as required of the caller.
    let q = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    // A 32-bit shift moves the next byte's low bits into each byte's high nibble: masked off.
    _mm256_and_si256(
        _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
        _mm256_set1_epi8(0x0f),
    )
}

/// The 32 bits at `p` (q5_0's and q5_1's `qh`) as bytes: 16 where element `i`'s bit is set.
///
/// # Safety
/// 4 bytes readable at `p`; AVX2 present.
#[inline(always)]
unsafe fn bits32(p: *const u8) -> __m256i {
    // SAFETY: as required of the caller.
    let h = unsafe { p.cast::<i32>().read_unaligned() };
    // Byte i takes the byte holding bit i, then tests its bit i % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(h),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_and_si256(
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
        _mm256_set1_epi8(16),
    )
}

/// Bit `from` of every byte of `v` moved to bit `to`, the other bits zero. (A 16-bit shift carries
/// bits into the neighbouring byte only at positions other than `to`, so the mask removes them.)
#[inline(always)]
unsafe fn move_bit(v: __m256i, from: usize, to: usize) -> __m256i {
    let v = if from <= to {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128((to - from) as i32))
    } else {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128((from - to) as i32))
    };
    _mm256_and_si256(v, _mm256_set1_epi8(1 << to))
}

/// The two-bit field at bit `2j` of every byte of `v`.
#[inline(always)]
unsafe fn crumb(v: __m256i, j: usize) -> __m256i {
    _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * j as i32)),
        _mm256_set1_epi8(3),
    )
}

/// Sixteen i8 sub-block scales as [`W16::pairs`].
#[inline(always)]
unsafe fn scale_pairs(s: __m128i) -> [__m256i; 8] {
    // Even sub-blocks' scales in the low half, odd in the high, as words.
    let e = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
        s,
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
    ));
    let mut pairs = [_mm256_setzero_si256(); 8];
    for (j, p) in pairs.iter_mut().enumerate() {
        let word = (2 * j as i16) | ((2 * j as i16 + 1) << 8);
        *p = _mm256_shuffle_epi8(e, _mm256_set1_epi16(word));
    }
    pairs
}

/// The IQ4 values of the nibbles in `v`.
#[inline(always)]
unsafe fn iq4_lookup(v: __m256i) -> __m256i {
    // SAFETY: the table is 16 bytes.
    let t = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) };
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), v)
}

/// `Σ_h s[h]·S[h]` over each activation block's two sub-blocks: the 16-element sums of `x` against
/// sixteen i16 weights.
///
/// # Safety
/// Sixteen sums readable at `x.s16`; AVX2 present.
#[inline(always)]
unsafe fn sub_sums(x: &Acts, s: __m256i) -> __m256i {
    // SAFETY: as required of the caller.
    _mm256_madd_epi16(unsafe { _mm256_loadu_si256(x.s16.cast()) }, s)
}

/// q4_k and q5_k: the nibbles of quant bytes `32c..` are activation blocks `2c` (low) and `2c + 1`
/// (high); q5_k adds bit `j` of `qh` (the plane's first 32 bytes) as 16 to block `j`.
macro_rules! k4_group {
    ($t:ty, $qh:expr) => {
        impl Group<Avx2> for $t {
            type W = W32;

            #[inline(always)]
            unsafe fn load(qs: *const u8, aux: *const u8, d: *const f16, m: *const f16) -> W32 {
                let m4 = _mm256_set1_epi8(0x0f);
                // SAFETY: one super-block at each pointer (the caller's contract).
                unsafe {
                    let (hb, q) = if $qh {
                        (_mm256_loadu_si256(qs.cast()), qs.add(32))
                    } else {
                        (_mm256_setzero_si256(), qs)
                    };
                    let mut v = [_mm256_setzero_si256(); 8];
                    for c in 0..4 {
                        let b = _mm256_loadu_si256(q.add(32 * c).cast());
                        v[2 * c] = _mm256_and_si256(b, m4);
                        v[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m4);
                    }
                    if $qh {
                        for (j, v) in v.iter_mut().enumerate() {
                            *v = _mm256_or_si256(*v, move_bit(hb, j, 4));
                        }
                    }
                    let (sc, mn) = k4_scales(aux);
                    W32 {
                        q: v,
                        sc,
                        mn,
                        d: f16_splat(d),
                        dm: f16_splat(m),
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &W32, x: &Acts, acc: __m256) -> __m256 {
                let one = [_mm256_set1_epi16(1); 8];
                // SAFETY: one group at x (the caller's contract). |sc·dot| <= 63·32·31·127 and
                // |mn·Σx| <= 63·32·127: below 2²⁴, so both f32 products are the exact integers.
                unsafe {
                    let a = _mm256_mul_ps(_mm256_cvtepi32_ps(udots(&w.q, &one, x)), w.sc);
                    let b = _mm256_mul_ps(_mm256_cvtepi32_ps(x.sums()), w.mn);
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, b)
                }
            }
        }
    };
}

k4_group!(Q4K, false);
k4_group!(Q5K, true);

impl Group<Avx2> for Iq4Xs {
    type W = W32;

    /// Activation block `j`: the nibbles of quant bytes `16j..16j+16` as table values.
    #[inline(always)]
    unsafe fn load(qs: *const u8, aux: *const u8, d: *const f16, _: *const f16) -> W32 {
        // SAFETY: one super-block at each pointer (the caller's contract).
        unsafe {
            let mut q = [_mm256_setzero_si256(); 8];
            for (j, q) in q.iter_mut().enumerate() {
                *q = iq4_lookup(nibbles32(qs.add(16 * j)));
            }
            W32 {
                q,
                sc: iq4xs_scales(aux),
                mn: _mm256_setzero_ps(),
                d: f16_splat(d),
                dm: _mm256_setzero_ps(),
            }
        }
    }

    #[inline(always)]
    unsafe fn dot(w: &W32, x: &Acts, acc: __m256) -> __m256 {
        // SAFETY: one group at x. |(sc − 32)·dot| <= 32·32·127·127 < 2²⁴: exact in f32.
        unsafe {
            let a = _mm256_mul_ps(_mm256_cvtepi32_ps(sdots(&w.q, x)), w.sc);
            acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, _mm256_setzero_ps())
        }
    }
}

/// The 32-element formats: block `j` of the group is activation block `j`.
macro_rules! small_group {
    ($t:ty, |$qs:ident, $aux:ident, $j:ident| $quants:expr) => {
        impl Group<Avx2> for $t {
            type W = W32;

            /// One token through the stream ([`stream_group`]) where the row fits its prepared
            /// activations.
            #[inline(always)]
            unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) -> bool {
                if w.k / QK > PREP {
                    return false;
                }
                // SAFETY: the caller's contract, and the row length checked above.
                unsafe { <Avx2 as Units>::decode::<Self>(w, x, yt) };
                true
            }

            #[inline(always)]
            unsafe fn load($qs: *const u8, $aux: *const u8, d: *const f16, m: *const f16) -> W32 {
                // SAFETY: eight blocks at each pointer the format reads (the caller's contract).
                unsafe {
                    let mut q = [_mm256_setzero_si256(); 8];
                    for ($j, q) in q.iter_mut().enumerate() {
                        *q = $quants;
                    }
                    W32 {
                        q,
                        sc: _mm256_setzero_ps(),
                        mn: _mm256_setzero_ps(),
                        d: f16x8(d),
                        dm: if <$t as crate::simd::Format>::MIN {
                            f16x8(m)
                        } else {
                            _mm256_setzero_ps()
                        },
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &W32, x: &Acts, acc: __m256) -> __m256 {
                let one = [_mm256_set1_epi16(1); 8];
                // SAFETY: one group at x (the caller's contract).
                unsafe {
                    let (a, b) = match <$t as crate::simd::Format>::FORMAT {
                        // The quants as stored are q + 16.
                        crate::quant::QFormat::Q5_0 => (
                            _mm256_sub_epi32(
                                udots(&w.q, &one, x),
                                _mm256_slli_epi32::<4>(x.sums()),
                            ),
                            x.sums(),
                        ),
                        crate::quant::QFormat::Q5_1 => (udots(&w.q, &one, x), x.sums()),
                        _ => (sdots(&w.q, x), x.sums()),
                    };
                    let (a, b) = (_mm256_cvtepi32_ps(a), _mm256_cvtepi32_ps(b));
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, b)
                }
            }
        }
    };
}

/// Block `j` of q5_0 or q5_1 at `qs`, `aux`: `q`, 0..=31.
///
/// # Safety
/// Block `j`'s bytes readable at `qs` and `aux`; AVX2 present.
#[inline(always)]
unsafe fn q5_block(qs: *const u8, aux: *const u8, j: usize) -> __m256i {
    // SAFETY: as required of the caller.
    unsafe { _mm256_or_si256(nibbles32(qs.add(16 * j)), bits32(aux.add(4 * j))) }
}

/// Block `j` of iq4_nl at `qs`: its table values.
///
/// # Safety
/// Block `j`'s bytes readable at `qs`; AVX2 present.
#[inline(always)]
unsafe fn iq4_nl_block(qs: *const u8, j: usize) -> __m256i {
    // SAFETY: as required of the caller.
    unsafe { iq4_lookup(nibbles32(qs.add(16 * j))) }
}

small_group!(Q5_0, |qs, aux, j| q5_block(qs, aux, j));
small_group!(Q5_1, |qs, aux, j| q5_block(qs, aux, j));
small_group!(Iq4Nl, |qs, _aux, j| iq4_nl_block(qs, j));

/// One token of q5_0, q5_1 and iq4_nl through the x86 stream ([`super::qstream`]): units of one
/// group of eight blocks read front to back across rows (a 576-column row's eighteen blocks are no
/// partial group), against the activations in their own order, with the group kernel's dots.
macro_rules! stream_group {
    ($t:ty, $shift:expr, |$qs:ident, $aux:ident, $j:ident| $quants:expr) => {
        impl Stream<Avx2> for $t {
            const SHIFT: Option<i32> = $shift;
            const PF_BYTES: usize = 12288;
            const PF_NTA: bool = false;

            /// The dots read the activations as they are.
            #[inline(always)]
            unsafe fn prep_unit(_a: *mut u8) {}

            #[inline(always)]
            unsafe fn unit_dots<const MASKED: bool>(
                $qs: *const u8,
                $aux: *const u8,
                blocks: usize,
                a: *const u8,
            ) -> __m256i {
                let mut q = [_mm256_setzero_si256(); 8];
                for ($j, q) in q.iter_mut().enumerate() {
                    if !MASKED || $j < blocks {
                        // SAFETY: block j < blocks lies inside the caller's range.
                        *q = unsafe { $quants };
                    }
                }
                let x = Acts {
                    q: a.cast(),
                    d: core::ptr::null(),
                    sum: core::ptr::null(),
                    s16: core::ptr::null(),
                };
                // SAFETY: one unit of activations at `a` (the caller's contract).
                unsafe {
                    match <$t as crate::simd::Format>::FORMAT {
                        crate::quant::QFormat::Iq4Nl => sdots(&q, &x),
                        _ => udots(&q, &[_mm256_set1_epi16(1); 8], &x),
                    }
                }
            }
        }
    };
}

stream_group!(Q5_0, Some(4), |qs, aux, j| q5_block(qs, aux, j));
stream_group!(Q5_1, None, |qs, aux, j| q5_block(qs, aux, j));
stream_group!(Iq4Nl, None, |qs, _aux, j| iq4_nl_block(qs, j));

/// q2_k, q3_k and q6_k: unsigned quants per activation block ([`W16::q`]), their sub-block scales
/// as i8 (q2_k: and minimums), and the offset the quants carry (`A = dot − off·Σ_h s_h·S_h`).
macro_rules! sub16_group {
    ($t:ty, $off_shift:expr, |$qs:ident, $aux:ident| $decode:expr) => {
        impl Group<Avx2> for $t {
            const S16: bool = true;
            type W = W16;

            #[inline(always)]
            unsafe fn load($qs: *const u8, $aux: *const u8, d: *const f16, m: *const f16) -> W16 {
                // SAFETY: one super-block at each pointer the format reads (the caller's contract).
                unsafe {
                    let (q, s, mn): ([__m256i; 8], __m128i, __m128i) = $decode;
                    W16 {
                        q,
                        pairs: scale_pairs(s),
                        s: _mm256_cvtepi8_epi16(s),
                        mn: _mm256_cvtepu8_epi16(mn),
                        d: f16_splat(d),
                        dm: if <$t as crate::simd::Format>::MIN {
                            f16_splat(m)
                        } else {
                            _mm256_setzero_ps()
                        },
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &W16, x: &Acts, acc: __m256) -> __m256 {
                // SAFETY: one group and its 16-element sums at x (the caller's contract).
                unsafe {
                    let mut a = udots(&w.q, &w.pairs, x);
                    if let Some(shift) = $off_shift {
                        let off = _mm256_sll_epi32(sub_sums(x, w.s), _mm_cvtsi32_si128(shift));
                        a = _mm256_sub_epi32(a, off);
                    }
                    let b = match <$t as crate::simd::Format>::MIN {
                        true => _mm256_cvtepi32_ps(sub_sums(x, w.mn)),
                        false => _mm256_setzero_ps(),
                    };
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), _mm256_cvtepi32_ps(a), b)
                }
            }
        }
    };
}

// Half n (elements 128n..): ql bytes 64n.. (a) and 64n + 32.. (b), qh bytes 32n.. (h); blocks
// 4n..4n+4 are a's and b's low nibbles, then their high nibbles, over h's bit pairs 0..4.
sub16_group!(Q6K, Some(5), |qs, aux| {
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let mut q = [_mm256_setzero_si256(); 8];
    for n in 0..2 {
        let a = _mm256_loadu_si256(qs.add(64 * n).cast());
        let b = _mm256_loadu_si256(qs.add(64 * n + 32).cast());
        let h = _mm256_loadu_si256(qs.add(128 + 32 * n).cast());
        q[4 * n] = _mm256_or_si256(
            _mm256_and_si256(a, m4),
            _mm256_and_si256(_mm256_slli_epi16::<4>(h), m30),
        );
        q[4 * n + 1] = _mm256_or_si256(
            _mm256_and_si256(b, m4),
            _mm256_and_si256(_mm256_slli_epi16::<2>(h), m30),
        );
        q[4 * n + 2] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(a), m4),
            _mm256_and_si256(h, m30),
        );
        q[4 * n + 3] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(b), m4),
            _mm256_and_si256(_mm256_srli_epi16::<2>(h), m30),
        );
    }
    (q, _mm_loadu_si128(aux.cast()), _mm_setzero_si128())
});

// hmask (32 bytes), then the 2-bit quants: block 4n + j is bits 2j of quant bytes 32n.. and bit
// 4n + j of hmask (set: the value as stored, clear: 4 less; so the quant is q + 4·hbit, offset 4).
sub16_group!(Q3K, Some(2), |qs, aux| {
    let hm = _mm256_loadu_si256(qs.cast());
    let mut q = [_mm256_setzero_si256(); 8];
    for n in 0..2 {
        let b = _mm256_loadu_si256(qs.add(32 + 32 * n).cast());
        for j in 0..4 {
            q[4 * n + j] = _mm256_or_si256(crumb(b, j), move_bit(hm, 4 * n + j, 2));
        }
    }
    (q, q3k_scales(aux), _mm_setzero_si128())
});

// Block 4n + j is bits 2j of quant bytes 32n..; scale and minimum are the nibbles of aux[h].
sub16_group!(Q2K, None::<i32>, |qs, aux| {
    let mut q = [_mm256_setzero_si256(); 8];
    for n in 0..2 {
        let b = _mm256_loadu_si256(qs.add(32 * n).cast());
        for j in 0..4 {
            q[4 * n + j] = crumb(b, j);
        }
    }
    let sm = _mm_loadu_si128(aux.cast());
    let m4 = _mm_set1_epi8(0x0f);
    (
        q,
        _mm_and_si128(sm, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(sm), m4),
    )
});
