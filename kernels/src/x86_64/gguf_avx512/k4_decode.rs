//! One token against q4_k or q5_k weights (decode), two super-blocks of a row at a time.
//!
//! The group kernels ([`super`]) reduce each `vpdpbusd` vector over eight lanes per activation
//! block, and meet the scales eight blocks at a time. Here the activations are first rearranged once
//! per call (per four blocks: elements 0..16 of each, then 16..32, as q4_0's stream has them), so
//! that the two halves of a block accumulate into the same four lanes; the weights follow with one
//! `vpermq` per vector. Two super-blocks are then sixteen activation blocks in four vectors, one
//! `reduce_lanes`, and one 16-lane f32 step; their scales are decoded together in 256-bit vectors.
//! A row's odd last super-block takes the group kernel.
//!
//! The integers are the spec's `A` and `B` as in the group kernels (exact dots, `sc·dot` and
//! `mn·Σx` below 2²⁴).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use super::super::gguf::{Acts, Group, PF_BYTES};
use super::super::hsum;
use super::super::quant_avx512::reduce_lanes;
use super::Avx512;
use crate::quant::{Q8ActsRef, QWeight, QK, QK_K};

/// Longest row this path prepares on the stack (8 KiB of activation quants); longer rows take the
/// group kernels.
const MAX_K: usize = 8192;

/// The product (see the module docs); false (nothing written) for rows longer than [`MAX_K`].
///
/// # Safety
/// The CPU has this variant's features; `check_matmul_q` accepted the shapes for `F`; `x.n == 1`.
#[inline(always)]
pub(super) unsafe fn one_token<F: Group<Avx512>, const QH: bool>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) -> bool {
    let k = w.k;
    if k > MAX_K {
        return false;
    }
    let (nb, qb) = (k / QK_K, F::QB);
    // The activations in pairs of half-block runs: per 128 bytes (four blocks), elements 0..16 of
    // each block, then 16..32.
    let mut xp = MaybeUninit::<[__m512i; MAX_K / 64]>::uninit();
    let xp = xp.as_mut_ptr().cast::<__m512i>();
    for i in 0..k / 128 {
        // SAFETY: x holds k quants (check_matmul_q); 128·i + 128 <= k <= MAX_K, inside the buffer.
        unsafe {
            let c0 = _mm512_loadu_si512(x.qs.as_ptr().add(128 * i).cast());
            let c1 = _mm512_loadu_si512(x.qs.as_ptr().add(128 * i + 64).cast());
            xp.add(2 * i).write(_mm512_shuffle_i64x2::<0x88>(c0, c1));
            xp.add(2 * i + 1)
                .write(_mm512_shuffle_i64x2::<0xdd>(c0, c1));
        }
    }
    let (qs, aux, d, m) = (w.qs.as_ptr(), w.aux.as_ptr(), w.d.as_ptr(), w.m.as_ptr());
    // LOOP 1: rows.
    for (r, y) in yt.iter_mut().enumerate().take(w.rows) {
        let mut acc = _mm512_setzero_ps();
        let b0 = r * nb;
        // LOOP 0: pairs of super-blocks.
        for p in 0..nb / 2 {
            let b = b0 + 2 * p;
            for l in 0..2 * qb / 64 {
                let a = qs.wrapping_add(b * qb + PF_BYTES + 64 * l);
                // SAFETY: a prefetch is a hint that never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(a.cast()) };
            }
            // SAFETY: blocks b, b + 1 of row r lie in the planes (check_matmul_q); the pair's 512
            // activations (blocks 16p..16p+16) were prepared above and lie in x.
            unsafe {
                acc = pair::<QH>(
                    qs.add(b * qb),
                    aux.add(b * 12),
                    d.add(b),
                    m.add(b),
                    xp.add(8 * p),
                    x.d.as_ptr().add(16 * p),
                    x.sum.as_ptr().add(16 * p),
                    acc,
                );
            }
        }
        let mut s = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
        );
        if nb % 2 == 1 {
            let (b, e) = (b0 + nb - 1, k - QK_K);
            // SAFETY: the row's last block and its activations (natural order, in x).
            unsafe {
                let wv = F::load(qs.add(b * qb), aux.add(b * 12), d.add(b), m.add(b));
                let a = Acts {
                    q: x.qs.as_ptr().add(e),
                    d: x.d.as_ptr().add(e / QK),
                    sum: x.sum.as_ptr().add(e / QK),
                    s16: core::ptr::null(),
                };
                s = F::dot(&wv, &a, s);
            }
        }
        *y = hsum(s);
    }
    true
}

