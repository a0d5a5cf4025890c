//! AVX-512 VNNI kernels for the quantized formats: q8_0/q4_0/q4_1 weights × q8 activations, and
//! activation quantization. Same names, signatures and contracts as [`crate::quant::scalar`].
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
//! Decode (one token, [`decode`]) of the q4 formats streams the weight planes front to back in units of
//! sixteen blocks against activations prepared once per call, and prefetches ahead: it is bound by
//! memory bandwidth. q8_0 decode uses the AVX2 kernel (see [`matmul_q8_0_q8`]).
//! Several tokens (prefill) take tiles of weight rows × tokens ([`tile`]), eight-block groups, one
//! f32 FMA per group for the eight `dw·dx·idot` terms.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use crate::quant::scalar::{check_qmatmul, check_quantize_acts};
use crate::quant::{Q8ActsRef, QFormat, QWeight, QK};

mod prefill;

/// Blocks per group.
const G: usize = 8;
/// Rows × tokens per tile for several tokens (prefill). One token (decode) takes tiles of
/// `Fmt::DECODE_ROWS` rows, which share the activation's loads and shuffles.
const ROWS: usize = 2;
const TOKENS: usize = 4;

/// One group of eight blocks (of one row, or of one token), prepared for [`Fmt::dot`].
type Prep = [__m512i; 4];

/// A weight format's group operations.
trait Fmt {
    const FORMAT: QFormat;
    /// Quant bytes per block.
    const QB: usize;
    /// Rows per tile for one token: 2 or 4.
    const DECODE_ROWS: usize;
    /// Blocks `0..LEN` of a weight group at `p`.
    ///
    /// # Safety
    /// `LEN·QB` bytes at `p` readable; AVX-512 F/BW/VL/VNNI present.
    unsafe fn load_w<const LEN: usize>(p: *const u8) -> Prep;
    /// Blocks `0..LEN` of an activation group at `p`.
    ///
    /// # Safety
    /// `32·LEN` bytes at `p` readable; AVX-512 F/BW/VL/VNNI present.
    unsafe fn load_x<const LEN: usize>(p: *const i8) -> Prep;
    /// `Σ qw·qx` of each block (lane = block; q4: the nibbles as stored, q8_0: `w + 128`), exact.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI present.
    unsafe fn dot(w: &Prep, x: &Prep) -> __m256i;
}

/// A weight format's decode operations (the q4 formats; q8_0 decode uses the AVX2 kernel, see
/// [`matmul_q8_0_q8`]).
trait Stream: Fmt {
    /// How far ahead decode prefetches the quants, in bytes, and whether as non-temporal (measured on
    /// the SmolLM2-135M shapes streamed from memory).
    const PF_BYTES: usize;
    const PF_NTA: bool;
    /// The exact block dots of `blocks` consecutive weight blocks at `w` (all [`UNIT`] unless `MASKED`,
    /// then `1..UNIT`) against one unit of activations prepared by [`Stream::prep_unit`] at `a`, lane =
    /// block (the nibbles as stored). Lanes past `blocks` are unspecified.
    ///
    /// # Safety
    /// `blocks·QB` bytes at `w` and `UNIT·32` bytes at `a` readable; AVX-512 F/BW/VL/VNNI present.
    unsafe fn unit_dots<const MASKED: bool>(
        w: *const u8,
        blocks: usize,
        a: *const __m512i,
    ) -> __m512i;
    /// Rearranges one unit of activation quants (blocks in their natural order, eight vectors at `a`)
    /// in place into the order [`Stream::unit_dots`] reads.
    ///
    /// # Safety
    /// `UNIT·32` bytes at `a` readable and writable; AVX-512 F present.
    unsafe fn prep_unit(a: *mut __m512i);
}

struct Q8_0;
struct Q4_0;
struct Q4_1;

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

