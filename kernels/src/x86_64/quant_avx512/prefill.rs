//! Several tokens (prefill): sixteen weight rows in the sixteen i32 lanes of a vector, so `vpdpbusd`
//! sums a whole block per lane and no block dot needs a horizontal reduction. Every block format
//! goes through it: q8_0, q4_0, q4_1 and the GGUF formats ([`crate::quant::kquant`]).
//!
//! For a tile of [`PR`] rows, the weights of a chunk of up to [`KC`] 32-element blocks are repacked
//! once into a stack buffer ([`repack`]): per block, eight vectors of unsigned quants, vector `s`
//! holding elements `4s..4s+4` of every row (gathers of one dword per row, widened and decoded per
//! format), and the rows' scales (and minimums) as f32 lanes, one per 32-element block or per
//! 16-element half of it (the K-quants with 16-element sub-blocks). Every token then reuses them:
//! for block `b` and token `t`, eight `vpdpbusd` against the token's quants broadcast four at a
//! time (`{1to16}`) give the sixteen rows' exact dots of the block (or of each half), the format's
//! offset times the token's sum over them is subtracted (q8_0 `128·Σx`, q4_0 `8·Σx`, …) and one
//! FMA adds `(dw·dx)·idot` (the formats with a minimum a second, `m·(dx·Σx)`). [`PT`] tokens at a
//! time keep eight weight vectors, eight dot chains and eight accumulators in registers. The
//! repacking is paid once per row tile and chunk, against `n` tokens of products.
//!
//! The 16-element halves' offsets and minimums need each token's sums over both halves of every
//! block: computed once per call, times the offset (a heap buffer: only these formats, and only
//! for several tokens), so that a tile subtracts a broadcast from memory.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::Format;

mod repack;

use repack::{off, parts, Out};

/// Rows per tile: one per i32 lane.
const PR: usize = 16;
/// Tokens per tile.
const PT: usize = 8;
/// 32-element blocks per repacked chunk (64 KiB of quants; a whole number of K-quant super-blocks);
/// longer rows run in chunks whose results add up.
const KC: usize = 128;

/// Whether [`matmul`] takes this weight: enough tokens to amortize the repacking (below eight the
/// group tiles are as fast, measured on the SmolLM2 shapes from memory), and a row tile's byte
/// offsets fit the gathers' i32 indices.
pub(in crate::x86_64) fn suits(w: &QWeight<'_>, n: usize) -> bool {
    let aux = w.blocks_per_row() * w.format.aux_bytes_per_block();
    repack::takes(w.format) && n >= 8 && PR * w.row_bytes().max(aux) < i32::MAX as usize
}

