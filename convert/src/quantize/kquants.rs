//! Quantizers for the GGUF formats `infer quantize` writes: q5_0, q5_1, iq4_nl (32-element
//! blocks) and q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs (256-element super-blocks), each block fitted by
//! weighted least squares (the weights: an importance per column, from calibration activations, or
//! all ones), then packed exactly as ggml packs it, so the kernels' decoders
//! (`edgeinfer_kernels::quant::kquant`, checked bit for bit against llama.cpp's reader) read back
//! the values chosen here.
//!
//! - q5_0: a symmetric fit `d·(q − 16)`; q5_1: an affine fit `d·q + m` (`q` 0..=31); each searched
//!   over a range of step sizes with the least-squares scale (and minimum) for each rounding, then
//!   every element rounded again against the f16 values as stored.
//! - q2_k / q4_k / q5_k: per sub-block (16 or 32 elements) an affine fit `scale·q − min` (`q`
//!   0..=3, 15 or 31, `min ≥ 0`) found the same way; then the sub-block scales and minimums are
//!   coded (4 or 6 bits) against the super-block's f16 `d` and `dmin` ([`affine_codes`]), and every
//!   element rounded again against the scales as stored.
//! - q3_k / q6_k: per 16-element sub-block a symmetric fit `scale·l` (`l` −4..=3 or −32..=31), the
//!   sixteen scales coded (6 bits less 32, or i8) against the f16 `d` ([`signed_codes`]), then the
//!   elements rounded again.
//! - iq4_nl / iq4_xs: the non-linear grid, see [`super::iq4`].
//!
//! Both code searches try super-block units around `extreme scale / largest code` and, per
//! sub-block, the codes on both sides of each fitted scale, keeping what leaves the least weighted
//! error after rounding the elements again: the coded scales are where the K-quants lose most
//! against a free fit.

use half::f16;

use edgeinfer_kernels::quant::{QFormat, QK, QK_K};

use super::iq4;

