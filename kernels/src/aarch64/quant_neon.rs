//! Plain NEON (Armv8.0) quantized kernels, and the tile code the dotprod and i8mm variants share.
//!
//! # Products
//!
//! `matmul_<w>_q8` computes, like [`crate::quant::scalar`], `yt[r·n + t] = Σ_b term(r, t, b)` with the
//! block terms of the scalar module docs. It works on tiles of `R` weight rows × `T` tokens and walks
//! the row's blocks in groups of four:
//!
//! 1. *Integer dots* ([`Isums`]): for every (row, token) pair of the tile, one `int32x4` whose lane `q`
//!    is block `b+q`'s exact dot `Σ qw·qx` (q4 nibbles unpacked to `i8` as stored, `0..=15`; for
//!    q4_0, whose weights are `q − 8`, step 2 subtracts `8·sx` from the dot once per block, which is
//!    exact and saves two vector subtractions per block and row; q5_1's values load as `q − 16` and
//!    step 2 adds `16·sx`, see [`super::quant_gguf`]). Plain NEON multiplies with `smull`
//!    into i16 (any i8 product fits) and adds pairs into i32 with `sadalp`; dotprod uses `sdot`; i8mm
//!    `smmla` (see the sibling modules).
//! 2. *Scaling*: the four dots (for q4_0 less `8·sx`, for q5_1 plus `16·sx`) convert exactly to f32
//!    (`|idot| ≤ 32·128·127 < 2²⁴`) and are fused into an f32 accumulator per pair as
//!    `idot · (dw·dx)`, plus `(m) · (dx·sx)` for q4_1 and q5_1.
//! 3. At the end of the row, the accumulator's four lanes are added: `yt` differs from the scalar
//!    result only in the order of the f32 additions and the fused multiply-adds.
//!
//! A last group of fewer than four blocks loads its scales into zero-padded lanes, so it contributes
//! exact zeros. Row and token tails use smaller tiles: callers never pad. Tiles are 4 × 1 for decode
//! (`n == 1`: one activation load serves 4 rows) and 2 × 2 otherwise (i8mm: 4 × 2).
//!
//! # How the shared code gets each ISA's features
//!
//! Each ISA implements [`Isa::tile`] as a `#[target_feature]` function that calls the generic [`tile`]
//! here (the [`isa`] macro writes it); everything below that is `#[inline(always)]`, and the
//! `sdot`/`smmla` wrappers (`#[inline]`, `#[target_feature]`) inline into it, as [`crate::simd`]
//! describes. NEON intrinsics are baseline on aarch64, so these `unsafe fn`s call them without an
//! `unsafe` block of their own; memory accesses still get one, with `// SAFETY:`.

use core::arch::aarch64::*;
use core::marker::PhantomData;

use half::f16;

use super::neon::Neon;
use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::{Format, MatmulQ, MatmulRows8, Q4_0, Q4_1, Q8_0};

/// Blocks per group: the lanes of an `int32x4`/`float32x4`.
const GROUP: usize = 4;

/// A weight format as the tile code sees it: how one block's quants become 32 signed bytes.
pub(super) trait Blocks: Format {
    /// Bytes of the `aux` plane per block (high bits; 0 for most formats).
    const AB: usize = Self::FORMAT.aux_bytes_per_block();

    /// `o` where [`Blocks::load`] returns the values `v` of a format whose weights are `v − o`: the
    /// tile then subtracts `o·sx` from each block's integer dot (8 for q4_0, whose nibbles load as
    /// stored; −16 for q5_1, whose 5-bit values load as `q − 16`). 0, 8 or −16.
    const OFFSET: i32 = 0;

    /// Whether an `sdot` accumulator starts from zeros loaded from memory (a load port) rather than
    /// from `movi` (a vector pipe): the 4-bit and 5-bit loops are bound by the vector pipes, q8_0's
    /// (twice the weight loads, nothing to unpack) sooner by the load ports (llvm-mca, Kunpeng 920:
    /// its whole call 8% slower with loaded zeros).
    const ZERO_LOADED: bool = true;

