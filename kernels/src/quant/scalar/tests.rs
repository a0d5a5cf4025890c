//! The scalar spec against f64 math on the dequantized values, and the quantizers' round-trip bounds.
//!
//! Error budgets (u = 2⁻²⁴, the f32 unit roundoff):
//! - Products, every format: the integer block dots are exact, each block term takes at most three
//!   roundings (four for q4_1's two parts and their sum), and summing `nb` terms adds `nb − 1` more, so
//!   `|yt − exact| ≤ (nb + 4)·u·Σ_b |term_b|`, where `exact` is the f64 product of the dequantized
//!   weights and activations and `|term_b|` counts q4_1's two parts separately.
//! - Round trips (weights), per block with `d` the f32 scale and `dh = f16(d)`, `mh = f16(min)`:
//!   q8_0 `|x − x̂| ≤ d/2 + 127·|d − dh|`; q4_0 `≤ |d|/2 + 8·|d − dh|`, except the one clamped value
//!   (`−max`, which lands on 15 instead of 16) at `≤ |d| + 8·|d − dh|`; q4_1 `≤ d/2 + 15·|d − dh| +
//!   |min − mh|`; each plus a few f32 ulps of the block's magnitude for the quantizer's own arithmetic.
//! - Activations: `|x − q·d| ≤ d/2` (exact division, round half away), `|q| ≤ 127`.

use super::*;
use crate::quant::{quantize_acts, Q8Acts, QuantError};
use crate::testing::{seed, QPlanes as Planes, Rng};
use crate::Kernels;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The reference quantizer applied to `x` (`rows × k`).
fn quantize_planes(format: QFormat, rows: usize, k: usize, x: &[f32]) -> Planes {
    let nb = rows * k / QK;
    let mut p = Planes {
        format,
        rows,
        k,
        qs: vec![0; nb * format.qs_bytes_per_block()],
        aux: Vec::new(),
        d: vec![f16::ZERO; nb],
        m: vec![f16::ZERO; if format.has_min() { nb } else { 0 }],
    };
    match format {
        QFormat::Q8_0 => quantize_row_q8_0(x, &mut p.qs, &mut p.d),
        QFormat::Q4_0 => quantize_row_q4_0(x, &mut p.qs, &mut p.d),
        QFormat::Q4_1 => quantize_row_q4_1(x, &mut p.qs, &mut p.d, &mut p.m),
        _ => unreachable!("no quantizer for {format}"),
    }
    p
}

/// Element `j` of row `r` as (`dw`, integer quant, offset) in f64: value = `dw·q + off`.
fn element(w: &QWeight<'_>, r: usize, j: usize) -> (f64, i32, f64) {
    let (nb, b) = (w.k / QK, j / QK);
    let dw = f64::from(f32::from(w.d[r * nb + b]));
    match w.format {
        QFormat::Q8_0 => (dw, i32::from(w.qs[r * w.k + j] as i8), 0.0),
        QFormat::Q4_0 | QFormat::Q4_1 => {
            let (i, byte) = (j % QK, w.qs[(r * w.k + j - j % QK) / 2 + j % (QK / 2)]);
            let nib = i32::from(if i < QK / 2 { byte & 15 } else { byte >> 4 });
            if w.format == QFormat::Q4_0 {
                (dw, nib - 8, 0.0)
            } else {
                (dw, nib, f64::from(f32::from(w.m[r * nb + b])))
            }
        }
        _ => unreachable!("{} is tested in kquant", w.format),
    }
}

fn matmul(format: QFormat) -> fn(&QWeight<'_>, &Q8ActsRef<'_>, &mut [f32]) {
    match format {
        QFormat::Q8_0 => matmul_q8_0_q8,
        QFormat::Q4_0 => matmul_q4_0_q8,
        QFormat::Q4_1 => matmul_q4_1_q8,
        _ => crate::quant::kquant::matmul_q8,
    }
}

