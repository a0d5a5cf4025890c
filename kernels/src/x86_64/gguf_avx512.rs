//! AVX-512 VNNI group decodes and integer dots of the GGUF formats for [`super::gguf`].
//!
//! A group is four 64-byte vectors of weights in the activations' own order (activation blocks
//! `2c` and `2c + 1` in vector `c`), each one `vpdpbusd` (u8 × i8, four products per i32 lane, no
//! saturation) against 64 activation quants; [`super::quant_avx512::reduce_lanes`] then gives the
//! sixteen exact 16-element dots, and adjacent pairs the eight activation blocks'. Getting the
//! weights into that order costs no activation shuffles:
//! - q4_k, q5_k: quant bytes `32c..` broadcast to both halves, shifted right by 0 and 4 (one
//!   `vpsrlvw`): low nibbles are block `2c`, high nibbles `2c + 1`. q5_k's fifth bits are a byte
//!   test of `qh` (also broadcast) against bit `2c` and `2c + 1`, added as 16 under that mask.
//! - q5_0, q5_1, iq4_nl, iq4_xs (16 quant bytes per 32 elements, low nibbles first): two blocks'
//!   bytes spread as `[b0, b0, b1, b1]` over the 128-bit lanes, shifted by 0 and 4. The fifth bits of
//!   two q5 blocks are their 64 `qh` bits, as is: a mask register. The IQ4 table values go in as
//!   `K + 128` (`vpshufb`), and `128·Σx` comes off after the reduction.
//! - q6_k, q3_k, q2_k: as the scalar decoder's halves, with per-half shift counts for the bit fields.
//!
//! Offsets (q5_0's 16, q6_k's 32, q3_k's 4, the IQ4 128) and the sub-block scales are applied to the
//! exact dots in integers (`vpmulld` on the sixteen sub-block dots), so `A` and `B` are the spec's.

use core::arch::x86_64::*;

use half::f16;

use super::avx512::Avx512;
use super::gguf::{
    acc_terms, f16_splat, f16x8, gguf_entry, iq4xs_scales, k4_scales, q3k_scales, Acts, Group,
    Iq4Nl, Iq4Xs, Q2K, Q3K, Q4K, Q5K, Q5_0, Q5_1, Q6K,
};
use super::qstream::{Units, PREP};
use super::quant_avx512::reduce_lanes;
use crate::quant::kquant::IQ4_NL_VALUES;
use crate::quant::{Q8ActsRef, QFormat, QWeight, QK};
use crate::simd::Format;

mod k4_decode;
mod stream32;

gguf_entry!(Avx512, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");

/// A group of a format with one scale (or none) per activation block.
#[derive(Clone, Copy)]
pub(super) struct Z32 {
    /// Activation blocks `2c`, `2c + 1`.
    q: [__m512i; 4],
    /// Block scales and minimums (q4_k, q5_k, iq4_xs), as f32.
    sc: __m256,
    mn: __m256,
    /// `d` and `dmin` (`m`), per lane.
    d: __m256,
    dm: __m256,
}

/// A group of a format with 16-element sub-blocks (q2_k, q3_k, q6_k).
#[derive(Clone, Copy)]
pub(super) struct Z16 {
    q: [__m512i; 4],
    /// The sixteen sub-block scales (i32) and (q2_k) minimums (i16).
    s: __m512i,
    mn: __m256i,
    d: __m256,
    dm: __m256,
}

/// The sixteen exact 16-element dots of a group (lane = sub-block).
///
/// # Safety
/// The group readable at `x.q`; the CPU has this variant's features.
#[inline(always)]
unsafe fn dots16(q: &[__m512i; 4], x: &Acts) -> __m512i {
    let z = _mm512_setzero_si512();
    let mut v = [z; 4];
    for (c, v) in v.iter_mut().enumerate() {
        // SAFETY: as required of the caller; `loadu` has no alignment requirement.
        let xc = unsafe { _mm512_loadu_si512(x.q.add(64 * c).cast()) };
        *v = _mm512_dpbusd_epi32(z, q[c], xc);
    }
    reduce_lanes(v)
}

/// Sums of adjacent lanes: sixteen sub-block values to eight activation blocks'.
#[inline(always)]
unsafe fn pairs8(v: __m512i) -> __m256i {
    _mm512_cvtepi64_epi32(_mm512_add_epi32(v, _mm512_srli_epi64::<32>(v)))
}

/// Sixteen words of `a`, then sixteen of `b` (shift counts per half).
#[inline(always)]
unsafe fn halves(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(a)),
        _mm256_set1_epi16(b),
    )
}