    /// The block whose quants are at `p` and whose `aux` bytes are at `aux` as signed values:
    /// elements `0..16` and `16..32`.
    ///
    /// # Safety
    /// `p..p + Self::QB` and `aux..aux + Self::AB` must be readable.
    unsafe fn load(p: *const u8, aux: *const u8) -> [int8x16_t; 2];
}

impl Blocks for Q8_0 {
    const ZERO_LOADED: bool = false;

    #[inline(always)]
    unsafe fn load(p: *const u8, _: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 32 readable bytes (the caller's contract); `ld1` needs no alignment.
        unsafe { [vld1q_s8(p.cast()), vld1q_s8(p.add(16).cast())] }
    }
}

/// Low nibbles are elements 0..16, high nibbles 16..32 (the format's nibble order), as `0..=15`.
#[inline(always)]
pub(super) unsafe fn load_nibbles(p: *const u8) -> [int8x16_t; 2] {
    // SAFETY: 16 readable bytes (the caller's contract).
    let v = unsafe { vld1q_u8(p) };
    [
        vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
    ]
}

/// The stored nibbles `0..=15`, not `q − 8`: the tile takes q4_0's `− 8` once per block as
/// `idot − 8·sx` (with the activations' block sums), exactly, instead of per element.
impl Blocks for Q4_0 {
    const OFFSET: i32 = 8;

