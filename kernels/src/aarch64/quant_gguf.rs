//! The GGUF formats of [`crate::quant::kquant`] on aarch64, in their planes as stored: plain NEON
//! (`smull`/`smlal` into i16, `saddlp` into i32: the Raspberry Pi 4) and dotprod (`sdot`); i8mm
//! CPUs run the `sdot` kernels too, and for several tokens `smmla` on the 32-element formats.
//!
//! Every variant computes the scalar spec's integers `A_j` (and `B_j`) exactly; only the f32
//! operations are ordered and fused differently (see each part below).
//!
//! # 32-element formats (q5_0, q5_1, iq4_nl)
//!
//! One f16 scale per 32 elements (q5_1 also a minimum) like q4_0 and q4_1, so they run in
//! [`super::quant_neon`]'s tiles (4 rows × 1 token for decode, 2 × 2 otherwise, i8mm's 4 × 2 `smmla`
//! tile); only the load of a block is theirs ([`Blocks`] below):
//! - iq4_nl: the nibbles (`and`, `ushr`) index its sixteen values by `tbl` (`vqtbl1q_s8`).
//! - q5_0, q5_1: the block's 32 high bits `qh`, inverted in a general register, are spread to one
//!   byte per element by `dup` and two `tbl`, and `cmtst` makes each byte 0xFF where the bit is clear.
//!   `sli #4` puts that byte's low half above the element's nibble: `nibble − 16` (as i8) where the
//!   bit is clear, `nibble` where it is set, i.e. `q − 16`, in two vector instructions per 16 elements
//!   after the spread (the high nibbles need a `ushr` first). That is q5_0's value; q5_1's `q` is
//!   `(q − 16) + 16`, so its tile adds `16·sx` (the activations' block sum) to the block's dot.
//!
//! # Super-block formats (q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs): [`ktile`]
//!
//! A tile is `R` rows × `T` tokens: 1 × 1 for decode, 1 × 4 otherwise (each decoded half
//! super-block serves four tokens). Wider decode tiles cost more than they share: fully unrolled,
//! two or four rows' super-blocks (120 instructions each) overflow the 32 vector registers and
//! spill. What rows could share is computed once per call instead: per token and block, `dx·sx`
//! (formats with minimums) and `16·sx` (q5_k), in chunks of [`CHUNK`] super-blocks
//! ([`TokenTerms`]), each row's sum carried across chunks in `yt`. Per super-block and row:
//!
//! 1. *Scales* ([`Super::scales`]): q4_k's and q5_k's 12 packed bytes are unpacked by shifts and
//!    masks in general registers (the integer pipes, which the vector-bound loop leaves idle),
//!    moved into a vector by `fmov`/`ins`, and widened to i32 lanes by one `tbl` each; the minimums
//!    become f32 (`ucvtf`). q6_k's sixteen i8 scales widen by `sxtl`; iq4_xs's six bytes unpack in
//!    general registers, then `tbl` and `sub #32`; q3_k's twelve bytes likewise, then `sub #32` in
//!    bytes and `sxtl`; q2_k's sixteen bytes split by `and`/`ushr #4` into scales and minimums,
//!    the scales shifted by `ushl` (see 2.), widened by `uxtl`.
//! 2. *Quants* ([`Super::half`]), per half super-block (four blocks, eight vectors): q4_k `and`,
//!    `ushr`; q5_k the q5_0 trick on its 32 shared high-bit bytes (inverted once per super-block,
//!    shifted per 64 elements, `cmtst` against the block's bit, `sli #4`): `q − 16`, the dot then
//!    gains `16·sx`; q6_k packs the nibble and its two high bits into one byte as `4·(q − 32)`:
//!    with `qh ^ 0xAA` (which flips the top bit of every 2-bit field) the byte
//!    `nibble << 2 | field << 6` is the 6-bit value `q ^ 32` shifted left by 2, whose two's
//!    complement is `q − 32` (`sli #6` for the low nibbles, `and #0xf0` and `sri #2` for the high
//!    ones), and the fixed-point `scvtf #2` takes the quarter exactly. iq4_xs `tbl` as iq4_nl.
//!    q2_k one `and` per 16 elements for its fields 0-2 (`4^j·q`, made up for by shifting its
//!    scales: the dots come out as `16·A`, and `scvtf #4` takes the sixteenth exactly), `ushr #6`
//!    for field 3; q3_k the q5 trick on `hmask` with `sli #2`: `q − 4` where the high bit is clear
//!    (see [`k23`]).
//!    ([`super::asm`] holds `mvn` and `sri` wrappers: LLVM expands those intrinsics here.)
//! 3. *Integer dots*: one i32 accumulator per sub-block (two `sdot` for 32 elements, one for 16),
//!    started, for decode, from zeros loaded from memory ([`load_fresh`]: a load port rather than a
//!    vector-pipe `movi`; several tokens load more activations and keep `movi`); `addp` reduces
//!    them to one lane per sub-block and `mul` by the sub-block scales gives
//!    the half's four `A_j` (16-element sub-blocks: one more `addp` adds each block's two).
//!    q2_k's minimums sit per 16 elements, so its `B` needs the activations' 16-element sums, which
//!    [`TokenTerms`] computes once per call as `dx·sx` per sub-block (four vectors per super-block
//!    and token rather than two); the minimum term is then as for q4_k, over sixteen lanes.
//! 4. *Scaling*: per row and token `acc += (Σ_h cvt(A_h)·dx_h)·dw` (`fmul`, `fmla`, and `fmla` by
//!    element), and for the formats with minimums `acc −= (Σ_h mn_h·(dx·sx)_h)·dmin`. Every `A_j`
//!    is below 2²⁴ in magnitude (q4_k 63·32·15·127, q5_k 63·32·31·127, q6_k 2·128·16·32·127 just
//!    under the limit, iq4_xs 32·32·127·128, q2_k 16·2·15·16·3·127, q3_k 2·32·16·4·128), so its
//!    conversion is exact; q4_k's (below 2²²) is converted by [`MAGIC`] rather than by `scvtf`.
//!
//! At the end of a row the accumulator's four lanes are added. The result differs from the scalar
//! spec's `(dw·dx)·A − (dmin·dx)·B` summed in block order only by f32 rounding: a few ulps per
//! term, far inside the spec's `1e-5·Σ|term|`.

