//! Scalar reference kernels: the specification every SIMD variant must match.
//!
//! Conventions shared by all variants:
//! - Weights are row-major `rows × k` ([`WeightRef`] or a typed slice); `k` is the reduction length.
//! - Matrix products write the *transposed* output `yt[r * n + t]` (row `r`, token `t`), so that a
//!   caller splitting rows across threads hands each thread one contiguous slice of `yt`. For a single
//!   token (`n == 1`) this is the ordinary output vector.

use half::{bf16, f16};

use crate::weight::WeightRef;

/// Checks the shape contract of every `matmul_*` kernel. Panics (never UB) on a caller bug.
#[inline]
pub fn check_matmul(w_len: usize, k: usize, x_len: usize, n: usize, yt_len: usize) -> usize {
    assert!(k > 0, "matmul: k must be positive");
    assert_eq!(
        w_len % k,
        0,
        "matmul: weight length {w_len} is not a multiple of k={k}"
    );
    let rows = w_len / k;
    assert!(
        x_len >= n * k,
        "matmul: x has {x_len} elements, need {n}×{k}"
    );
    assert_eq!(
        yt_len,
        rows * n,
        "matmul: yt has {yt_len} elements, need {rows}×{n}"
    );
    rows
}

macro_rules! scalar_matmul {
    ($name:ident, $t:ty) => {
        /// `yt[r*n + t] = Σ_j w[r*k + j] · x[t*k + j]`, accumulated in f32 in index order.
        pub fn $name(w: &[$t], k: usize, x: &[f32], n: usize, yt: &mut [f32]) {
            let rows = check_matmul(w.len(), k, x.len(), n, yt.len());
            for r in 0..rows {
                let wr = &w[r * k..(r + 1) * k];
                for t in 0..n {
                    let xt = &x[t * k..(t + 1) * k];
                    let mut acc = 0.0f32;
                    for (a, b) in wr.iter().zip(xt) {
                        acc += f32::from(*a) * b;
                    }
                    yt[r * n + t] = acc;
                }
            }
        }
    };
}

scalar_matmul!(matmul_f32, f32);
scalar_matmul!(matmul_f16, f16);
scalar_matmul!(matmul_bf16, bf16);

/// `Σ a[i]·b[i]` over the common length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

/// `y[i] += alpha · x[i]` over the common length.
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// `y[i] += alpha · x[i]` over the common length, `x` in f16 (the KV cache's values).
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * f32::from(*x);
    }
}

/// Attention's value step for `rows` rows of weights at once (the query heads that share one kv head):
/// with `seen = p.len() / rows` and `hd = out.len() / rows`,
/// `out[i·hd + d] = Σ_j p[i·seen + j] · v[j·hd + d]` (rows of `v` are one position's values, read
/// once for all `rows`). Overwrites `out`. Panics unless `rows ≥ 1` divides both lengths and `v`
/// holds at least `seen` rows of `hd`.
pub fn weighted_sum_f32(p: &[f32], rows: usize, v: &[f32], out: &mut [f32]) {
    weighted_sum(p, rows, v, out)
}

/// [`weighted_sum_f32`] over f16 values (the KV cache's).
pub fn weighted_sum_f16(p: &[f32], rows: usize, v: &[f16], out: &mut [f32]) {
    weighted_sum(p, rows, v, out)
}

fn weighted_sum<T: Copy + Into<f32>>(p: &[f32], rows: usize, v: &[T], out: &mut [f32]) {
    weighted_sum_rows(p, rows, v.len(), out, 1, |p, out, _| {
        let hd = out.len();
        out.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                *o += pj * x.into();
            }
        }
    })
}

/// The shapes every `weighted_sum` variant relies on (see [`weighted_sum_f32`]); returns
/// `(seen, hd)`.
pub fn check_weighted_sum(
    p_len: usize,
    rows: usize,
    v_len: usize,
    out_len: usize,
) -> (usize, usize) {
    assert!(
        rows > 0 && p_len.is_multiple_of(rows) && out_len.is_multiple_of(rows),
        "weighted_sum: {p_len} weights and {out_len} outputs do not split into {rows} rows"
    );
    let (seen, hd) = (p_len / rows, out_len / rows);
    assert!(
        seen.checked_mul(hd).is_some_and(|n| n <= v_len),
        "weighted_sum: {seen} weights × {hd} need more than the {v_len} values given"
    );
    (seen, hd)
}

/// Checks a `weighted_sum` call ([`check_weighted_sum`]), then runs `f(p_g, out_g, r)` on the rows in
/// consecutive groups of `r = min(group, rows left)` rows: `p_g` is `r` rows of `seen` weights, `out_g`
/// `r` rows of `hd` outputs, and `v` holds at least `seen` rows of `hd`. With no weights or no
/// columns the outputs are zero and `f` is not called.
pub fn weighted_sum_rows(
    p: &[f32],
    rows: usize,
    v_len: usize,
    out: &mut [f32],
    group: usize,
    mut f: impl FnMut(&[f32], &mut [f32], usize),
) {
    let (seen, hd) = check_weighted_sum(p.len(), rows, v_len, out.len());
    if seen == 0 || hd == 0 {
        out.fill(0.0);
        return;
    }
    let group = group.max(1);
    for (p, out) in p.chunks(group * seen).zip(out.chunks_mut(group * hd)) {
        f(p, out, out.len() / hd);
    }
}

/// RMSNorm: `out[i] = x[i] / sqrt(mean(x²) + eps) · w[i]`, with the mean taken in f32.
pub fn rmsnorm_f32(x: &[f32], w: WeightRef<'_>, eps: f32, out: &mut [f32]) {
    check_rmsnorm(x.len(), w.len(), out.len());
    let mut ss = 0.0f32;
    for v in x {
        ss += v * v;
    }
    let scale = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        *o = v * scale * w.get(i);
    }
}

/// The lengths every `rmsnorm_f32` variant checks: `x`, the weight and `out` all equal.
pub fn check_rmsnorm(x_len: usize, w_len: usize, out_len: usize) {
    assert_eq!(x_len, out_len, "rmsnorm: x and out differ in length");
    assert_eq!(w_len, x_len, "rmsnorm: weight length differs from x");
}

/// In-place softmax; the maximum is subtracted first so large scores do not overflow.
pub fn softmax_f32(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU's elementwise part: `gate[i] = silu(gate[i]) · up[i]`, `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Rotary embedding, Hugging Face "half rotation" convention, applied to every head of `x`
/// (`x.len()` a multiple of `head_dim`). For each head and `i < head_dim/2`, with
/// `a = x[i]`, `b = x[i + head_dim/2]`: `x[i] = a·cos[i] − b·sin[i]`, `x[i + half] = b·cos[i] + a·sin[i]`.
/// `cos`/`sin` hold the angles of this token's position (`head_dim/2` each).
pub fn rope_f32(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    assert!(
        head_dim.is_multiple_of(2) && x.len().is_multiple_of(head_dim),
        "rope: bad head_dim {head_dim}"
    );
    assert!(
        cos.len() >= half && sin.len() >= half,
        "rope: angle tables too short"
    );
    for head in x.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
}
