//! AVX-512 VNNI kernels for the quantized formats: the loads and block dots that [`super::qtile`]
//! and [`super::qstream`] run for q8_0/q4_0/q4_1 weights × q8 activations, the prefill kernel
//! ([`prefill`]), and activation quantization.
//!
//! The integer work is `vpdpbusd` (u8 × i8, four products summed into each i32 lane, no saturation):
//! - q8_0: `vpdpbusd` wants its first operand unsigned, so the weights become `w + 128` (`w ^ 0x80`)
//!   and `128·Σx` is subtracted from the exact dot: no sign trick, so every i8 on either side is fine.
//! - q4: four blocks (64 bytes) per vector, low nibbles and high nibbles in separate vectors (a shift
//!   and two masks; no shuffles per row); the activations are rearranged to match (elements 0..16 of
//!   each block, then 16..32), and both halves accumulate into the same lanes: four lanes per block.
//!   q4_0 subtracts `8·Σx` from the exact dot, q4_1 adds `m·(dx·Σx)`.
//!
//! Every block dot is reduced *in integers* to one exact i32 before it meets its scale (the spec's
//! exactness); only the f32 sums are reordered.
//!
//! Decode (one token) of the q4 formats streams the weight planes through [`super::qstream`] in units
//! of sixteen blocks; q8_0 decode uses the AVX2 kernel (see [`OneToken`]). Several tokens take
//! [`prefill`]'s sixteen-row tiles when there are enough of them, else [`super::qtile`]'s tiles.

use core::arch::x86_64::*;

use half::f16;

use super::avx2::Avx2;
use super::avx512::Avx512;
use super::gguf::{Entry, Group};
use super::qstream::{decode_entry, Stream, Units, PREP};
use super::qtile::{self, tile_entries, Fmt, Loads};
use crate::quant::scalar::check_matmul_q;
use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::{intrinsics, matmul_q, MatmulQ, MatmulRows8, QuantizeQ8, Q4_0, Q4_1, Q8_0};

mod prefill;

impl<F: Fmt<Avx512> + OneToken> MatmulQ<F> for Avx512 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract (and `x.n == 1` for `one_token`, `suits` for the prefill
        // kernel are checked here).
        unsafe {
            if x.n == 1 {
                F::one_token(w, x, yt)
            } else if prefill::suits(w, x.n) {
                prefill::matmul::<F, false>(w, x, yt)
            } else {
                qtile::matmul::<Self, F>(w, x, yt)
            }
        }
    }
}

/// Token-major version of [`matmul_q`] for `F` weights: `y[t·rows + r]` (see
/// `Kernels::matmul_tokens_q8_0_q8`). Several tokens go through the prefill kernel, which sums each
/// token's rows in one vector and stores it as is; otherwise each token is one row-major product into
/// its own row of `y`.
pub(super) fn matmul_tokens_q<F: Fmt<Avx512> + OneToken>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    y: &mut [f32],
) {
    check_matmul_q(w, F::FORMAT, x, y.len());
    if x.n > 1 && prefill::suits(w, x.n) {
        // SAFETY: only instantiated in the AVX-512 VNNI table (features confirmed); `check_matmul_q`
        // proved the plane lengths, and `suits` holds.
        unsafe { prefill::matmul::<F, true>(w, x, y) };
        return;
    }
    for t in 0..x.n {
        matmul_q::<Avx512, F>(w, &x.tokens(t..t + 1), &mut y[t * w.rows..(t + 1) * w.rows]);
    }
}

/// The table entry for a GGUF format's product ([`crate::quant::kquant::matmul_q8`]'s contract):
/// several tokens through the prefill kernel when there are enough of them, else the group driver
/// ([`super::gguf`]).
pub(super) fn matmul_gguf<F: Group<Avx512>>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    check_matmul_q(w, F::FORMAT, x, yt.len());
    // SAFETY: only instantiated in the AVX-512 VNNI table (features confirmed); `check_matmul_q`
    // proved the plane lengths both kernels read, and `suits` holds for the prefill kernel.
    unsafe {
        if prefill::suits(w, x.n) {
            prefill::matmul::<F, false>(w, x, yt)
        } else {
            <Avx512 as Entry>::gguf::<F>(w, x, yt)
        }
    }
}