/// Checks one product against f64 math on the dequantized operands, with the budget of the module docs.
fn check_vs_f64(w: &QWeight<'_>, x: &Q8ActsRef<'_>, what: &str) {
    let (n, k, nb) = (x.n, w.k, w.k / QK);
    let mut yt = vec![f32::NAN; w.rows * n];
    matmul(w.format)(w, x, &mut yt);
    for r in 0..w.rows {
        for t in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for b in 0..nb {
                let dx = f64::from(x.d[t * nb + b]);
                let (mut idot, mut sx, mut off, mut dw) = (0i64, 0i64, 0.0, 0.0);
                for j in b * QK..(b + 1) * QK {
                    let (d, q, o) = element(w, r, j);
                    let qx = i64::from(x.qs[t * k + j]);
                    exact += (d * f64::from(q) + o) * (qx as f64 * dx);
                    idot += i64::from(q) * qx;
                    sx += qx;
                    (off, dw) = (o, d);
                }
                mag += (dw * dx * idot as f64).abs() + (off * dx * sx as f64).abs();
            }
            let got = f64::from(yt[r * n + t]);
            let budget = (nb + 4) as f64 * U * mag + 1e-300;
            assert!(
                (got - exact).abs() <= budget,
                "{} {what} [{}, {k}] n={n} at (r={r}, t={t}): {got:e} vs f64 {exact:e} (budget {budget:e})",
                w.format,
                w.rows
            );
        }
    }
}

fn acts(x: &[f32], n: usize, k: usize) -> Q8Acts {
    let mut a = Q8Acts::new(n, k);
    quantize_acts(&Kernels::SCALAR, x, n, k, &mut a);
    a
}

#[test]
fn matmul_q_matches_f64_within_budget() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for format in QFormat::BASIC {
        for &(rows, k, n) in &[
            (1, 32, 1),
            (3, 64, 2),
            (7, 96, 5),
            (9, 576, 3),
            (2, 1536, 4),
        ] {
            for (ws, xs) in [(1.0, 1.0), (1e-4, 1e-3), (6e4, 1e6)] {
                let x = rng.vec(n * k, xs);
                let a = acts(&x, n, k);
                let random = Planes::random(&mut rng, format, rows, k, ws, ws);
                check_vs_f64(
                    &random.view(),
                    &a.as_ref(),
                    &format!("random planes seed={seed}"),
                );
                let wx = rng.vec(rows * k, ws);
                let quantized = quantize_planes(format, rows, k, &wx);
                check_vs_f64(
                    &quantized.view(),
                    &a.as_ref(),
                    &format!("quantized seed={seed}"),
                );
            }
        }
    }
}

#[test]
fn matmul_q_extremes() {
    let (rows, k, n) = (4, 64, 2);
    // Saturated activations of both signs, against every extreme quant.
    let x: Vec<f32> = (0..n * k)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let a = acts(&x, n, k);
    assert!(a.as_ref().qs.iter().all(|&q| q.abs() == 127));
    for format in QFormat::BASIC {
        for byte in [0x00u8, 0xff, 0x80, 0x7f, 0x0f, 0xf0] {
            for dv in [0.0f32, 65504.0, -65504.0, 6.0e-8, 1.0] {
                let mut p = Planes::random(&mut Rng::new(7), format, rows, k, 1.0, 1.0);
                p.qs.fill(byte);
                p.d.fill(f16::from_f32(dv));
                p.m.fill(f16::from_f32(-dv));
                check_vs_f64(&p.view(), &a.as_ref(), &format!("qs=0x{byte:02x} d={dv:e}"));
            }
        }
    }
    // All-zero activations give exact zeros.
    let z = acts(&vec![0.0; n * k], n, k);
    for format in QFormat::BASIC {
        let p = Planes::random(&mut Rng::new(9), format, rows, k, 1.0, 1.0);
        let mut yt = vec![f32::NAN; rows * n];
        matmul(format)(&p.view(), &z.as_ref(), &mut yt);
        assert!(yt.iter().all(|&v| v == 0.0), "{format}: {yt:?}");
    }
}