    #[inline(always)]
    unsafe fn load(p: *const u8, _: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 16 readable bytes (the caller's contract).
        unsafe { load_nibbles(p) }
    }
}

impl Blocks for Q4_1 {
    #[inline(always)]
    unsafe fn load(p: *const u8, _: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 16 readable bytes (the caller's contract).
        unsafe { load_nibbles(p) }
    }
}

/// Where a tile's rows and tokens start: one pointer per row into each weight plane and per token into
/// each activation plane (all at block 0).
pub(super) struct Tile<const R: usize, const T: usize> {
    pub wq: [*const u8; R],
    /// Each row's `aux` bytes (dangling, never read, for a format without them).
    pub wa: [*const u8; R],
    pub wd: [*const f16; R],
    /// Unused (dangling) unless the format has minimums.
    pub wm: [*const f16; R],
    pub xq: [*const i8; T],
    pub xd: [*const f32; T],
    pub xs: [*const i32; T],
}

impl<const R: usize, const T: usize> Tile<R, T> {
    /// Rows `r..r+R`, tokens `t..t+T`. Panics (bounds checks, once per tile) if they do not exist.
    /// Inlined: called once per tile, and a decode row is short (18 blocks at k = 576).
    #[inline(always)]
    fn new(w: &QWeight<'_>, x: &Q8ActsRef<'_>, r: usize, t: usize) -> Tile<R, T> {
        let (nb, rb) = (w.blocks_per_row(), w.row_bytes());
        let ab = nb * w.format.aux_bytes_per_block();
        let has_min = w.format.has_min();
        Tile {
            wq: core::array::from_fn(|i| w.qs[(r + i) * rb..].as_ptr()),
            wa: core::array::from_fn(|i| w.aux[(r + i) * ab..].as_ptr()),
            wd: core::array::from_fn(|i| w.d[(r + i) * nb..].as_ptr()),
            wm: core::array::from_fn(|i| {
                if has_min {
                    w.m[(r + i) * nb..].as_ptr()
                } else {
                    w.m.as_ptr()
                }
            }),
            xq: core::array::from_fn(|j| x.qs[(t + j) * w.k..].as_ptr()),
            xd: core::array::from_fn(|j| x.d[(t + j) * nb..].as_ptr()),
            xs: core::array::from_fn(|j| x.sum[(t + j) * nb..].as_ptr()),
        }
    }
}

/// Step 1 of the module docs: the exact integer dots of a group of blocks.
pub(super) trait Isums {
    /// For row `i` and token `j` of `tile`, lane `q` of `out[i][j]` is the dot of block `b + q` for
    /// `q < g`, and 0 for `g <= q < 4`.
    ///
    /// # Safety
    /// `1 <= g <= 4`; blocks `b..b+g` exist in every row and token of `tile`; the CPU has the
    /// implementor's features.
    unsafe fn isums<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
        g: usize,
    ) -> Dots<R, T>;
}

/// One block's integer dot, as four i32 lanes whose sum is `Σ w·x` over the 32 elements.
pub(super) trait BlockDot {
    /// # Safety
    /// The CPU has the implementor's features.
    ///
    /// `loaded`: an accumulator that needs a start of zeros loads it from memory rather than
    /// setting it by `movi` ([`Blocks::ZERO_LOADED`]).
    unsafe fn dot(w: [int8x16_t; 2], x: [int8x16_t; 2], loaded: bool) -> int32x4_t;
}

/// [`Isums`] one block and one (row, token) pair at a time with `D`, four blocks reduced by `addp`.
pub(super) struct ByBlock<D>(PhantomData<D>);

/// Every (row, token) pair's four i32 lanes of a tile.
pub(super) type Dots<const R: usize, const T: usize> = [[int32x4_t; T]; R];

/// How an [`Isums`] takes one block: every (row, token) pair's partial dots of block `b`, in the
/// implementor's layout.
pub(super) trait OneBlock {
    /// # Safety
    /// Block `b` exists in every row and token of `tile`; the CPU has the implementor's features.
    unsafe fn block<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
    ) -> Dots<R, T>;
}

/// Block `b + k` of every pair by [`OneBlock::block`] if the group's `g` blocks from `b` include it,
/// else zeros; the test folds away where `g` is known (full groups, the tail's arms). Safety as
/// [`Isums::isums`].
#[inline(always)]
unsafe fn block_or_zero<P: OneBlock, F: Blocks, const R: usize, const T: usize>(
    tile: &Tile<R, T>,
    b: usize,
    g: usize,
    k: usize,
) -> Dots<R, T> {
    if k < g {
        // SAFETY: block b + k exists, and the CPU has P's features (the caller's contract).
        unsafe { P::block::<F, R, T>(tile, b + k) }
    } else {
        [[vdupq_n_s32(0); T]; R]
    }
}

/// Blocks `b..b+g` (`1 <= g <= 4`) of a group, zero for the missing ones: four explicit blocks (no
/// array indexed by a loop variable, so everything stays in registers). Safety as [`Isums::isums`].
#[inline(always)]
pub(super) unsafe fn four_blocks<P: OneBlock, F: Blocks, const R: usize, const T: usize>(
    tile: &Tile<R, T>,
    b: usize,
    g: usize,
) -> [Dots<R, T>; 4] {
    // SAFETY: the caller's contract.
    unsafe {
        [
            block_or_zero::<P, F, R, T>(tile, b, g, 0),
            block_or_zero::<P, F, R, T>(tile, b, g, 1),
            block_or_zero::<P, F, R, T>(tile, b, g, 2),
            block_or_zero::<P, F, R, T>(tile, b, g, 3),
        ]
    }
}

impl<D: BlockDot> OneBlock for ByBlock<D> {
    /// Every pair's four partial sums of block `b`.
    #[inline(always)]
    unsafe fn block<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
    ) -> Dots<R, T> {
        let mut wv = [[vdupq_n_s8(0); 2]; R];
        for ((v, p), a) in wv.iter_mut().zip(t.wq).zip(t.wa) {
            // SAFETY: block b of this row exists (the caller's contract).
            *v = unsafe { F::load(p.add(b * F::QB), a.add(b * F::AB)) };
        }
        let mut out = [[vdupq_n_s32(0); T]; R];
        for (j, p) in t.xq.into_iter().enumerate() {
            // SAFETY: block b of this token exists: 32 quants at b·32.
            let xv = unsafe { [vld1q_s8(p.add(b * QK)), vld1q_s8(p.add(b * QK + 16))] };
            for i in 0..R {
                // SAFETY: the CPU has D's features (the caller's contract).
                out[i][j] = unsafe { D::dot(wv[i], xv, F::ZERO_LOADED) };
            }
        }
        out
    }
}