/// Token-major version of [`matmul_gguf`] (see [`matmul_tokens_q`]).
pub(super) fn matmul_tokens_gguf<F: Group<Avx512>>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    y: &mut [f32],
) {
    check_matmul_q(w, F::FORMAT, x, y.len());
    if prefill::suits(w, x.n) {
        // SAFETY: as in `matmul_gguf`.
        unsafe { prefill::matmul::<F, true>(w, x, y) };
        return;
    }
    for t in 0..x.n {
        matmul_gguf::<F>(w, &x.tokens(t..t + 1), &mut y[t * w.rows..(t + 1) * w.rows]);
    }
}

/// How a format takes one token.
pub(super) trait OneToken {
    /// # Safety
    /// As [`MatmulQ::matmul_q`], with `x.n == 1`, in a function with this variant's features.
    unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]);
}

impl OneToken for Q8_0 {
    /// AVX2's stream of eight-block groups keeps up with memory (about 1.0× a plain read loop on the
    /// SmolLM2-135M shapes streamed from memory, against 0.75–0.9× for sixteen-block units of
    /// `vpdpbusd` here), so this variant uses it. Its features are a subset of this one's.
    #[inline(always)]
    unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { <Avx2 as MatmulQ<Q8_0>>::matmul_q(w, x, yt) }
    }
}

/// One group of eight blocks (of one row, or of one token), prepared for [`Fmt::dot`].
type Prep = [__m512i; 4];

