//! Error-compensating rounding for the conversion tool (`infer quantize`), after GPTQ (Frantar et
//! al., 2022): the weights of a row are rounded one column at a time, and each rounding error is
//! spread over the columns not yet rounded, in the proportions that least change the row's products
//! with the activations it will meet. Those proportions come from `H = Σ xᵀx` over calibration
//! activations `x` (the matrix's inputs); only the upper Cholesky factor `U` of `H⁻¹` is needed.
//!
//! The output is ordinary q8_0 / q4_0 / q4_1 blocks: each block's scale (and minimum) is chosen by
//! the usual quantizer from the row's values as they stand when the block is reached, so kernels and
//! file format are untouched; only which codes are chosen differs.
//!
//! Rows are independent, so callers split them across threads freely.

use half::f16;

use edgeinfer_kernels::quant::{QFormat, QK};

use super::search::quantize_row;

/// Upper-triangular `U` (row-major `k × k`, f32) with `UᵀU = (H + λI)⁻¹`, from a symmetric `h`
/// (row-major `k × k`, consumed), where `λ = damp · mean(diag H)`. A channel that never carried a
/// value (`H[j][j] = 0`) gets `H[j][j] = 1`, which leaves its column's rounding plain. `None` if the
/// damped matrix is still not numerically positive definite (the caller rounds plainly instead).
///
/// Computed without forming `H⁻¹`: with `P` the order reversal, `PHP = LLᵀ` (lower Cholesky) gives
/// `H = VVᵀ` with `V = PLP` upper, so `H⁻¹ = (V⁻¹)ᵀV⁻¹` and `U = V⁻¹ = P L⁻¹ P`.
pub fn inverse_factor(h: &mut [f64], k: usize, damp: f64) -> Option<Vec<f32>> {
    assert_eq!(h.len(), k * k, "inverse_factor: h is not k x k");
    if k == 0 {
        return Some(Vec::new());
    }
    for j in 0..k {
        if h[j * k + j] <= 0.0 {
            h[j * k + j] = 1.0;
        }
    }
    let mean = (0..k).map(|j| h[j * k + j]).sum::<f64>() / k as f64;
    let lambda = damp * mean;
    // a = PHP, damped.
    let mut a = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            a[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
        }
        a[i * k + i] += lambda;
    }
    let l = cholesky_lower(&a, k)?;
    let li = lower_inverse(&l, k);
    let mut u = vec![0f32; k * k];
    for i in 0..k {
        for j in i..k {
            u[i * k + j] = li[(k - 1 - i) * k + (k - 1 - j)] as f32;
        }
    }
    Some(u)
}