/// Formats this module writes.
pub const FORMATS: [QFormat; 9] = [
    QFormat::Q5_0,
    QFormat::Q5_1,
    QFormat::Iq4Nl,
    QFormat::Q2K,
    QFormat::Q3K,
    QFormat::Q4K,
    QFormat::Q5K,
    QFormat::Q6K,
    QFormat::Iq4Xs,
];

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
            // Without calibration, the IQ4 formats weigh each element by its square plus the
            // block's mean square (as llama.cpp does): their grid is densest near zero, so the
            // large values are where the scale's choice matters.
            (None, QFormat::Iq4Nl | QFormat::Iq4Xs) => {
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
            QFormat::Q5_0 => d[b] = q5_0(xb, w, qs, aux),
            QFormat::Q5_1 => (d[b], m[b]) = q5_1(xb, w, qs, aux),
            QFormat::Iq4Nl => d[b] = iq4::iq4_nl(xb, w, qs),
            QFormat::Q2K => (d[b], m[b]) = q2_k(xb, w, qs, aux),
            QFormat::Q3K => d[b] = q3_k(xb, w, qs, aux),
            QFormat::Q4K | QFormat::Q5K => {
                let nmax = if format == QFormat::Q4K { 15 } else { 31 };
                (d[b], m[b]) = affine_k(xb, w, nmax, qs, aux, format == QFormat::Q5K);
            }
            QFormat::Q6K => d[b] = q6_k(xb, w, qs, aux),
            QFormat::Iq4Xs => d[b] = iq4::iq4_xs(xb, w, qs, aux),
            _ => unreachable!("kquants writes the GGUF formats, not {format}"),
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

pub(crate) fn weighted_sse(x: &[f32], w: &[f32], value: impl Fn(usize) -> f32) -> f64 {
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

/// A super-block's sub-blocks of `sub` elements, each `x ≈ scale·q − min` (`q` in `0..=nmax`)
/// with `scale = d·sc`, `min = dmin·mn` and the codes `sc`, `mn` in `0..=cmax`: returns `(d, dmin,
/// sc, mn, q)` (the first `x.len() / sub` codes used).
fn affine_codes(
    x: &[f32],
    w: &[f32],
    sub: usize,
    nmax: u8,
    cmax: u8,
) -> (f16, f16, [u8; 16], [u8; 16], [u8; QK_K]) {
    let n = x.len() / sub;
    let mut fits = [(0f32, 0f32); 16];
    for (j, f) in fits[..n].iter_mut().enumerate() {
        *f = fit_affine(&x[sub * j..sub * (j + 1)], &w[sub * j..sub * (j + 1)], nmax);
    }
    let max_scale = fits.iter().fold(0f32, |a, f| a.max(f.0));
    let max_min = fits.iter().fold(0f32, |a, f| a.max(f.1));
    let top = f32::from(cmax);
    let element = |v: f32, s: f32, mm: f32| -> u8 {
        match s > 0.0 {
            true => ((v + mm) / s).round().clamp(0.0, f32::from(nmax)) as u8,
            false => 0,
        }
    };
    let mut best = (f64::INFINITY, f16::ZERO, f16::ZERO, [0u8; 16], [0u8; 16]);
    for step in -6..=6 {
        let grow = 1.0 + 0.02 * step as f32;
        let d = f16::from_f32(max_scale / top * grow);
        let dmin = f16::from_f32(max_min / top * grow);
        let (df, mf) = (f32::from(d), f32::from(dmin));
        let (mut sc, mut mn, mut total) = ([0u8; 16], [0u8; 16], 0f64);
        for j in 0..n {
            let (xs, ws) = (&x[sub * j..sub * (j + 1)], &w[sub * j..sub * (j + 1)]);
            let codes = |v: f32, unit: f32| -> [u8; 2] {
                match unit > 0.0 {
                    true => {
                        let c = (v / unit).clamp(0.0, top);
                        [c.floor() as u8, c.ceil() as u8]
                    }
                    false => [0, 0],
                }
            };
            let mut pick = (f64::INFINITY, 0u8, 0u8);
            for s6 in codes(fits[j].0, df) {
                for m6 in codes(fits[j].1, mf) {
                    let (sv, mv) = (df * f32::from(s6), mf * f32::from(m6));
                    let err = weighted_sse(xs, ws, |i| sv * f32::from(element(xs[i], sv, mv)) - mv);
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
    let mut q = [0u8; QK_K];
    for (i, (q, &v)) in q.iter_mut().zip(x).enumerate() {
        let j = i / sub;
        *q = element(v, df * f32::from(sc[j]), mf * f32::from(mn[j]));
    }
    (d, dmin, sc, mn, q)
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
    let (d, dmin, sc, mn, q) = affine_codes(x, w, QK, nmax, 63);
    // ggml's packing (the inverse of `get_scale_min_k4`).
    for j in 0..4 {
        aux[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        aux[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        aux[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
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

/// One q2_k super-block: `qs` 64 bytes, `aux` 16 (`sc | mn << 4` per 16-element sub-block);
/// returns `(d, dmin)`.
fn q2_k(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> (f16, f16) {
    let (d, dmin, sc, mn, q) = affine_codes(x, w, 16, 3, 15);
    for h in 0..16 {
        aux[h] = sc[h] | (mn[h] << 4);
    }
    pack_2bit(&q, &mut qs[..64]);
    (d, dmin)
}

/// q2_k's and q3_k's low two bits: element 128·n + 32·j + l in bits 2j of byte 32·n + l.
fn pack_2bit(q: &[u8; QK_K], qs: &mut [u8]) {
    qs.fill(0);
    for n in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                qs[32 * n + l] |= (q[128 * n + 32 * j + l] & 3) << (2 * j);
            }
        }
    }
}

/// The f16 unit `d` and the codes `c` in `cmin..=cmax` of sub-block scales `d·c` for the fitted
/// `scales` (`cmin` < 0 takes the extreme scale), chosen by `err(j, scale)`, the weighted error of
/// sub-block `j` rounded against `scale`.
pub(crate) fn signed_codes(
    scales: &[f32],
    cmin: i32,
    cmax: i32,
    err: impl Fn(usize, f32) -> f64,
) -> (f16, [i32; 16]) {
    let ext = scales
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    let mut best = (f64::INFINITY, f16::ZERO, [0i32; 16]);
    if ext == 0.0 {
        return (best.1, best.2);
    }
    for step in -4..=4 {
        let d = f16::from_f32(ext / cmin as f32 * (1.0 + 0.02 * step as f32));
        let df = f32::from(d);
        if df == 0.0 {
            continue;
        }
        let (mut codes, mut total) = ([0i32; 16], 0f64);
        for (j, &s) in scales.iter().enumerate() {
            let c = (s / df).clamp(cmin as f32, cmax as f32);
            let mut pick = (f64::INFINITY, 0);
            for c in [c.floor() as i32, c.ceil() as i32] {
                let e = err(j, df * c as f32);
                if e < pick.0 {
                    pick = (e, c);
                }
            }
            codes[j] = pick.1;
            total += pick.0;
        }
        if total < best.0 {
            best = (total, d, codes);
        }
    }
    (best.1, best.2)
}

/// The weighted error of `x ≈ s·l`, `l` the nearest integer in `lo..=hi`.
fn symmetric_error(x: &[f32], w: &[f32], s: f32, lo: f32, hi: f32) -> f64 {
    weighted_sse(x, w, |i| match s != 0.0 {
        true => s * (x[i] / s).round().clamp(lo, hi),
        false => 0.0,
    })
}

/// `x`'s integers `l` in `lo..=hi` for the scale `s` (0 for a zero scale).
fn symmetric_round(x: f32, s: f32, lo: f32, hi: f32) -> i32 {
    match s != 0.0 {
        true => (x / s).round().clamp(lo, hi) as i32,
        false => 0,
    }
}

/// One q3_k super-block: `qs` (`hmask` 32 then 64 bytes of low bits), `aux` (12 bytes of 6-bit
/// scales); returns `d`.
fn q3_k(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> f16 {
    let mut scales = [0f32; 16];
    for (h, s) in scales.iter_mut().enumerate() {
        *s = fit_symmetric(&x[16 * h..16 * (h + 1)], &w[16 * h..16 * (h + 1)], 4);
    }
    let (d, codes) = signed_codes(&scales, -32, 31, |h, s| {
        let r = 16 * h..16 * (h + 1);
        symmetric_error(&x[r.clone()], &w[r], s, -4.0, 3.0)
    });
    let df = f32::from(d);
    aux[..12].fill(0);
    let mut q = [0u8; QK_K];
    for (h, &c) in codes.iter().enumerate() {
        let code = (c + 32) as u8;
        aux[h % 8] |= (code & 0xF) << (4 * (h / 8));
        aux[8 + h % 4] |= (code >> 4) << (2 * (h / 4));
        let s = df * c as f32;
        for i in 16 * h..16 * (h + 1) {
            q[i] = (symmetric_round(x[i], s, -4.0, 3.0) + 4) as u8;
        }
    }
    // `q` + 4 in 0..8: its low two bits as q2_k's, its third bit in `hmask[l]`, bit 4n + j.
    let (hmask, low) = qs.split_at_mut(32);
    pack_2bit(&q, low);
    hmask.fill(0);
    for n in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                hmask[l] |= (q[128 * n + 32 * j + l] >> 2) << (4 * n + j);
            }
        }
    }
    d
}

/// One q5_0 block: `qs` 16 bytes of low nibbles, `aux` the 4 `qh` bytes; returns `d`.
fn q5_0(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> f16 {
    let d = f16::from_f32(fit_symmetric(x, w, 16));
    let s = f32::from(d);
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (symmetric_round(v, s, -16.0, 15.0) + 16) as u8;
    }
    pack_5bit(&q, qs, aux);
    d
}

/// One q5_1 block: as q5_0, value `d·q + m`; returns `(d, m)`.
fn q5_1(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> (f16, f16) {
    let (scale, min) = fit_affine(x, w, 31);
    let (d, m) = (f16::from_f32(scale), f16::from_f32(-min));
    let (df, mf) = (f32::from(d), f32::from(m));
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = match df > 0.0 {
            true => ((v - mf) / df).round().clamp(0.0, 31.0) as u8,
            false => 0,
        };
    }
    pack_5bit(&q, qs, aux);
    (d, m)
}

/// q5_0's and q5_1's packing: element `j` < 16 in the low nibble of byte `j`, element `j + 16` in
/// its high nibble, their fifth bits at bits `j` and `j + 16` of `qh` (u32 LE).
fn pack_5bit(q: &[u8; QK], qs: &mut [u8], aux: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (q[j], q[j + 16]);
        qs[j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= (u32::from(a >> 4) << j) | (u32::from(b >> 4) << (j + 16));
    }
    aux[..4].copy_from_slice(&qh.to_le_bytes());
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
    let (d, codes) = signed_codes(&scales, -128, 127, |h, s| {
        let r = 16 * h..16 * (h + 1);
        symmetric_error(&x[r.clone()], &w[r], s, -32.0, 31.0)
    });
    let df = f32::from(d);
    let mut q = [0u8; QK_K];
    for (h, &c) in codes.iter().enumerate() {
        aux[h] = c as i8 as u8;
        let s = df * c as f32;
        for i in 16 * h..16 * (h + 1) {
            q[i] = (symmetric_round(x[i], s, -32.0, 31.0) + 32) as u8;
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

#[cfg(test)]
mod tests;
