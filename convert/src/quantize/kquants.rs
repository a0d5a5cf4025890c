//! Quantizers for the GGUF formats `infer quantize` writes: q4_k, q5_k, q6_k and iq4_nl, each
//! block fitted by weighted least squares (the weights: an importance per column, from calibration
//! activations, or all ones), then packed exactly as ggml packs it, so the kernels' decoders
//! (`edgeinfer_kernels::quant::kquant`, checked bit for bit against llama.cpp's reader) read back
//! the values chosen here.
//!
//! - q4_k / q5_k: per 32-element sub-block an affine fit `scale·q − min` (`q` 0..=15 or 0..=31,
//!   `min ≥ 0`), searched over a range of step sizes with the least-squares scale and minimum for
//!   each rounding; then the eight scales and eight minimums are quantized to 6 bits against the
//!   super-block's f16 `d` and `dmin`, and every element rounded again against the scales as stored.
//! - q6_k: per 16-element sub-block a symmetric fit `scale·(q − 32)`, the sixteen scales as i8
//!   against the f16 `d`, then the elements rounded again against them.
//! - iq4_nl: per 32-element block `d·K[q]` over the non-linear grid `K`, `d` searched around
//!   `extreme / K[0]` with each element at its nearest grid value, refitted by least squares.

use half::f16;

use edgeinfer_kernels::quant::kquant::IQ4_NL_VALUES;
use edgeinfer_kernels::quant::{QFormat, QK, QK_K};

/// Formats this module writes.
pub const FORMATS: [QFormat; 4] = [QFormat::Q4K, QFormat::Q5K, QFormat::Q6K, QFormat::Iq4Nl];

/// Quantizes one row `x` in `format` (one of [`FORMATS`]; `x.len()` a multiple of its block) into
/// its planes, weighting each column's squared error by `imp` (all ones when `None`).
pub fn quantize_row(
    format: QFormat,
    x: &[f32],
    imp: Option<&[f32]>,
    qs: &mut [u8],
    aux: &mut [u8],
    d: &mut [f16],
    m: &mut [f16],
) {
    let be = format.block_elems();
    assert!(
        x.len().is_multiple_of(be),
        "kquants: row of {} for {format}",
        x.len()
    );
    let ones = [1.0f32; QK_K];
    let mut own = [0f32; QK_K];
    let (qb, ab) = (format.qs_bytes_per_block(), format.aux_bytes_per_block());
    for (b, xb) in x.chunks_exact(be).enumerate() {
        let w = match (imp, format) {
            (Some(i), _) => &i[b * be..(b + 1) * be],
            // Without calibration, iq4_nl weighs each element by its square plus the block's mean
            // square (as llama.cpp does): its grid is densest near zero, so the large values are
            // where the scale's choice matters.
            (None, QFormat::Iq4Nl) => {
                let ms = xb.iter().map(|v| v * v).sum::<f32>() / be as f32;
                for (w, &v) in own.iter_mut().zip(xb) {
                    *w = v * v + ms;
                }
                &own[..be]
            }
            (None, _) => &ones[..be],
        };
        let (qs, aux) = (
            &mut qs[b * qb..(b + 1) * qb],
            &mut aux[b * ab..(b + 1) * ab],
        );
        match format {
            QFormat::Q4K | QFormat::Q5K => {
                let nmax = if format == QFormat::Q4K { 15 } else { 31 };
                let (db, mb) = affine_k(xb, w, nmax, qs, aux, format == QFormat::Q5K);
                d[b] = db;
                m[b] = mb;
            }
            QFormat::Q6K => d[b] = q6_k(xb, w, qs, aux),
            QFormat::Iq4Nl => d[b] = iq4_nl(xb, w, qs),
            _ => unreachable!("kquants writes q4_k, q5_k, q6_k and iq4_nl, not {format}"),
        }
    }
}