impl Loads for Avx512 {
    /// Unmasked for a whole group of eight (masked word loads are slow on some cores).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn f16x8<const LEN: usize>(v: &[f16]) -> __m256 {
        let v = &v[..LEN];
        // SAFETY: `v` holds LEN halves; masked-off lanes are not read.
        _mm256_cvtph_ps(unsafe {
            if LEN == 8 {
                _mm_loadu_si128(v.as_ptr().cast())
            } else {
                _mm_maskz_loadu_epi16(mask8::<LEN>(), v.as_ptr().cast())
            }
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn f32x8<const LEN: usize>(v: &[f32]) -> __m256 {
        // SAFETY: `v` holds LEN values; masked-off lanes are not read.
        unsafe { _mm256_maskz_loadu_ps(mask8::<LEN>(), v[..LEN].as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn i32x8<const LEN: usize>(v: &[i32]) -> __m256i {
        // SAFETY: as for `f32x8`.
        unsafe { _mm256_maskz_loadu_epi32(mask8::<LEN>(), v[..LEN].as_ptr().cast()) }
    }
}

/// The first `LEN` (`<= 8`) lanes.
#[inline(always)]
const fn mask8<const LEN: usize>() -> __mmask8 {
    ((1u32 << LEN) - 1) as u8
}

tile_entries!(Avx512, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");

impl Units for Avx512 {
    intrinsics! {
        fn mul(a: __m512, b: __m512) -> __m512 = _mm512_mul_ps;
        fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 = _mm512_fmadd_ps;
        fn cvt(v: __m512i) -> __m512 = _mm512_cvtepi32_ps;
        fn sub(a: __m512i, b: __m512i) -> __m512i = _mm512_sub_epi32;
    }

    /// Four 64-byte vectors of q4 quants, reduced together.
    const UNIT: usize = 16;
    type F = __m512;
    type I = __m512i;

    /// Unmasked when whole (masked word loads are slow on some cores, Zen 4 among them).
    #[inline(always)]
    unsafe fn f16s<const MASKED: bool>(p: *const f16, blocks: usize) -> __m512 {
        // SAFETY: the caller's contract; masked-off halves are not read.
        _mm512_cvtph_ps(unsafe {
            if MASKED {
                _mm256_maskz_loadu_epi16(((1u32 << blocks) - 1) as u16, p.cast())
            } else {
                _mm256_loadu_si256(p.cast())
            }
        })
    }

    #[inline(always)]
    unsafe fn f32s(p: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn i32s(p: *const i32) -> __m512i {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller's contract.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn row_sum(t: *const f32, n: usize) -> f32 {
        // SAFETY: the caller's contract.
        unsafe { row_sum(t, n) }
    }

    decode_entry!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
}

/// Mask of the first `min(bytes, 64)` bytes.
#[inline(always)]
const fn byte_mask(bytes: usize) -> __mmask64 {
    if bytes >= 64 {
        !0
    } else {
        (1u64 << bytes) - 1
    }
}

/// 64-byte chunk `c` of `LEN·bpb` bytes at `p` (zero past the end).
///
/// # Safety
/// `LEN·bpb` bytes at `p` readable; AVX-512 BW present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn chunk<const LEN: usize>(p: *const u8, bpb: usize, c: usize) -> __m512i {
    let bytes = (LEN * bpb).saturating_sub(64 * c);
    if bytes == 0 {
        return _mm512_setzero_si512();
    }
    // SAFETY: the selected bytes lie inside the caller's range; masked-off bytes are not read.
    unsafe { _mm512_maskz_loadu_epi8(byte_mask(bytes), p.add(64 * c).cast()) }
}

impl Fmt<Avx512> for Q8_0 {
    const DECODE_ROWS: usize = 4;
    const SHIFT: Option<i32> = Some(7);
    type W = Prep;
    type X = Prep;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn load_w<const LEN: usize>(p: *const u8) -> Prep {
        // SAFETY: as required of the caller. Padding becomes 0x80 (128), harmless: its activations are 0.
        core::array::from_fn(|c| {
            _mm512_xor_si512(unsafe { chunk::<LEN>(p, QK, c) }, _mm512_set1_epi8(-128))
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn load_x<const LEN: usize>(p: *const i8) -> Prep {
        // SAFETY: as required of the caller.
        core::array::from_fn(|c| unsafe { chunk::<LEN>(p.cast(), QK, c) })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot(w: &Prep, x: &Prep) -> __m256i {
        let z = _mm512_setzero_si512();
        let p: [__m512i; 4] = core::array::from_fn(|c| _mm512_dpbusd_epi32(z, w[c], x[c]));
        // Eight lanes per block → four → two → one.
        let b03 = pair_sums(p[0], p[1]);
        let b47 = pair_sums(p[2], p[3]);
        let b07 = pair_sums(b03, b47);
        _mm512_castsi512_si256(pair_sums(b07, b07))
    }
}

macro_rules! q4_fmt {
    ($t:ty, $shift:expr) => {
        impl Fmt<Avx512> for $t {
            const DECODE_ROWS: usize = 4;
            const SHIFT: Option<i32> = $shift;
            type W = Prep;
            type X = Prep;

            /// [low nibbles of blocks 0..4, high nibbles of 0..4, low of 4..8, high of 4..8].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn load_w<const LEN: usize>(p: *const u8) -> Prep {
                let m4 = _mm512_set1_epi8(0x0f);
                // SAFETY: as required of the caller.
                let (q0, q1) = unsafe { (chunk::<LEN>(p, QK / 2, 0), chunk::<LEN>(p, QK / 2, 1)) };
                [
                    _mm512_and_si512(q0, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q0), m4),
                    _mm512_and_si512(q1, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q1), m4),
                ]
            }

            /// [elements 0..16 of blocks 0..4, 16..32 of blocks 0..4, the same for blocks 4..8].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn load_x<const LEN: usize>(p: *const i8) -> Prep {
                // SAFETY: as required of the caller.
                let c: [__m512i; 4] =
                    core::array::from_fn(|c| unsafe { chunk::<LEN>(p.cast(), QK, c) });
                let lo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
                let hi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
                [
                    _mm512_permutex2var_epi64(c[0], lo, c[1]),
                    _mm512_permutex2var_epi64(c[0], hi, c[1]),
                    _mm512_permutex2var_epi64(c[2], lo, c[3]),
                    _mm512_permutex2var_epi64(c[2], hi, c[3]),
                ]
            }

            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dot(w: &Prep, x: &Prep) -> __m256i {
                let z = _mm512_setzero_si512();
                // Four lanes per block: blocks 0..4, then 4..8.
                let p0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, w[0], x[0]), w[1], x[1]);
                let p1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, w[2], x[2]), w[3], x[3]);
                let b07 = pair_sums(p0, p1);
                _mm512_castsi512_si256(pair_sums(b07, b07))
            }
        }

        impl Stream<Avx512> for $t {
            const SHIFT: Option<i32> = $shift;
            const PF_BYTES: usize = 12288;
            const PF_NTA: bool = false;

            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn unit_dots<const MASKED: bool>(
                w: *const u8,
                _aux: *const u8,
                blocks: usize,
                a: *const u8,
            ) -> __m512i {
                let a = a.cast::<__m512i>();
                let m4 = _mm512_set1_epi8(0x0f);
                // Vector j: blocks 4j..4j+4, block 4j + L in 128-bit lane L (four i32 partial sums).
                let v: [__m512i; 4] = core::array::from_fn(|j| {
                    // SAFETY: as required of the caller (masked lanes are not read).
                    let (q, lo, hi) = unsafe {
                        (
                            load64::<MASKED>(w, blocks * (QK / 2), j),
                            _mm512_loadu_si512(a.add(2 * j).cast()),
                            _mm512_loadu_si512(a.add(2 * j + 1).cast()),
                        )
                    };
                    let z = _mm512_setzero_si512();
                    let p = _mm512_dpbusd_epi32(z, _mm512_and_si512(q, m4), lo);
                    _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4), hi)
                });
                reduce_lanes(v)
            }

            /// Per pair of vectors (blocks 4j..4j+4): [elements 0..16 of each], [16..32 of each].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn prep_unit(a: *mut u8) {
                // SAFETY: the caller's contract.
                unsafe { prep_q4_unit(a) }
            }
        }