/// Bytes of bit `a` in the low half, bit `b` in the high half (for byte tests).
#[inline(always)]
unsafe fn bit_halves(a: usize, b: usize) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi8((1u8 << a) as i8)),
        _mm256_set1_epi8((1u8 << b) as i8),
    )
}

/// The 32 bytes at `p` in both halves.
///
/// # Safety
/// 32 bytes readable at `p`; AVX-512 F present.
#[inline(always)]
unsafe fn both_halves(p: *const u8) -> __m512i {
    // SAFETY: as required of the caller.
    _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// Two 32-element blocks of 16 quant bytes each at `p` (low nibbles are elements 0..16, high
/// nibbles 16..32) as 64 bytes in element order.
///
/// # Safety
/// 32 bytes readable at `p`; the CPU has this variant's features.
#[inline(always)]
unsafe fn nibbles64(p: *const u8) -> __m512i {
    // SAFETY: as required of the caller.
    let q = _mm512_castsi256_si512(unsafe { _mm256_loadu_si256(p.cast()) });
    let spread = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), q);
    let f = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, f, f, 0, 0, f, f);
    _mm512_and_si512(_mm512_srlv_epi16(spread, shift), _mm512_set1_epi8(0x0f))
}

/// The IQ4 table values plus 128 (unsigned) of the nibbles in `v`.
#[inline(always)]
unsafe fn iq4_lookup(v: __m512i) -> __m512i {
    // SAFETY: the table is 16 bytes.
    let t = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) };
    let t = _mm_xor_si128(t, _mm_set1_epi8(-128));
    _mm512_shuffle_epi8(_mm512_broadcast_i32x4(t), v)
}

/// The sixteen 16-element sums of a group.
///
/// # Safety
/// Sixteen sums readable at `x.s16`.
#[inline(always)]
unsafe fn s16(x: &Acts) -> __m256i {
    // SAFETY: as required of the caller.
    unsafe { _mm256_loadu_si256(x.s16.cast()) }
}

/// q4_k and q5_k (see the module docs).
macro_rules! k4_group {
    ($t:ty, $qh:expr) => {
        impl Group<Avx512> for $t {
            type W = Z32;

            #[inline(always)]
            unsafe fn load(qs: *const u8, aux: *const u8, d: *const f16, m: *const f16) -> Z32 {
                let (m4, shift) = (_mm512_set1_epi8(0x0f), halves(0, 4));
                // SAFETY: one super-block at each pointer (the caller's contract).
                unsafe {
                    let (hb, q) = if $qh {
                        (both_halves(qs), qs.add(32))
                    } else {
                        (_mm512_setzero_si512(), qs)
                    };
                    let mut v = [_mm512_setzero_si512(); 4];
                    for (c, v) in v.iter_mut().enumerate() {
                        *v = _mm512_and_si512(
                            _mm512_srlv_epi16(both_halves(q.add(32 * c)), shift),
                            m4,
                        );
                        if $qh {
                            let high = _mm512_test_epi8_mask(hb, bit_halves(2 * c, 2 * c + 1));
                            *v = _mm512_mask_add_epi8(*v, high, *v, _mm512_set1_epi8(16));
                        }
                    }
                    let (sc, mn) = k4_scales(aux);
                    Z32 {
                        q: v,
                        sc,
                        mn,
                        d: f16_splat(d),
                        dm: f16_splat(m),
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &Z32, x: &Acts, acc: __m256) -> __m256 {
                // SAFETY: one group at x (the caller's contract). |sc·dot| and |mn·Σx| are below
                // 2²⁴ (see the AVX2 kernel), so the f32 products are the exact integers.
                unsafe {
                    let a = _mm256_mul_ps(_mm256_cvtepi32_ps(pairs8(dots16(&w.q, x))), w.sc);
                    let b = _mm256_mul_ps(_mm256_cvtepi32_ps(x.sums()), w.mn);
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, b)
                }
            }

            #[inline(always)]
            unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) -> bool {
                // SAFETY: the caller's contract.
                unsafe { k4_decode::one_token::<Self, $qh>(w, x, yt) }
            }
        }
    };
}