/// `acc` plus the sixteen terms of super-blocks `b`, `b + 1` (planes at `qs`, `aux`, `d`, `m`)
/// against their prepared activations `xp` (eight vectors), scales `dx` and sums `sx` (sixteen each).
///
/// # Safety
/// All of that readable; the CPU has this variant's features.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair<const QH: bool>(
    qs: *const u8,
    aux: *const u8,
    d: *const f16,
    m: *const f16,
    xp: *const __m512i,
    dx: *const f32,
    sx: *const i32,
    acc: __m512,
) -> __m512 {
    let qb = if QH { 160 } else { 128 };
    let m4 = _mm512_set1_epi8(0x0f);
    // Elements 0..16 (16..32) of chunks 2c, 2c + 1's low and high nibbles: blocks 4c..4c + 4.
    let (lo, hi) = (
        _mm512_setr_epi64(0, 1, 0, 1, 4, 5, 4, 5),
        _mm512_setr_epi64(2, 3, 2, 3, 6, 7, 6, 7),
    );
    let f = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, f, f, 0, 0, f, f);
    let z = _mm512_setzero_si512();
    let mut v = [z; 4];
    for h in 0..2 {
        // SAFETY: super-block h's quants (the caller's contract).
        let (q, qh) = unsafe {
            match QH {
                true => (qs.add(h * qb + 32), qs.add(h * qb)),
                false => (qs.add(h * qb), qs),
            }
        };
        for c in 0..2 {
            // SAFETY: 64 of the super-block's 128 quant bytes; the prepared quad c of it.
            let (raw, xa, xb) = unsafe {
                (
                    _mm512_loadu_si512(q.add(64 * c).cast()),
                    _mm512_load_si512(xp.add(4 * h + 2 * c).cast()),
                    _mm512_load_si512(xp.add(4 * h + 2 * c + 1).cast()),
                )
            };
            let mut wa = _mm512_and_si512(
                _mm512_srlv_epi16(_mm512_permutexvar_epi64(lo, raw), shift),
                m4,
            );
            let mut wb = _mm512_and_si512(
                _mm512_srlv_epi16(_mm512_permutexvar_epi64(hi, raw), shift),
                m4,
            );
            if QH {
                // Block 4c + L's fifth bits: bit 4c + L of qh[0..16] (wa) and qh[16..32] (wb).
                // SAFETY: qh's 32 bytes.
                let (ha, hb) = unsafe {
                    (
                        _mm512_broadcast_i32x4(_mm_loadu_si128(qh.cast())),
                        _mm512_broadcast_i32x4(_mm_loadu_si128(qh.add(16).cast())),
                    )
                };
                let bits = lane_bits(4 * c);
                let sixteen = _mm512_set1_epi8(16);
                wa = _mm512_mask_add_epi8(wa, _mm512_test_epi8_mask(ha, bits), wa, sixteen);
                wb = _mm512_mask_add_epi8(wb, _mm512_test_epi8_mask(hb, bits), wb, sixteen);
            }
            v[2 * h + c] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wa, xa), wb, xb);
        }
    }
    // Vector 2h + c, lane L: block 8h + 4c + L of the pair.
    let dots = _mm512_cvtepi32_ps(reduce_lanes(v));
    // SAFETY: both super-blocks' scale bytes, f16 scales, and the sixteen activation scales and sums.
    unsafe {
        let (sc, mn) = k4_scales2(aux);
        let a = _mm512_mul_ps(dots, sc);
        let b = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(sx.cast())), mn);
        let dx = _mm512_loadu_ps(dx);
        let acc = _mm512_fmadd_ps(_mm512_mul_ps(f16_pair(d), dx), a, acc);
        _mm512_fnmadd_ps(_mm512_mul_ps(f16_pair(m), dx), b, acc)
    }
}

