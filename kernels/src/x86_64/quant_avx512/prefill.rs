//! Several tokens (prefill): sixteen weight rows in the sixteen i32 lanes of a vector, so `vpdpbusd`
//! sums a whole block per lane and no block dot needs a horizontal reduction.
//!
//! For a tile of [`PR`] rows, the weights of a chunk of up to [`KC`] blocks are repacked once into a
//! stack buffer: per block, eight vectors, vector `s` holding elements `4s..4s+4` of every row (a
//! gather of one dword per row; q4 nibbles widened to bytes, q8_0 made unsigned as `w + 128`), and the
//! rows' scales (and minimums) as f32 lanes. Every token then reuses them: for block `b` and token `t`,
//! eight `vpdpbusd` against the token's quants broadcast four at a time (`{1to16}`) give the sixteen
//! rows' exact block dots, the offset (q8_0 `128·Σx`, q4_0 `8·Σx`) is subtracted and one FMA adds
//! `(dw·dx)·idot` (q4_1 a second for `m·(dx·Σx)`). [`PT`] tokens at a time keep eight weight vectors,
//! eight dot chains and eight accumulators in registers. The repacking (eight gathers per block and row
//! tile) is paid once per row tile and chunk, against `n` tokens of products.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use crate::quant::{Q8ActsRef, QFormat, QWeight, QK};
use crate::simd::Format;

/// Rows per tile: one per i32 lane.
const PR: usize = 16;
/// Tokens per tile.
const PT: usize = 8;
/// Blocks per repacked chunk (64 KiB of quants); longer rows run in chunks whose results add up.
const KC: usize = 128;

/// Whether [`matmul`] takes this weight: enough tokens to amortize the repacking (below eight the
/// group tiles are as fast, measured on the SmolLM2 shapes from memory), and a row tile's byte
/// offsets fit the gathers' i32 indices.
pub(super) fn suits(w: &QWeight<'_>, n: usize) -> bool {
    n >= 8 && PR * w.row_bytes() < i32::MAX as usize
}