impl<D: BlockDot> Isums for ByBlock<D> {
    /// Blocks `b, b+1` and `b+2, b+3` each reduced by `addp` as soon as they are taken, so that at most
    /// two blocks' dots are live (four would be 16 registers at the 4 × 1 decode tile, and spill).
    #[inline(always)]
    unsafe fn isums<F: Blocks, const R: usize, const T: usize>(
        t: &Tile<R, T>,
        b: usize,
        g: usize,
    ) -> Dots<R, T> {
        // SAFETY: the caller's contract.
        let (lo, hi) = unsafe {
            (
                block_pair::<D, F, R, T>(t, b, g),
                block_pair::<D, F, R, T>(t, b + 2, g.saturating_sub(2)),
            )
        };
        let mut out = [[vdupq_n_s32(0); T]; R];
        for i in 0..R {
            for j in 0..T {
                out[i][j] = vpaddq_s32(lo[i][j], hi[i][j]);
            }
        }
        out
    }
}

/// Blocks `b` and `b + 1` (each if `g` covers it) of every pair, added pairwise: lanes 0–1 of a pair's
/// result are block `b`'s two halves, lanes 2–3 block `b + 1`'s. Safety as [`Isums::isums`], with
/// `g` = blocks left from `b` (0 gives zeros).
#[inline(always)]
unsafe fn block_pair<D: BlockDot, F: Blocks, const R: usize, const T: usize>(
    t: &Tile<R, T>,
    b: usize,
    g: usize,
) -> Dots<R, T> {
    // SAFETY: blocks below b + g exist (the caller's contract).
    let (p, q) = unsafe {
        (
            block_or_zero::<ByBlock<D>, F, R, T>(t, b, g, 0),
            block_or_zero::<ByBlock<D>, F, R, T>(t, b, g, 1),
        )
    };
    let mut out = [[vdupq_n_s32(0); T]; R];
    for i in 0..R {
        for j in 0..T {
            out[i][j] = vpaddq_s32(p[i][j], q[i][j]);
        }
    }
    out
}

/// `smull`/`smull2` into i16 and `sadalp` into i32: exact for any i8 operands.
pub(super) struct Widen;

impl BlockDot for Widen {
    #[inline(always)]
    unsafe fn dot(w: [int8x16_t; 2], x: [int8x16_t; 2], _: bool) -> int32x4_t {
        let mut acc = vdupq_n_s32(0);
        for h in 0..2 {
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w[h]), vget_low_s8(x[h])));
            acc = vpadalq_s16(acc, vmull_high_s8(w[h], x[h]));
        }
        acc
    }
}

/// The `g < 4` values at `p`, zero past `g`: lane by lane, so a row's last group costs three loads
/// rather than a `memcpy` call.
///
/// # Safety
/// `p..p+g` readable, `1 <= g <= 3`.
#[inline(always)]
unsafe fn tail<E: Copy + Default>(p: *const E, g: usize) -> [E; GROUP] {
    let mut pad = [E::default(); GROUP];
    // SAFETY: lanes below g are readable (the caller's contract).
    unsafe {
        pad[0] = p.read();
        if g > 1 {
            pad[1] = p.add(1).read();
        }
        if g > 2 {
            pad[2] = p.add(2).read();
        }
    }
    pad
}

/// `g` values at `p` as one vector by `load`, zero past `g`: `load` reads 4 values at `p` itself, or
/// at a local copy of the last group's `g < 4`.
///
/// # Safety
/// `p..p+g` readable, `1 <= g <= 4`; `load` reads 4 values at the pointer it is given.
#[inline(always)]
unsafe fn load_group<E: Copy + Default, V>(
    p: *const E,
    g: usize,
    load: unsafe fn(*const E) -> V,
) -> V {
    // SAFETY: 4 readable values, or g of them copied into a local array of 4.
    unsafe {
        if g == GROUP {
            load(p)
        } else {
            load(tail(p, g).as_ptr())
        }
    }
}