/// `yt[r·n + t]` for every row and token, or with `TM` (token-major) `yt[t·rows + r]`.
/// Preconditions: the shapes passed `check_matmul_q`, and [`suits`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::x86_64) unsafe fn matmul<F: Format, const TM: bool>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let (rows, n, nb) = (w.rows, x.n, w.k / QK);
    // Each token's sums over the 16-element halves of its blocks (formats with two parts), times
    // the format's offset where it has one (then that is all the tiles need of them).
    let o = match off(F::FORMAT) {
        0 => 1,
        o => o,
    };
    let s16: Vec<i32> = if parts(F::FORMAT) == 2 {
        x.qs[..n * w.k]
            .chunks_exact(16)
            .map(|q| o * q.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect()
    } else {
        Vec::new()
    };
    // Repacked weights: per block eight vectors of quants, per part one of scales and one of
    // minimums.
    let mut wq = MaybeUninit::<[__m512i; 8 * KC]>::uninit();
    let mut wd = MaybeUninit::<[__m512; 2 * KC]>::uninit();
    let mut wm = MaybeUninit::<[__m512; 2 * KC]>::uninit();
    let out = Out {
        q: wq.as_mut_ptr().cast(),
        d: wd.as_mut_ptr().cast(),
        m: wm.as_mut_ptr().cast(),
    };
    let bufs = (out.q.cast_const(), out.d.cast_const(), out.m.cast_const());
    // LOOP 3: row tiles (independent).
    for r0 in (0..rows).step_by(PR) {
        let rr = PR.min(rows - r0);
        // LOOP 2: chunks of blocks.
        for c0 in (0..nb).step_by(KC) {
            let kc = KC.min(nb - c0);
            // SAFETY: rows r0..r0+rr and blocks c0..c0+kc exist (loop bounds; KC and c0 are whole
            // super-blocks, as is nb); `kc <= KC` blocks are written, and the tiles below read only
            // those; `suits` bounds the gathers' offsets.
            unsafe { repack::repack::<F>(w, r0, rr, c0, kc, &out) };
            let first = c0 == 0;
            // The next chunk to repack, fetched from memory while this one is used: its rows are
            // spread over the token tiles (the gathers would otherwise wait on memory).
            let next = if c0 + KC < nb {
                Some((r0, c0 + KC))
            } else if r0 + PR < rows {
                Some((r0 + PR, 0))
            } else {
                None
            };
            let mut pf = Ahead::new::<F>(w, next, n.div_ceil(PT) * kc);
            let at = At {
                nb,
                c0,
                kc,
                r0,
                rr,
                first,
            };
            // LOOP 1: token tiles, then the remainder.
            let mut t0 = 0;
            while t0 + PT <= n {
                // SAFETY: tokens t0..t0+PT exist; the chunk was repacked above.
                unsafe { tile::<F, PT, TM>(x, &s16, &at, t0, bufs, yt, &mut pf) };
                t0 += PT;
            }
            // SAFETY: as above, for the n − t0 < PT tokens left.
            unsafe {
                match n - t0 {
                    1 => tile::<F, 1, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    2 => tile::<F, 2, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    3 => tile::<F, 3, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    4 => tile::<F, 4, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    5 => tile::<F, 5, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    6 => tile::<F, 6, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    7 => tile::<F, 7, TM>(x, &s16, &at, t0, bufs, yt, &mut pf),
                    _ => {}
                }
            }
        }
    }
}

/// Where a tile's chunk lies: blocks `c0..c0+kc` of `nb` per row, rows `r0..r0+rr`; `first` when
/// the outputs are stored rather than added to.
struct At {
    nb: usize,
    c0: usize,
    kc: usize,
    r0: usize,
    rr: usize,
    first: bool,
}

/// Prefetches the next chunk's quants (and `aux` bytes) a few lines per block step, spread evenly
/// over the steps of the current chunk (a burst would stall on the core's outstanding-miss limit),
/// and its scales and minimums at once.
struct Ahead {
    /// The next chunk's first row's first quant (and aux) byte, bytes per row, lines per row piece.
    base: *const u8,
    stride: usize,
    piece: usize,
    abase: *const u8,
    astride: usize,
    apiece: usize,
    /// The next line to issue (row piece `j`, line `o` in it: quants, then aux) and how many are
    /// left.
    j: usize,
    o: usize,
    left: usize,
    /// Lines per step in steps: `credit` grows by `lines` per step and pays `steps` per line issued
    /// (no division in the block loop).
    credit: usize,
    lines: usize,
    steps: usize,
}

impl Ahead {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn new<F: Format>(w: &QWeight<'_>, next: Option<(usize, usize)>, steps: usize) -> Ahead {
        let f = F::FORMAT;
        let (nb, per) = (w.k / QK, f.block_elems() / QK);
        let (nbf, ab) = (nb / per, f.aux_bytes_per_block());
        let mut a = Ahead {
            base: core::ptr::null(),
            stride: 0,
            piece: 1,
            abase: core::ptr::null(),
            astride: 0,
            apiece: 0,
            j: 0,
            o: 0,
            left: 0,
            credit: 0,
            lines: 0,
            steps: steps.max(1),
        };
        let Some((r, c)) = next else {
            return a;
        };
        let (c, kc) = (c / per, KC.min(nb - c) / per); // in format blocks
        let rows = PR.min(w.rows - r);
        let line = |p: *const u16| _mm_prefetch::<_MM_HINT_T0>(p.cast());
        for j in 0..rows {
            let b = (r + j) * nbf + c;
            line(w.d[b..].as_ptr().cast());
            line(w.d[b + kc - 1..].as_ptr().cast());
            if F::MIN {
                line(w.m[b..].as_ptr().cast());
                line(w.m[b + kc - 1..].as_ptr().cast());
            }
        }
        a.base = w.qs[(r * nbf + c) * F::QB..].as_ptr();
        a.stride = nbf * F::QB;
        a.piece = (kc * F::QB).div_ceil(64);
        if ab > 0 {
            a.abase = w.aux[(r * nbf + c) * ab..].as_ptr();
            a.astride = nbf * ab;
            a.apiece = (kc * ab).div_ceil(64);
        }
        a.lines = rows * (a.piece + a.apiece);
        a.left = a.lines;
        a
    }