use core::arch::aarch64::*;
use core::mem::MaybeUninit;

use half::f16;

use super::asm::{load_fresh, sdot};
use super::dotprod::Dotprod;
use super::neon::Neon;
use super::quant_dotprod::Sdot;
use super::quant_neon::{Blocks, Widen};
use crate::dispatch::Kernels;
use crate::quant::kquant::IQ4_NL_VALUES;
use crate::quant::scalar::check_matmul_q;
use crate::quant::{Q8ActsRef, QFormat, QWeight, QK, QK_K};
use crate::simd::{matmul_q, Format, MatmulQ};

mod k23;
mod superblock;

pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Iq4Nl;
pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;
pub(super) struct Iq4Xs;

macro_rules! formats {
    ($($t:ty => $f:expr),+) => {$(
        impl Format for $t {
            const FORMAT: QFormat = $f;
        }
    )+};
}
formats!(Q5_0 => QFormat::Q5_0, Q5_1 => QFormat::Q5_1, Iq4Nl => QFormat::Iq4Nl, Q2K => QFormat::Q2K,
    Q3K => QFormat::Q3K, Q4K => QFormat::Q4K, Q5K => QFormat::Q5K, Q6K => QFormat::Q6K,
    Iq4Xs => QFormat::Iq4Xs);

/// `base` with the GGUF formats' products: the 32-element formats by `B`'s tiles, the super-block
/// formats by `K`'s.
///
/// Only for ISAs whose features detection confirmed (called from the variants' `table()`s).
pub(super) fn table<B, K>(base: Kernels) -> Kernels
where
    B: MatmulQ<Q5_0> + MatmulQ<Q5_1> + MatmulQ<Iq4Nl>,
    K: KIsa,
{
    Kernels {
        matmul_q5_0_q8: matmul_q::<B, Q5_0>,
        matmul_q5_1_q8: matmul_q::<B, Q5_1>,
        matmul_iq4_nl_q8: matmul_q::<B, Iq4Nl>,
        matmul_q2_k_q8: matmul_k::<K, Q2K>,
        matmul_q3_k_q8: matmul_k::<K, Q3K>,
        matmul_q4_k_q8: matmul_k::<K, Q4K>,
        matmul_q5_k_q8: matmul_k::<K, Q5K>,
        matmul_q6_k_q8: matmul_k::<K, Q6K>,
        matmul_iq4_xs_q8: matmul_k::<K, Iq4Xs>,
        ..base
    }
}

