//! AVX2 kernels for the quantized formats: q8_0/q4_0/q4_1 weights × q8 activations, and activation
//! quantization. Same names, signatures and contracts as [`crate::quant::scalar`].
//!
//! A product works on tiles of weight rows × tokens (four rows × one token for decode, two rows × four
//! tokens otherwise), eight blocks (a *group*) at a time: each row's group is unpacked once for all the
//! tile's tokens and each token's group once for all its rows. The integer dots are `vpmaddubsw` (u8 × i8
//! → pairs of i16) and `vpmaddwd` against ones (→ i32); a group's vectors are then reduced *in integers*
//! by a `vphaddd` tree to one exact i32 per block, so every block dot is exact before it meets its
//! scale, as the spec requires, and one conversion and one FMA add the group's eight `dw·dx·idot` terms
//! into an 8-lane accumulator (lane = block within the group), summed once per output. (Scaling each
//! block's lanes separately would save the reduction but rounds relative to the lanes, which can cancel,
//! rather than to the block's dot.) A trailing group of fewer than eight blocks runs the same code with
//! the missing blocks zero.
//!
//! `vpmaddubsw` saturates, so the operands keep every i16 sum in range:
//! - q4: two blocks per vector, low nibbles and high nibbles in separate vectors (a 32-byte load, a
//!   shift and two masks per two blocks of a row); the activations are shuffled once per token and
//!   group to match (elements 0..16 of two blocks, then 16..32), and the two halves' pairs are added
//!   (`|·| ≤ 4·15·128`) before `vpmaddwd`: four lanes per block, half the reduction. The offsets use
//!   the activation block sums after the reduction: q4_0 subtracts `8·Σx`, q4_1 adds `m·(dx·Σx)`.
//! - q8_0: one block per vector with the sign trick, `|w| × sign(x, w)`: `|pair| ≤ 2·128·127`. This
//!   needs `x ≠ −128`, which the activation contract guarantees (quants in `−127..=127`).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use crate::quant::scalar::{check_qmatmul, check_quantize_acts};
use crate::quant::{Q8ActsRef, QFormat, QWeight, QK};

/// Blocks per group.
const G: usize = 8;
/// Rows × tokens per tile for several tokens (prefill). One token (decode) takes tiles of
/// `Fmt::DECODE_ROWS` rows, which share the activation's loads and shuffles.
const ROWS: usize = 2;
const TOKENS: usize = 4;

/// A weight format's group operations.
trait Fmt {
    const FORMAT: QFormat;
    /// Quant bytes per block.
    const QB: usize;
    /// Rows per tile for one token: 2 or 4.
    const DECODE_ROWS: usize;
    /// How far ahead decode prefetches the quants, in bytes, and whether as non-temporal.
    const PF_BYTES: usize;
    const PF_NTA: bool;
    /// One row's group, prepared.
    type W: Copy;
    /// One token's group, prepared.
    type X: Copy;
    /// Blocks `0..LEN` of a weight group at `p` (the rest zero).
    ///
    /// # Safety
    /// `LEN·QB` bytes at `p` readable; AVX2 present.
    unsafe fn load_w<const LEN: usize>(p: *const u8) -> Self::W;
    /// Blocks `0..LEN` of an activation group at `p` (the rest zero).
    ///
    /// # Safety
    /// `32·LEN` bytes at `p` readable; AVX2 present.
    unsafe fn load_x<const LEN: usize>(p: *const i8) -> Self::X;
    /// `Σ qw·qx` of each block (lane = block; q4: the nibbles as stored), exact.
    ///
    /// # Safety
    /// AVX2 present.
    unsafe fn dot(w: &Self::W, x: &Self::X) -> __m256i;
}

struct Q8_0;
struct Q4_0;
struct Q4_1;

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

