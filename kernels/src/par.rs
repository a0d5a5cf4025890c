//! Row-parallel drivers over the kernel table.
//!
//! A kernel computes whole rows; here rayon splits the rows of one weight matrix across the threads of
//! the current pool. Each task owns a contiguous slice of the transposed output `yt` (see
//! [`crate::scalar`]), so no two threads ever touch the same memory and no `unsafe` is needed.

use rayon::prelude::*;

use crate::dispatch::Kernels;
use crate::quant::{Q8ActsRef, QLayout, QWeight};
use crate::weight::WeightRef;

/// Rows per task are a multiple of this, so SIMD row tiles never straddle tasks.
const ROW_ALIGN: usize = 16;
/// Below this many multiply-adds a matrix is done on the calling thread: forking costs more.
const MIN_PARALLEL_WORK: usize = 1 << 15;

/// Threads available to the caller: those of the rayon pool it runs in, or 1 outside any pool (so a
/// single-threaded session never touches rayon, and never allocates through it).
pub fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// `yt[r*n + t] = Σ_j w[r, j] · x[t, j]` for a `rows × k` weight, split by rows across the pool.
pub fn matmul_t(kern: &Kernels, w: WeightRef<'_>, k: usize, x: &[f32], n: usize, yt: &mut [f32]) {
    let rows = w.len() / k.max(1);
    let threads = threads();
    if threads <= 1 || rows * k * n < MIN_PARALLEL_WORK || rows < 2 * ROW_ALIGN {
        return run(kern, w, k, x, n, yt);
    }
    // A few tasks per thread balance rows of uneven cost; more would only add scheduling overhead.
    let per_task = rows.div_ceil(threads * 4).next_multiple_of(ROW_ALIGN);
    yt.par_chunks_mut(per_task * n)
        .enumerate()
        .for_each(|(i, out)| {
            let r0 = i * per_task;
            let r1 = r0 + out.len() / n;
            run(kern, w.rows(r0..r1, k), k, x, n, out);
        });
}

/// Token-major product `y[t*rows + r] = Σ_j w[r, j] · x[t, j]`. For one token the kernel writes `y`
/// directly; for several it goes through `scratch` (at least `rows × n`) and a transpose.
pub fn matmul(
    kern: &Kernels,
    w: WeightRef<'_>,
    k: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    let rows = w.len() / k.max(1);
    if n == 1 {
        return matmul_t(kern, w, k, x, 1, &mut y[..rows]);
    }
    let yt = &mut scratch[..rows * n];
    matmul_t(kern, w, k, x, n, yt);
    transpose(yt, rows, n, y);
}

/// `y[t·rows + r] = yt[r·n + t]`: the kernels' row-major output turned token-major, in 16×16 tiles so
/// that both sides are read and written a cache line at a time. Split by groups of 16 tokens across
/// the pool when there is enough to move (it was 8% of a 2-thread pp512 profile while serial).
pub fn transpose(yt: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    const TILE: usize = 16;
    let (yt, y) = (&yt[..rows * n], &mut y[..rows * n]);
    // Tokens t0.. of `y`, whose rows start at `dst`.
    let tokens = |t0: usize, dst: &mut [f32]| {
        let nt = dst.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for t in 0..nt {
                let out = &mut dst[t * rows + r0..t * rows + r1];
                for (i, d) in out.iter_mut().enumerate() {
                    *d = yt[(r0 + i) * n + t0 + t];
                }
            }
        }
    };
    if threads() <= 1 || n <= TILE || rows * n < MIN_PARALLEL_WORK {
        return tokens(0, y);
    }
    y.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(i, dst)| tokens(i * TILE, dst));
}

/// Quantized `yt[r*n + t] = Σ_j w[r, j] · x[t, j]`, split by rows across the pool like [`matmul_t`].
pub fn matmul_q(kern: &Kernels, w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, k) = (w.rows, x.n, w.k);
    let f = kern.matmul_weight(w);
    let threads = threads();
    if threads <= 1
        || n == 0
        || rows.saturating_mul(k).saturating_mul(n) < MIN_PARALLEL_WORK
        || rows < 2 * ROW_ALIGN
    {
        return f(w, x, yt);
    }
    assert_eq!(
        yt.len(),
        rows * n,
        "par::matmul_q: yt has {} elements, need {rows}×{n}",
        yt.len()
    );
    let per_task = rows.div_ceil(threads * 4).next_multiple_of(ROW_ALIGN);
    yt.par_chunks_mut(per_task * n)
        .enumerate()
        .for_each(|(i, out)| {
            let r0 = i * per_task;
            f(&w.rows(r0..r0 + out.len() / n), x, out);
        });
}