impl Fmt for Q8_0 {
    const FORMAT: QFormat = QFormat::Q8_0;
    const QB: usize = QK;
    const DECODE_ROWS: usize = 4;

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
    ($t:ty, $format:expr) => {
        impl Fmt for $t {
            const FORMAT: QFormat = $format;
            const QB: usize = QK / 2;
            const DECODE_ROWS: usize = 4;

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

        impl Stream for $t {
            const PF_BYTES: usize = 12288;
            const PF_NTA: bool = false;

            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn unit_dots<const MASKED: bool>(
                w: *const u8,
                blocks: usize,
                a: *const __m512i,
            ) -> __m512i {
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
            unsafe fn prep_unit(a: *mut __m512i) {
                for j in 0..4 {
                    // SAFETY: as required of the caller.
                    unsafe {
                        let (c0, c1) = (
                            _mm512_loadu_si512(a.add(2 * j).cast()),
                            _mm512_loadu_si512(a.add(2 * j + 1).cast()),
                        );
                        _mm512_storeu_si512(
                            a.add(2 * j).cast(),
                            _mm512_shuffle_i64x2::<0x88>(c0, c1),
                        );
                        _mm512_storeu_si512(
                            a.add(2 * j + 1).cast(),
                            _mm512_shuffle_i64x2::<0xdd>(c0, c1),
                        );
                    }
                }
            }
        }
    };
}

/// 64-byte vector `c` of the `bytes` bytes at `p`: a plain load unless `MASKED`, then zero past the end.
///
/// # Safety
/// `bytes` bytes at `p` readable (all `64·(c+1)` of them unless `MASKED`); AVX-512 BW present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load64<const MASKED: bool>(p: *const u8, bytes: usize, c: usize) -> __m512i {
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
fn reduce_lanes(v: [__m512i; 4]) -> __m512i {
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

q4_fmt!(Q4_0, QFormat::Q4_0);
q4_fmt!(Q4_1, QFormat::Q4_1);

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

/// AVX-512 VNNI version of the [`crate::quant::scalar`] function of the same name (same contract,
/// same panics).
pub fn matmul_q8_0_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    check_qmatmul(w, QFormat::Q8_0, x, yt.len());
    if x.n == 1 {
        // Decode: AVX2's stream of eight-block groups keeps up with memory (about 1.0× a plain read
        // loop on the SmolLM2-135M shapes streamed from memory, against 0.75–0.9× for sixteen-block
        // units of `vpdpbusd` here), so this table uses it. Its features are a subset of this table's.
        return super::quant_avx2::matmul_q8_0_q8(w, x, yt);
    }
    // SAFETY: only reachable through the AVX-512 VNNI table, built after detection confirmed AVX-512
    // F/BW/VL/VNNI and AVX2/FMA/F16C; `check_qmatmul` proved the plane lengths.
    unsafe { matmul::<Q8_0>(w, x, yt) }
}

macro_rules! q4_matmul_entry {
    ($name:ident, $fmt:ty) => {
        /// AVX-512 VNNI version of the [`crate::quant::scalar`] function of the same name (same
        /// contract, same panics).
        pub fn $name(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
            check_qmatmul(w, <$fmt>::FORMAT, x, yt.len());
            // SAFETY: only reachable through the AVX-512 VNNI table, built after detection confirmed
            // AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C; `check_qmatmul` proved the plane lengths (and
            // `decode`'s one token and `k/32 <= PREP` are checked here).
            unsafe {
                if x.n == 1 && w.k / QK <= PREP {
                    decode::<$fmt>(w, x, yt)
                } else {
                    matmul::<$fmt>(w, x, yt)
                }
            }
        }
    };
}

q4_matmul_entry!(matmul_q4_0_q8, Q4_0);
q4_matmul_entry!(matmul_q4_1_q8, Q4_1);

macro_rules! tokens_entry {
    ($name:ident, $rowmajor:ident, $fmt:ty) => {
        /// Token-major version of [`
        #[doc = stringify!($rowmajor)]
        /// `]: `y[t·rows + r]` (see `Kernels::matmul_q8_0_tokens`). Several tokens go through the
        /// prefill kernel, which sums each token's rows in one vector and stores it as is; otherwise
        /// each token is one row-major product into its own row of `y`.
        pub fn $name(w: &QWeight<'_>, x: &Q8ActsRef<'_>, y: &mut [f32]) {
            check_qmatmul(w, <$fmt>::FORMAT, x, y.len());
            if x.n > 1 && prefill::suits(w, x.n) {
                // SAFETY: only reachable through the AVX-512 VNNI table (features confirmed);
                // `check_qmatmul` proved the plane lengths, and `suits` holds.
                unsafe { prefill::matmul::<$fmt, true>(w, x, y) };
                return;
            }
            for (t, yr) in y.chunks_exact_mut(w.rows).enumerate() {
                $rowmajor(w, &x.tokens(t..t + 1), yr);
            }
        }
    };
}

tokens_entry!(matmul_tokens_q8_0_q8, matmul_q8_0_q8, Q8_0);
tokens_entry!(matmul_tokens_q4_0_q8, matmul_q4_0_q8, Q4_0);
tokens_entry!(matmul_tokens_q4_1_q8, matmul_q4_1_q8, Q4_1);

/// Preconditions: the shapes passed [`check_qmatmul`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn matmul<F: Fmt>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n) = (w.rows, x.n);
    // LOOP 2: row tiles (independent: a caller may split these across threads), then single rows.
    let mut r = 0;
    if n > 1 && prefill::suits(w, n) {
        // SAFETY: forwarded preconditions, and `suits`.
        unsafe { prefill::matmul::<F, false>(w, x, yt) };
        return;
    }
    if n == 1 {
        // SAFETY: forwarded preconditions.
        r = unsafe {
            if F::DECODE_ROWS == 4 {
                decode_tiles::<F, 4>(w, x, yt)
            } else {
                decode_tiles::<F, 2>(w, x, yt)
            }
        };
    } else {
        while r + ROWS <= rows {
            // SAFETY: rows r..r+ROWS exist; tokens are bounded inside.
            unsafe { row_tile::<F, ROWS>(w, x, yt, r) };
            r += ROWS;
        }
    }
    while r < rows {
        // SAFETY: row r exists.
        unsafe { row_tile::<F, 1>(w, x, yt, r) };
        r += 1;
    }
}

/// One token: tiles of `R` rows while they last; returns the first row not done. Preconditions: as
/// `matmul`'s, with `x.n == 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tiles<F: Fmt, const R: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) -> usize {
    let mut r = 0;
    while r + R <= w.rows {
        // SAFETY: rows r..r+R exist, token 0 < n.
        unsafe { tile::<F, R, 1>(w, x, yt, r, 0) };
        r += R;
    }
    r
}

