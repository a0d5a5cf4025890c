//! The quantized products' tiles, shared by the x86 variants: q8_0/q4_0/q4_1 weights × q8
//! activations as [`crate::quant::scalar`] specifies them.
//!
//! A product works on tiles of weight rows × tokens (`Fmt::DECODE_ROWS` rows × one token for decode,
//! [`ROWS`] × [`TOKENS`] otherwise), eight blocks (a *group*) at a time: each row's group is prepared
//! once for all the tile's tokens and each token's group once for all its rows. The variant's
//! [`Fmt::dot`] turns a row's and a token's group into eight exact block dots, one i32 lane per block
//! (the variants' integer work is described in their modules); one conversion and one FMA then add
//! the group's eight `dw·dx·idot` terms into an 8-lane accumulator (lane = block within the group),
//! summed once per output. Every block dot is exact before it meets its scale, as the spec requires.
//! (Scaling each block's lanes separately would save the reduction but rounds relative to the lanes,
//! which can cancel, rather than to the block's dot.) A trailing group of fewer than eight blocks
//! runs the same code with the missing blocks zero.
//!
//! The offsets use the activation block sums after the reduction: [`Fmt::SHIFT`] for a dot that
//! comes out `Σx << SHIFT` too large (q4_0's `8·Σx`), q4_1 adds `m·(dx·Σx)`.

use core::arch::x86_64::*;

use half::f16;

use super::hsum;
use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::Format;

/// Blocks per group.
pub(super) const G: usize = 8;
/// Rows × tokens per tile for several tokens (prefill). One token (decode) takes tiles of
/// `Fmt::DECODE_ROWS` rows, which share the activation's loads and shuffles.
const ROWS: usize = 2;
const TOKENS: usize = 4;

/// An x86 variant's group loads: `v[..LEN]` (`LEN <= 8`) as eight lanes, the rest zero.
pub(super) trait Loads {
    /// # Safety
    /// `v.len() >= LEN`; the CPU has the variant's features (likewise below).
    unsafe fn f16x8<const LEN: usize>(v: &[f16]) -> __m256;
    unsafe fn f32x8<const LEN: usize>(v: &[f32]) -> __m256;
    unsafe fn i32x8<const LEN: usize>(v: &[i32]) -> __m256i;
}

/// A weight format's group operations on the x86 variant `I`.
pub(super) trait Fmt<I>: Format {
    /// Rows per tile for one token: 2 or 4.
    const DECODE_ROWS: usize;
    /// `Some(s)`: [`Fmt::dot`] exceeds `Σ w·x` by `Σx << s` per block.
    const SHIFT: Option<i32>;
    /// One row's group, prepared.
    type W: Copy;
    /// One token's group, prepared.
    type X: Copy;
    /// Blocks `0..LEN` of a weight group at `p` (the rest zero).
    ///
    /// # Safety
    /// `LEN·QB` bytes at `p` readable; the CPU has `I`'s features.
    unsafe fn load_w<const LEN: usize>(p: *const u8) -> Self::W;
    /// Blocks `0..LEN` of an activation group at `p` (the rest zero).
    ///
    /// # Safety
    /// `32·LEN` bytes at `p` readable; the CPU has `I`'s features.
    unsafe fn load_x<const LEN: usize>(p: *const i8) -> Self::X;
    /// The exact dot of each block, plus `Σx << SHIFT` (lane = block).
    ///
    /// # Safety
    /// The CPU has `I`'s features.
    unsafe fn dot(w: &Self::W, x: &Self::X) -> __m256i;
}

/// An x86 variant's entries into the tiles: each level of the driver below ([`decode_tiles`],
/// [`row_tile`], [`tile`], [`group`]) under the variant's `#[target_feature]`, as `#[inline]`
/// functions (implemented by [`tile_entries`]). Each generic level is `#[inline(always)]` into its
/// entry and calls the next level through the entry, so LLVM sees the functions it saw when every
/// variant had its own copy of the tiles, and makes the same inlining choices.
pub(super) trait Tiles: Loads + Sized {
    /// # Safety
    /// As [`decode_tiles`].
    unsafe fn decode_tiles<F: Fmt<Self>, const R: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
    ) -> usize;

    /// # Safety
    /// As [`row_tile`].
    unsafe fn row_tile<F: Fmt<Self>, const R: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
        r: usize,
    );

    /// # Safety
    /// As [`tile`].
    unsafe fn tile<F: Fmt<Self>, const R: usize, const T: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
        r: usize,
        t: usize,
    );

    /// # Safety
    /// As [`group`].
    unsafe fn group<F: Fmt<Self>, const R: usize, const T: usize, const LEN: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        r: usize,
        t: usize,
        g: usize,
        acc: &mut [[__m256; R]; T],
    );
}