/// Weighted least-squares `(scale, offset)` of `x ≈ scale·q + offset` for the integers `q`, with
/// `offset ≤ 0` (ggml's minimum is stored as a non-negative amount subtracted).
fn lsq_affine(x: &[f32], w: &[f32], q: &[u8]) -> (f32, f32) {
    let (mut sw, mut swq, mut swqq, mut swx, mut swqx) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for ((&x, &w), &q) in x.iter().zip(w).zip(q) {
        let (x, w, q) = (f64::from(x), f64::from(w), f64::from(q));
        sw += w;
        swq += w * q;
        swqq += w * q * q;
        swx += w * x;
        swqx += w * q * x;
    }
    let det = sw * swqq - swq * swq;
    if det > 0.0 {
        let scale = (sw * swqx - swq * swx) / det;
        let off = (swqq * swx - swq * swqx) / det;
        if off <= 0.0 && scale >= 0.0 {
            return (scale as f32, off as f32);
        }
    }
    // No room for a negative offset: fit the scale alone.
    let scale = if swqq > 0.0 {
        (swqx / swqq).max(0.0)
    } else {
        0.0
    };
    (scale as f32, 0.0)
}

fn weighted_sse(x: &[f32], w: &[f32], value: impl Fn(usize) -> f32) -> f64 {
    x.iter()
        .zip(w)
        .enumerate()
        .map(|(i, (&x, &w))| f64::from(w) * f64::from(x - value(i)).powi(2))
        .sum()
}

/// The best `(scale, min)` with `x ≈ scale·q − min`, `q` in `0..=nmax`, `min ≥ 0`: roundings over
/// a range of step sizes, each refitted by [`lsq_affine`].
fn fit_affine(x: &[f32], w: &[f32], nmax: u8) -> (f32, f32) {
    let lo = x.iter().fold(0f32, |a, &v| a.min(v));
    let hi = x.iter().fold(f32::MIN, |a, &v| a.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let mut q = [0u8; QK];
    let q = &mut q[..x.len()];
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for step in -10..=10 {
        let iscale = (f32::from(nmax) + 0.1 * step as f32) / (hi - lo);
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (iscale * (v - lo)).round().clamp(0.0, f32::from(nmax)) as u8;
        }
        let (scale, off) = lsq_affine(x, w, q);
        // Round again against the fitted pair, then score.
        for (q, &v) in q.iter_mut().zip(x) {
            *q = match scale > 0.0 {
                true => ((v - off) / scale).round().clamp(0.0, f32::from(nmax)) as u8,
                false => 0,
            };
        }
        let err = weighted_sse(x, w, |i| scale * f32::from(q[i]) + off);
        if err < best.0 {
            best = (err, scale, -off);
        }
    }
    (best.1, best.2)
}