#[test]
fn quantize_q8_spec() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (n, k) = (3, 96);
    for scale in [1.0f32, 1e-30, 1e30, 3.0] {
        let mut x = rng.vec(n * k, scale);
        x[..QK].fill(0.0); // an all-zero block
        x[QK + 5] = 0.5 * scale; // ties and exact multiples appear below
        let a = acts(&x, n, k);
        let a = a.as_ref();
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(a.d[b], amax / 127.0);
            let qb = &a.qs[b * QK..][..QK];
            assert_eq!(a.sum[b], qb.iter().map(|&q| i32::from(q)).sum::<i32>());
            for (&q, &v) in qb.iter().zip(xb) {
                assert_ne!(q, i8::MIN);
                if a.d[b] == 0.0 {
                    assert_eq!(q, 0);
                } else {
                    assert_eq!(
                        f32::from(q),
                        (v / a.d[b]).round(),
                        "x={v:e} d={:e} seed {seed}",
                        a.d[b]
                    );
                    assert!(
                        (f64::from(v) - f64::from(q) * f64::from(a.d[b])).abs()
                            <= 0.5 * f64::from(a.d[b]) * (1.0 + 4.0 * U)
                    );
                }
            }
        }
    }
    // A subnormal scale: the clamp keeps quants in range.
    let mut x = vec![0.0f32; QK];
    x[0] = 143.0 * f32::from_bits(1);
    x[1] = -x[0];
    let a = acts(&x, 1, QK);
    assert_eq!((a.as_ref().qs[0], a.as_ref().qs[1]), (127, -127));
    // Round half away from zero: 63.5 → 64, −63.5 → −64 when d = 1.
    let mut x = vec![0.0f32; QK];
    (x[0], x[1], x[2]) = (127.0, 63.5, -63.5);
    let a = acts(&x, 1, QK);
    assert_eq!(&a.as_ref().qs[..3], &[127, 64, -64]);
}

/// Random blocks of `scale`, with a zero block, a constant block and an outlier block mixed in.
fn test_rows(rng: &mut Rng, k: usize, scale: f32) -> Vec<f32> {
    let mut x = rng.vec(k, scale);
    x[..QK].fill(0.0);
    x[QK..2 * QK].fill(0.37 * scale);
    x[2 * QK + 3] = 40.0 * scale;
    x
}

fn block_bounds(x: &[f32]) -> (f32, f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (amax, min, max)
}

#[test]
fn round_trip_bounds() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let k = 256;
    for format in QFormat::BASIC {
        for scale in [1.0f32, 1e-3, 100.0, 3e3] {
            let x = test_rows(&mut rng, k, scale);
            let p = quantize_planes(format, 1, k, &x);
            let mut back = vec![0.0; k];
            p.view().dequantize_row(0, &mut back);
            for (b, (xb, yb)) in x.chunks_exact(QK).zip(back.chunks_exact(QK)).enumerate() {
                let (amax, min, max) = block_bounds(xb);
                let dh = f64::from(f32::from(p.d[b]));
                let slack = 8.0 * f64::from(f32::EPSILON) * f64::from(amax) + 1e-30;
                for (i, (&v, &y)) in xb.iter().zip(yb).enumerate() {
                    let err = (f64::from(v) - f64::from(y)).abs();
                    let bound = match format {
                        QFormat::Q8_0 => {
                            let d = f64::from(amax / 127.0);
                            0.5 * d + 127.0 * (d - dh).abs()
                        }
                        QFormat::Q4_0 => {
                            // Signed scale; values at or past 7.5·d (around −max) clamp to nibble 15.
                            let ds = f64::from(signed_max(xb) / -8.0);
                            let clamped = ds != 0.0 && f64::from(v) / ds > 7.49;
                            (if clamped { ds.abs() } else { 0.5 * ds.abs() })
                                + 8.0 * (ds - dh).abs()
                        }
                        QFormat::Q4_1 => {
                            let d = f64::from((max - min) / 15.0);
                            let mh = f64::from(f32::from(p.m[b]));
                            0.5 * d + 15.0 * (d - dh).abs() + (f64::from(min) - mh).abs()
                        }
                        _ => unreachable!("no quantizer for {format}"),
                    };
                    assert!(
                        err <= bound + slack,
                        "{format} scale={scale:e} block {b} elem {i}: {v:e} → {y:e}, error {err:e} > {bound:e}; seed {seed}"
                    );
                }
            }
        }
    }
}

fn signed_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a })
}