/// Implements [`Tiles`] for `$isa` with `#[target_feature(enable = $features)]`.
macro_rules! tile_entries {
    ($isa:ty, $features:literal) => {
        impl $crate::x86_64::qtile::Tiles for $isa {
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn decode_tiles<F: $crate::x86_64::qtile::Fmt<Self>, const R: usize>(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                yt: &mut [f32],
            ) -> usize {
                // SAFETY: the caller's contract.
                unsafe { $crate::x86_64::qtile::decode_tiles::<Self, F, R>(w, x, yt) }
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn row_tile<F: $crate::x86_64::qtile::Fmt<Self>, const R: usize>(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                yt: &mut [f32],
                r: usize,
            ) {
                // SAFETY: the caller's contract.
                unsafe { $crate::x86_64::qtile::row_tile::<Self, F, R>(w, x, yt, r) }
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn tile<F: $crate::x86_64::qtile::Fmt<Self>, const R: usize, const T: usize>(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                yt: &mut [f32],
                r: usize,
                t: usize,
            ) {
                // SAFETY: the caller's contract.
                unsafe { $crate::x86_64::qtile::tile::<Self, F, R, T>(w, x, yt, r, t) }
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn group<
                F: $crate::x86_64::qtile::Fmt<Self>,
                const R: usize,
                const T: usize,
                const LEN: usize,
            >(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                r: usize,
                t: usize,
                g: usize,
                acc: &mut [[core::arch::x86_64::__m256; R]; T],
            ) {
                // SAFETY: the caller's contract.
                unsafe { $crate::x86_64::qtile::group::<Self, F, R, T, LEN>(w, x, r, t, g, acc) }
            }
        }
    };
}
pub(super) use tile_entries;

/// Every row and token.
///
/// # Safety
/// The CPU has `I`'s features; the shapes passed `check_matmul_q`.
#[inline(always)]
pub(super) unsafe fn matmul<I: Tiles, F: Fmt<I>>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let (rows, n) = (w.rows, x.n);
    // LOOP 2: row tiles (independent: a caller may split these across threads), then single rows.
    let mut r = 0;
    if n == 1 {
        // SAFETY: forwarded preconditions.
        r = unsafe {
            if F::DECODE_ROWS == 4 {
                I::decode_tiles::<F, 4>(w, x, yt)
            } else {
                I::decode_tiles::<F, 2>(w, x, yt)
            }
        };
    } else {
        while r + ROWS <= rows {
            // SAFETY: rows r..r+ROWS exist; tokens are bounded inside.
            unsafe { I::row_tile::<F, ROWS>(w, x, yt, r) };
            r += ROWS;
        }
    }
    while r < rows {
        // SAFETY: row r exists.
        unsafe { I::row_tile::<F, 1>(w, x, yt, r) };
        r += 1;
    }
}

/// One token: tiles of `R` rows while they last; returns the first row not done.
///
/// # Safety
/// As [`matmul`], with `x.n == 1`.
#[inline(always)]
pub(super) unsafe fn decode_tiles<I: Tiles, F: Fmt<I>, const R: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) -> usize {
    let mut r = 0;
    while r + R <= w.rows {
        // SAFETY: rows r..r+R exist, token 0 < n.
        unsafe { I::tile::<F, R, 1>(w, x, yt, r, 0) };
        r += R;
    }
    r
}

/// Rows `r..r+R` against every token.
///
/// # Safety
/// As [`matmul`], and `r + R <= w.rows`.
#[inline(always)]
pub(super) unsafe fn row_tile<I: Tiles, F: Fmt<I>, const R: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
) {
    // LOOP 1: token tiles, then single tokens.
    let mut t = 0;
    while t + TOKENS <= x.n {
        // SAFETY: tokens t..t+TOKENS exist, rows by the caller.
        unsafe { I::tile::<F, R, TOKENS>(w, x, yt, r, t) };
        t += TOKENS;
    }
    while t < x.n {
        // SAFETY: token t exists.
        unsafe { I::tile::<F, R, 1>(w, x, yt, r, t) };
        t += 1;
    }
}

