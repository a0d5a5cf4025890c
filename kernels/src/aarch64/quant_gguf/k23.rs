//! q2_k and q3_k as [`super::ktile`] sees them: 2-bit quants (q3_k with a high bit in `hmask`),
//! sixteen 16-element sub-blocks per super-block, each with its own scale (q2_k also a minimum).

use core::arch::aarch64::*;

use super::superblock::{ld, s8, Scales, Super};
use super::{Q2K, Q3K};
use crate::aarch64::asm::not;

/// Sixteen bytes as i32 lanes, zero-extended: lane `l` of element `i` is byte `4i + l`.
///
/// # Safety
/// None beyond NEON (baseline on aarch64).
#[inline(always)]
unsafe fn widen_u8(v: uint8x16_t) -> [int32x4_t; 4] {
    let (lo, hi) = (vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v));
    [
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))),
        vreinterpretq_s32_u32(vmovl_high_u16(lo)),
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))),
        vreinterpretq_s32_u32(vmovl_high_u16(hi)),
    ]
}

/// Sixteen bytes as i32 lanes, sign-extended (as [`widen_u8`]).
///
/// # Safety
/// None beyond NEON (baseline on aarch64).
#[inline(always)]
unsafe fn widen_s8(v: int8x16_t) -> [int32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
}

/// Left shifts of q2_k's sixteen scales (sub-block `i` in byte `i`) that make every sub-block's
/// product `16·s·dot`: the quants of `j = 1, 2` are taken in place (`and #0x0c`, `and #0x30`:
/// `4·q`, `16·q`), those of `j = 0, 3` as `q`. Sub-block `8n + 2j + v` has `j = (i / 2) % 4`.
static SHIFT16: [i8; 16] = [4, 4, 2, 2, 0, 0, 4, 4, 4, 4, 2, 2, 0, 0, 4, 4];

/// q2_k: 64 quant bytes; element `128n + 32j + l` (`l < 32`) is bits `2j..2j + 2` of byte
/// `32n + l`, in sub-block `8n + 2j + l/16`. `aux`: per sub-block a byte, scale in the low nibble,
/// minimum in the high one. The quants are `0..=3` (the minimums are the tile's [`Super::MIN16`]
/// term), taken as `4^j·q` by one `and` where that fits in a byte (`j < 3`; `j = 3` is one `ushr`),
/// so the sub-block scales are shifted to make every product `16·s·dot` (below 2²⁴: exact), and
/// `scvtf #4` converts it: one shift of the scale bytes instead of four `ushr` per half.
impl Super for Q2K {
    const SUB16: bool = true;
    const MIN16: bool = true;
    const SMALL: bool = true;
    const SIXTEENTH: bool = true;
    type Pre = ();

    #[inline(always)]
    unsafe fn pre(_: *const u8) {}