/// The two f16 at `p` as lanes: the first in lanes 0..8, the second in 8..16.
///
/// # Safety
/// Two f16 readable at `p`; AVX-512 F present.
#[inline(always)]
unsafe fn f16_pair(p: *const f16) -> __m512 {
    // SAFETY: as required of the caller.
    let two = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
        p.cast::<i32>().read_unaligned()
    }));
    _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        _mm512_castps128_ps512(two),
    )
}

/// [`super::super::gguf::k4_scales`] of two consecutive super-blocks' 24 scale bytes at `p`, in
/// one 256-bit pass: the sixteen scales and sixteen minimums as f32 lanes.
///
/// # Safety
/// 24 bytes readable at `p`; the CPU has this variant's features.
#[inline(always)]
unsafe fn k4_scales2(p: *const u8) -> (__m512, __m512) {
    // SAFETY: as required of the caller (8 + 4 bytes at p and at p + 12).
    let t = unsafe { _mm256_set_m128i(scale_words(p.add(12)), scale_words(p)) };
    // Per 128-bit half, as k4_scales: y = [a0, a2, a1, a2 >> 4], z = [·, a0 >> 2, ·, a1 >> 2].
    let y = _mm256_srlv_epi32(
        _mm256_shuffle_epi32::<0b10_01_10_00>(t),
        _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4),
    );
    let z = _mm256_srli_epi32::<2>(_mm256_shuffle_epi32::<0b01_01_00_00>(t));
    let low = _mm256_setr_epi32(
        0x3f3f_3f3f,
        0x0f0f_0f0f,
        0x3f3f_3f3f,
        0x0f0f_0f0f,
        0x3f3f_3f3f,
        0x0f0f_0f0f,
        0x3f3f_3f3f,
        0x0f0f_0f0f,
    );
    let high = _mm256_setr_epi32(
        0,
        0x3030_3030,
        0,
        0x3030_3030,
        0,
        0x3030_3030,
        0,
        0x3030_3030,
    );
    let r = _mm256_or_si256(_mm256_and_si256(y, low), _mm256_and_si256(z, high));
    // [sc0, mn0 | sc1, mn1] (8 bytes each) → [sc0, sc1 | mn0, mn1].
    let r = _mm256_permute4x64_epi64::<0b11_01_10_00>(r);
    (
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(r))),
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256::<1>(r))),
    )
}

/// The twelve bytes at `p` as words `[a0, a1, a2, 0]`.
///
/// # Safety
/// Twelve bytes readable at `p`; SSE2 present.
#[inline(always)]
unsafe fn scale_words(p: *const u8) -> __m128i {
    // SAFETY: as required of the caller (8 + 4 bytes).
    unsafe {
        _mm_unpacklo_epi64(
            _mm_loadl_epi64(p.cast()),
            _mm_cvtsi32_si128(p.add(8).cast::<i32>().read_unaligned()),
        )
    }
}

/// Bytes of bit `first + L` in 128-bit lane `L`.
#[inline(always)]
unsafe fn lane_bits(first: usize) -> __m512i {
    let bit = |l: usize| i64::from_ne_bytes([(1u8 << (first + l)); 8]);
    let (b0, b1, b2, b3) = (bit(0), bit(1), bit(2), bit(3));
    _mm512_setr_epi64(b0, b0, b1, b1, b2, b2, b3, b3)
}