/// Lower `L` with `LLᵀ = a` (row-major), row by row; `None` on a pivot that is not positive.
fn cholesky_lower(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let dot: f64 = l[i * k..i * k + j]
                .iter()
                .zip(&l[j * k..j * k + j])
                .map(|(x, y)| x * y)
                .sum();
            let v = a[i * k + j] - dot;
            if i == j {
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * k + i] = v.sqrt();
            } else {
                l[i * k + j] = v / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// `L⁻¹` of a lower-triangular `l` with a positive diagonal (row-major), row by row:
/// `X[i][j] = −(Σ_{j ≤ m < i} L[i][m]·X[m][j]) / L[i][i]` below the diagonal, `1/L[i][i]` on it.
fn lower_inverse(l: &[f64], k: usize) -> Vec<f64> {
    let mut x = vec![0f64; k * k];
    let mut acc = vec![0f64; k];
    for i in 0..k {
        // acc[j] = Σ_{m < i} L[i][m]·X[m][j]; row m of X is zero beyond column m.
        acc[..i].fill(0.0);
        for m in 0..i {
            let c = l[i * k + m];
            if c != 0.0 {
                for (a, &v) in acc[..=m].iter_mut().zip(&x[m * k..m * k + m + 1]) {
                    *a += c * v;
                }
            }
        }
        let inv = 1.0 / l[i * k + i];
        for j in 0..i {
            x[i * k + j] = -acc[j] * inv;
        }
        x[i * k + i] = inv;
    }
    x
}

/// Rounds `w` (`rows × k` f32, row-major; overwritten by the error feedback) to `format` with the
/// factor `u` from [`inverse_factor`], writing the blocks as the reference quantizers of
/// `edgeinfer_kernels::quant::scalar` lay them out: `qs` (`rows × k/32 × bytes per block`), `d`
/// and, for q4_1, `m` (`rows × k/32` each; `m` is left alone for the other formats).
pub fn quantize_rows(
    format: QFormat,
    w: &mut [f32],
    k: usize,
    u: &[f32],
    qs: &mut [u8],
    d: &mut [f16],
    m: &mut [f16],
) {
    assert!(
        k > 0 && k.is_multiple_of(QK) && w.len().is_multiple_of(k),
        "gptq::quantize_rows: k = {k} with {} weights",
        w.len()
    );
    assert_eq!(u.len(), k * k, "gptq::quantize_rows: u is not k x k");
    let rows = w.len() / k;
    let nb = k / QK;
    let rb = nb * format.qs_bytes_per_block();
    assert!(
        qs.len() == rows * rb && d.len() == rows * nb,
        "gptq::quantize_rows: output planes do not match {rows} rows of {k}"
    );
    if format.has_min() {
        assert_eq!(m.len(), rows * nb, "gptq::quantize_rows: m plane size");
    }
    let mut params = vec![Block::default(); rows];
    let mut codes = vec![0u8; rows * k];
    for j in 0..k {
        if j % QK == 0 {
            for (r, p) in params.iter_mut().enumerate() {
                *p = Block::choose(format, &w[r * k + j..r * k + j + QK]);
            }
        }
        let urow = &u[j * k..(j + 1) * k];
        let diag = urow[j];
        for r in 0..rows {
            let row = &mut w[r * k..(r + 1) * k];
            let (code, value) = params[r].round(format, row[j]);
            codes[r * k + j] = code;
            let err = (row[j] - value) / diag;
            for (x, &c) in row[j + 1..].iter_mut().zip(&urow[j + 1..]) {
                *x -= err * c;
            }
        }
        if j % QK == QK - 1 {
            let b = j / QK;
            for (r, p) in params.iter().enumerate() {
                d[r * nb + b] = p.d;
                if format.has_min() {
                    m[r * nb + b] = p.m;
                }
                let block = &codes[r * k + b * QK..r * k + (b + 1) * QK];
                let out = &mut qs[r * rb + b * format.qs_bytes_per_block()..]
                    [..format.qs_bytes_per_block()];
                pack(format, block, out);
            }
        }
    }
}

/// One block's scale (and minimum), as stored and as f32.
#[derive(Clone, Copy, Default)]
struct Block {
    d: f16,
    m: f16,
    df: f32,
    mf: f32,
}

impl Block {
    /// The plain rounding's choice ([`quantize_row`]) for the block's current values.
    fn choose(format: QFormat, x: &[f32]) -> Block {
        let (mut qs, mut d, mut m) = ([0u8; QK], [f16::ZERO], [f16::ZERO]);
        let qs = &mut qs[..format.qs_bytes_per_block()];
        quantize_row(format, x, qs, &mut d, &mut m);
        Block {
            d: d[0],
            m: m[0],
            df: f32::from(d[0]),
            mf: f32::from(m[0]),
        }
    }

    /// The code nearest `v` and the value it stands for.
    fn round(&self, format: QFormat, v: f32) -> (u8, f32) {
        let Block { df, mf, .. } = *self;
        if df == 0.0 {
            return match format {
                QFormat::Q8_0 => (0, 0.0),
                QFormat::Q4_0 => (8, 0.0),
                QFormat::Q4_1 => (0, mf),
                _ => unreachable!("quantize_checkpoint refuses {format}"),
            };
        }
        match format {
            QFormat::Q8_0 => {
                let q = (v / df).round().clamp(-127.0, 127.0);
                ((q as i8) as u8, q * df)
            }
            QFormat::Q4_0 => {
                let q = (v / df + 8.0).round().clamp(0.0, 15.0);
                (q as u8, (q - 8.0) * df)
            }
            QFormat::Q4_1 => {
                let q = ((v - mf) / df).round().clamp(0.0, 15.0);
                (q as u8, q * df + mf)
            }
            _ => unreachable!("quantize_checkpoint refuses {format}"),
        }
    }
}

/// A block's 32 codes in the format's byte layout (4-bit: element `j` in the low nibble of byte `j`,
/// element `j + 16` in its high nibble).
fn pack(format: QFormat, codes: &[u8], out: &mut [u8]) {
    match format {
        QFormat::Q8_0 => out.copy_from_slice(codes),
        QFormat::Q4_0 | QFormat::Q4_1 => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = codes[j] | (codes[j + QK / 2] << 4);
            }
        }
        _ => unreachable!("quantize_checkpoint refuses {format}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_kernels::testing::{QPlanes, Rng};

    /// `Σ xᵀx` over the rows of `xs` (`k` wide), in f64.
    fn gram(xs: &[f32], k: usize) -> Vec<f64> {
        let mut h = vec![0f64; k * k];
        for x in xs.chunks_exact(k) {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += f64::from(x[i]) * f64::from(x[j]);
                }
            }
        }
        h
    }

    /// `Σ (w·x − ŵ·x)²` over the calibration rows `xs` (`n × k`) for one weight row.
    fn output_error(w: &[f32], wq: &[f32], xs: &[f32], k: usize) -> f64 {
        xs.chunks_exact(k)
            .map(|x| {
                let e: f64 = w
                    .iter()
                    .zip(wq)
                    .zip(x)
                    .map(|((&a, &b), &v)| f64::from(a - b) * f64::from(v))
                    .sum();
                e * e
            })
            .sum()
    }

    #[test]
    fn factor_inverts_the_damped_matrix() {
        let mut rng = Rng::new(3);
        let k = 13;
        let xs = rng.vec(40 * k, 1.0);
        let mut h = gram(&xs, k);
        let h0 = h.clone();
        let u = inverse_factor(&mut h, k, 0.01).unwrap();
        let lambda = 0.01 * (0..k).map(|j| h0[j * k + j]).sum::<f64>() / k as f64;
        // (UᵀU)(H + λI) = I.
        for i in 0..k {
            for j in 0..k {
                let mut v = 0.0;
                for m in 0..k {
                    let hinv: f64 = (0..k)
                        .map(|t| f64::from(u[t * k + i]) * f64::from(u[t * k + m]))
                        .sum();
                    v += hinv * (h0[m * k + j] + if m == j { lambda } else { 0.0 });
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-4, "({i},{j}) {v}");
            }
            for j in 0..i {
                assert_eq!(u[i * k + j], 0.0, "U is not upper triangular at ({i},{j})");
            }
        }
    }

    #[test]
    fn not_positive_definite_is_refused() {
        let mut h = vec![1.0, 2.0, 2.0, 1.0];
        assert!(inverse_factor(&mut h, 2, 0.0).is_none());
    }

    /// On correlated activations the compensated rounding leaves a smaller output error than plain
    /// rounding, in every format, and its blocks are valid encodings (they dequantize as stored).
    #[test]
    fn beats_plain_rounding_on_the_outputs() {
        let mut rng = Rng::new(11);
        let (rows, k, n) = (6, 96, 256);
        // Activations with a shared component and a few loud channels, like a transformer's.
        let common = rng.vec(n, 1.0);
        let mut xs = vec![0f32; n * k];
        for t in 0..n {
            for j in 0..k {
                let loud = if j % 37 == 5 { 8.0 } else { 1.0 };
                xs[t * k + j] = loud * (0.7 * common[t] + 0.5 * rng.uniform(1.0));
            }
        }
        let mut h = gram(&xs, k);
        let u = inverse_factor(&mut h, k, 0.01).unwrap();
        let w = rng.vec(rows * k, 0.1);
        for format in [QFormat::Q8_0, QFormat::Q4_0, QFormat::Q4_1] {
            let (nb, rb) = (k / QK, k / QK * format.qs_bytes_per_block());
            let empty = || QPlanes {
                format,
                rows,
                k,
                qs: vec![0u8; rows * rb],
                aux: Vec::new(),
                d: vec![f16::ZERO; rows * nb],
                m: vec![f16::ZERO; if format.has_min() { rows * nb } else { 0 }],
            };
            let (mut ours, mut plain_planes) = (empty(), empty());
            let mut work = w.clone();
            let mut m = vec![f16::ZERO; rows * nb];
            quantize_rows(format, &mut work, k, &u, &mut ours.qs, &mut ours.d, &mut m);
            if format.has_min() {
                ours.m = m.clone();
            }
            // Plain rounding as the conversion tool does it, row by row.
            let p = &mut plain_planes;
            for r in 0..rows {
                quantize_row(
                    format,
                    &w[r * k..(r + 1) * k],
                    &mut p.qs[r * rb..(r + 1) * rb],
                    &mut p.d[r * nb..(r + 1) * nb],
                    &mut m[r * nb..(r + 1) * nb],
                );
            }
            if format.has_min() {
                p.m = m;
            }
            let (ours, plain_w) = (ours.view(), plain_planes.view());
            let (mut plain, mut comp) = (0.0, 0.0);
            let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
            for r in 0..rows {
                let row = &w[r * k..(r + 1) * k];
                ours.dequantize_row(r, &mut a);
                plain_w.dequantize_row(r, &mut b);
                comp += output_error(row, &a, &xs, k);
                plain += output_error(row, &b, &xs, k);
            }
            assert!(
                comp < plain * 0.8,
                "{format}: compensated output error {comp} vs plain {plain}"
            );
        }
    }
}