// --- 32-element formats --------------------------------------------------------------------------

/// Bit `i % 8` for byte lane `i`: with [`SPREAD`], lane `i` tests bit `i` of the 16 bits it holds.
static BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// `tbl` indices that spread bytes 0 and 1 of `qh` (elements 0..16) over eight lanes each, and
/// bytes 2 and 3 (elements 16..32).
static SPREAD: [[u8; 16]; 2] = [
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
    [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
];

/// A q5_0 or q5_1 block as `q − 16` (see the module docs).
///
/// # Safety
/// 16 quant bytes at `p` and 4 `qh` bytes at `aux` are readable.
#[inline(always)]
unsafe fn load_q5(p: *const u8, aux: *const u8) -> [int8x16_t; 2] {
    // SAFETY: 4 readable bytes at `aux`, 16 at `p` (the caller's contract); the statics are 16 bytes.
    let (qh, v, bits, spread) = unsafe {
        (
            aux.cast::<u32>().read_unaligned(),
            vld1q_u8(p),
            vld1q_u8(BITS.as_ptr()),
            [vld1q_u8(SPREAD[0].as_ptr()), vld1q_u8(SPREAD[1].as_ptr())],
        )
    };
    // ggml's `qh` is little-endian: bit j is element j. Inverted: 0xFF where the bit is clear.
    let h = vreinterpretq_u8_u32(vdupq_n_u32(!qh));
    let clear = [
        vtstq_u8(vqtbl1q_u8(h, spread[0]), bits),
        vtstq_u8(vqtbl1q_u8(h, spread[1]), bits),
    ];
    [
        vreinterpretq_s8_u8(vsliq_n_u8::<4>(v, clear[0])),
        vreinterpretq_s8_u8(vsliq_n_u8::<4>(vshrq_n_u8::<4>(v), clear[1])),
    ]
}

/// `q − 16`: q5_0's weights as they are.
impl Blocks for Q5_0 {
    #[inline(always)]
    unsafe fn load(p: *const u8, aux: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller's contract.
        unsafe { load_q5(p, aux) }
    }
}

/// `q − 16`, so the tile adds `16·sx`.
impl Blocks for Q5_1 {
    const OFFSET: i32 = -16;

    #[inline(always)]
    unsafe fn load(p: *const u8, aux: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller's contract.
        unsafe { load_q5(p, aux) }
    }
}

/// Sixteen IQ4 values for `tbl`.
///
/// # Safety
/// None beyond NEON (baseline); reads the 16-byte static.
#[inline(always)]
unsafe fn iq4_values() -> int8x16_t {
    // SAFETY: the static holds 16 bytes.
    unsafe { vld1q_s8(IQ4_NL_VALUES.as_ptr()) }
}

/// The 16 bytes at `p` as 32 IQ4 values: low nibbles first, then high nibbles.
///
/// # Safety
/// 16 bytes at `p` are readable.
#[inline(always)]
unsafe fn load_iq4(p: *const u8, k: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: the caller's contract.
    let v = unsafe { vld1q_u8(p) };
    [
        vqtbl1q_s8(k, vandq_u8(v, vdupq_n_u8(15))),
        vqtbl1q_s8(k, vshrq_n_u8::<4>(v)),
    ]
}

impl Blocks for Iq4Nl {
    #[inline(always)]
    unsafe fn load(p: *const u8, _: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller's contract.
        unsafe { load_iq4(p, iq4_values()) }
    }
}

// --- super-block formats -------------------------------------------------------------------------

pub(super) use superblock::{Scales, Super};

/// A sub-block's integer dot as four i32 lanes whose sum is the dot.
pub(super) trait KDot {
    /// 16 elements; `loaded`: an accumulator starts from zeros loaded from memory rather than from
    /// `movi` (see [`zero`]).
    ///
    /// # Safety
    /// The CPU has the implementor's features.
    unsafe fn dot16(w: int8x16_t, x: int8x16_t, loaded: bool) -> int32x4_t;

    /// 32 elements; `small`: every `|w|` is at most 64.
    ///
    /// # Safety
    /// The CPU has the implementor's features.
    unsafe fn dot32(w: [int8x16_t; 2], x: [int8x16_t; 2], small: bool, loaded: bool) -> int32x4_t;
}

/// Zeros for an `sdot` accumulator to start from, read from memory (see the module docs).
static ZERO: [i32; 4] = [0; 4];

/// An accumulator's start: zeros loaded (a load port) for decode, whose loop is bound by the vector
/// pipes, or `movi` (a vector pipe) for several tokens, whose loop loads each token's activations
/// and would be bound by the load ports instead.
///
/// # Safety
/// None beyond NEON (reads the static).
#[inline(always)]
unsafe fn zero(loaded: bool) -> int32x4_t {
    if loaded {
        // SAFETY: ZERO holds 16 bytes.
        unsafe { load_fresh(ZERO.as_ptr()) }
    } else {
        vdupq_n_s32(0)
    }
}

impl KDot for Sdot {
    #[inline(always)]
    unsafe fn dot16(w: int8x16_t, x: int8x16_t, loaded: bool) -> int32x4_t {
        // SAFETY: the CPU has dotprod (the caller's contract).
        unsafe { sdot(zero(loaded), w, x) }
    }

    #[inline(always)]
    unsafe fn dot32(w: [int8x16_t; 2], x: [int8x16_t; 2], _: bool, loaded: bool) -> int32x4_t {
        // SAFETY: as `dot16`.
        unsafe { sdot(sdot(zero(loaded), w[0], x[0]), w[1], x[1]) }
    }
}

/// `smull` and `smlal2` into i16 lanes (two products each: `|w·x| ≤ 128·127` and `x ≥ −127`, so
/// their sum fits), four products (`smlal`, `smlal2` again) where `|w| ≤ 64`, then `saddlp` (and
/// `sadalp`) into i32.
impl KDot for Widen {
    #[inline(always)]
    unsafe fn dot16(w: int8x16_t, x: int8x16_t, _: bool) -> int32x4_t {
        vpaddlq_s16(vmlal_high_s8(
            vmull_s8(vget_low_s8(w), vget_low_s8(x)),
            w,
            x,
        ))
    }

    #[inline(always)]
    unsafe fn dot32(w: [int8x16_t; 2], x: [int8x16_t; 2], small: bool, _: bool) -> int32x4_t {
        let p = vmlal_high_s8(vmull_s8(vget_low_s8(w[0]), vget_low_s8(x[0])), w[0], x[0]);
        if small {
            let p = vmlal_s8(p, vget_low_s8(w[1]), vget_low_s8(x[1]));
            vpaddlq_s16(vmlal_high_s8(p, w[1], x[1]))
        } else {
            let q = vmlal_high_s8(vmull_s8(vget_low_s8(w[1]), vget_low_s8(x[1])), w[1], x[1]);
            vpadalq_s16(vpaddlq_s16(p), q)
        }
    }
}

/// The four blocks' `A_j` of half `h` of a super-block (before the f32 scales): the dots of the
/// decoded quants `w` with the activations `x`, per sub-block times its scale; `x16` is `16·sx` of
/// the four blocks (q5_k); `loaded` as [`KDot::dot16`].
///
/// # Safety
/// The CPU has `D`'s features.
#[inline(always)]
unsafe fn half_sums<F: Super, D: KDot>(
    w: &[int8x16_t; 8],
    x: &[int8x16_t; 8],
    sc: &Scales,
    h: usize,
    x16: int32x4_t,
    loaded: bool,
) -> int32x4_t {
    // SAFETY: the CPU has D's features (the caller's contract).
    unsafe {
        if F::SUB16 {
            // Written out: `array::from_fn` and closures are not always inlined (nor then the
            // `sdot`s in them), and a call here costs the loop.
            let p = [
                D::dot16(w[0], x[0], loaded),
                D::dot16(w[1], x[1], loaded),
                D::dot16(w[2], x[2], loaded),
                D::dot16(w[3], x[3], loaded),
                D::dot16(w[4], x[4], loaded),
                D::dot16(w[5], x[5], loaded),
                D::dot16(w[6], x[6], loaded),
                D::dot16(w[7], x[7], loaded),
            ];
            // Lane l of `lo`: sub-block 8h + l's dot (blocks 4h, 4h + 1), of `hi`: 8h + 4 + l.
            let lo = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
            let hi = vpaddq_s32(vpaddq_s32(p[4], p[5]), vpaddq_s32(p[6], p[7]));
            vpaddq_s32(vmulq_s32(lo, sc.s[2 * h]), vmulq_s32(hi, sc.s[2 * h + 1]))
        } else {
            let sm = F::SMALL;
            let p = [
                D::dot32([w[0], w[1]], [x[0], x[1]], sm, loaded),
                D::dot32([w[2], w[3]], [x[2], x[3]], sm, loaded),
                D::dot32([w[4], w[5]], [x[4], x[5]], sm, loaded),
                D::dot32([w[6], w[7]], [x[6], x[7]], sm, loaded),
            ];
            let d = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
            let d = if F::LOW16 { vaddq_s32(d, x16) } else { d };
            if F::MAGIC {
                // The start loaded (as the accumulators' zeros), not copied from a register by
                // `mov`: `mla` overwrites it.
                let start = if loaded {
                    load_fresh(MAGIC4.as_ptr())
                } else {
                    vdupq_n_s32(MAGIC)
                };
                vmlaq_s32(start, d, sc.s[h])
            } else {
                vmulq_s32(d, sc.s[h])
            }
        }
    }
}

/// The bits of 1.5·2²³: an integer `v` with `|v| < 2²²` added to them gives the bits of the float
/// `1.5·2²³ + v` (the mantissa's lower 23 bits hold `2²² + v`), from which an f32 subtraction
/// takes `v` back exactly: an `add` (here folded into `mla`) and an `fsub` on either vector pipe
/// instead of `scvtf`, which Neoverse N1 runs on one pipe only, at half rate.
const MAGIC: i32 = 0x4B40_0000;

/// [`MAGIC`] in four lanes, for [`load_fresh`].
static MAGIC4: [i32; 4] = [MAGIC; 4];

/// Super-blocks per chunk of `k` (8192 elements), the span over which a token tile's per-block
/// activation terms ([`TokenTerms`]) are computed once for every row.
const CHUNK: usize = 32;

/// Per token of a tile (at most 4) and per four blocks of a chunk: `dx·sx` (formats with
/// minimums; q2_k: per four 16-element sub-blocks, `dx·sx` of each sub-block's 16 elements) and
/// `16·sx` (q5_k), which a tile would otherwise compute again for every row.
pub(super) struct TokenTerms {
    dxsx: [[MaybeUninit<float32x4_t>; 4 * CHUNK]; 4],
    x16: [[MaybeUninit<int32x4_t>; 2 * CHUNK]; 4],
}

impl TokenTerms {
    fn new() -> TokenTerms {
        TokenTerms {
            dxsx: [[MaybeUninit::uninit(); 4 * CHUNK]; 4],
            x16: [[MaybeUninit::uninit(); 2 * CHUNK]; 4],
        }
    }

    /// The terms `F` reads of tokens `t..t + ts` (`ts ≤ 4`) and super-blocks `c0..c0 + cn`
    /// (`cn ≤ CHUNK`).
    fn fill<F: Super>(&mut self, x: &Q8ActsRef<'_>, t: usize, ts: usize, c0: usize, cn: usize) {
        let nb = x.k / QK;
        if F::MIN16 {
            return self.fill16(x, t, ts, c0, cn);
        }
        for j in 0..ts {
            for q in 0..2 * cn {
                let b = (t + j) * nb + 8 * c0 + 4 * q;
                let (d, sx) = (&x.d[b..b + 4], &x.sum[b..b + 4]);
                // SAFETY: four values in each slice; NEON is baseline on aarch64. Exact
                // conversion: |sx| ≤ 32·127.
                unsafe {
                    let (d, sx) = (vld1q_f32(d.as_ptr()), vld1q_s32(sx.as_ptr()));
                    if F::MIN {
                        self.dxsx[j][q].write(vmulq_f32(d, vcvtq_f32_s32(sx)));
                    }
                    if F::LOW16 {
                        self.x16[j][q].write(vshlq_n_s32::<4>(sx));
                    }
                }
            }
        }
    }

    /// [`TokenTerms::fill`] for minimums per 16 elements: lane `l` of `dxsx[j][q]` is `dx·sx` of
    /// sub-block `4q + l` of the chunk (its block's `dx`, the sum of its 16 quants).
    fn fill16(&mut self, x: &Q8ActsRef<'_>, t: usize, ts: usize, c0: usize, cn: usize) {
        let (k, nb) = (x.k, x.k / QK);
        for j in 0..ts {
            for q in 0..4 * cn {
                // Blocks 2q and 2q + 1 of the chunk.
                let b = (t + j) * nb + 8 * c0 + 2 * q;
                let (d, qs) = (
                    &x.d[b..b + 2],
                    &x.qs[(t + j) * k + (8 * c0 + 2 * q) * QK..][..64],
                );
                // SAFETY: two scales and 64 quants in the slices; NEON is baseline on aarch64.
                // Exact conversion: |sx| ≤ 16·127.
                unsafe {
                    let p = qs.as_ptr();
                    let s: [int32x4_t; 4] =
                        core::array::from_fn(|i| vpaddlq_s16(vpaddlq_s8(vld1q_s8(p.add(16 * i)))));
                    let sx = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
                    let d = vld1_f32(d.as_ptr());
                    // [d0, d0, d1, d1]
                    let d = vzip1q_f32(vcombine_f32(d, d), vcombine_f32(d, d));
                    self.dxsx[j][q].write(vmulq_f32(d, vcvtq_f32_s32(sx)));
                }
            }
        }
    }
}

/// The 128 bytes at `p` as eight vectors.
///
/// # Safety
/// 128 bytes at `p` are readable.
#[inline(always)]
unsafe fn load8(p: *const i8) -> [int8x16_t; 8] {
    // SAFETY: the caller's contract.
    unsafe {
        [
            vld1q_s8(p),
            vld1q_s8(p.add(16)),
            vld1q_s8(p.add(32)),
            vld1q_s8(p.add(48)),
            vld1q_s8(p.add(64)),
            vld1q_s8(p.add(80)),
            vld1q_s8(p.add(96)),
            vld1q_s8(p.add(112)),
        ]
    }
}

/// One f16 at `p` in lane 0 (the others zero) as f32.
///
/// # Safety
/// 2 bytes at `p` are readable.
#[inline(always)]
unsafe fn f16_lane0(p: *const f16) -> float32x4_t {
    // SAFETY: the caller's contract; `half::f16` is a `u16`.
    let h = unsafe { vld1_lane_u16::<0>(p.cast(), vdup_n_u16(0)) };
    vcvt_f32_f16(vreinterpret_f16_u16(h))
}

/// `$body` for `$i` = 0, 1, … below `$n` (at most 4), written out: LLVM's unroller leaves loops with
/// bodies this large rolled, and a rolled row or token loop would index the accumulators in memory.
macro_rules! unroll {
    ($n:expr, $i:ident => $body:block) => {{
        const { assert!($n <= 4) };
        if 0 < $n {
            let $i = 0;
            $body
        }
        if 1 < $n {
            let $i = 1;
            $body
        }
        if 2 < $n {
            let $i = 2;
            $body
        }
        if 3 < $n {
            let $i = 3;
            $body
        }
    }};
}

/// Rows `r..r + R` × tokens `t..t + T` of `yt` over super-blocks `c0..c0 + cn` of a super-block
/// format `F` with dots `D` (see the module docs): written if `c0 == 0`, else added to. `LOADS`:
/// a one-token tile starts its accumulators from loads (for cores whose vector pipes are the
/// bottleneck; see [`zero`]).
///
/// # Safety
/// The CPU has `D`'s features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`; the rows and tokens
/// exist, and so do the super-blocks; `terms` holds the tokens' terms of the chunk from `c0`
/// (formats with minimums and q5_k).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn ktile<F: Super, D: KDot, const R: usize, const T: usize, const LOADS: bool>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
    t: usize,
    c0: usize,
    cn: usize,
    terms: &TokenTerms,
) {
    let (k, nsb) = (w.k, w.k / QK_K);
    let nb = k / QK;
    // Bounds-checked once per tile: each row's and token's planes from the chunk's first
    // super-block.
    let wq: [*const u8; R] =
        core::array::from_fn(|i| w.qs[((r + i) * nsb + c0) * F::QB..].as_ptr());
    let wa: [*const u8; R] =
        core::array::from_fn(|i| w.aux[((r + i) * nsb + c0) * F::AB..].as_ptr());
    let wd: [*const f16; R] = core::array::from_fn(|i| w.d[(r + i) * nsb + c0..].as_ptr());
    let wm: [*const f16; R] = core::array::from_fn(|i| match F::MIN {
        true => w.m[(r + i) * nsb + c0..].as_ptr(),
        false => w.m.as_ptr(),
    });
    let xq: [*const i8; T] = core::array::from_fn(|j| x.qs[(t + j) * k + c0 * QK_K..].as_ptr());
    let xd: [*const f32; T] = core::array::from_fn(|j| x.d[(t + j) * nb + 8 * c0..].as_ptr());
    let magic = vdupq_n_f32(1.5 * 8_388_608.0);
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    // LOOP 0: super-blocks along the chunk (a dependent chain per (row, token): the accumulators).
    for sb in 0..cn {
        // Per token: the eight blocks' dx, and dx·sx (minimums) or 16·sx (q5_k).
        let mut dx = [[vdupq_n_f32(0.0); 2]; T];
        let mut dxsx = [[vdupq_n_f32(0.0); 4]; T];
        let mut x16 = [[vdupq_n_s32(0); 2]; T];
        unroll!(T, j => {
            // SAFETY: blocks 8sb..8sb + 8 of the chunk exist in token t + j; `terms` holds them.
            unsafe {
                let pd = xd[j].add(8 * sb);
                dx[j] = [vld1q_f32(pd), vld1q_f32(pd.add(4))];
                if F::MIN16 {
                    let v = &terms.dxsx[j][4 * sb..4 * sb + 4];
                    dxsx[j] = [
                        v[0].assume_init(),
                        v[1].assume_init(),
                        v[2].assume_init(),
                        v[3].assume_init(),
                    ];
                } else if F::MIN {
                    let v = &terms.dxsx[j];
                    dxsx[j][0] = v[2 * sb].assume_init();
                    dxsx[j][1] = v[2 * sb + 1].assume_init();
                }
                if F::LOW16 {
                    let v = &terms.x16[j];
                    x16[j] = [v[2 * sb].assume_init(), v[2 * sb + 1].assume_init()];
                }
            }
        });
        unroll!(R, i => {
            // SAFETY: super-block sb of row r + i exists: its quants, aux bytes, scale (and minimum).
            let (q, sc, dw, pre) = unsafe {
                let q = wq[i].add(sb * F::QB);
                (
                    q,
                    F::scales(wa[i].add(sb * F::AB)),
                    f16_lane0(wd[i].add(sb)),
                    F::pre(q),
                )
            };
            let mut f = [vdupq_n_f32(0.0); T];
            unroll!(2, h => {
                // SAFETY: as above.
                let wv = unsafe { F::half(q, pre, h) };
                unroll!(T, j => {
                    // SAFETY: elements 256sb + 128h.. of the chunk exist in token t + j; the CPU
                    // has D's features (the caller's contract).
                    let a = unsafe {
                        let p = xq[j].add(sb * QK_K + 128 * h);
                        let xv = load8(p);
                        half_sums::<F, D>(&wv, &xv, &sc, h, x16[j][h], LOADS && T == 1)
                    };
                    let af = if F::QUARTER {
                        vcvtq_n_f32_s32::<2>(a)
                    } else if F::SIXTEENTH {
                        vcvtq_n_f32_s32::<4>(a)
                    } else if F::MAGIC {
                        vsubq_f32(vreinterpretq_f32_s32(a), magic)
                    } else {
                        vcvtq_f32_s32(a)
                    };
                    f[j] = match h {
                        0 => vmulq_f32(af, dx[j][0]),
                        _ => vfmaq_f32(f[j], af, dx[j][1]),
                    };
                });
            });
            // SAFETY: super-block sb of row r + i has a minimum when F has them.
            let dm = unsafe {
                if F::MIN {
                    f16_lane0(wm[i].add(sb))
                } else {
                    dw
                }
            };
            unroll!(T, j => {
                acc[i][j] = vfmaq_laneq_f32::<0>(acc[i][j], f[j], dw);
                if F::MIN {
                    let u = vmulq_f32(sc.m[0], dxsx[j][0]);
                    let mut u = vfmaq_f32(u, sc.m[1], dxsx[j][1]);
                    if F::MIN16 {
                        u = vfmaq_f32(u, sc.m[2], dxsx[j][2]);
                        u = vfmaq_f32(u, sc.m[3], dxsx[j][3]);
                    }
                    acc[i][j] = vfmsq_laneq_f32::<0>(acc[i][j], u, dm);
                }
            });
        });
    }
    let n = x.n;
    for (i, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            let y = &mut yt[(r + i) * n + t + j];
            *y = if c0 == 0 { 0.0 } else { *y } + vaddvq_f32(*a);
        }
    }
}