    #[inline(always)]
    unsafe fn half(q: *const u8, _: (), h: usize) -> [int8x16_t; 8] {
        let (m0, m1, m2) = (vdupq_n_u8(0x03), vdupq_n_u8(0x0C), vdupq_n_u8(0x30));
        // SAFETY: bytes 32h..32h + 32 of the 64 (the caller's contract, h < 2).
        let v = unsafe { [ld(q, 32 * h), ld(q, 32 * h + 16)] };
        // SAFETY: reinterpretations only.
        unsafe {
            [
                s8(vandq_u8(v[0], m0)),
                s8(vandq_u8(v[1], m0)),
                s8(vandq_u8(v[0], m1)),
                s8(vandq_u8(v[1], m1)),
                s8(vandq_u8(v[0], m2)),
                s8(vandq_u8(v[1], m2)),
                s8(vshrq_n_u8::<6>(v[0])),
                s8(vshrq_n_u8::<6>(v[1])),
            ]
        }
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: 16 readable bytes (the caller's contract); SHIFT16 holds 16.
        let (v, shift) = unsafe { (vld1q_u8(aux), vld1q_s8(SHIFT16.as_ptr())) };
        let mn = widen_u8(vshrq_n_u8::<4>(v));
        // At most 15 << 4 = 240: still a byte.
        let s = vshlq_u8(vandq_u8(v, vdupq_n_u8(15)), shift);
        Scales {
            s: widen_u8(s),
            m: [
                vcvtq_f32_s32(mn[0]),
                vcvtq_f32_s32(mn[1]),
                vcvtq_f32_s32(mn[2]),
                vcvtq_f32_s32(mn[3]),
            ],
        }
    }
}

/// q3_k: `hmask` (32 bytes) then q2_k's 64 quant bytes and element order; element
/// `128n + 32j + l`'s high bit is bit `4n + j` of `hmask[l]`, and its value `q − 4` where that bit
/// is clear. `aux`: twelve bytes of sixteen 6-bit scales, stored `+ 32`.
///
/// The quants decode like q5's: with `hmask` inverted once per super-block, `cmtst` against the
/// element's bit gives 0xFF where it is clear, and `sli #2` puts that above the element's two bits:
/// `q − 4` (as i8, `0xFC | q`) where the bit is clear, `q` where it is set; three instructions per
/// sixteen elements (two for `j = 0`, which needs no shift).
impl Super for Q3K {
    const SUB16: bool = true;
    const SMALL: bool = true;
    /// `hmask` inverted: bit set where the element's high bit is clear.
    type Pre = [uint8x16_t; 2];

    #[inline(always)]
    unsafe fn pre(q: *const u8) -> [uint8x16_t; 2] {
        // SAFETY: bytes 0..32 (the caller's contract).
        unsafe { [not(ld(q, 0)), not(ld(q, 16))] }
    }

    #[inline(always)]
    unsafe fn half(q: *const u8, nh: [uint8x16_t; 2], h: usize) -> [int8x16_t; 8] {
        // SAFETY: quant bytes 32 + 32h.. + 32 of the 96 (the caller's contract, h < 2).
        let b = unsafe { [ld(q, 32 + 32 * h), ld(q, 32 + 32 * h + 16)] };
        let mut out = [vdupq_n_s8(0); 8];
        for j in 0..4 {
            let bit = vdupq_n_u8(1 << (4 * h + j));
            for v in 0..2 {
                let two = match j {
                    0 => b[v],
                    1 => vshrq_n_u8::<2>(b[v]),
                    2 => vshrq_n_u8::<4>(b[v]),
                    _ => vshrq_n_u8::<6>(b[v]),
                };
                // SAFETY: a reinterpretation.
                out[2 * j + v] = unsafe { s8(vsliq_n_u8::<2>(two, vtstq_u8(nh[v], bit))) };
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn scales(aux: *const u8) -> Scales {
        // SAFETY: 12 readable bytes (the caller's contract).
        let (a, b) = unsafe {
            (
                aux.cast::<u64>().read_unaligned(),
                u64::from(aux.add(8).cast::<u32>().read_unaligned()),
            )
        };
        // Scale i's low nibble: nibble i / 8 of byte i % 8; its bits 4-5: bits 2·(i / 4) of byte
        // 8 + i % 4. `bb` holds those bytes at 0..4 and, shifted down by 2, at 4..8 (what `<< 30`
        // carries into bytes 0..4 sits in bits the masks clear).
        let bb = b | (b << 30);
        let lo = (a & 0x0F0F_0F0F_0F0F_0F0F) | ((bb & 0x0303_0303_0303_0303) << 4);
        let hi = ((a >> 4) & 0x0F0F_0F0F_0F0F_0F0F) | (((bb >> 4) & 0x0303_0303_0303_0303) << 4);
        let v = vcombine_u8(vcreate_u8(lo), vcreate_u8(hi));
        let s = vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32));
        let zf = vdupq_n_f32(0.0);
        Scales {
            s: widen_s8(s),
            m: [zf; 4],
        }
    }
}