/// `g` f16 values at `p` as f32 lanes, zero past `g`. Safety as [`load_group`]'s `p` and `g`.
#[inline(always)]
unsafe fn load_f16(p: *const f16, g: usize) -> float32x4_t {
    // SAFETY: the caller's contract; `half::f16` is a `u16`.
    let h = unsafe { load_group(p.cast::<u16>(), g, vld1_u16) };
    vcvt_f32_f16(vreinterpret_f16_u16(h))
}

/// Steps 2 and 3 of the module docs for one tile: rows `r..r+R` × tokens `t..t+T` of `yt`.
///
/// # Safety
/// The CPU has `I`'s features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`; the rows and tokens
/// exist.
#[inline(always)]
pub(super) unsafe fn tile<F: Blocks, I: Isums, const R: usize, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
    t: usize,
) {
    let nb = w.blocks_per_row();
    let tl = Tile::<R, T>::new(w, x, r, t);
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    // LOOP 0: groups of four blocks along k (a dependent chain per pair: the accumulators).
    let mut b = 0;
    while b + GROUP <= nb {
        // SAFETY: blocks b..b+4 <= nb exist in every row and token of the tile; features by the caller.
        unsafe { group::<F, I, R, T>(&tl, &mut acc, b, GROUP) };
        b += GROUP;
    }
    // SAFETY: as above, for the last 1..3 blocks. One arm per count, so that each is compiled with
    // its `g` known: the missing blocks' dots fold away and the scales load without tests.
    unsafe {
        match nb - b {
            0 => {}
            1 => group::<F, I, R, T>(&tl, &mut acc, b, 1),
            2 => group::<F, I, R, T>(&tl, &mut acc, b, 2),
            _ => group::<F, I, R, T>(&tl, &mut acc, b, 3),
        }
    }
    let n = x.n;
    for (i, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            yt[(r + i) * n + t + j] = vaddvq_f32(*a);
        }
    }
}

/// Adds blocks `b..b+g` of every pair of `tl` to `acc`. Safety as [`Isums::isums`].
#[inline(always)]
unsafe fn group<F: Blocks, I: Isums, const R: usize, const T: usize>(
    tl: &Tile<R, T>,
    acc: &mut [[float32x4_t; T]; R],
    b: usize,
    g: usize,
) {
    // SAFETY: the caller's contract.
    let dots = unsafe { I::isums::<F, R, T>(tl, b, g) };
    let mut dw = [vdupq_n_f32(0.0); R];
    let mut dm = [vdupq_n_f32(0.0); R];
    for i in 0..R {
        // SAFETY: blocks b..b+g of every row have scales (and minimums for a format with them).
        unsafe {
            dw[i] = load_f16(tl.wd[i].add(b), g);
            if F::MIN {
                dm[i] = load_f16(tl.wm[i].add(b), g);
            }
        }
    }
    for j in 0..T {
        // SAFETY: blocks b..b+g of every token have a scale and a sum.
        let (dx, sx) = unsafe {
            let sx = if F::MIN || F::OFFSET != 0 {
                load_group(tl.xs[j].add(b), g, vld1q_s32)
            } else {
                vdupq_n_s32(0)
            };
            (load_group(tl.xd[j].add(b), g, vld1q_f32), sx)
        };
        // Both exact: block sums are below 2²⁴ in magnitude (32·127), and so is `idot − o·sx`.
        let dxsx = if F::MIN {
            vmulq_f32(dx, vcvtq_f32_s32(sx))
        } else {
            dx
        };
        for i in 0..R {
            let idot = match F::OFFSET {
                0 => dots[i][j],
                8 => vsubq_s32(dots[i][j], vshlq_n_s32::<3>(sx)),
                -16 => vaddq_s32(dots[i][j], vshlq_n_s32::<4>(sx)),
                _ => unreachable!("Blocks::OFFSET is 0, 8 or -16"),
            };
            let a = vfmaq_f32(acc[i][j], vcvtq_f32_s32(idot), vmulq_f32(dw[i], dx));
            acc[i][j] = if F::MIN { vfmaq_f32(a, dm[i], dxsx) } else { a };
        }
    }
}