/// Token-major product `y[t·rows + r] = Σ_j w[r, j] · x[t, j]` for two-pass activations
/// ([`crate::quant::ActQuant::Q8x2`]): `x` holds `2n` rows, the `n` tokens then their rounding errors,
/// and each token's product is the sum of its two rows'. The weights cross memory once either way:
/// for one token each task takes its rows a few at a time through the one-token kernel twice, so the
/// second pass reads weights the first has just brought into cache; for several, both passes are
/// `2n` tokens of one product. `scratch` holds at least `rows × 2n` floats (unused for one token).
/// Panics if `x` has an odd number of rows.
pub fn matmul_q_passes(
    kern: &Kernels,
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        x.n.is_multiple_of(2),
        "par::matmul_q_passes: {} activation rows is not two passes",
        x.n
    );
    let (rows, n) = (w.rows, x.n / 2);
    if n == 1 {
        return one_token_passes(kern, w, x, &mut y[..rows]);
    }
    let both = &mut scratch[..rows * 2 * n];
    if matmul_tokens_q(kern, w, x, both) {
        // Token-major: the first pass's n token rows, then the second's.
        let (first, second) = both.split_at(rows * n);
        for ((y, a), b) in y[..rows * n].iter_mut().zip(first).zip(second) {
            *y = a + b;
        }
        return;
    }
    matmul_q(kern, w, x, both);
    // Row-major: row r's 2n values are the n tokens of each pass.
    for (r, p) in both.chunks_exact(2 * n).enumerate() {
        let (a, b) = p.split_at(n);
        for (t, (a, b)) in a.iter().zip(b).enumerate() {
            y[t * rows + r] = a + b;
        }
    }
}

/// One token of [`matmul_q_passes`].
fn one_token_passes(kern: &Kernels, w: &QWeight<'_>, x: &Q8ActsRef<'_>, y: &mut [f32]) {
    let (rows, k) = (w.rows, w.k);
    let threads = threads();
    if threads <= 1 || rows.saturating_mul(k) < MIN_PARALLEL_WORK || rows < 2 * ROW_ALIGN {
        return two_passes(kern, w, x, y);
    }
    let per_task = rows.div_ceil(threads * 4).next_multiple_of(ROW_ALIGN);
    y.par_chunks_mut(per_task).enumerate().for_each(|(i, out)| {
        let r0 = i * per_task;
        two_passes(kern, &w.rows(r0..r0 + out.len()), x, out);
    });
}

/// `y[r]` = the sum of `w`'s row `r` times both rows of `x` (two passes of one token), on this
/// thread: a few rows at a time through the one-token kernel twice, so the second pass reads
/// weights the first has just brought into cache.
fn two_passes(kern: &Kernels, w: &QWeight<'_>, x: &Q8ActsRef<'_>, y: &mut [f32]) {
    // 64 rows of a 1536-column q8_0 matrix are 104 KiB: still in L2 for the second pass.
    const SUB: usize = 64;
    let f = kern.matmul_weight(w);
    let (x0, x1) = (x.tokens(0..1), x.tokens(1..2));
    let mut second = [0.0f32; SUB];
    for (i, y) in y.chunks_mut(SUB).enumerate() {
        let ws = w.rows(i * SUB..i * SUB + y.len());
        let second = &mut second[..y.len()];
        f(&ws, &x0, y);
        f(&ws, &x1, second);
        for (y, s) in y.iter_mut().zip(second.iter()) {
            *y += s;
        }
    }
}