/// An ISA's entry into [`ktile`]: compiled with its target features.
pub(super) trait KIsa {
    /// # Safety
    /// As [`ktile`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn ktile<F: Super, const R: usize, const T: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
        r: usize,
        t: usize,
        c0: usize,
        cn: usize,
        terms: &TokenTerms,
    );
}

/// Implements [`KIsa`] for `$isa`: [`ktile`] with the dots `$dot` and its `LOADS` under
/// `#[target_feature(enable = $features)]`.
macro_rules! kisa {
    ($isa:ty, $features:literal, $dot:ty, $loads:literal) => {
        impl KIsa for $isa {
            #[target_feature(enable = $features)]
            unsafe fn ktile<F: Super, const R: usize, const T: usize>(
                w: &QWeight<'_>,
                x: &Q8ActsRef<'_>,
                yt: &mut [f32],
                r: usize,
                t: usize,
                c0: usize,
                cn: usize,
                terms: &TokenTerms,
            ) {
                // SAFETY: the caller's contract, which includes the features `$dot` needs.
                unsafe { ktile::<F, $dot, R, T, $loads>(w, x, yt, r, t, c0, cn, terms) }
            }
        }
    };
}

kisa!(Neon, "neon", Widen, false);
kisa!(Dotprod, "neon,dotprod", Sdot, true);

