//! The dense products (`matmul_f32`, `matmul_f16`, `matmul_bf16`) of every SIMD variant: one tile
//! driver over an ISA's f32 vectors ([`Lanes`]) and its element loads ([`Elem`]).
//!
//! A product works on tiles of [`ROWS`] weight rows × `TOKENS` tokens (the ISA's choice, so that the
//! accumulators, one row of weight vectors and one token vector fit its registers), stepping `k` by
//! [`Lanes::STEP`]: each weight load is reused for every token of the tile and each token load for
//! every row, so a tile reads `ROWS + TOKENS` vectors per `ROWS × TOKENS` multiply-adds. Row and token
//! tails take smaller tiles; the `k` tail is one masked step where the ISA has masks, else a scalar
//! remainder. Callers never pad.
//!
//! Results match [`crate::scalar`] up to summation order: lanes accumulate separately and are added at
//! the end, and multiply-adds are fused.

use super::Entries;
use crate::scalar;

/// Weight rows per tile.
pub(crate) const ROWS: usize = 4;

/// An ISA's step along `k` as the dense products (and `axpy_*`, `weighted_sum_*`) use it: a vector of
/// [`Lanes::STEP`] f32 lanes, NEON's a pair of 4-lane vectors. The methods are `#[inline(always)]` and
/// compiled into the ISA's entries (see [`super`]).
pub(crate) trait Lanes: Sized {
    /// One step (an accumulator, a row's or a token's elements).
    type V: Copy;
    /// Which lanes of a step are read: all ([`Lanes::FULL`]) or the first few of a masked tail.
    type Mask: Copy;
    /// Elements per step.
    const STEP: usize;
    /// Whether a tail is one masked step; else its elements are taken one by one.
    const MASKED_TAIL: bool;
    const FULL: Self::Mask;
    /// Rows `weighted_sum_*` takes at once: 1, or up to 4 (`weighted_group` in [`super::vector`]).
    const WEIGHTED_ROWS: usize;
    /// Steps per column block of `weighted_group` (at most 4).
    const GROUP_STEPS: usize = 4;

    /// The first `lanes` (`< STEP`) lanes. Only called when [`Lanes::MASKED_TAIL`].
    fn mask(lanes: usize) -> Self::Mask;

    /// # Safety
    /// The CPU has the ISA's features (likewise for every method below).
    unsafe fn zero() -> Self::V;

    unsafe fn splat(v: f32) -> Self::V;

    /// `acc + w·x`, fused.
    unsafe fn fma(acc: Self::V, w: Self::V, x: Self::V) -> Self::V;

    /// The f32 lanes at `p` selected by `m` (the others zero and not read).
    ///
    /// # Safety
    /// The selected lanes are readable.
    unsafe fn load(p: *const f32, m: Self::Mask) -> Self::V;

    /// Stores the lanes selected by `m` (the others are not written).
    ///
    /// # Safety
    /// The selected lanes are writable.
    unsafe fn store(p: *mut f32, v: Self::V, m: Self::Mask);

    /// The sum of an accumulator's lanes.
    unsafe fn sum(v: Self::V) -> f32;

    /// Every accumulator's [`Lanes::sum`] (`acc[j][i]` is row `i` × token `j` of a tile), where the
    /// ISA has a faster way than one at a time; `None` otherwise. Only for a [`Lanes::MASKED_TAIL`]
    /// ISA (the sums are final).
    #[inline(always)]
    unsafe fn sums<const R: usize, const T: usize>(
        _acc: &[[Self::V; R]; T],
    ) -> Option<[[f32; R]; T]> {
        None
    }

    /// One row of `weighted_sum_*` (see [`super::vector::weighted_one`], the default).
    ///
    /// # Safety
    /// As [`super::vector::weighted_one`].
    #[inline(always)]
    unsafe fn weighted_one<W: Elem<Self>>(p: &[f32], v: &[W], out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { super::vector::weighted_one::<Self, W>(p, v, out) }
    }
}

/// A weight element type the ISA `I` loads as f32 lanes.
pub(crate) trait Elem<I: Lanes>: Copy + Into<f32> {
    /// The elements at `p` selected by `m`, converted to f32 exactly.
    ///
    /// # Safety
    /// The selected elements are readable; the CPU has `I`'s features.
    unsafe fn load(p: *const Self, m: I::Mask) -> I::V;

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.into()
    }
}

/// The table entry of `I`: [`scalar::matmul_f32`] and friends (same contract, same panics).
pub(crate) fn matmul<I: Entries, W: Elem<I>>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
) {
    let rows = scalar::check_matmul(w.len(), k, x.len(), n, yt.len());
    // SAFETY: only instantiated in `I`'s tables, built after detection confirmed `I`'s features;
    // `check_matmul` proved the slice lengths the tiles rely on.
    unsafe { I::matmul(w, k, x, n, yt, rows) }
}