        impl OneToken for $t {
            #[inline(always)]
            unsafe fn one_token(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
                // SAFETY: the caller's contract (and the stream's `k/32 <= PREP` is checked here).
                unsafe {
                    if w.k / QK <= PREP {
                        Avx512::decode::<Self>(w, x, yt)
                    } else {
                        qtile::matmul::<Avx512, Self>(w, x, yt)
                    }
                }
            }
        }
    };
}

q4_fmt!(Q4_0, Some(3));
q4_fmt!(Q4_1, None);

/// Rearranges one unit of sixteen activation blocks in place for the q4-shaped formats' unit dots:
/// per pair of vectors (blocks 4j..4j+4), [elements 0..16 of each], [16..32 of each].
///
/// # Safety
/// 512 bytes at `a` readable and writable; AVX-512 F present.
#[inline(always)]
pub(super) unsafe fn prep_q4_unit(a: *mut u8) {
    let a = a.cast::<__m512i>();
    for j in 0..4 {
        // SAFETY: as required of the caller.
        unsafe {
            let (c0, c1) = (
                _mm512_loadu_si512(a.add(2 * j).cast()),
                _mm512_loadu_si512(a.add(2 * j + 1).cast()),
            );
            _mm512_storeu_si512(a.add(2 * j).cast(), _mm512_shuffle_i64x2::<0x88>(c0, c1));
            _mm512_storeu_si512(
                a.add(2 * j + 1).cast(),
                _mm512_shuffle_i64x2::<0xdd>(c0, c1),
            );
        }
    }
}

/// 64-byte vector `c` of the `bytes` bytes at `p`: a plain load unless `MASKED`, then zero past the end.
///
/// # Safety
/// `bytes` bytes at `p` readable (all `64·(c+1)` of them unless `MASKED`); AVX-512 BW present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn load64<const MASKED: bool>(p: *const u8, bytes: usize, c: usize) -> __m512i {
    // SAFETY: as required of the caller; masked-off bytes are not read.
    unsafe {
        if MASKED {
            // A load with an empty mask is still slow on some cores (it may cross into an unmapped
            // page), so vectors wholly past the end are not loaded at all.
            match bytes.saturating_sub(64 * c) {
                0 => _mm512_setzero_si512(),
                n => _mm512_maskz_loadu_epi8(byte_mask(n), p.add(64 * c).cast()),
            }
        } else {
            _mm512_loadu_si512(p.add(64 * c).cast())
        }
    }
}

