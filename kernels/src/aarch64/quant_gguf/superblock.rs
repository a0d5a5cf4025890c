//! How [`super::ktile`] sees each super-block format (q4_k, q5_k, q6_k, iq4_xs; q2_k and q3_k in
//! [`super::k23`]): its quants per half super-block and its sub-block scales (see the
//! [parent module](super) for the tricks).

use core::arch::aarch64::*;

use super::{iq4_values, load_iq4, Iq4Xs, Q4K, Q5K, Q6K};
use crate::aarch64::asm::{not, sri2};
use crate::simd::Format;

/// One super-block's sub-block scales as i32 lanes and its minimums as f32 lanes.
#[derive(Clone, Copy)]
pub(in crate::aarch64) struct Scales {
    /// Lane `l` of `s[i]`: sub-block `4i + l`'s scale (16 sub-blocks for [`Super::SUB16`], else 8 in
    /// `s[0]`, `s[1]`).
    pub(super) s: [int32x4_t; 4],
    /// Lane `l` of `m[i]`: block `4i + l`'s minimum (formats with `dmin`; `m[0]`, `m[1]`), or
    /// sub-block `4i + l`'s ([`Super::MIN16`]).
    pub(super) m: [float32x4_t; 4],
}

/// A super-block format (256 elements, eight blocks of 32) as [`super::ktile`] sees it.
pub(in crate::aarch64) trait Super: Format {
    /// Bytes of the `aux` plane per super-block.
    const AB: usize = Self::FORMAT.aux_bytes_per_block();
    /// Scales per 16 elements (q2_k, q3_k, q6_k) rather than per 32.
    const SUB16: bool = false;
    /// Minimums per 16 elements (q2_k): the tile scales them by the activations' 16-element sums
    /// ([`super::TokenTerms`]) rather than by the per-block ones.
    const MIN16: bool = false;
    /// Every decoded value is within ±64, so plain NEON may add four products in an i16 lane.
    const SMALL: bool;
    /// The decoded values are `q − 16` (q5_k): each block's dot gains `16·sx` before its scale.
    const LOW16: bool = false;
    /// The decoded values are `4·q` (q6_k): the dots convert with `scvtf #2`.
    const QUARTER: bool = false;
    /// The `A_j` come out as `16·A_j` (q2_k, see [`super::k23`]): they convert with `scvtf #4`.
    const SIXTEENTH: bool = false;
    /// Every `A_j` is below 2²² in magnitude (q4_k: 63·32·15·127): `mla` adds it to the bits of
    /// 1.5·2²³ and an `fsub` converts it, exactly (see [`super::MAGIC`]).
    const MAGIC: bool = false;

    /// What the two halves share (q5_k's high bits).
    type Pre: Copy;

    /// # Safety
    /// The super-block's `Self::QB` quant bytes at `q` are readable.
    unsafe fn pre(q: *const u8) -> Self::Pre;

    /// Elements `128·h..128·h + 128` (`h` 0 or 1) of the super-block with quants at `q`: block
    /// `4h + i` in vectors `2i` (its elements 0..16) and `2i + 1`.
    ///
    /// # Safety
    /// As [`Super::pre`], with `pre` from it.
    unsafe fn half(q: *const u8, pre: Self::Pre, h: usize) -> [int8x16_t; 8];

    /// # Safety
    /// The super-block's `Self::AB` bytes at `aux` are readable.
    unsafe fn scales(aux: *const u8) -> Scales;
}

/// `tbl` indices that widen bytes `4i..4i + 4` into the low byte of four i32 lanes (255: zero).
static WIDEN: [[u8; 16]; 4] = {
    let mut t = [[255u8; 16]; 4];
    let mut i = 0;
    while i < 16 {
        t[i / 4][4 * (i % 4)] = i as u8;
        i += 1;
    }
    t
};

/// Bytes `4i..4i + 4` of `v` as i32 lanes, for `i` in 0..4.
///
/// # Safety
/// None beyond NEON (reads the static).
#[inline(always)]
unsafe fn widen4(v: uint8x16_t, i: usize) -> uint32x4_t {
    // SAFETY: WIDEN[i] holds 16 bytes (`i < 4`: the array index is checked).
    let idx = unsafe { vld1q_u8(WIDEN[i].as_ptr()) };
    vreinterpretq_u32_u8(vqtbl1q_u8(v, idx))
}