    /// One block step: issues the lines due by now. Prefetches never fault.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn step(&mut self) {
        self.credit += self.lines;
        while self.credit >= self.steps && self.left > 0 {
            self.credit -= self.steps;
            let p = if self.o < self.piece {
                self.base.wrapping_add(self.j * self.stride + 64 * self.o)
            } else {
                let o = self.o - self.piece;
                self.abase.wrapping_add(self.j * self.astride + 64 * o)
            };
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            self.left -= 1;
            self.o += 1;
            if self.o == self.piece + self.apiece {
                (self.j, self.o) = (self.j + 1, 0);
            }
        }
    }
}

/// Tokens `t0..t0+T` against the repacked chunk `at` (`bufs`: quants, scales, minimums as
/// [`Out`] lays them out): stores (`at.first`) or adds the sums into `yt` (row-major, or
/// token-major with `TM`). `s16` holds every token's sums over the halves of its blocks, times the
/// format's offset where it has one, for the two-part formats.
///
/// # Safety
/// The tokens and blocks exist in `x`; the chunk was repacked by [`repack::repack`] for this `at`;
/// rows `at.r0..at.r0+at.rr` exist; AVX-512 F/BW/VL/VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<F: Format, const T: usize, const TM: bool>(
    x: &Q8ActsRef<'_>,
    s16: &[i32],
    at: &At,
    t0: usize,
    (wq, wd, wm): (*const __m512i, *const __m512, *const __m512),
    yt: &mut [f32],
    pf: &mut Ahead,
) {
    let (n, nb, c0, r0, rr, first) = (x.n, at.nb, at.c0, at.r0, at.rr, at.first);
    let (p, o) = (parts(F::FORMAT), off(F::FORMAT));
    // Token t's quants, scales and sums from block c0 on (in bounds: the caller's tokens and blocks).
    let xq: [*const u8; T] =
        core::array::from_fn(|t| x.qs[((t0 + t) * nb + c0) * QK..].as_ptr().cast());
    let xd: [*const f32; T] = core::array::from_fn(|t| x.d[(t0 + t) * nb + c0..].as_ptr());
    let xs: [*const i32; T] = core::array::from_fn(|t| x.sum[(t0 + t) * nb + c0..].as_ptr());
    let xh: [*const i32; T] = core::array::from_fn(|t| {
        if p == 2 {
            s16[2 * ((t0 + t) * nb + c0)..].as_ptr()
        } else {
            core::ptr::null()
        }
    });
    let mut acc = [_mm512_setzero_ps(); T];
    // LOOP 0: blocks, and their parts.
    for b in 0..at.kc {
        pf.step();
        for h in 0..p {
            let mut idot = [_mm512_setzero_si512(); T];
            // SAFETY: block b < kc was repacked (caller); each token holds blocks c0..c0+kc (and
            // their first-half sums where there are two parts).
            unsafe {
                for s in 8 / p * h..8 / p * (h + 1) {
                    let wv = wq.add(8 * b + s).read();
                    for t in 0..T {
                        let q = xq[t].add(b * QK + 4 * s).cast::<i32>().read_unaligned();
                        idot[t] = _mm512_dpbusd_epi32(idot[t], wv, _mm512_set1_epi32(q));
                    }
                }
                let dw = wd.add(p * b + h).read();
                for t in 0..T {
                    let dx = *xd[t].add(b);
                    // The part's activation sum (two parts: times the offset, if any).
                    let sx = match p {
                        1 => *xs[t].add(b),
                        _ => *xh[t].add(2 * b + h),
                    };
                    let id = match (o, p) {
                        (0, _) => idot[t],
                        (_, 1) => _mm512_sub_epi32(idot[t], _mm512_set1_epi32(o * sx)),
                        _ => _mm512_sub_epi32(idot[t], _mm512_set1_epi32(sx)),
                    };
                    let sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
                    acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(id), acc[t]);
                    if F::MIN {
                        let m = wm.add(p * b + h).read();
                        acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * sx as f32), acc[t]);
                    }
                }
            }
        }
    }
    if TM {
        // Token-major: each token's sixteen row sums are one (masked) vector at y[t·rows + r0].
        let rows = yt.len() / n;
        let lanes: __mmask16 = ((1u32 << rr) - 1) as u16;
        for (t, &a) in acc.iter().enumerate() {
            // SAFETY: token t0+t < n and rows r0..r0+rr < rows exist (caller), so the selected lanes
            // lie inside `yt` (`rows × n` elements, checked by `check_matmul_q`).
            unsafe {
                let p = yt.as_mut_ptr().add((t0 + t) * rows + r0);
                let v = if first {
                    a
                } else {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, p), a)
                };
                _mm512_mask_storeu_ps(p, lanes, v);
            }
        }
        return;
    }
    if T == PT {
        // SAFETY: rows r0..r0+rr and tokens t0..t0+8 exist (caller).
        unsafe { store8(&acc, yt, n, r0, rr, t0, first) };
        return;
    }
    for (t, &a) in acc.iter().enumerate() {
        let mut lanes = [0f32; PR];
        // SAFETY: `lanes` is 64 writable bytes.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a) };
        for (j, &v) in lanes.iter().enumerate().take(rr) {
            let y = &mut yt[(r0 + j) * n + t0 + t];
            *y = if first { v } else { *y + v };
        }
    }
}