/// Four vectors of four blocks each (vector j: block 4j + L's four i32 partial sums in 128-bit lane L)
/// to the sixteen exact block sums in block order. In-lane unpacks do the adds; one permute restores the
/// order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn reduce_lanes(v: [__m512i; 4]) -> __m512i {
    let s01 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let s23 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    // Lane 4L + j = block 4j + L.
    let r = _mm512_add_epi32(
        _mm512_unpacklo_epi64(s01, s23),
        _mm512_unpackhi_epi64(s01, s23),
    );
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_epi32(order, r)
}

/// Sums adjacent lane pairs: `[a0+a1, a2+a3, …, a14+a15, b0+b1, …, b14+b15]` (wrapping adds; every
/// block dot fits an i32 with room to spare, so the sums are exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_sums(a: __m512i, b: __m512i) -> __m512i {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    _mm512_add_epi32(
        _mm512_permutex2var_epi32(a, even, b),
        _mm512_permutex2var_epi32(a, odd, b),
    )
}

/// `Σ t[..n]`.
///
/// # Safety
/// `n` f32 at `t` readable; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_sum(t: *const f32, n: usize) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY: as required of the caller; masked-off lanes are not read.
    unsafe {
        while i + 16 <= n {
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(t.add(i)));
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as u16;
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, t.add(i)));
        }
    }
    _mm512_reduce_add_ps(acc)
}

impl QuantizeQ8 for Avx512 {
    /// Bit-identical to the scalar spec.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
        for (b, (db, sb)) in d.iter_mut().zip(sum.iter_mut()).enumerate() {
            // SAFETY: block b's 32 values lie inside x (precondition).
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(x.as_ptr().add(b * QK)),
                    _mm512_loadu_ps(x.as_ptr().add(b * QK + 16)),
                )
            };
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let scale = amax / 127.0;
            *db = scale;
            let out = qs[b * QK..(b + 1) * QK].as_mut_ptr();
            if scale == 0.0 {
                // SAFETY: block b's 32 quants lie inside qs (the slice above).
                unsafe { _mm256_storeu_si256(out.cast(), _mm256_setzero_si256()) };
                *sb = 0;
                continue;
            }
            let vs = _mm512_set1_ps(scale);
            let (q0, q1) = (
                round_clamp(_mm512_div_ps(v0, vs)),
                round_clamp(_mm512_div_ps(v1, vs)),
            );
            *sb = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            // SAFETY: as above; each store writes 16 of the block's 32 bytes.
            unsafe {
                _mm_storeu_si128(out.cast(), _mm512_cvtepi32_epi8(q0));
                _mm_storeu_si128(out.add(16).cast(), _mm512_cvtepi32_epi8(q1));
            }
        }
    }
}

/// `clamp(round(v), −127, 127)` with `round` half away from zero ([`f32::round`]), as i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn round_clamp(v: __m512) -> __m512i {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v − trunc(v) is exact; a fraction of at least one half rounds away from zero.
    let away =
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5));
    let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
    let one = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
        sign,
    ));
    let r = _mm512_mask_add_ps(t, away, t, one);
    _mm512_cvtps_epi32(_mm512_min_ps(
        _mm512_max_ps(r, _mm512_set1_ps(-127.0)),
        _mm512_set1_ps(127.0),
    ))
}

/// `rows8` q4_0, q8_0 and q4_1 through the layout's copy into `rowsplit` order (no kernel of its own).
impl MatmulRows8<Q4_0> for Avx512 {}
impl MatmulRows8<Q8_0> for Avx512 {}
impl MatmulRows8<Q4_1> for Avx512 {}
