//! Scalar reference for the quantized kernels: the specification every SIMD variant must match.
//!
//! # Products (`matmul_<weights>_q8`)
//!
//! For weight row `r` and token `t`, with `dw`, `m` the weight block's f16 scale and minimum (as f32),
//! `dx` the activation block's f32 scale, `sx` its quant sum and `idot = Σ_i qw_i · qx_i` over the block's
//! 32 elements (exact in i32), each block contributes, evaluated in f32 exactly as written:
//!
//! | format | block term                                     |
//! |--------|------------------------------------------------|
//! | q8_0   | `(dw·dx) · idot`                               |
//! | q4_0   | `(dw·dx) · (idot − 8·sx)`  (with `qw = nib`)   |
//! | q4_1   | `(dw·dx) · idot + (m·dx) · sx`  (`qw = nib`)   |
//!
//! and `yt[r·n + t]` is the f32 sum of the terms in block order, starting from 0. SIMD variants compute
//! the same integers exactly but may order the f32 additions differently (and fuse multiply-adds): their
//! bar is `1e-5 · Σ_b |term_b|` (for q4_1 both parts of the term count separately).
//!
//! # Activations (`quantize_q8`)
//!
//! Per block of 32: `amax = max |x_i|`, `d = amax / 127` (f32 division), `q_i = clamp(round(x_i / d),
//! −127, 127)` with `round` half away from zero ([`f32::round`]) and a true division; `d == 0` gives all
//! `q_i = 0`. The clamp only matters when `d` is subnormal. `sum = Σ q_i`. SIMD variants must produce the
//! same bytes (the operations are exact or correctly rounded, so they can). Inputs must be finite.
//!
//! # Weight quantizers (`quantize_row_*`)
//!
//! Reference quantizers with ggml's semantics (its `quantize_row_*_ref`), for the conversion tool; scalar
//! only. Scales are computed in f32 and stored as f16; quants use the f32 reciprocal of the f32 scale.

use half::f16;

use super::{Q8ActsRef, QFormat, QLayout, QWeight, QK};

/// Checks the contract of every `matmul_*_q8` kernel of the `rowsplit` layout and returns `(rows, n,
/// blocks_per_row)`. Panics (never UB) on a malformed weight view, another format or layout,
/// mismatched `k`, short activation planes or a wrong `yt` length.
#[inline]
pub fn check_matmul_q(
    w: &QWeight<'_>,
    format: QFormat,
    x: &Q8ActsRef<'_>,
    yt_len: usize,
) -> (usize, usize, usize) {
    check_matmul_layout(w, format, QLayout::RowSplit, x, yt_len)
}

/// [`check_matmul_q`] for a kernel of `layout`.
#[inline]
pub fn check_matmul_layout(
    w: &QWeight<'_>,
    format: QFormat,
    layout: QLayout,
    x: &Q8ActsRef<'_>,
    yt_len: usize,
) -> (usize, usize, usize) {
    assert!(
        w.format == format && w.layout == layout,
        "matmul_q: a {} {} weight passed to the {format} {layout} kernel",
        w.format,
        w.layout
    );
    if let Err(e) = w.validate() {
        panic!("matmul_q: {e}");
    }
    assert_eq!(
        w.k, x.k,
        "matmul_q: weight k={} but activations have k={}",
        w.k, x.k
    );
    let nb = w.k / QK;
    let len =
        x.n.checked_mul(x.k)
            .expect("matmul_q: activation size overflow");
    assert!(
        x.qs.len() >= len && x.d.len() >= len / QK && x.sum.len() >= len / QK,
        "matmul_q: activation planes (qs {}, d {}, sum {}) too short for {}×{}",
        x.qs.len(),
        x.d.len(),
        x.sum.len(),
        x.n,
        x.k
    );
    let out = w
        .rows
        .checked_mul(x.n)
        .expect("matmul_q: output size overflow");
    assert_eq!(
        yt_len, out,
        "matmul_q: yt has {yt_len} elements, need {}×{}",
        w.rows, x.n
    );
    (w.rows, x.n, nb)
}

/// Checks the contract of every `quantize_q8` kernel and returns `n·k`.
#[inline]
pub fn check_quantize_q8(
    x_len: usize,
    n: usize,
    k: usize,
    qs_len: usize,
    d_len: usize,
    sum_len: usize,
) -> usize {
    assert!(
        k > 0 && k.is_multiple_of(QK),
        "quantize_q8: k={k} is not a positive multiple of {QK}"
    );
    let len = n.checked_mul(k).expect("quantize_q8: size overflow");
    assert!(
        x_len >= len,
        "quantize_q8: x has {x_len} elements, need {n}×{k}"
    );
    assert_eq!(
        qs_len, len,
        "quantize_q8: qs has {qs_len} elements, need {n}×{k}"
    );
    assert!(
        d_len == len / QK && sum_len == len / QK,
        "quantize_q8: d/sum have {d_len}/{sum_len}, need {}",
        len / QK
    );
    len
}

/// Drives a product: `term(r, t, b)` is block `b`'s contribution to `yt[r·n + t]`.
#[inline]
fn blocks(
    rows: usize,
    n: usize,
    nb: usize,
    yt: &mut [f32],
    term: impl Fn(usize, usize, usize) -> f32,
) {
    for r in 0..rows {
        for t in 0..n {
            let mut acc = 0.0f32;
            for b in 0..nb {
                acc += term(r, t, b);
            }
            yt[r * n + t] = acc;
        }
    }
}

/// `Σ_i nib_i · qx_i` over one q4 block (16 bytes, nibble order of [`super::format`]).
#[inline]
fn nib_dot(qs: &[u8], qx: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..QK / 2 {
        s += i32::from(qs[j] & 15) * i32::from(qx[j])
            + i32::from(qs[j] >> 4) * i32::from(qx[j + QK / 2]);
    }
    s
}