/// `yt[r·n + t]` for every row and token, or with `TM` (token-major) `yt[t·rows + r]`.
/// Preconditions: the shapes passed `check_matmul_q`, and [`suits`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn matmul<F: Format, const TM: bool>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let (rows, n, nb) = (w.rows, x.n, w.k / QK);
    let rb = w.row_bytes();
    // Repacked weights: per block eight vectors of quants, one of scales, one of minimums (q4_1).
    let mut wq = MaybeUninit::<[__m512i; 8 * KC]>::uninit();
    let mut wd = MaybeUninit::<[__m512; KC]>::uninit();
    let mut wm = MaybeUninit::<[__m512; KC]>::uninit();
    let (wq, wd, wm) = (
        wq.as_mut_ptr().cast::<__m512i>(),
        wd.as_mut_ptr().cast::<__m512>(),
        wm.as_mut_ptr().cast::<__m512>(),
    );
    // LOOP 3: row tiles (independent).
    for r0 in (0..rows).step_by(PR) {
        let rr = PR.min(rows - r0);
        let lanes: __mmask16 = ((1u32 << rr) - 1) as u16;
        // LOOP 2: chunks of blocks.
        for c0 in (0..nb).step_by(KC) {
            let kc = KC.min(nb - c0);
            // SAFETY: rows r0..r0+rr and blocks c0..c0+kc exist (loop bounds); `kc <= KC` blocks are
            // written, and the tiles below read only those.
            unsafe { repack::<F>(w, r0, rr, lanes, c0, kc, rb, wq, wd, wm) };
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
            // LOOP 1: token tiles, then the remainder.
            let mut t0 = 0;
            while t0 + PT <= n {
                // SAFETY: tokens t0..t0+PT exist; the chunk was repacked above.
                unsafe {
                    tile::<F, PT, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                };
                t0 += PT;
            }
            // SAFETY: as above, for the n − t0 < PT tokens left.
            unsafe {
                match n - t0 {
                    1 => {
                        tile::<F, 1, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    2 => {
                        tile::<F, 2, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    3 => {
                        tile::<F, 3, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    4 => {
                        tile::<F, 4, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    5 => {
                        tile::<F, 5, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    6 => {
                        tile::<F, 6, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    7 => {
                        tile::<F, 7, TM>(x, nb, c0, kc, t0, wq, wd, wm, yt, r0, rr, first, &mut pf)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Prefetches the next chunk's quants a few lines per block step, spread evenly over the steps of the
/// current chunk (a burst would stall on the core's outstanding-miss limit), and its scales and
/// minimums at once.
struct Ahead {
    /// The next chunk's first row's first quant byte, bytes per row, lines per row piece.
    base: *const u8,
    stride: usize,
    piece: usize,
    /// The next line to issue (row piece `j`, line `o` in it) and how many are left.
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
        let nb = w.k / QK;
        let mut a = Ahead {
            base: core::ptr::null(),
            stride: 0,
            piece: 1,
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
        let kc = KC.min(nb - c);
        let rows = PR.min(w.rows - r);
        let line = |p: *const u16| _mm_prefetch::<_MM_HINT_T0>(p.cast());
        for j in 0..rows {
            let b = (r + j) * nb + c;
            line(w.d[b..].as_ptr().cast());
            line(w.d[b + kc - 1..].as_ptr().cast());
            if F::FORMAT == QFormat::Q4_1 {
                line(w.m[b..].as_ptr().cast());
                line(w.m[b + kc - 1..].as_ptr().cast());
            }
        }
        a.base = w.qs[(r * nb + c) * F::QB..].as_ptr();
        a.stride = nb * F::QB;
        a.piece = (kc * F::QB).div_ceil(64);
        a.lines = rows * a.piece;
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
            let p = self.base.wrapping_add(self.j * self.stride + 64 * self.o);
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            self.left -= 1;
            self.o += 1;
            if self.o == self.piece {
                (self.j, self.o) = (self.j + 1, 0);
            }
        }
    }
}

/// Repacks blocks `c0..c0+kc` of rows `r0..r0+rr` (lanes past `rr` zero) into `wq` (eight vectors per
/// block), `wd` and `wm` (q4_1).
///
/// # Safety
/// The rows and blocks exist in `w`; `rr <= PR`, `kc <= KC`; AVX-512 F/BW/VL/VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn repack<F: Format>(
    w: &QWeight<'_>,
    r0: usize,
    rr: usize,
    lanes: __mmask16,
    c0: usize,
    kc: usize,
    rb: usize,
    wq: *mut __m512i,
    wd: *mut __m512,
    wm: *mut __m512,
) {
    let nb = w.k / QK;
    let tile = &w.qs[r0 * rb..(r0 + rr) * rb];
    // Byte offset of each lane's row in the tile (lanes past `rr` are masked off).
    let rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(rb as i32),
    );
    let m4 = _mm512_set1_epi8(0x0f);
    for b in 0..kc {
        let at = (c0 + b) * F::QB;
        let gather = |s: usize| {
            let idx = _mm512_add_epi32(rows, _mm512_set1_epi32((at + 4 * s) as i32));
            // SAFETY: lane j < rr reads 4 bytes of row j's block c0+b, inside `tile`; other lanes are
            // masked off and read nothing.
            unsafe {
                _mm512_mask_i32gather_epi32::<1>(
                    _mm512_setzero_si512(),
                    lanes,
                    idx,
                    tile.as_ptr().cast(),
                )
            }
        };
        // SAFETY: block b < kc <= KC: its eight vectors and two scale vectors are inside the buffers.
        unsafe {
            let out = wq.add(8 * b);
            if F::FORMAT == QFormat::Q8_0 {
                for s in 0..8 {
                    out.add(s)
                        .write(_mm512_xor_si512(gather(s), _mm512_set1_epi8(-128)));
                }
            } else {
                for s in 0..4 {
                    let q = gather(s);
                    out.add(s).write(_mm512_and_si512(q, m4));
                    out.add(4 + s)
                        .write(_mm512_and_si512(_mm512_srli_epi32::<4>(q), m4));
                }
            }
            wd.add(b).write(f16_lanes(&w.d[r0 * nb + c0 + b..], nb, rr));
            if F::FORMAT == QFormat::Q4_1 {
                wm.add(b).write(f16_lanes(&w.m[r0 * nb + c0 + b..], nb, rr));
            }
        }
    }
}

/// `v[j·stride]` for `j < rr` as f32 lanes, the rest zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_lanes(v: &[f16], stride: usize, rr: usize) -> __m512 {
    let mut h = [0u16; PR];
    for (j, o) in h.iter_mut().enumerate().take(rr) {
        *o = v[j * stride].to_bits();
    }
    // SAFETY: `h` is 32 readable bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(h.as_ptr().cast()) })
}

/// Tokens `t0..t0+T` against the repacked chunk (blocks `c0..c0+kc`) of rows `r0..r0+rr`: stores
/// (`first`) or adds the sums into `yt` (row-major, or token-major with `TM`).
///
/// # Safety
/// The tokens and blocks exist in `x`; the chunk was repacked by [`repack`] with these `r0`, `rr`, `c0`,
/// `kc`; rows `r0..r0+rr` exist; AVX-512 F/BW/VL/VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<F: Format, const T: usize, const TM: bool>(
    x: &Q8ActsRef<'_>,
    nb: usize,
    c0: usize,
    kc: usize,
    t0: usize,
    wq: *const __m512i,
    wd: *const __m512,
    wm: *const __m512,
    yt: &mut [f32],
    r0: usize,
    rr: usize,
    first: bool,
    pf: &mut Ahead,
) {
    let n = x.n;
    // Token t's quants, scales and sums from block c0 on (in bounds: the caller's tokens and blocks).
    let xq: [*const u8; T] =
        core::array::from_fn(|t| x.qs[((t0 + t) * nb + c0) * QK..].as_ptr().cast());
    let xd: [*const f32; T] = core::array::from_fn(|t| x.d[(t0 + t) * nb + c0..].as_ptr());
    let xs: [*const i32; T] = core::array::from_fn(|t| x.sum[(t0 + t) * nb + c0..].as_ptr());
    let mut acc = [_mm512_setzero_ps(); T];
    // LOOP 0: blocks.
    for b in 0..kc {
        pf.step();
        let mut idot = [_mm512_setzero_si512(); T];
        // SAFETY: block b < kc was repacked (caller); each token holds blocks c0..c0+kc.
        unsafe {
            for s in 0..8 {
                let wv = wq.add(8 * b + s).read();
                for t in 0..T {
                    let q = xq[t].add(b * QK + 4 * s).cast::<i32>().read_unaligned();
                    idot[t] = _mm512_dpbusd_epi32(idot[t], wv, _mm512_set1_epi32(q));
                }
            }
            let dw = wd.add(b).read();
            for t in 0..T {
                let (dx, sx) = (*xd[t].add(b), *xs[t].add(b));
                let id = match F::FORMAT {
                    QFormat::Q8_0 => _mm512_sub_epi32(idot[t], _mm512_set1_epi32(sx << 7)),
                    QFormat::Q4_0 => _mm512_sub_epi32(idot[t], _mm512_set1_epi32(sx << 3)),
                    _ => idot[t],
                };
                let sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
                acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(id), acc[t]);
                if F::FORMAT == QFormat::Q4_1 {
                    let m = wm.add(b).read();
                    acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * sx as f32), acc[t]);
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