k4_group!(Q4K, false);
k4_group!(Q5K, true);

/// The formats with 16 quant bytes per 32 elements: q5_0, q5_1, iq4_nl (eight blocks per group,
/// block scales per lane) and iq4_xs (one super-block, a scale per activation block).
/// q5_0, q5_1, iq4_nl take one token through the q4 stream ([`stream32`]) where the row fits its
/// prepared activations.
macro_rules! stream_one_token {
    (stream) => {
        #[inline(always)]
        unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) -> bool {
            if w.k / QK > PREP {
                return false;
            }
            // SAFETY: the caller's contract, and the row length checked above.
            unsafe { <Avx512 as Units>::decode::<Self>(w, x, yt) };
            true
        }
    };
}

macro_rules! nibble_group {
    ($t:ty $(, $stream:ident)?) => {
        impl Group<Avx512> for $t {
            type W = Z32;
            $(stream_one_token!($stream);)?

            #[inline(always)]
            unsafe fn load(qs: *const u8, aux: *const u8, d: *const f16, m: *const f16) -> Z32 {
                let f = <$t as Format>::FORMAT;
                // SAFETY: one group at each pointer the format reads (the caller's contract).
                unsafe {
                    let mut q = [_mm512_setzero_si512(); 4];
                    for (c, q) in q.iter_mut().enumerate() {
                        let v = nibbles64(qs.add(32 * c));
                        *q = match f {
                            QFormat::Q5_0 | QFormat::Q5_1 => {
                                // Two blocks' qh: bit e is element e of the pair's 64.
                                let high = aux.add(8 * c).cast::<u64>().read_unaligned();
                                _mm512_mask_add_epi8(v, high, v, _mm512_set1_epi8(16))
                            }
                            _ => iq4_lookup(v),
                        };
                    }
                    let (sc, d) = match f {
                        QFormat::Iq4Xs => (iq4xs_scales(aux), f16_splat(d)),
                        _ => (_mm256_setzero_ps(), f16x8(d)),
                    };
                    Z32 {
                        q,
                        sc,
                        mn: _mm256_setzero_ps(),
                        d,
                        dm: if <$t as Format>::MIN {
                            f16x8(m)
                        } else {
                            _mm256_setzero_ps()
                        },
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &Z32, x: &Acts, acc: __m256) -> __m256 {
                // SAFETY: one group at x (the caller's contract).
                unsafe {
                    let dots = pairs8(dots16(&w.q, x));
                    let sx = x.sums();
                    // The quants as multiplied exceed the values by 16 (q5_0), 128 (IQ4).
                    let a = match <$t as Format>::FORMAT {
                        QFormat::Q5_0 => _mm256_sub_epi32(dots, _mm256_slli_epi32::<4>(sx)),
                        QFormat::Q5_1 => dots,
                        _ => _mm256_sub_epi32(dots, _mm256_slli_epi32::<7>(sx)),
                    };
                    let mut a = _mm256_cvtepi32_ps(a);
                    if <$t as Format>::FORMAT == QFormat::Iq4Xs {
                        // |(sc − 32)·dot| < 2²⁴: exact.
                        a = _mm256_mul_ps(a, w.sc);
                    }
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, _mm256_cvtepi32_ps(sx))
                }
            }
        }
    };
}

nibble_group!(Q5_0, stream);
nibble_group!(Q5_1, stream);
nibble_group!(Iq4Nl, stream);
nibble_group!(Iq4Xs);

/// q2_k, q3_k and q6_k: unsigned quants, sub-block scales (i8) and (q2_k) minimums, and the offset
/// the quants carry (`A = Σ_h s_h·(dot_h − off·S_h)`).
macro_rules! sub16_group {
    ($t:ty, $off_shift:expr, |$qs:ident, $aux:ident| $decode:expr) => {
        impl Group<Avx512> for $t {
            const S16: bool = true;
            type W = Z16;

            #[inline(always)]
            unsafe fn load($qs: *const u8, $aux: *const u8, d: *const f16, m: *const f16) -> Z16 {
                // SAFETY: one super-block at each pointer the format reads (the caller's contract).
                unsafe {
                    let (q, s, mn): ([__m512i; 4], __m128i, __m128i) = $decode;
                    Z16 {
                        q,
                        s: _mm512_cvtepi8_epi32(s),
                        mn: _mm256_cvtepu8_epi16(mn),
                        d: f16_splat(d),
                        dm: if <$t as Format>::MIN {
                            f16_splat(m)
                        } else {
                            _mm256_setzero_ps()
                        },
                    }
                }
            }

            #[inline(always)]
            unsafe fn dot(w: &Z16, x: &Acts, acc: __m256) -> __m256 {
                // SAFETY: one group and its 16-element sums at x (the caller's contract).
                unsafe {
                    let mut d16 = dots16(&w.q, x);
                    if let Some(shift) = $off_shift {
                        let off = _mm512_sll_epi32(
                            _mm512_cvtepi16_epi32(s16(x)),
                            _mm_cvtsi32_si128(shift),
                        );
                        d16 = _mm512_sub_epi32(d16, off);
                    }
                    let a = _mm256_cvtepi32_ps(pairs8(_mm512_mullo_epi32(d16, w.s)));
                    let b = match <$t as Format>::MIN {
                        true => _mm256_cvtepi32_ps(_mm256_madd_epi16(s16(x), w.mn)),
                        false => _mm256_setzero_ps(),
                    };
                    acc_terms::<Self>(acc, w.d, w.dm, x.dx(), a, b)
                }
            }
        }
    };
}

// Half n: ql bytes 64n..64n+64 (blocks 4n, 4n+1 in their low nibbles, 4n+2, 4n+3 in the high) and
// qh bytes 32n.. in both halves, bit pairs 0, 1 (then 2, 3) shifted to bits 4..6.
sub16_group!(Q6K, Some(5), |qs, aux| {
    let (m4, m30) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
    let mut q = [_mm512_setzero_si512(); 4];
    for n in 0..2 {
        let l = _mm512_loadu_si512(qs.add(64 * n).cast());
        let h = both_halves(qs.add(128 + 32 * n));
        q[2 * n] = _mm512_or_si512(
            _mm512_and_si512(l, m4),
            _mm512_and_si512(_mm512_sllv_epi16(h, halves(4, 2)), m30),
        );
        q[2 * n + 1] = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4),
            _mm512_and_si512(_mm512_srlv_epi16(h, halves(0, 2)), m30),
        );
    }
    (q, _mm_loadu_si128(aux.cast()), _mm_setzero_si128())
});