/// q8_0 weights × q8 activations (see the module docs).
pub fn matmul_q8_0_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, nb) = check_matmul_q(w, QFormat::Q8_0, x, yt.len());
    let k = w.k;
    blocks(rows, n, nb, yt, |r, t, b| {
        let qw = &w.qs[r * k + b * QK..][..QK];
        let qx = &x.qs[t * k + b * QK..][..QK];
        let idot: i32 = qw
            .iter()
            .zip(qx)
            .map(|(&a, &c)| i32::from(a as i8) * i32::from(c))
            .sum();
        (f32::from(w.d[r * nb + b]) * x.d[t * nb + b]) * idot as f32
    });
}

/// q4_0 weights × q8 activations (see the module docs).
pub fn matmul_q4_0_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, nb) = check_matmul_q(w, QFormat::Q4_0, x, yt.len());
    let k = w.k;
    blocks(rows, n, nb, yt, |r, t, b| {
        let qw = &w.qs[(r * k + b * QK) / 2..][..QK / 2];
        let qx = &x.qs[t * k + b * QK..][..QK];
        let idot = nib_dot(qw, qx) - 8 * x.sum[t * nb + b];
        (f32::from(w.d[r * nb + b]) * x.d[t * nb + b]) * idot as f32
    });
}

/// q4_1 weights × q8 activations (see the module docs).
pub fn matmul_q4_1_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, nb) = check_matmul_q(w, QFormat::Q4_1, x, yt.len());
    let k = w.k;
    blocks(rows, n, nb, yt, |r, t, b| {
        let qw = &w.qs[(r * k + b * QK) / 2..][..QK / 2];
        let qx = &x.qs[t * k + b * QK..][..QK];
        let dx = x.d[t * nb + b];
        let (dw, m) = (f32::from(w.d[r * nb + b]), f32::from(w.m[r * nb + b]));
        (dw * dx) * nib_dot(qw, qx) as f32 + (m * dx) * x.sum[t * nb + b] as f32
    });
}

/// Quantizes `n` tokens of `k` activations into q8 blocks (see the module docs).
pub fn quantize_q8(x: &[f32], n: usize, k: usize, qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
    let len = check_quantize_q8(x.len(), n, k, qs.len(), d.len(), sum.len());
    for (((xb, qb), db), sb) in x[..len]
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(d)
        .zip(sum)
    {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let mut s = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = if scale == 0.0 {
                0
            } else {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            };
            s += i32::from(*q);
        }
        *db = scale;
        *sb = s;
    }
}

/// Quantizes one row (`x.len()` a multiple of 32) to q8_0: per block `d = amax/127`, `q = round(x/d)`
/// (as `x · (1/d)`, half away from zero). Writes `x.len()` quants and `x.len()/32` scales.
pub fn quantize_row_q8_0(x: &[f32], qs: &mut [u8], d: &mut [f16]) {
    check_row(x.len(), QFormat::Q8_0, qs.len(), d.len(), None);
    for ((xb, qb), db) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).zip(d) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *db = f16::from_f32(scale);
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = ((v * inv).round() as i8) as u8;
        }
    }
}

/// Quantizes one row to q4_0: per block, `max` the element of largest magnitude (sign kept),
/// `d = max / −8`, `nib = min(15, ⌊x/d + 8.5⌋)` (so `max` maps to 0, `−max` clamps to 15).
pub fn quantize_row_q4_0(x: &[f32], qs: &mut [u8], d: &mut [f16]) {
    check_row(x.len(), QFormat::Q4_0, qs.len(), d.len(), None);
    for ((xb, qb), db) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK / 2)).zip(d) {
        let max = xb
            .iter()
            .fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        let scale = max / -8.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *db = f16::from_f32(scale);
        // `as u8` truncates toward zero (the argument is > 0 here) and saturates, like ggml's int8 cast.
        let nib = |v: f32| ((v * inv + 8.5) as u8).min(15);
        for (j, q) in qb.iter_mut().enumerate() {
            *q = nib(xb[j]) | (nib(xb[j + QK / 2]) << 4);
        }
    }
}

/// Quantizes one row to q4_1: per block `m = min`, `d = (max − min)/15`, `nib = min(15, ⌊(x − m)/d + 0.5⌋)`.
pub fn quantize_row_q4_1(x: &[f32], qs: &mut [u8], d: &mut [f16], m: &mut [f16]) {
    check_row(x.len(), QFormat::Q4_1, qs.len(), d.len(), Some(m.len()));
    for (((xb, qb), db), mb) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK / 2))
        .zip(d)
        .zip(m)
    {
        let (min, max) = xb
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let scale = (max - min) / 15.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *db = f16::from_f32(scale);
        *mb = f16::from_f32(min);
        let nib = |v: f32| (((v - min) * inv + 0.5) as u8).min(15);
        for (j, q) in qb.iter_mut().enumerate() {
            *q = nib(xb[j]) | (nib(xb[j + QK / 2]) << 4);
        }
    }
}

pub(crate) fn check_row(
    len: usize,
    format: QFormat,
    qs_len: usize,
    d_len: usize,
    m_len: Option<usize>,
) {
    assert!(
        len.is_multiple_of(QK),
        "quantize_row_{format}: length {len} is not a multiple of {QK}"
    );
    let nb = len / QK;
    assert_eq!(
        qs_len,
        nb * format.qs_bytes_per_block(),
        "quantize_row_{format}: qs length"
    );
    assert_eq!(d_len, nb, "quantize_row_{format}: d length");
    if let Some(m_len) = m_len {
        assert_eq!(m_len, nb, "quantize_row_{format}: m length");
    }
}

#[cfg(test)]
mod tests;