/// An ISA's tile entry: [`tile`] compiled with the ISA's target features.
pub(super) trait Isa {
    /// # Safety
    /// As [`tile`].
    unsafe fn tile<F: Blocks, const R: usize, const T: usize>(
        w: &QWeight<'_>,
        x: &Q8ActsRef<'_>,
        yt: &mut [f32],
        r: usize,
        t: usize,
    );
}

/// Every row and token in tiles of `R × T` (`R`, `T` in {1, 2, 4}); tails take the largest of
/// 4, 2, 1 that fits.
///
/// # Safety
/// The CPU has `A`'s features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`.
pub(super) unsafe fn matmul<F: Blocks, A: Isa, const R: usize, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    // LOOP 2: row tiles (independent: a caller may split rows across threads).
    let mut r = 0;
    while r < w.rows {
        let left = w.rows - r;
        let step = if left >= R {
            R
        } else if left >= 2 {
            2
        } else {
            1
        };
        // SAFETY: rows r..r+step exist; the rest is the caller's contract.
        unsafe {
            match step {
                s if s == R => token_tiles::<F, A, R, T>(w, x, yt, r),
                2 => token_tiles::<F, A, 2, T>(w, x, yt, r),
                _ => token_tiles::<F, A, 1, T>(w, x, yt, r),
            }
        }
        r += step;
    }
}

/// LOOP 1: token tiles for rows `r..r+R`. Safety as [`matmul`], and the rows exist.
#[inline(always)]
unsafe fn token_tiles<F: Blocks, A: Isa, const R: usize, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    r: usize,
) {
    let mut t = 0;
    while t < x.n {
        let left = x.n - t;
        let step = if left >= T {
            T
        } else if left >= 2 {
            2
        } else {
            1
        };
        // SAFETY: tokens t..t+step exist; the rest is the caller's contract.
        unsafe {
            match step {
                s if s == T => A::tile::<F, R, T>(w, x, yt, r, t),
                2 => A::tile::<F, R, 2>(w, x, yt, r, t),
                _ => A::tile::<F, R, 1>(w, x, yt, r, t),
            }
        }
        t += step;
    }
}

/// Tile shape for the one-block-at-a-time variants (plain NEON, dotprod): decode (`n == 1`) shares each
/// activation load among 4 rows; otherwise 2 × 2, which keeps the 4 blocks' partial dots of every pair
/// in registers.
///
/// # Safety
/// As [`matmul`].
pub(super) unsafe fn matmul_by_block<F: Blocks, A: Isa>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        if x.n == 1 {
            matmul::<F, A, 4, 1>(w, x, yt)
        } else {
            matmul::<F, A, 2, 2>(w, x, yt)
        }
    }
}

/// Implements [`Isa`] for `$isa`: [`tile`] with `$isums` under `#[target_feature(enable = $features)]`.
macro_rules! isa {
    ($isa:ty, $features:literal, $isums:ty) => {
        impl $crate::aarch64::quant_neon::Isa for $isa {
            #[target_feature(enable = $features)]
            unsafe fn tile<
                F: $crate::aarch64::quant_neon::Blocks,
                const R: usize,
                const T: usize,
            >(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                yt: &mut [f32],
                r: usize,
                t: usize,
            ) {
                // SAFETY: the caller's contract, which includes the features `$isums` needs.
                unsafe { $crate::aarch64::quant_neon::tile::<F, $isums, R, T>(w, x, yt, r, t) }
            }
        }
    };
}
pub(super) use isa;

isa!(Neon, "neon", ByBlock<Widen>);

impl<F: Blocks> MatmulQ<F> for Neon {
    unsafe fn matmul_q(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { matmul_by_block::<F, Neon>(w, x, yt) }
    }
}

/// `rows8` q4_0, q8_0 and q4_1 through the layout's copy into `rowsplit` order (no kernel of its own).
impl MatmulRows8<Q4_0> for Neon {}
impl MatmulRows8<Q8_0> for Neon {}
impl MatmulRows8<Q4_1> for Neon {}