/// Stores (`first`) or adds eight tokens' row vectors `acc[t]` (lane = row) into `yt[(r0+j)·n + t0+t]`
/// for `j < rr`: a 16×8 transpose in registers, one 8-float store per row.
///
/// # Safety
/// Rows `r0..r0+rr` and tokens `t0..t0+8` exist in `yt` (`n` tokens per row); AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn store8(
    acc: &[__m512],
    yt: &mut [f32],
    n: usize,
    r0: usize,
    rr: usize,
    t0: usize,
    first: bool,
) {
    let a: [__m512; PT] = core::array::from_fn(|t| acc[t]);
    // Per 128-bit lane L (rows 4L..4L+4): token pairs interleaved, then four tokens per row.
    let lo: [__m512; 4] = core::array::from_fn(|p| _mm512_unpacklo_ps(a[2 * p], a[2 * p + 1]));
    let hi: [__m512; 4] = core::array::from_fn(|p| _mm512_unpackhi_ps(a[2 * p], a[2 * p + 1]));
    // q[h][i]: row 4L + i, tokens 4h..4h+4, in lane L.
    let q = |h: usize| -> [__m512; 4] {
        [
            _mm512_shuffle_ps::<0x44>(lo[2 * h], lo[2 * h + 1]),
            _mm512_shuffle_ps::<0xee>(lo[2 * h], lo[2 * h + 1]),
            _mm512_shuffle_ps::<0x44>(hi[2 * h], hi[2 * h + 1]),
            _mm512_shuffle_ps::<0xee>(hi[2 * h], hi[2 * h + 1]),
        ]
    };
    let (q0, q1) = (q(0), q(1));
    let first_half = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let second_half =
        _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    let base = yt.as_mut_ptr();
    for i in 0..4 {
        // [row i | row 4+i] and [row 8+i | row 12+i], eight tokens each.
        let w01 = _mm512_permutex2var_ps(q0[i], first_half, q1[i]);
        let w23 = _mm512_permutex2var_ps(q0[i], second_half, q1[i]);
        // The upper halves through the F-only 64x4 extract (`vextractf32x8` needs DQ).
        let upper = |v: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let rows = [
            (i, _mm512_castps512_ps256(w01)),
            (4 + i, upper(w01)),
            (8 + i, _mm512_castps512_ps256(w23)),
            (12 + i, upper(w23)),
        ];
        for (j, v) in rows {
            if j < rr {
                // SAFETY: row r0+j exists and holds tokens t0..t0+8 (caller).
                unsafe {
                    let p = base.add((r0 + j) * n + t0);
                    let v = if first {
                        v
                    } else {
                        _mm256_add_ps(_mm256_loadu_ps(p), v)
                    };
                    _mm256_storeu_ps(p, v);
                }
            }
        }
    }
}