/// `yt[(r+i)·n + t+j]` for `i < R`, `j < T`. Requires `r + R <= w.rows`, `t + T <= x.n` and the
/// [`matmul`] preconditions.
#[inline(always)]
pub(super) unsafe fn tile<I: Tiles, F: Fmt<I>, const R: usize, const T: usize>(
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
        unsafe { I::group::<F, R, T, G>(w, x, r, t, g, &mut acc) };
        g += G;
    }
    // SAFETY: as above, with the remaining nb − g < G blocks.
    unsafe {
        match nb - g {
            1 => I::group::<F, R, T, 1>(w, x, r, t, g, &mut acc),
            2 => I::group::<F, R, T, 2>(w, x, r, t, g, &mut acc),
            3 => I::group::<F, R, T, 3>(w, x, r, t, g, &mut acc),
            4 => I::group::<F, R, T, 4>(w, x, r, t, g, &mut acc),
            5 => I::group::<F, R, T, 5>(w, x, r, t, g, &mut acc),
            6 => I::group::<F, R, T, 6>(w, x, r, t, g, &mut acc),
            7 => I::group::<F, R, T, 7>(w, x, r, t, g, &mut acc),
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
/// [`matmul`] preconditions.
#[inline(always)]
pub(super) unsafe fn group<
    I: Loads,
    F: Fmt<I>,
    const R: usize,
    const T: usize,
    const LEN: usize,
>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    r: usize,
    t: usize,
    g: usize,
    acc: &mut [[__m256; R]; T],
) {
    let nb = w.k / QK;
    let min = F::MIN;
    // Row i's group: prepared quants, scales, minimums (q4_1).
    let row = |i: usize| (r + i) * nb + g; // the group's first block in the weight planes
    let load = |wb: usize| w.qs[wb * F::QB..(wb + LEN) * F::QB].as_ptr();
    // SAFETY: the slice holds the group's LEN blocks.
    let mut wv = [unsafe { F::load_w::<LEN>(load(row(0))) }; R];
    let (mut dw, mut m) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for i in 0..R {
        let wb = row(i);
        if i > 0 {
            // SAFETY: the slice holds the group's LEN blocks.
            wv[i] = unsafe { F::load_w::<LEN>(load(wb)) };
        }
        dw[i] = I::f16x8::<LEN>(&w.d[wb..wb + LEN]);
        if min {
            m[i] = I::f16x8::<LEN>(&w.m[wb..wb + LEN]);
        }
    }
    for (j, acc_j) in acc.iter_mut().enumerate() {
        let xb = (t + j) * nb + g; // this token's group in the activation planes
                                   // SAFETY: the slice holds the group's LEN blocks.
        let xv = unsafe { F::load_x::<LEN>(x.qs[xb * QK..(xb + LEN) * QK].as_ptr()) };
        let dx = I::f32x8::<LEN>(&x.d[xb..xb + LEN]);
        let sx = if F::SHIFT.is_some() || min {
            I::i32x8::<LEN>(&x.sum[xb..xb + LEN])
        } else {
            _mm256_setzero_si256()
        };
        // (A shift by a constant count compiles to the immediate form.)
        let offset = _mm256_sll_epi32(sx, _mm_cvtsi32_si128(F::SHIFT.unwrap_or(0)));
        let dxs = if min {
            _mm256_mul_ps(dx, _mm256_cvtepi32_ps(sx))
        } else {
            _mm256_setzero_ps()
        };
        for (a, (wv, (dw, m))) in acc_j.iter_mut().zip(wv.iter().zip(dw.iter().zip(&m))) {
            let idot = match F::SHIFT {
                Some(_) => _mm256_sub_epi32(F::dot(wv, &xv), offset),
                None => F::dot(wv, &xv),
            };
            if min {
                *a = _mm256_fmadd_ps(*m, dxs, *a);
            }
            *a = _mm256_fmadd_ps(_mm256_mul_ps(*dw, dx), _mm256_cvtepi32_ps(idot), *a);
        }
    }
}