/// Blocks per decode unit: four 64-byte vectors of q4 quants or eight of q8_0, reduced together.
const UNIT: usize = 16;
/// Most activation blocks a decode call prepares on the stack (16 KiB of quants); longer rows take
/// [`decode_tiles`].
const PREP: usize = 512;

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One token against all rows of a q4 weight, as one stream of blocks.
///
/// The rows are cut into segments of `seg` rows whose `seg·nb` blocks (`nb = k/32`) fill whole units of
/// [`UNIT`] blocks where that fits [`PREP`] (`seg = 16/gcd(nb, 16)`, e.g. 8 rows of 18 blocks), else
/// single rows. The activations are prepared once per call and repeated `seg` times, so a segment is
/// one contiguous run of quants and scales read front to back against one contiguous run of
/// activations: no row tiles, and no partly used vectors except at a segment's end. Each unit's
/// sixteen exact block dots meet their scales in one vector and are stored; each row then sums its
/// `nb` terms.
///
/// Decode is bound by memory, and the hardware prefetchers alone leave this loop well short of the
/// bandwidth a plain read loop gets (the out-of-order window covers only a few units), so every cache
/// line of the quants and scales is prefetched [`Fmt::PF_BYTES`] ahead.
///
/// Preconditions: the shapes passed [`check_qmatmul`], `x.n == 1`, `k/32 <= PREP`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode<F: Stream>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, k, nb) = (w.rows, w.k, w.k / QK);
    debug_assert!(x.n == 1 && nb <= PREP);
    let seg = match UNIT / gcd(nb, UNIT) {
        r if r * nb <= PREP => r,
        _ => 1,
    };
    let len = seg * nb; // blocks per segment
    let units = len.div_ceil(UNIT);
    let padded = units * UNIT;

    // Prepared activations: quants (UNIT·32 bytes per unit), scales, and the per-block offset terms.
    let mut aq = MaybeUninit::<[__m512i; PREP / 2]>::uninit();
    let mut dx = MaybeUninit::<[f32; PREP]>::uninit();
    let mut off = MaybeUninit::<[i32; PREP]>::uninit();
    let mut dxs = MaybeUninit::<[f32; PREP]>::uninit();
    let mut terms = MaybeUninit::<[f32; PREP]>::uninit();
    let (aq, dx, off, dxs, terms) = (
        aq.as_mut_ptr().cast::<__m512i>(),
        dx.as_mut_ptr().cast::<f32>(),
        off.as_mut_ptr().cast::<i32>(),
        dxs.as_mut_ptr().cast::<f32>(),
        terms.as_mut_ptr().cast::<f32>(),
    );
    // SAFETY: `padded <= PREP` (PREP is a multiple of UNIT), so every write below stays inside the
    // buffers, and `x` holds `k` quants and `nb` scales and sums (check_qmatmul). Everything later read
    // (`padded` blocks) is written here first.
    unsafe {
        for i in 0..seg {
            core::ptr::copy_nonoverlapping(x.qs.as_ptr(), aq.cast::<i8>().add(i * k), k);
        }
        core::ptr::write_bytes(aq.cast::<i8>().add(len * QK), 0, (padded - len) * QK);
        for u in 0..units {
            F::prep_unit(aq.add(u * UNIT * QK / 64));
        }
        // One period of scales and offsets, then its copies.
        for (b, (&d, &s)) in x.d[..nb].iter().zip(&x.sum[..nb]).enumerate() {
            *dx.add(b) = d;
            match F::FORMAT {
                QFormat::Q8_0 => *off.add(b) = s << 7,
                QFormat::Q4_0 => *off.add(b) = s << 3,
                QFormat::Q4_1 => *dxs.add(b) = d * s as f32,
            }
        }
        let per = if F::FORMAT == QFormat::Q4_1 {
            dxs
        } else {
            off.cast::<f32>()
        };
        for i in 1..seg {
            core::ptr::copy_nonoverlapping(dx, dx.add(i * nb), nb);
            core::ptr::copy_nonoverlapping(per, per.add(i * nb), nb);
        }
        core::ptr::write_bytes(dx.add(len), 0, padded - len);
        core::ptr::write_bytes(per.add(len), 0, padded - len);
    }

    // LOOP 1: segments (independent rows).
    for r in (0..rows).step_by(seg) {
        let rs = seg.min(rows - r);
        let blocks = rs * nb;
        let b0 = r * nb;
        let wq = w.qs[b0 * F::QB..(b0 + blocks) * F::QB].as_ptr();
        let wd = w.d[b0..b0 + blocks].as_ptr();
        let wm = if F::FORMAT == QFormat::Q4_1 {
            w.m[b0..b0 + blocks].as_ptr()
        } else {
            wd
        };
        // LOOP 0: whole units, then the segment's partial one.
        let full = blocks / UNIT;
        for u in 0..full {
            let b = u * UNIT;
            prefetch::<F>(
                wq.wrapping_add(b * F::QB),
                wd.wrapping_add(b),
                wm.wrapping_add(b),
            );
            // SAFETY: blocks b..b+UNIT lie inside the segment (the slices above) and inside the
            // prepared buffers (b + UNIT <= padded).
            unsafe {
                let t = unit::<F, false>(
                    wq.add(b * F::QB),
                    wd.add(b),
                    wm.add(b),
                    UNIT,
                    aq.add(b * QK / 64),
                    dx.add(b),
                    off.add(b),
                    dxs.add(b),
                );
                _mm512_storeu_ps(terms.add(b), t);
            }
        }
        if blocks % UNIT != 0 {
            let b = full * UNIT;
            // SAFETY: as above, with the `blocks − b` blocks left (masked loads).
            unsafe {
                let t = unit::<F, true>(
                    wq.add(b * F::QB),
                    wd.add(b),
                    wm.add(b),
                    blocks - b,
                    aq.add(b * QK / 64),
                    dx.add(b),
                    off.add(b),
                    dxs.add(b),
                );
                _mm512_storeu_ps(terms.add(b), t);
            }
        }
        for (i, y) in yt[r..r + rs].iter_mut().enumerate() {
            // SAFETY: the segment's `blocks` terms were just written.
            *y = unsafe { row_sum(terms.add(i * nb), nb) };
        }
    }
}