/// q4_k's and q5_k's 12 scale bytes (ggml's `get_scale_min_k4`) as eight scales and minimums.
///
/// # Safety
/// 12 bytes at `aux` are readable.
#[inline(always)]
unsafe fn scales_k4(aux: *const u8) -> Scales {
    // SAFETY: 12 readable bytes (the caller's contract).
    let (a, b) = unsafe {
        (
            aux.cast::<u64>().read_unaligned(),
            u64::from(aux.add(8).cast::<u32>().read_unaligned()),
        )
    };
    // Bytes 0..4: scales 0..4, 4..8: minimums 0..4 (low 6 bits); scales and minimums 4..8 take
    // bytes 8..12's low and high nibbles and, as bits 4 and 5, the top two bits of bytes 0..8.
    let lo = a & 0x3F3F_3F3F_3F3F_3F3F;
    let nib = (b & 0x0F0F_0F0F) | ((b << 28) & 0x0F0F_0F0F_0000_0000);
    let hi = nib | ((a >> 2) & 0x3030_3030_3030_3030);
    let v = vcombine_u8(vcreate_u8(lo), vcreate_u8(hi));
    // SAFETY: NEON only.
    let w = unsafe { [widen4(v, 0), widen4(v, 1), widen4(v, 2), widen4(v, 3)] };
    let (z, zf) = (vdupq_n_s32(0), vdupq_n_f32(0.0));
    Scales {
        s: [
            vreinterpretq_s32_u32(w[0]),
            vreinterpretq_s32_u32(w[2]),
            z,
            z,
        ],
        m: [vcvtq_f32_u32(w[1]), vcvtq_f32_u32(w[3]), zf, zf],
    }
}

/// The 16 bytes at `q + off`.
///
/// # Safety
/// 16 bytes at `q + off` are readable.
#[inline(always)]
pub(super) unsafe fn ld(q: *const u8, off: usize) -> uint8x16_t {
    // SAFETY: the caller's contract.
    unsafe { vld1q_u8(q.add(off)) }
}

/// Bytes as signed (no instruction).
///
/// # Safety
/// None beyond NEON (baseline on aarch64).
#[inline(always)]
pub(super) unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// q4_k: 128 nibble bytes; bytes `32c..32c + 32` hold block `2c` in their low nibbles and block
/// `2c + 1` in their high nibbles.
impl Super for Q4K {
    const SMALL: bool = true;
    const MAGIC: bool = true;
    type Pre = ();

    #[inline(always)]
    unsafe fn pre(_: *const u8) {}

    #[inline(always)]
    unsafe fn half(q: *const u8, _: (), h: usize) -> [int8x16_t; 8] {
        let m = vdupq_n_u8(15);
        // SAFETY: bytes 64h..64h + 64 of the 128 (the caller's contract, h < 2).
        let v = unsafe {
            [
                ld(q, 64 * h),
                ld(q, 64 * h + 16),
                ld(q, 64 * h + 32),
                ld(q, 64 * h + 48),
            ]
        };
        [
            s8(vandq_u8(v[0], m)),
            s8(vandq_u8(v[1], m)),
            s8(vshrq_n_u8::<4>(v[0])),
            s8(vshrq_n_u8::<4>(v[1])),
            s8(vandq_u8(v[2], m)),
            s8(vandq_u8(v[3], m)),
            s8(vshrq_n_u8::<4>(v[2])),
            s8(vshrq_n_u8::<4>(v[3])),
        ]
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: the caller's contract (12 bytes).
        unsafe { scales_k4(aux) }
    }
}

/// q5_k: `qh` (32 bytes: bit `b` of byte `l` is block `b`'s element `l`'s fifth bit), then q4_k's
/// 128 nibble bytes. Decoded as `q − 16` (see the module docs).
impl Super for Q5K {
    const SMALL: bool = true;
    const LOW16: bool = true;
    /// `qh` inverted: bit set where the element's fifth bit is clear.
    type Pre = [uint8x16_t; 2];

    #[inline(always)]
    unsafe fn pre(q: *const u8) -> [uint8x16_t; 2] {
        // SAFETY: bytes 0..32 (the caller's contract).
        unsafe { [not(ld(q, 0)), not(ld(q, 16))] }
    }