/// The largest of `full`, 2 and 1 that is at most `left` (`left ≥ 1`).
#[inline(always)]
fn step(left: usize, full: usize) -> usize {
    if left >= full {
        full
    } else if left >= 2 {
        2
    } else {
        1
    }
}

/// Every row and token in tiles of `R × T`; tails take the largest of `R` (`T`), 2, 1 that fits.
///
/// # Safety
/// The CPU has `I`'s features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`; `T ≤ 4`.
unsafe fn kmatmul<F: Super, I: KIsa, const R: usize, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let nsb = w.k / QK_K;
    let mut terms = TokenTerms::new();
    // LOOP 3: token tiles.
    let mut t = 0;
    while t < x.n {
        let ts = step(x.n - t, T);
        // LOOP 2: chunks of k, each row's sums carried in `yt`.
        let mut c0 = 0;
        while c0 < nsb {
            let cn = CHUNK.min(nsb - c0);
            if F::MIN || F::LOW16 {
                terms.fill::<F>(x, t, ts, c0, cn);
            }
            // LOOP 1: row tiles (independent: a caller may split rows across threads).
            let mut r = 0;
            while r < w.rows {
                let rs = step(w.rows - r, R);
                let tm = &terms;
                // SAFETY: rows r..r + rs, tokens t..t + ts and super-blocks c0..c0 + cn exist, and
                // `terms` holds the chunk's terms; the rest is the caller's contract.
                unsafe {
                    match (rs, ts) {
                        (a, b) if a == R && b == T => {
                            I::ktile::<F, R, T>(w, x, yt, r, t, c0, cn, tm)
                        }
                        (a, 2) if a == R => I::ktile::<F, R, 2>(w, x, yt, r, t, c0, cn, tm),
                        (a, _) if a == R => I::ktile::<F, R, 1>(w, x, yt, r, t, c0, cn, tm),
                        (2, b) if b == T => I::ktile::<F, 2, T>(w, x, yt, r, t, c0, cn, tm),
                        (2, 2) => I::ktile::<F, 2, 2>(w, x, yt, r, t, c0, cn, tm),
                        (2, _) => I::ktile::<F, 2, 1>(w, x, yt, r, t, c0, cn, tm),
                        (_, b) if b == T => I::ktile::<F, 1, T>(w, x, yt, r, t, c0, cn, tm),
                        (_, 2) => I::ktile::<F, 1, 2>(w, x, yt, r, t, c0, cn, tm),
                        _ => I::ktile::<F, 1, 1>(w, x, yt, r, t, c0, cn, tm),
                    }
                }
                r += rs;
            }
            c0 += cn;
        }
        t += ts;
    }
}

/// The table entry of `I` for the super-block format `F`: [`crate::quant::kquant::matmul_q8`]'s
/// contract and panics. Decode (one token) in 1 × 1 tiles, several tokens in 1 × 4.
fn matmul_k<I: KIsa, F: Super>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    check_matmul_q(w, F::FORMAT, x, yt.len());
    // SAFETY: only instantiated in the tables of `I` (see `table`), built after detection confirmed
    // its features; `check_matmul_q` proved the plane lengths the kernel indexes.
    unsafe {
        if x.n == 1 {
            kmatmul::<F, I, 1, 1>(w, x, yt)
        } else {
            kmatmul::<F, I, 1, 4>(w, x, yt)
        }
    }
}