impl Fmt for Q8_0 {
    const FORMAT: QFormat = QFormat::Q8_0;
    const QB: usize = QK;
    const DECODE_ROWS: usize = 2;
    const PF_BYTES: usize = 8192;
    const PF_NTA: bool = true;
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
    ($t:ty, $format:expr) => {
        impl Fmt for $t {
            const FORMAT: QFormat = $format;
            const QB: usize = QK / 2;
            const DECODE_ROWS: usize = 4;
            const PF_BYTES: usize = 12288;
            const PF_NTA: bool = false;
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

q4_fmt!(Q4_0, QFormat::Q4_0);
q4_fmt!(Q4_1, QFormat::Q4_1);

macro_rules! matmul_entry {
    ($name:ident, $fmt:ty) => {
        /// AVX2 version of the [`crate::quant::scalar`] function of the same name (same contract, same
        /// panics).
        pub fn $name(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
            check_qmatmul(w, <$fmt>::FORMAT, x, yt.len());
            // SAFETY: only reachable through the AVX2 and AVX-512 tables, built after detection confirmed
            // AVX2+FMA+F16C; `check_qmatmul` proved the plane lengths `matmul` relies on.
            unsafe { matmul::<$fmt>(w, x, yt) }
        }
    };
}

matmul_entry!(matmul_q8_0_q8, Q8_0);
matmul_entry!(matmul_q4_0_q8, Q4_0);
matmul_entry!(matmul_q4_1_q8, Q4_1);

/// Preconditions: the shapes passed [`check_qmatmul`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul<F: Fmt>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n) = (w.rows, x.n);
    // LOOP 2: row tiles (independent: a caller may split these across threads), then single rows.
    let mut r = 0;
    if n == 1 && w.k / QK <= PREP {
        // SAFETY: forwarded preconditions, one token, k/32 <= PREP.
        unsafe { decode::<F>(w, x, yt) };
        return;
    } else if n == 1 {
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
#[target_feature(enable = "avx2,fma,f16c")]
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

/// Most activation blocks a decode call prepares on the stack (16 KiB of quants, as many again
/// rearranged); longer rows take [`decode_tiles`].
const PREP: usize = 512;

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One token against all rows, as one stream of blocks: the plan of
/// [`super::quant_avx512`]'s decode with eight-block units (one group).
///
/// Rows are cut into segments of `seg` rows whose `seg·nb` blocks fill whole groups where that fits
/// [`PREP`] (`seg = 8/gcd(nb, 8)`), else single rows; the activations are prepared once per call,
/// repeated per segment, so each segment is one run of quants and scales read front to back. Each
/// group's eight exact block dots meet their scales in one vector and are stored; each row then sums
/// its `nb` terms. Every line of quants and scales is prefetched [`Fmt::PF_BYTES`] ahead.
///
/// Preconditions: the shapes passed [`check_qmatmul`], `x.n == 1`, `k/32 <= PREP`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode<F: Fmt>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, k, nb) = (w.rows, w.k, w.k / QK);
    debug_assert!(x.n == 1 && nb <= PREP);
    let seg = match G / gcd(nb, G) {
        r if r * nb <= PREP => r,
        _ => 1,
    };
    let len = seg * nb; // blocks per segment
    let units = len.div_ceil(G);
    let padded = units * G;

    // The activations repeated `seg` times (natural order), then each group prepared for `F::dot`;
    // scales and per-block offset terms.
    let mut raw = MaybeUninit::<[__m256i; PREP]>::uninit();
    let mut xv = MaybeUninit::<[F::X; PREP / G]>::uninit();
    let mut dx = MaybeUninit::<[f32; PREP]>::uninit();
    let mut off = MaybeUninit::<[i32; PREP]>::uninit();
    let mut dxs = MaybeUninit::<[f32; PREP]>::uninit();
    let mut terms = MaybeUninit::<[f32; PREP]>::uninit();
    let (raw, xv, dx, off, dxs, terms) = (
        raw.as_mut_ptr().cast::<i8>(),
        xv.as_mut_ptr().cast::<F::X>(),
        dx.as_mut_ptr().cast::<f32>(),
        off.as_mut_ptr().cast::<i32>(),
        dxs.as_mut_ptr().cast::<f32>(),
        terms.as_mut_ptr().cast::<f32>(),
    );
    // SAFETY: `padded <= PREP` (PREP is a multiple of G), so every write below stays inside the
    // buffers, and `x` holds `k` quants and `nb` scales and sums (check_qmatmul). Everything later read
    // (`padded` blocks) is written here first.
    unsafe {
        for i in 0..seg {
            core::ptr::copy_nonoverlapping(x.qs.as_ptr(), raw.add(i * k), k);
        }
        core::ptr::write_bytes(raw.add(len * QK), 0, (padded - len) * QK);
        for u in 0..units {
            xv.add(u).write(F::load_x::<G>(raw.add(u * G * QK)));
        }
        // One period of scales and offsets, then its copies.
        for (b, (&d, &s)) in x.d[..nb].iter().zip(&x.sum[..nb]).enumerate() {
            *dx.add(b) = d;
            match F::FORMAT {
                QFormat::Q8_0 => *off.add(b) = 0,
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
        // LOOP 0: whole groups, then the segment's partial one.
        let full = blocks / G;
        for u in 0..full {
            let b = u * G;
            prefetch::<F>(
                wq.wrapping_add(b * F::QB),
                wd.wrapping_add(b),
                wm.wrapping_add(b),
            );
            // SAFETY: blocks b..b+G lie inside the segment (the slices above) and inside the prepared
            // buffers (b + G <= padded).
            unsafe {
                let wv = F::load_w::<G>(wq.add(b * F::QB));
                let t = unit::<F>(
                    &wv,
                    wd.add(b),
                    wm.add(b),
                    G,
                    xv.add(u),
                    dx.add(b),
                    off.add(b),
                    dxs.add(b),
                );
                _mm256_storeu_ps(terms.add(b), t);
            }
        }
        let left = blocks - full * G;
        if left > 0 {
            let (b, u) = (full * G, full);
            let p = wq.wrapping_add(b * F::QB);
            // SAFETY: the `left` blocks b..blocks lie inside the segment; `load_w::<LEN>` reads only
            // LEN blocks, and `unit` only `left` scales.
            unsafe {
                let wv = match left {
                    1 => F::load_w::<1>(p),
                    2 => F::load_w::<2>(p),
                    3 => F::load_w::<3>(p),
                    4 => F::load_w::<4>(p),
                    5 => F::load_w::<5>(p),
                    6 => F::load_w::<6>(p),
                    _ => F::load_w::<7>(p),
                };
                let t = unit::<F>(
                    &wv,
                    wd.add(b),
                    wm.add(b),
                    left,
                    xv.add(u),
                    dx.add(b),
                    off.add(b),
                    dxs.add(b),
                );
                _mm256_storeu_ps(terms.add(b), t);
            }
        }
        for (i, y) in yt[r..r + rs].iter_mut().enumerate() {
            // SAFETY: the segment's `blocks` terms were just written.
            *y = unsafe { row_sum(terms.add(i * nb), nb) };
        }
    }
}

/// Prefetches the cache lines [`Fmt::PF_BYTES`] of quants ahead of the group at `wq` (and its scales,
/// minimums, the same number of blocks ahead). Prefetches never fault, so the addresses may run past
/// the planes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch<F: Fmt>(wq: *const u8, wd: *const f16, wm: *const f16) {
    let ahead = F::PF_BYTES / F::QB; // blocks
    let line = |p: *const i8| {
        if F::PF_NTA {
            _mm_prefetch::<_MM_HINT_NTA>(p)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p)
        }
    };
    for l in 0..G * F::QB / 64 {
        line(wq.wrapping_add(F::PF_BYTES + 64 * l).cast());
    }
    line(wd.wrapping_add(ahead).cast());
    if F::FORMAT == QFormat::Q4_1 {
        line(wm.wrapping_add(ahead).cast());
    }
}

/// `Σ_b (dw·dx)·(idot − off)` (q4_1: `(dw·dx)·idot + m·(dx·Σx)`) of one group, lane = block (lanes
/// past `blocks` unspecified).
///
/// # Safety
/// `blocks` (1..=8) scales (and minimums, q4_1) at `wd`, `wm`; one prepared group at `xv`, `dx`, `off`,
/// `dxs`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn unit<F: Fmt>(
    wv: &F::W,
    wd: *const f16,
    wm: *const f16,
    blocks: usize,
    xv: *const F::X,
    dx: *const f32,
    off: *const i32,
    dxs: *const f32,
) -> __m256 {
    // SAFETY: as required of the caller.
    unsafe {
        let idot = F::dot(wv, &*xv);
        let dw = f16_lanes(wd, blocks);
        let s = _mm256_mul_ps(dw, _mm256_loadu_ps(dx));
        if F::FORMAT == QFormat::Q4_1 {
            let m = f16_lanes(wm, blocks);
            _mm256_fmadd_ps(
                s,
                _mm256_cvtepi32_ps(idot),
                _mm256_mul_ps(m, _mm256_loadu_ps(dxs)),
            )
        } else {
            let idot = _mm256_sub_epi32(idot, _mm256_loadu_si256(off.cast()));
            _mm256_mul_ps(s, _mm256_cvtepi32_ps(idot))
        }
    }
}

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

/// Rows `r..r+R` against every token. Requires `r + R <= w.rows` and the `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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

/// Adds blocks `g..g+LEN` (`1 <= LEN <= G`) of rows `r..r+R` × tokens `t..t+T` into `acc[j][i]`
/// (lane = block − g). Requires the tile's rows and tokens to exist, `g + LEN <= k/32`, and the
/// `matmul` preconditions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<F: Fmt, const R: usize, const T: usize, const LEN: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    r: usize,
    t: usize,
    g: usize,
    acc: &mut [[__m256; R]; T],
) {
    let nb = w.k / QK;
    // Row i's group: unpacked quants, scales, minimums (q4_1).
    let row = |i: usize| (r + i) * nb + g; // the group's first block in the weight planes
    let load = |i: usize| {
        // SAFETY: the slice holds the group's LEN blocks.
        unsafe { F::load_w::<LEN>(w.qs[row(i) * F::QB..(row(i) + LEN) * F::QB].as_ptr()) }
    };
    let mut wv = [load(0); R];
    let (mut dw, mut m) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for i in 0..R {
        if i > 0 {
            wv[i] = load(i);
        }
        dw[i] = f16x8::<LEN>(&w.d[row(i)..]);
        if F::FORMAT == QFormat::Q4_1 {
            m[i] = f16x8::<LEN>(&w.m[row(i)..]);
        }
    }
    for (j, acc_j) in acc.iter_mut().enumerate() {
        let xb = (t + j) * nb + g; // this token's group in the activation planes
                                   // SAFETY: the slice holds the group's LEN blocks.
        let xv = unsafe { F::load_x::<LEN>(x.qs[xb * QK..(xb + LEN) * QK].as_ptr()) };
        let dx = f32x8::<LEN>(&x.d[xb..]);
        let (offset, dxs) = match F::FORMAT {
            QFormat::Q8_0 => (_mm256_setzero_si256(), _mm256_setzero_ps()),
            QFormat::Q4_0 => (
                _mm256_slli_epi32::<3>(i32x8::<LEN>(&x.sum[xb..])),
                _mm256_setzero_ps(),
            ),
            QFormat::Q4_1 => (
                _mm256_setzero_si256(),
                _mm256_mul_ps(dx, _mm256_cvtepi32_ps(i32x8::<LEN>(&x.sum[xb..]))),
            ),
        };
        for (a, (wv, (dw, m))) in acc_j.iter_mut().zip(wv.iter().zip(dw.iter().zip(&m))) {
            // SAFETY: this function's features include the ones `dot` needs.
            let idot = _mm256_sub_epi32(unsafe { F::dot(wv, &xv) }, offset);
            if F::FORMAT == QFormat::Q4_1 {
                *a = _mm256_fmadd_ps(*m, dxs, *a);
            }
            *a = _mm256_fmadd_ps(_mm256_mul_ps(*dw, dx), _mm256_cvtepi32_ps(idot), *a);
        }
    }
}

/// `v[..LEN]` (`LEN <= 8`) as f32 lanes, the rest zero. F16C conversion is exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8<const LEN: usize>(v: &[f16]) -> __m256 {
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
fn f32x8<const LEN: usize>(v: &[f32]) -> __m256 {
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
fn i32x8<const LEN: usize>(v: &[i32]) -> __m256i {
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

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// AVX2 version of [`crate::quant::scalar::quantize_q8_acts`]: bit-identical output.
pub fn quantize_q8_acts(
    x: &[f32],
    n: usize,
    k: usize,
    qs: &mut [i8],
    d: &mut [f32],
    sum: &mut [i32],
) {
    let len = check_quantize_acts(x.len(), n, k, qs.len(), d.len(), sum.len());
    // SAFETY: only reachable through the AVX2 and AVX-512 tables (built after detection); the check
    // proved `x` holds `len` values and `qs`, `d`, `sum` exactly `len`, `len/32`, `len/32`.
    unsafe { quantize_acts(&x[..len], qs, d, sum) }
}

/// Preconditions: `x.len() == qs.len() == 32·d.len() == 32·sum.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_acts(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for (b, (db, sb)) in d.iter_mut().zip(sum.iter_mut()).enumerate() {
        // SAFETY: block b's 32 values lie inside x (precondition).
        let v: [__m256; 4] =
            core::array::from_fn(|u| unsafe { _mm256_loadu_ps(x.as_ptr().add(b * QK + 8 * u)) });
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