/// Decode: the products of one token's activations with two or three quantized matrices (q/k/v,
/// gate/up) in a single parallel region, so the pool forks and joins once instead of once per matrix.
/// `ys[i]` gets `ws[i]`'s rows. `x` is one token, or two rows for the two passes of one token
/// ([`crate::quant::ActQuant::Q8x2`], added as [`matmul_q_passes`] does). Panics unless `ws` and
/// `ys` have the same length, 2 or 3, and `x` has one or two rows.
pub fn matmul_q_group(
    kern: &Kernels,
    ws: &[QWeight<'_>],
    x: &Q8ActsRef<'_>,
    ys: &mut [&mut [f32]],
) {
    assert!(
        ws.len() == ys.len() && (2..=3).contains(&ws.len()) && (1..=2).contains(&x.n),
        "par::matmul_q_group: {} weights, {} outputs, {} tokens",
        ws.len(),
        ys.len(),
        x.n
    );
    let threads = threads();
    let small =
        |w: &QWeight<'_>| w.rows.saturating_mul(w.k) < MIN_PARALLEL_WORK || w.rows < 2 * ROW_ALIGN;
    if threads <= 1 || ws.iter().any(small) {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            match x.n {
                1 => matmul_q(kern, w, x, y),
                _ => one_token_passes(kern, w, x, y),
            }
        }
        return;
    }
    // Row chunks of one matrix, each with its slice of the output.
    fn pieces<'a>(
        w: &'a QWeight<'a>,
        y: &'a mut [f32],
        threads: usize,
    ) -> impl IndexedParallelIterator<Item = (QWeight<'a>, &'a mut [f32])> + 'a {
        let per = w.rows.div_ceil(threads * 4).next_multiple_of(ROW_ALIGN);
        y[..w.rows]
            .par_chunks_mut(per)
            .enumerate()
            .map(move |(i, out)| (w.rows(i * per..i * per + out.len()), out))
    }
    let run = |(w, out): (QWeight<'_>, &mut [f32])| match x.n {
        1 => kern.matmul_weight(&w)(&w, x, out),
        _ => two_passes(kern, &w, x, out),
    };
    match ys {
        [a, b] => pieces(&ws[0], a, threads)
            .chain(pieces(&ws[1], b, threads))
            .for_each(run),
        [a, b, c] => pieces(&ws[0], a, threads)
            .chain(pieces(&ws[1], b, threads))
            .chain(pieces(&ws[2], c, threads))
            .for_each(run),
        _ => unreachable!("checked above"),
    }
}

/// Token-major quantized `y[t·rows + r] = Σ_j w[r, j] · x[t, j]` through the variant's token-major
/// kernel (see `Kernels::matmul_tokens_q8_0_q8`), tokens split across the pool (each task owns whole
/// token rows of `y`); returns `false`, leaving `y` untouched, when the variant has none.
pub fn matmul_tokens_q(kern: &Kernels, w: &QWeight<'_>, x: &Q8ActsRef<'_>, y: &mut [f32]) -> bool {
    let Some(f) = kern.matmul_tokens_q(w.format) else {
        return false;
    };
    if w.layout != QLayout::RowSplit {
        return false;
    }
    let (rows, n, k) = (w.rows, x.n, w.k);
    let threads = threads();
    // Each task repacks the weights it reads, so tasks get at least TOKENS_PER_TASK tokens.
    const TOKENS_PER_TASK: usize = 64;
    if threads <= 1
        || n < 2 * TOKENS_PER_TASK
        || rows.saturating_mul(k).saturating_mul(n) < MIN_PARALLEL_WORK
    {
        f(w, x, y);
        return true;
    }
    assert_eq!(
        y.len(),
        rows * n,
        "par::matmul_tokens_q: y has {} elements, need {n}×{rows}",
        y.len()
    );
    let tasks = (2 * threads).min(n / TOKENS_PER_TASK).max(1);
    // Multiples of 8 tokens: the prefill kernels' token tile.
    let per_task = n.div_ceil(tasks).next_multiple_of(8);
    y.par_chunks_mut(per_task * rows)
        .enumerate()
        .for_each(|(i, out)| {
            let t0 = i * per_task;
            f(w, &x.tokens(t0..t0 + out.len() / rows), out);
        });
    true
}

/// `gate[i] = silu(gate[i]) · up[i]` with the table's kernel, split across the pool when long.
pub fn silu_mul(kern: &Kernels, gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 1 << 14;
    if threads() <= 1 || gate.len() < 2 * CHUNK || gate.len() != up.len() {
        return (kern.silu_mul_f32)(gate, up);
    }
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks(CHUNK))
        .for_each(|(g, u)| (kern.silu_mul_f32)(g, u));
}

fn run(kern: &Kernels, w: WeightRef<'_>, k: usize, x: &[f32], n: usize, yt: &mut [f32]) {
    match w {
        WeightRef::F32(w) => (kern.matmul_f32)(w, k, x, n, yt),
        WeightRef::F16(w) => (kern.matmul_f16)(w, k, x, n, yt),
        WeightRef::BF16(w) => (kern.matmul_bf16)(w, k, x, n, yt),
    }
}
