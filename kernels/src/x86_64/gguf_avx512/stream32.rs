//! One token of q5_0, q5_1 and iq4_nl (decode) on AVX-512 VNNI: these formats have q4_0's shape (16
//! quant bytes and one f16 scale per 32 elements, q5_1 also a minimum), so they run through
//! [`super::super::qstream`] in units of sixteen blocks as q4_0 and q4_1 do. That stream reads the
//! rows' blocks front to back as one run (a 576-column row's eighteen blocks are no partial group),
//! prefetched, with the activations prepared once per call in q4's order (per four blocks, elements
//! 0..16 of each, then 16..32: [`prep_q4_unit`]).
//!
//! A unit is four 64-byte vectors of quant bytes, block `4j + L` in 128-bit lane `L` of vector `j`;
//! low nibbles meet the elements 0..16 and high nibbles 16..32, one `vpdpbusd` each:
//! - q5_0, q5_1: the fifth bits of four blocks (16 `qh` bytes) become two 64-bit masks in general
//!   registers (bits 0..16 of each block's `qh` for the low nibbles, 16..32 for the high ones), under
//!   which 16 is added to the nibble: `q`, 0..31. q5_0's value is
//!   `q − 16`, so its dots come out `16·Σx` too large ([`Stream::SHIFT`] 4); q5_1's value is `q`.
//! - iq4_nl: `vpshufb` looks each nibble up in the table plus 128 (unsigned, as `vpdpbusd` wants),
//!   so the dots come out `128·Σx` too large (shift 7).
//!
//! The dots are exact integers; [`super::super::qstream`] subtracts the offsets and scales them as for
//! q4_0 and q4_1.

use core::arch::x86_64::*;

use super::super::avx512::Avx512;
use super::super::gguf::{Iq4Nl, Q5_0, Q5_1};
use super::super::qstream::Stream;
use super::super::quant_avx512::{load64, prep_q4_unit, reduce_lanes};
use super::iq4_lookup;
use crate::quant::QK;

/// Bytes of high bits per block (q5_0, q5_1).
const QH: usize = 4;

/// The fifth-bit masks of blocks `4j..4j+4` (of `blocks`) at `aux`: bit `16L + i` of the first is
/// bit `i` of block `4j + L`'s `qh`, of the second bit `16 + i` (zero for blocks past `blocks`).
/// Built in general registers from the two words of the four blocks' `qh` (`qh_0 | qh_1 << 32` and
/// `qh_2 | qh_3 << 32`): the vector ports are the loop's busy ones.
///
/// # Safety
/// `blocks·4` bytes at `aux` readable (all `16·(j+1)` of them unless `MASKED`).
#[inline(always)]
unsafe fn high_masks<const MASKED: bool>(
    aux: *const u8,
    blocks: usize,
    j: usize,
) -> (__mmask64, __mmask64) {
    let p = aux.wrapping_add(16 * j);
    // SAFETY: as required of the caller; a partial unit's bytes are copied into zeros.
    let (a, b) = unsafe {
        if MASKED {
            let n = (blocks * QH).saturating_sub(16 * j).min(16);
            let mut v = [0u8; 16];
            core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
            let v = u128::from_le_bytes(v);
            (v as u64, (v >> 64) as u64)
        } else {
            (
                p.cast::<u64>().read_unaligned(),
                p.add(8).cast::<u64>().read_unaligned(),
            )
        }
    };
    const H0: u64 = 0xffff;
    const H1: u64 = 0xffff << 16;
    const H2: u64 = 0xffff << 32;
    const H3: u64 = 0xffff << 48;
    let lo = (a & H0) | ((a >> 16) & H1) | ((b << 32) & H2) | ((b << 16) & H3);
    let hi = ((a >> 16) & H0) | ((a >> 32) & H1) | ((b << 16) & H2) | (b & H3);
    (_cvtu64_mask64(lo), _cvtu64_mask64(hi))
}

macro_rules! stream32 {
    ($t:ty, $shift:expr) => {
        impl Stream<Avx512> for $t {
            const SHIFT: Option<i32> = $shift;
            const PF_BYTES: usize = 12288;
            const PF_NTA: bool = false;

            #[inline(always)]
            unsafe fn prep_unit(a: *mut u8) {
                // SAFETY: the caller's contract.
                unsafe { prep_q4_unit(a) }
            }

            #[inline(always)]
            unsafe fn unit_dots<const MASKED: bool>(
                w: *const u8,
                aux: *const u8,
                blocks: usize,
                a: *const u8,
            ) -> __m512i {
                let a = a.cast::<__m512i>();
                let m4 = _mm512_set1_epi8(0x0f);
                let v: [__m512i; 4] = core::array::from_fn(|j| {
                    // SAFETY: as required of the caller (masked lanes are not read).
                    let (q, lo, hi) = unsafe {
                        (
                            load64::<MASKED>(w, blocks * (QK / 2), j),
                            _mm512_loadu_si512(a.add(2 * j).cast()),
                            _mm512_loadu_si512(a.add(2 * j + 1).cast()),
                        )
                    };
                    let (mut wl, mut wh) = (
                        _mm512_and_si512(q, m4),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4),
                    );
                    if <$t as crate::simd::Format>::FORMAT == crate::quant::QFormat::Iq4Nl {
                        // SAFETY: AVX-512 BW present (the caller's contract).
                        (wl, wh) = unsafe { (iq4_lookup(wl), iq4_lookup(wh)) };
                    } else {
                        // SAFETY: as required of the caller.
                        let (kl, kh) = unsafe { high_masks::<MASKED>(aux, blocks, j) };
                        let sixteen = _mm512_set1_epi8(16);
                        wl = _mm512_mask_add_epi8(wl, kl, wl, sixteen);
                        wh = _mm512_mask_add_epi8(wh, kh, wh, sixteen);
                    }
                    let z = _mm512_setzero_si512();
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wl, lo), wh, hi)
                });
                reduce_lanes(v)
            }
        }
    };
}

stream32!(Q5_0, Some(4));
stream32!(Q5_1, None);
stream32!(Iq4Nl, Some(7));