/// Every row and token, in tiles of [`ROWS`] × `TOKENS` (`TOKENS` 2 or 4): the body of the ISA's
/// [`Entries::matmul`].
///
/// # Safety
/// The CPU has `I`'s features; `w.len() == rows·k`, `x.len() >= n·k`, `yt.len() == rows·n`, `k > 0`.
#[inline(always)]
pub(crate) unsafe fn matmul_tiles<I: Lanes, W: Elem<I>, const TOKENS: usize>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
    rows: usize,
) {
    // LOOP 2: row tiles (independent: a caller may split these across threads).
    let mut r = 0;
    while r + ROWS <= rows {
        // SAFETY: rows r..r+ROWS exist by the loop bounds; tokens are bounded inside.
        unsafe { row_tile::<I, W, ROWS, TOKENS>(w, k, x, n, yt, r) };
        r += ROWS;
    }
    // SAFETY: as above, with the remaining 1..3 rows.
    unsafe {
        match rows - r {
            3 => row_tile::<I, W, 3, TOKENS>(w, k, x, n, yt, r),
            2 => row_tile::<I, W, 2, TOKENS>(w, k, x, n, yt, r),
            1 => row_tile::<I, W, 1, TOKENS>(w, k, x, n, yt, r),
            _ => {}
        }
    }
}

/// Rows `r..r+R` against every token. Requires `(r+R)·k <= w.len()` and the [`matmul_tiles`]
/// preconditions.
#[inline(always)]
unsafe fn row_tile<I: Lanes, W: Elem<I>, const R: usize, const TOKENS: usize>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
    r: usize,
) {
    // LOOP 1: token tiles, then one tile of the 1..TOKENS-1 tokens left.
    let mut t = 0;
    while t + TOKENS <= n {
        // SAFETY: tokens t..t+TOKENS exist, rows by the caller.
        unsafe { tile::<I, W, R, TOKENS>(w, k, x, n, yt, r, t) };
        t += TOKENS;
    }
    // SAFETY: tokens t..n exist, rows by the caller (the `TOKENS` tests fold away).
    unsafe {
        match n - t {
            3 if TOKENS > 3 => tile::<I, W, R, 3>(w, k, x, n, yt, r, t),
            2 if TOKENS > 2 => tile::<I, W, R, 2>(w, k, x, n, yt, r, t),
            1 => tile::<I, W, R, 1>(w, k, x, n, yt, r, t),
            _ => {}
        }
    }
}

/// `yt[(r+i)·n + t+j] = Σ_c w[(r+i)·k + c] · x[(t+j)·k + c]` for `i < R`, `j < T`.
/// Requires `(r+R)·k <= w.len()`, `(t+T)·k <= x.len()`, `(r+R-1)·n + t+T <= yt.len()`.
#[inline(always)]
unsafe fn tile<I: Lanes, W: Elem<I>, const R: usize, const T: usize>(
    w: &[W],
    k: usize,
    x: &[f32],
    n: usize,
    yt: &mut [f32],
    r: usize,
    t: usize,
) {
    debug_assert!(
        (r + R) * k <= w.len() && (t + T) * k <= x.len() && (r + R - 1) * n + t + T <= yt.len()
    );
    let wp = w[r * k..].as_ptr();
    let xp = x[t * k..].as_ptr();
    // Token-major: acc[j][i] sums row i × token j.
    let mut acc = [[I::zero(); R]; T];
    // LOOP 0: k in steps of STEP lanes, then the tail.
    let mut c = 0;
    while c + I::STEP <= k {
        // SAFETY: c + STEP <= k: elements c..c+STEP of the tile's rows and tokens exist.
        unsafe { step::<I, W, R, T>(wp, xp, k, c, I::FULL, &mut acc) };
        c += I::STEP;
    }
    if I::MASKED_TAIL && c < k {
        // SAFETY: the mask selects elements c..k of each row and token.
        unsafe { step::<I, W, R, T>(wp, xp, k, c, I::mask(k - c), &mut acc) };
        c = k;
    }
    let yp = yt.as_mut_ptr();
    if let Some(sums) = I::sums(&acc) {
        for (j, sums) in sums.iter().enumerate() {
            for (i, &s) in sums.iter().enumerate() {
                // SAFETY: (r+i)·n + t+j < (r+R-1)·n + t+T <= yt.len() (the requirement above).
                unsafe { *yp.add((r + i) * n + t + j) = s };
            }
        }
        return;
    }
    for (j, acc_j) in acc.iter().enumerate() {
        for (i, &a) in acc_j.iter().enumerate() {
            let mut s = I::sum(a);
            for cc in c..k {
                s += w[(r + i) * k + cc].to_f32() * x[(t + j) * k + cc];
            }
            // SAFETY: as above.
            unsafe { *yp.add((r + i) * n + t + j) = s };
        }
    }
}

/// Adds the lanes selected by `m` from `k` offset `c` of every (row, token) pair to `acc`.
///
/// # Safety
/// The selected elements of rows `wp + i·k + c` (`i < R`) and tokens `xp + j·k + c` (`j < T`) are
/// readable; the CPU has `I`'s features.
#[inline(always)]
unsafe fn step<I: Lanes, W: Elem<I>, const R: usize, const T: usize>(
    wp: *const W,
    xp: *const f32,
    k: usize,
    c: usize,
    m: I::Mask,
    acc: &mut [[I::V; R]; T],
) {
    let mut wv = [I::zero(); R];
    for (i, v) in wv.iter_mut().enumerate() {
        // SAFETY: the selected elements of row i (the caller's contract).
        *v = unsafe { W::load(wp.add(i * k + c), m) };
    }
    for (j, acc_j) in acc.iter_mut().enumerate() {
        // SAFETY: the selected elements of token j.
        let xv = unsafe { I::load(xp.add(j * k + c), m) };
        for (a, &wi) in acc_j.iter_mut().zip(&wv) {
            *a = I::fma(*a, wi, xv);
        }
    }
}