/// Prefetches the cache lines [`Fmt::PF_BYTES`] of quants ahead of the unit at `wq` (and its scales,
/// minimums, the same number of blocks ahead). Prefetches never fault, so the addresses may run past
/// the planes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn prefetch<F: Stream>(wq: *const u8, wd: *const f16, wm: *const f16) {
    let ahead = F::PF_BYTES / F::QB; // blocks
    let line = |p: *const i8| {
        if F::PF_NTA {
            _mm_prefetch::<_MM_HINT_NTA>(p)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p)
        }
    };
    for l in 0..UNIT * F::QB / 64 {
        line(wq.wrapping_add(F::PF_BYTES + 64 * l).cast());
    }
    line(wd.wrapping_add(ahead).cast());
    if F::FORMAT == QFormat::Q4_1 {
        line(wm.wrapping_add(ahead).cast());
    }
}

/// `Σ_b (dw·dx)·(idot − off)` (q4_1: `(dw·dx)·idot + m·(dx·Σx)`) of one unit, lane = block.
///
/// # Safety
/// `blocks` (`UNIT` unless `MASKED`) weight blocks at `wq`, `wd`, `wm` (q4_1) readable; one prepared
/// unit at `a`, `dx`, `off`, `dxs`; AVX-512 F/BW/VL/VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn unit<F: Stream, const MASKED: bool>(
    wq: *const u8,
    wd: *const f16,
    wm: *const f16,
    blocks: usize,
    a: *const __m512i,
    dx: *const f32,
    off: *const i32,
    dxs: *const f32,
) -> __m512 {
    let bm: __mmask16 = if MASKED {
        ((1u32 << blocks) - 1) as u16
    } else {
        !0
    };
    // SAFETY: as required of the caller; masked-off scales are not read.
    unsafe {
        let idot = F::unit_dots::<MASKED>(wq, blocks, a);
        // Unmasked when whole (masked word loads are slow on some cores, Zen 4 among them).
        let words = |p: *const f16| {
            if MASKED {
                _mm256_maskz_loadu_epi16(bm, p.cast())
            } else {
                _mm256_loadu_si256(p.cast())
            }
        };
        let dw = _mm512_cvtph_ps(words(wd));
        let s = _mm512_mul_ps(dw, _mm512_loadu_ps(dx));
        if F::FORMAT == QFormat::Q4_1 {
            let m = _mm512_cvtph_ps(words(wm));
            _mm512_fmadd_ps(
                s,
                _mm512_cvtepi32_ps(idot),
                _mm512_mul_ps(m, _mm512_loadu_ps(dxs)),
            )
        } else {
            let idot = _mm512_sub_epi32(idot, _mm512_loadu_si512(off.cast()));
            _mm512_mul_ps(s, _mm512_cvtepi32_ps(idot))
        }
    }
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

/// Rows `r..r+R` against every token. Requires `r + R <= w.rows` and the `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_tile<F: Fmt, const R: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
) {
    // LOOP 1: token tiles, then single tokens.
    let mut t = 0;
    while t + TOKENS <= x.n {
        // SAFETY: tokens t..t+TOKENS exist, rows by the caller.
        unsafe { tile::<F, R, TOKENS>(w, x, yt, r, t) };
        t += TOKENS;
    }
    while t < x.n {
        // SAFETY: token t exists.
        unsafe { tile::<F, R, 1>(w, x, yt, r, t) };
        t += 1;
    }
}

