//! Row-parallel drivers over the kernel table.
//!
//! A kernel computes whole rows; here the rows of one weight matrix are split across the threads of
//! the current [`Team`] (installed by the model around a forward pass), or of the current rayon pool
//! when no team is installed (tests, tools), or not at all outside both. Each task owns a contiguous
//! slice of the transposed output `yt` (see [`crate::scalar`]), so no two threads ever touch the same
//! memory: [`for_each_chunk`] hands out disjoint chunks of one slice.

use rayon::prelude::*;

use crate::team::Team;

use crate::dispatch::Kernels;
use crate::quant::{Q8ActsRef, QWeight};
use crate::weight::WeightRef;

/// Rows per task are a multiple of this, so SIMD row tiles never straddle tasks.
const ROW_ALIGN: usize = 16;
/// Below this many multiply-adds a matrix is done on the calling thread: forking costs more.
const MIN_PARALLEL_WORK: usize = 1 << 15;

/// Threads available to the caller: those of the team installed on this thread, else those of the
/// rayon pool it runs in, else 1 (so a single-threaded session never touches either).
pub fn threads() -> usize {
    Team::current(|t| t.map(Team::threads)).unwrap_or_else(|| {
        if rayon::current_thread_index().is_some() {
            rayon::current_num_threads()
        } else {
            1
        }
    })
}

/// A pointer that may cross threads: each task derives a chunk no other task touches.
struct Shared<T>(*mut T);
// SAFETY: only used by `for_each_chunk*`, which give each task a disjoint sub-slice of a `&mut [T]`
// with `T: Send`, and return only when every task has finished.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Chunk `i` of `chunk` elements of the `len`-element slice this points into.
    ///
    /// # Safety
    /// `i * chunk < len`, the slice outlives the returned borrow, and no other live borrow overlaps
    /// chunk `i` (each task index is handed out once).
    #[allow(clippy::mut_from_ref)]
    unsafe fn chunk<'a>(&self, i: usize, chunk: usize, len: usize) -> &'a mut [T] {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        std::slice::from_raw_parts_mut(self.0.add(start), end - start)
    }
}

/// `f(i, chunk_i)` for every `chunk`-element chunk of `data` (the last may be shorter), in parallel
/// over the current team or rayon pool, or in order on this thread when there is one thread.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    if threads() <= 1 {
        return data
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    let handled = Team::current(|team| {
        let team = team?;
        let (len, p) = (data.len(), Shared(data.as_mut_ptr()));
        // SAFETY: `i < tasks` so chunk `i` starts inside `data`; `run` hands out each `i` once and
        // returns after all tasks, while `data` is still borrowed mutably here.
        team.run(len.div_ceil(chunk), &|i| {
            f(i, unsafe { p.chunk(i, chunk, len) })
        });
        Some(())
    });
    if handled.is_none() {
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// `f(i, a_i, b_i)` over the chunks of `a` and `b` zipped (as many tasks as the shorter has chunks),
/// in parallel like [`for_each_chunk`].
pub fn for_each_chunk_pair<A: Send, B: Send>(
    a: &mut [A],
    chunk_a: usize,
    b: &mut [B],
    chunk_b: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (chunk_a, chunk_b) = (chunk_a.max(1), chunk_b.max(1));
    if threads() <= 1 {
        return a
            .chunks_mut(chunk_a)
            .zip(b.chunks_mut(chunk_b))
            .enumerate()
            .for_each(|(i, (x, y))| f(i, x, y));
    }
    let handled = Team::current(|team| {
        let team = team?;
        let (la, pa) = (a.len(), Shared(a.as_mut_ptr()));
        let (lb, pb) = (b.len(), Shared(b.as_mut_ptr()));
        let tasks = la.div_ceil(chunk_a).min(lb.div_ceil(chunk_b));
        // SAFETY: as in `for_each_chunk`, for both slices.
        team.run(tasks, &|i| unsafe {
            f(i, pa.chunk(i, chunk_a, la), pb.chunk(i, chunk_b, lb))
        });
        Some(())
    });
    if handled.is_none() {
        a.par_chunks_mut(chunk_a)
            .zip(b.par_chunks_mut(chunk_b))
            .enumerate()
            .for_each(|(i, (x, y))| f(i, x, y));
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
    for_each_chunk(yt, per_task * n, |i, out| {
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
/// that both sides are read and written a cache line at a time.
pub fn transpose(yt: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    const TILE: usize = 16;
    let (yt, y) = (&yt[..rows * n], &mut y[..rows * n]);
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for t0 in (0..n).step_by(TILE) {
            for t in t0..(t0 + TILE).min(n) {
                let dst = &mut y[t * rows + r0..t * rows + r1];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = yt[(r0 + i) * n + t];
                }
            }
        }
    }
}

/// Quantized `yt[r*n + t] = Σ_j w[r, j] · x[t, j]`, split by rows across the pool like [`matmul_t`].
pub fn matmul_q(kern: &Kernels, w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, k) = (w.rows, x.n, w.k);
    let f = kern.matmul_q(w.format);
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
    for_each_chunk(yt, per_task * n, |i, out| {
        let r0 = i * per_task;
        f(&w.rows(r0..r0 + out.len() / n), x, out);
    });
}

fn run(kern: &Kernels, w: WeightRef<'_>, k: usize, x: &[f32], n: usize, yt: &mut [f32]) {
    match w {
        WeightRef::F32(w) => (kern.matmul_f32)(w, k, x, n, yt),
        WeightRef::F16(w) => (kern.matmul_f16)(w, k, x, n, yt),
        WeightRef::BF16(w) => (kern.matmul_bf16)(w, k, x, n, yt),
    }
}