#[test]
fn quantizers_bit_patterns() {
    // q4_0: max = −8 → d = 1; element j ↦ nib j − 8 + 8 = j for the low half, reversed for the high half.
    let mut x = [0.0f32; QK];
    for j in 0..16 {
        x[j] = j as f32 - 8.0;
        x[j + 16] = 7.0 - j as f32;
    }
    let (mut qs, mut d) = ([0u8; 16], [f16::ZERO; 1]);
    quantize_row_q4_0(&x, &mut qs, &mut d);
    assert_eq!(d[0], f16::from_f32(1.0));
    for (j, &q) in qs.iter().enumerate() {
        assert_eq!(q, j as u8 | ((15 - j as u8) << 4), "byte {j}");
    }
    // q4_1 of 0..31/2: min 0, d = 15.5/15; the lowest element is nibble 0, the highest 15.
    let x: Vec<f32> = (0..QK).map(|i| i as f32 / 2.0).collect();
    let (mut qs, mut d, mut m) = ([0u8; 16], [f16::ZERO; 1], [f16::ONE; 1]);
    quantize_row_q4_1(&x, &mut qs, &mut d, &mut m);
    assert_eq!((m[0], d[0]), (f16::ZERO, f16::from_f32(15.5 / 15.0)));
    assert_eq!((qs[0] & 15, qs[15] >> 4), (0, 15));
    // q8_0: ±amax → ±127, zero block → d = 0 and q = 0.
    let mut x = [0.0f32; 2 * QK];
    (x[0], x[1]) = (-3.0, 3.0);
    let (mut qs, mut d) = ([1u8; 2 * QK], [f16::ONE; 2]);
    quantize_row_q8_0(&x, &mut qs, &mut d);
    assert_eq!((qs[0] as i8, qs[1] as i8, d[1]), (-127, 127, f16::ZERO));
    assert!(qs[QK..].iter().all(|&q| q == 0));
}

#[test]
fn weight_views() {
    let mut rng = Rng::new(1);
    for format in QFormat::BASIC {
        assert_eq!(
            QFormat::from_name(&format.name().to_uppercase()),
            Some(format)
        );
        let (rows, k) = (5, 64);
        let p = Planes::random(&mut rng, format, rows, k, 1.0, 1.0);
        let w = p.view();
        // Sub-views dequantize like the rows they came from.
        let sub = w.rows(2..4);
        assert_eq!(sub.rows, 2);
        let (mut a, mut b) = (vec![0.0; k], vec![0.0; k]);
        for r in 0..2 {
            w.dequantize_row(r + 2, &mut a);
            sub.dequantize_row(r, &mut b);
            assert_eq!(a, b);
            for (j, &v) in a.iter().enumerate() {
                let (d, q, o) = element(&w, r + 2, j);
                assert_eq!(
                    f64::from(v),
                    (d * f64::from(q) + o) as f32 as f64,
                    "{format} r={r} j={j}"
                );
            }
        }
        assert_eq!(w.rows(5..5).rows, 0);
        // Malformed views.
        let bad_k = QWeight::new(format, rows, 48, &p.qs, &p.d, &p.m).unwrap_err();
        assert!(matches!(bad_k, QuantError::BlockSize { .. }), "{bad_k}");
        let short = QWeight::new(format, rows, k, &p.qs[1..], &p.d, &p.m).unwrap_err();
        assert!(
            matches!(short, QuantError::PlaneLength { plane: "qs", .. }),
            "{short}"
        );
        let m: &[f16] = if format.has_min() { &[] } else { &p.d };
        let bad_m = QWeight::new(format, rows, k, &p.qs, &p.d, m).unwrap_err();
        assert!(
            matches!(bad_m, QuantError::PlaneLength { plane: "m", .. }),
            "{bad_m}"
        );
        let huge = QWeight::new(format, usize::MAX / 2, k, &p.qs, &p.d, &p.m).unwrap_err();
        assert!(matches!(huge, QuantError::TooLarge { .. }), "{huge}");
    }
}

#[test]
#[should_panic(expected = "yt has")]
fn matmul_q_checks_output_length() {
    let p = Planes::random(&mut Rng::new(3), QFormat::Q4_0, 2, 32, 1.0, 1.0);
    let a = acts(&[0.5; 64], 2, 32);
    matmul_q4_0_q8(&p.view(), &a.as_ref(), &mut [0.0; 3]);
}