/// One q4_k (`high5` false, `nmax` 15) or q5_k (`high5`, `nmax` 31) super-block: `qs` (q5_k: the
/// 32 `qh` bytes then 128), `aux` (12 scale bytes); returns `(d, dmin)`.
fn affine_k(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    qs: &mut [u8],
    aux: &mut [u8],
    high5: bool,
) -> (f16, f16) {
    let mut fits = [(0f32, 0f32); 8];
    for (j, f) in fits.iter_mut().enumerate() {
        *f = fit_affine(&x[QK * j..QK * (j + 1)], &w[QK * j..QK * (j + 1)], nmax);
    }
    let max_scale = fits.iter().fold(0f32, |a, f| a.max(f.0));
    let max_min = fits.iter().fold(0f32, |a, f| a.max(f.1));
    // The 6-bit sub-block scales and minimums are where q4_k loses most against a free fit: try
    // super-block units around `max / 63`, and per sub-block the codes on both sides of each fitted
    // value, keeping what leaves the least weighted error after rounding every element again.
    let mut best = (f64::INFINITY, f16::ZERO, f16::ZERO, [0u8; 8], [0u8; 8]);
    let mut q = [0u8; QK_K];
    for step in -6..=6 {
        let grow = 1.0 + 0.02 * step as f32;
        let d = f16::from_f32(max_scale / 63.0 * grow);
        let dmin = f16::from_f32(max_min / 63.0 * grow);
        let (df, mf) = (f32::from(d), f32::from(dmin));
        let (mut sc, mut mn, mut total) = ([0u8; 8], [0u8; 8], 0f64);
        for j in 0..8 {
            let (xs, ws) = (&x[QK * j..QK * (j + 1)], &w[QK * j..QK * (j + 1)]);
            let codes = |v: f32, unit: f32| -> [u8; 2] {
                match unit > 0.0 {
                    true => {
                        let c = (v / unit).clamp(0.0, 63.0);
                        [c.floor() as u8, c.ceil() as u8]
                    }
                    false => [0, 0],
                }
            };
            let mut pick = (f64::INFINITY, 0u8, 0u8);
            for s6 in codes(fits[j].0, df) {
                for m6 in codes(fits[j].1, mf) {
                    let (sv, mv) = (df * f32::from(s6), mf * f32::from(m6));
                    let err = weighted_sse(xs, ws, |i| {
                        let q = match sv > 0.0 {
                            true => ((xs[i] + mv) / sv).round().clamp(0.0, f32::from(nmax)),
                            false => 0.0,
                        };
                        sv * q - mv
                    });
                    if err < pick.0 {
                        pick = (err, s6, m6);
                    }
                }
            }
            (sc[j], mn[j]) = (pick.1, pick.2);
            total += pick.0;
        }
        if total < best.0 {
            best = (total, d, dmin, sc, mn);
        }
    }
    let (_, d, dmin, sc, mn) = best;
    let (df, mf) = (f32::from(d), f32::from(dmin));
    // ggml's packing (the inverse of `get_scale_min_k4`).
    for j in 0..4 {
        aux[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        aux[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        aux[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
    }
    for (j, qj) in q.chunks_exact_mut(QK).enumerate() {
        let (s, mm) = (df * f32::from(sc[j]), mf * f32::from(mn[j]));
        for (q, &v) in qj.iter_mut().zip(&x[QK * j..]) {
            *q = match s > 0.0 {
                true => ((v + mm) / s).round().clamp(0.0, f32::from(nmax)) as u8,
                false => 0,
            };
        }
    }
    // Element 64·c + l: low nibble of byte 32·c + l; element 64·c + 32 + l: its high nibble;
    // q5_k's fifth bits in `qh[l]`, bits 2c and 2c + 1.
    let (qh, ql) = qs.split_at_mut(if high5 { 32 } else { 0 });
    qh.fill(0);
    for c in 0..4 {
        for l in 0..32 {
            let (a, b) = (q[64 * c + l], q[64 * c + 32 + l]);
            ql[32 * c + l] = (a & 0xF) | ((b & 0xF) << 4);
            if high5 {
                qh[l] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
            }
        }
    }
    (d, dmin)
}

/// The best scale of `x ≈ scale·l`, `l` in `-nmax..nmax` (the extreme value's sign taking `-nmax`),
/// by the least-squares scale of each rounding over a range of steps.
fn fit_symmetric(x: &[f32], w: &[f32], nmax: i32) -> f32 {
    let ext = x
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    if ext == 0.0 {
        return 0.0;
    }
    let (lo, hi) = (-nmax as f32, (nmax - 1) as f32);
    let mut best = (f64::INFINITY, 0f32);
    for step in -9..=9 {
        let iscale = -(nmax as f32 + 0.1 * step as f32) / ext;
        let (mut swlx, mut swll) = (0f64, 0f64);
        for (&v, &w) in x.iter().zip(w) {
            let l = f64::from((iscale * v).round().clamp(lo, hi));
            swlx += f64::from(w) * l * f64::from(v);
            swll += f64::from(w) * l * l;
        }
        if swll == 0.0 {
            continue;
        }
        let scale = (swlx / swll) as f32;
        let err = weighted_sse(x, w, |i| scale * (x[i] / scale).round().clamp(lo, hi));
        if err < best.0 {
            best = (err, scale);
        }
    }
    best.1
}

/// One q6_k super-block: `qs` (`ql` 128 then `qh` 64 bytes), `aux` (16 i8 scales); returns `d`.
fn q6_k(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> f16 {
    let mut scales = [0f32; 16];
    for (h, s) in scales.iter_mut().enumerate() {
        *s = fit_symmetric(&x[16 * h..16 * (h + 1)], &w[16 * h..16 * (h + 1)], 32);
    }
    let ext = scales
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    let d = f16::from_f32(ext / -128.0);
    let df = f32::from(d);
    let mut q = [0u8; QK_K];
    for h in 0..16 {
        let sc = match df != 0.0 {
            true => (scales[h] / df).round().clamp(-128.0, 127.0) as i8,
            false => 0,
        };
        aux[h] = sc as u8;
        let s = df * f32::from(sc);
        for i in 16 * h..16 * (h + 1) {
            q[i] = match s != 0.0 {
                true => ((x[i] / s).round().clamp(-32.0, 31.0) + 32.0) as u8,
                false => 32,
            };
        }
    }
    // Element 128·n + 32·i + l: low 4 bits in `ql` (i = 0, 1: low nibbles of bytes 64n + l and
    // 64n + 32 + l; i = 2, 3: their high nibbles), high 2 bits in `qh[32n + l]`, bits 2i, 2i + 1.
    let (ql, qh) = qs.split_at_mut(128);
    qh.fill(0);
    for n in 0..2 {
        for l in 0..32 {
            let v = |i: usize| q[128 * n + 32 * i + l];
            ql[64 * n + l] = (v(0) & 0xF) | ((v(2) & 0xF) << 4);
            ql[64 * n + 32 + l] = (v(1) & 0xF) | ((v(3) & 0xF) << 4);
            qh[32 * n + l] =
                (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
        }
    }
    d
}

/// The index of the grid value nearest `v` (the grid is sorted; a tie takes the lower value).
fn nearest(v: f32) -> u8 {
    let hi = IQ4_NL_VALUES.partition_point(|&k| f32::from(k) < v);
    match hi {
        0 => 0,
        16 => 15,
        hi => {
            let (a, b) = (
                f32::from(IQ4_NL_VALUES[hi - 1]),
                f32::from(IQ4_NL_VALUES[hi]),
            );
            if v - a <= b - v {
                (hi - 1) as u8
            } else {
                hi as u8
            }
        }
    }
}

/// One iq4_nl block (`qs` 16 bytes); returns `d`.
fn iq4_nl(x: &[f32], w: &[f32], qs: &mut [u8]) -> f16 {
    let ext = x
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    let mut idx = [0u8; QK];
    if ext == 0.0 {
        qs.iter_mut().for_each(|q| *q = 0x88);
        return f16::ZERO;
    }
    let k0 = f32::from(IQ4_NL_VALUES[0]);
    let mut best = (f64::INFINITY, 0f32);
    for step in -14..=14 {
        let id = (k0 + 0.5 * step as f32) / ext;
        let (mut swkx, mut swkk) = (0f64, 0f64);
        for (i, (&v, &w)) in x.iter().zip(w).enumerate() {
            idx[i] = nearest(id * v);
            let k = f64::from(IQ4_NL_VALUES[usize::from(idx[i])]);
            swkx += f64::from(w) * k * f64::from(v);
            swkk += f64::from(w) * k * k;
        }
        if swkk == 0.0 {
            continue;
        }
        let d = f32::from(f16::from_f32((swkx / swkk) as f32));
        if d == 0.0 {
            continue;
        }
        let err = weighted_sse(x, w, |i| {
            d * f32::from(IQ4_NL_VALUES[usize::from(nearest(x[i] / d))])
        });
        if err < best.0 {
            best = (err, d);
        }
    }
    let d = f16::from_f32(best.1);
    let df = f32::from(d);
    for (j, q) in qs.iter_mut().enumerate() {
        let (a, b) = match df != 0.0 {
            true => (nearest(x[j] / df), nearest(x[j + 16] / df)),
            false => (8, 8),
        };
        *q = a | (b << 4);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_kernels::quant::QWeight;
    use edgeinfer_kernels::testing::Rng;

    /// Quantizes `x` (one row) and reads it back through the kernels' decoder.
    fn round_trip(format: QFormat, x: &[f32], imp: Option<&[f32]>) -> Vec<f32> {
        let nb = x.len() / format.block_elems();
        let mut qs = vec![0u8; nb * format.qs_bytes_per_block()];
        let mut aux = vec![0u8; nb * format.aux_bytes_per_block()];
        let mut d = vec![f16::ZERO; nb];
        let mut m = vec![f16::ZERO; nb];
        quantize_row(format, x, imp, &mut qs, &mut aux, &mut d, &mut m);
        if !format.has_min() {
            m.clear();
        }
        let w = QWeight::with_aux(format, 1, x.len(), &qs, &aux, &d, &m).unwrap();
        let mut out = vec![0f32; x.len()];
        w.dequantize_row(0, &mut out);
        out
    }

    fn rms(a: &[f32], b: &[f32]) -> f64 {
        let s: f64 = a.iter().zip(b).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        (s / a.len() as f64).sqrt()
    }

    /// Gaussian-like rows: each format's error is within its bits' budget of the row's spread
    /// (uniform 4-bit steps over ±3σ leave about σ·0.12 rms; 6 bits four times less), and more
    /// bits give less error.
    #[test]
    fn round_trips_are_close() {
        let mut rng = Rng::new(7);
        let k = 4 * QK_K;
        let x: Vec<f32> = (0..k)
            .map(|_| (0..4).map(|_| rng.uniform(1.0)).sum::<f32>() * 0.01)
            .collect();
        let sigma = (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / k as f64).sqrt();
        let err: Vec<(QFormat, f64)> = FORMATS
            .iter()
            .map(|&f| (f, rms(&x, &round_trip(f, &x, None)) / sigma))
            .collect();
        println!("{err:?}");
        let of = |f| err.iter().find(|e| e.0 == f).unwrap().1;
        assert!(of(QFormat::Q4K) < 0.12, "{err:?}");
        assert!(of(QFormat::Iq4Nl) < 0.12, "{err:?}");
        assert!(of(QFormat::Q5K) < 0.06, "{err:?}");
        assert!(of(QFormat::Q6K) < 0.03, "{err:?}");
        assert!(of(QFormat::Q5K) < of(QFormat::Q4K) && of(QFormat::Q6K) < of(QFormat::Q5K));
    }

    /// Values already on a q4_1-like grid (what a dequantized 4-bit checkpoint holds) come back
    /// almost exactly in q4_k; zero rows stay zero; importance moves the error off weighted columns.
    #[test]
    fn grids_zeros_and_importance() {
        let mut rng = Rng::new(11);
        let k = 2 * QK_K;
        let x: Vec<f32> = (0..k)
            .map(|j| {
                let b = j / QK;
                (0.002 + 0.0005 * b as f32) * (rng.below(16) as f32) - 0.01
            })
            .collect();
        let back = round_trip(QFormat::Q4K, &x, None);
        let spread = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(
            rms(&x, &back) < 0.02 * f64::from(spread),
            "{}",
            rms(&x, &back)
        );
        for f in FORMATS {
            assert!(
                round_trip(f, &vec![0.0; k], None).iter().all(|&v| v == 0.0),
                "{f}"
            );
        }
        let noisy: Vec<f32> = (0..k).map(|_| rng.uniform(1.0)).collect();
        let mut imp = vec![1.0f32; k];
        imp.iter_mut().step_by(7).for_each(|w| *w = 1000.0);
        for f in FORMATS {
            let (plain, weighted) = (
                round_trip(f, &noisy, None),
                round_trip(f, &noisy, Some(&imp)),
            );
            let err = |y: &[f32]| -> f64 {
                (0..k)
                    .step_by(7)
                    .map(|j| f64::from(noisy[j] - y[j]).powi(2))
                    .sum()
            };
            assert!(
                err(&weighted) < err(&plain),
                "{f}: {} vs {}",
                err(&weighted),
                err(&plain)
            );
        }
    }
}