    #[inline(always)]
    unsafe fn half(q: *const u8, qh: [uint8x16_t; 2], h: usize) -> [int8x16_t; 8] {
        let mut out = [vdupq_n_s8(0); 8];
        // Two bit masks only (bits 2c and 2c + 1 shifted down to 0 and 1 per chunk c): eight
        // constants would not stay in registers.
        let (lo_bit, hi_bit) = (vdupq_n_u8(1), vdupq_n_u8(2));
        for i in 0..2 {
            let c = 2 * h + i;
            for v in 0..2 {
                // SAFETY: nibble bytes 32c + 16v.. of the 128 after `qh` (the caller's contract).
                let b = unsafe { ld(q, 32 + 32 * c + 16 * v) };
                let bits = match c {
                    0 => qh[v],
                    1 => vshrq_n_u8::<2>(qh[v]),
                    2 => vshrq_n_u8::<4>(qh[v]),
                    _ => vshrq_n_u8::<6>(qh[v]),
                };
                out[4 * i + v] = s8(vsliq_n_u8::<4>(b, vtstq_u8(bits, lo_bit)));
                out[4 * i + 2 + v] =
                    s8(vsliq_n_u8::<4>(vshrq_n_u8::<4>(b), vtstq_u8(bits, hi_bit)));
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: the caller's contract (12 bytes).
        unsafe { scales_k4(aux) }
    }
}

/// q6_k: `ql` (128 bytes) then `qh` (64); per half `n`, element `l`, `l + 32`, `l + 64`, `l + 96`
/// (`l < 32`) take `ql[64n + l]`'s and `ql[64n + l + 32]`'s low, then high nibbles and
/// `qh[32n + l]`'s bit pairs 0, 1, 2, 3. Decoded as `4·(q − 32)` (see the module docs).
impl Super for Q6K {
    const SUB16: bool = true;
    const SMALL: bool = false;
    const QUARTER: bool = true;
    type Pre = ();

    #[inline(always)]
    unsafe fn pre(_: *const u8) {}

    #[inline(always)]
    unsafe fn half(q: *const u8, _: (), h: usize) -> [int8x16_t; 8] {
        let (flip, high) = (vdupq_n_u8(0xAA), vdupq_n_u8(0xF0));
        let mut out = [vdupq_n_s8(0); 8];
        for g in 0..2 {
            // SAFETY: ql bytes 64h + 16g.. and 64h + 32 + 16g.., qh bytes 128 + 32h + 16g.. (the
            // caller's contract, h < 2).
            let (a, b, qh) = unsafe {
                (
                    ld(q, 64 * h + 16 * g),
                    ld(q, 64 * h + 32 + 16 * g),
                    ld(q, 128 + 32 * h + 16 * g),
                )
            };
            // Each 2-bit field's top bit flipped: `nibble | field << 4` becomes `q ^ 32`.
            let f = veorq_u8(qh, flip);
            let f2 = vshrq_n_u8::<2>(f);
            // Element l: low nibble of a, field 0 (bits 0-1) to bits 6-7, nibble to bits 2-5.
            out[g] = s8(vsliq_n_u8::<6>(vshlq_n_u8::<2>(a), f));
            // Element l + 32: low nibble of b, field 1.
            out[2 + g] = s8(vsliq_n_u8::<6>(vshlq_n_u8::<2>(b), f2));
            // Element l + 64: high nibble of a, field 2 (moved to bits 6-7 by `shl #2`).
            out[4 + g] = s8(sri2(vshlq_n_u8::<2>(f), vandq_u8(a, high)));
            // Element l + 96: high nibble of b, field 3 (already at bits 6-7).
            out[6 + g] = s8(sri2(f, vandq_u8(b, high)));
        }
        out
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: 16 readable bytes (the caller's contract).
        let v = unsafe { vld1q_s8(aux.cast()) };
        let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
        let z = vdupq_n_f32(0.0);
        Scales {
            s: [
                vmovl_s16(vget_low_s16(lo)),
                vmovl_high_s16(lo),
                vmovl_s16(vget_low_s16(hi)),
                vmovl_high_s16(hi),
            ],
            m: [z, z, z, z],
        }
    }
}

/// iq4_xs: block `j`'s 16 bytes at `16j` (low nibbles its elements 0..16, high 16..32) index
/// IQ4's values; its scale `ls − 32` takes the nibble `j` of `scales_l` (bytes 2..6 of `aux`) and,
/// as bits 4-5, the bit pair `j` of `scales_h` (bytes 0..2, little-endian).
impl Super for Iq4Xs {
    const SMALL: bool = false;
    type Pre = ();

    #[inline(always)]
    unsafe fn pre(_: *const u8) {}

    #[inline(always)]
    unsafe fn half(q: *const u8, _: (), h: usize) -> [int8x16_t; 8] {
        // SAFETY: NEON only.
        let k = unsafe { iq4_values() };
        let mut out = [vdupq_n_s8(0); 8];
        for j in 0..4 {
            // SAFETY: block 4h + j's 16 bytes (the caller's contract, h < 2).
            let [lo, hi] = unsafe { load_iq4(q.add(64 * h + 16 * j), k) };
            (out[2 * j], out[2 * j + 1]) = (lo, hi);
        }
        out
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: 6 readable bytes (the caller's contract).
        let (sh, sl) = unsafe {
            (
                u64::from(aux.cast::<u16>().read_unaligned()),
                u64::from(aux.add(2).cast::<u32>().read_unaligned()),
            )
        };
        // Nibble j of `sl` and bit pair j of `sh` to byte j (spread by halves).
        let mut x = sl;
        x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
        x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
        x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        let mut y = sh;
        y = (y | (y << 24)) & 0x0000_00FF_0000_00FF;
        y = (y | (y << 12)) & 0x000F_000F_000F_000F;
        y = (y | (y << 6)) & 0x0303_0303_0303_0303;
        let v = vcombine_u8(vcreate_u8(x | (y << 4)), vcreate_u8(0));
        let off = vdupq_n_s32(32);
        // SAFETY: NEON only.
        let w = unsafe { [widen4(v, 0), widen4(v, 1)] };
        let (z, zf) = (vdupq_n_s32(0), vdupq_n_f32(0.0));
        Scales {
            s: [
                vsubq_s32(vreinterpretq_s32_u32(w[0]), off),
                vsubq_s32(vreinterpretq_s32_u32(w[1]), off),
                z,
                z,
            ],
            m: [zf, zf, zf, zf],
        }
    }
}