// Blocks 4n + j, 4n + j + 1 (j = 0, 2): bits 2j, 2j + 2 of quant bytes 32n.. (after the 32 bytes of
// hmask), plus 4 where hmask's bits 4n + j, 4n + j + 1 are set (offset 4).
sub16_group!(Q3K, Some(2), |qs, aux| {
    let hm = both_halves(qs);
    let m3 = _mm512_set1_epi8(3);
    let mut q = [_mm512_setzero_si512(); 4];
    for n in 0..2 {
        let b = both_halves(qs.add(32 + 32 * n));
        for p in 0..2 {
            let j = 2 * p;
            let v = _mm512_and_si512(
                _mm512_srlv_epi16(b, halves(2 * j as i16, 2 * j as i16 + 2)),
                m3,
            );
            let high = _mm512_test_epi8_mask(hm, bit_halves(4 * n + j, 4 * n + j + 1));
            q[2 * n + p] = _mm512_mask_add_epi8(v, high, v, _mm512_set1_epi8(4));
        }
    }
    (q, q3k_scales(aux), _mm_setzero_si128())
});

// Blocks 4n + j, 4n + j + 1 (j = 0, 2): bits 2j, 2j + 2 of quant bytes 32n..; scale and minimum are
// the nibbles of aux[h].
sub16_group!(Q2K, None::<i32>, |qs, aux| {
    let m3 = _mm512_set1_epi8(3);
    let mut q = [_mm512_setzero_si512(); 4];
    for n in 0..2 {
        let b = both_halves(qs.add(32 * n));
        for p in 0..2 {
            let j = 2 * p as i16;
            q[2 * n + p] = _mm512_and_si512(_mm512_srlv_epi16(b, halves(2 * j, 2 * j + 2)), m3);
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