/// `yt[(r+i)·n + t+j]` for `i < R`, `j < T`. Requires `r + R <= w.rows`, `t + T <= x.n` and the
/// `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<F: Fmt, const R: usize, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
    t: usize,
) {
    let (n, nb) = (x.n, w.k / QK);
    debug_assert!(r + R <= w.rows && t + T <= n);
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    // LOOP 0: groups of G blocks, then the remainder.
    let mut g = 0;
    while g + G <= nb {
        // SAFETY: blocks g..g+G of the tile's rows and tokens exist (loop bounds, caller).
        unsafe { group::<F, R, T, G>(w, x, r, t, g, &mut acc) };
        g += G;
    }
    // SAFETY: as above, with the remaining nb − g < G blocks.
    unsafe {
        match nb - g {
            1 => group::<F, R, T, 1>(w, x, r, t, g, &mut acc),
            2 => group::<F, R, T, 2>(w, x, r, t, g, &mut acc),
            3 => group::<F, R, T, 3>(w, x, r, t, g, &mut acc),
            4 => group::<F, R, T, 4>(w, x, r, t, g, &mut acc),
            5 => group::<F, R, T, 5>(w, x, r, t, g, &mut acc),
            6 => group::<F, R, T, 6>(w, x, r, t, g, &mut acc),
            7 => group::<F, R, T, 7>(w, x, r, t, g, &mut acc),
            _ => {}
        }
    }
    for (j, acc_j) in acc.iter().enumerate() {
        for (i, &a) in acc_j.iter().enumerate() {
            yt[(r + i) * n + t + j] = hsum(a);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Adds blocks `g..g+LEN` (`1 <= LEN <= G`) of rows `r..r+R` × tokens `t..t+T` into `acc[j][i]`
/// (lane = block − g). Requires the tile's rows and tokens to exist, `g + LEN <= k/32`, and the
/// `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group<F: Fmt, const R: usize, const T: usize, const LEN: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    r: usize,
    t: usize,
    g: usize,
    acc: &mut [[__m256; R]; T],
) {
    let nb = w.k / QK;
    let m8: __mmask8 = ((1u32 << LEN) - 1) as u8;
    let mut wv = [[_mm512_setzero_si512(); 4]; R];
    let mut dw = [_mm256_setzero_ps(); R];
    let mut m = [_mm256_setzero_ps(); R];
    for i in 0..R {
        let wb = (r + i) * nb + g; // this row's group in the weight planes
        let wq = w.qs[wb * F::QB..(wb + LEN) * F::QB].as_ptr();
        // SAFETY: the slice above holds the LEN blocks; `LEN` scales (and minimums) are readable at
        // `wb` (bounds-checked slices), masked-off lanes are not read.
        unsafe {
            wv[i] = F::load_w::<LEN>(wq);
            // Unmasked for a whole group of eight (masked word loads are slow on some cores).
            let words = |v: &[f16]| {
                if LEN == 8 {
                    _mm_loadu_si128(v.as_ptr().cast())
                } else {
                    _mm_maskz_loadu_epi16(m8, v.as_ptr().cast())
                }
            };
            dw[i] = _mm256_cvtph_ps(words(&w.d[wb..wb + LEN]));
            if F::FORMAT == QFormat::Q4_1 {
                m[i] = _mm256_cvtph_ps(words(&w.m[wb..wb + LEN]));
            }
        }
    }
    for (j, acc_j) in acc.iter_mut().enumerate() {
        let xb = (t + j) * nb + g; // this token's group in the activation planes
                                   // SAFETY: as above, for the activation planes.
        let (xv, dx, sx) = unsafe {
            (
                F::load_x::<LEN>(x.qs[xb * QK..(xb + LEN) * QK].as_ptr()),
                _mm256_maskz_loadu_ps(m8, x.d[xb..xb + LEN].as_ptr()),
                _mm256_maskz_loadu_epi32(m8, x.sum[xb..xb + LEN].as_ptr().cast()),
            )
        };
        let (offset, dxs) = match F::FORMAT {
            QFormat::Q8_0 => (_mm256_slli_epi32::<7>(sx), _mm256_setzero_ps()),
            QFormat::Q4_0 => (_mm256_slli_epi32::<3>(sx), _mm256_setzero_ps()),
            QFormat::Q4_1 => (
                _mm256_setzero_si256(),
                _mm256_mul_ps(dx, _mm256_cvtepi32_ps(sx)),
            ),
        };
        for (i, a) in acc_j.iter_mut().enumerate() {
            // SAFETY: this function's features include the ones `dot` needs.
            let idot = _mm256_sub_epi32(unsafe { F::dot(&wv[i], &xv) }, offset);
            if F::FORMAT == QFormat::Q4_1 {
                *a = _mm256_fmadd_ps(m[i], dxs, *a);
            }
            *a = _mm256_fmadd_ps(_mm256_mul_ps(dw[i], dx), _mm256_cvtepi32_ps(idot), *a);
        }
    }
}

/// AVX-512 version of [`crate::quant::scalar::quantize_q8_acts`]: bit-identical output.
pub fn quantize_q8_acts(
    x: &[f32],
    n: usize,
    k: usize,
    qs: &mut [i8],
    d: &mut [f32],
    sum: &mut [i32],
) {
    let len = check_quantize_acts(x.len(), n, k, qs.len(), d.len(), sum.len());
    // SAFETY: only reachable through the AVX-512 VNNI table (built after detection); the check proved
    // `x` holds `len` values and `qs`, `d`, `sum` exactly `len`, `len/32`, `len/32`.
    unsafe { quantize_acts(&x[..len], qs, d, sum) }
}

/// Preconditions: `x.len() == qs.len() == 32·d.len() == 32·sum.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn quantize_acts(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
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
