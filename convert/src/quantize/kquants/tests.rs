//! Round trips of every format `kquants` writes, through the kernels' decoders.

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
    for (f, bound) in [
        (QFormat::Q2K, 0.40),
        (QFormat::Q3K, 0.22),
        (QFormat::Q4K, 0.12),
        (QFormat::Iq4Nl, 0.12),
        (QFormat::Iq4Xs, 0.12),
        (QFormat::Q5_0, 0.06),
        (QFormat::Q5_1, 0.06),
        (QFormat::Q5K, 0.06),
        (QFormat::Q6K, 0.03),
    ] {
        assert!(of(f) < bound, "{f}: {err:?}");
    }
    let ordered = [
        QFormat::Q2K,
        QFormat::Q3K,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
    ];
    for pair in ordered.windows(2) {
        assert!(of(pair[1]) < of(pair[0]), "{pair:?}: {err:?}");
    }
    // The 5-bit blocks of 32 against the 4-bit ones.
    assert!(of(QFormat::Q5_0) < of(QFormat::Iq4Nl) && of(QFormat::Q5_1) < of(QFormat::Q4K));
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

/// Structured rows, block by block: constants (positive, negative, per 16-element sub-block),
/// ramps, a single spike among zeros, alternating signs and a row of large values. Every format's
/// error stays within a fraction of the row's largest value (finer for more bits), and
/// nothing decodes to a non-finite value.
#[test]
fn structured_rows_round_trip() {
    let k = 2 * QK_K;
    let rows: Vec<(&str, Vec<f32>)> = vec![
        ("constant", vec![0.25; k]),
        ("negative constant", vec![-0.5; k]),
        (
            "sub-block constants",
            (0..k).map(|j| ((j / 16) % 7) as f32 * 0.1 - 0.3).collect(),
        ),
        (
            "ramp",
            (0..k).map(|j| (j % 37) as f32 / 37.0 - 0.4).collect(),
        ),
        (
            "spikes",
            (0..k)
                .map(|j| if j % 97 == 5 { 3.0 } else { 0.0 })
                .collect(),
        ),
        (
            "alternating",
            (0..k)
                .map(|j| if j % 2 == 0 { 1.0 } else { -0.7 })
                .collect(),
        ),
        (
            "large",
            (0..k)
                .map(|j| ((j * 7919) % 113) as f32 * 50.0 - 2500.0)
                .collect(),
        ),
    ];
    for f in FORMATS {
        // Largest error, as a fraction of the row's largest value: half a step of the coarsest
        // grid with some room for coded sub-block scales.
        // (q2_k: four levels over a sub-block's range, up to twice the largest value, so a third; q3_k:
        // eight, symmetric, over an asymmetric range.)
        let bound = match f {
            QFormat::Q2K => 0.35,
            QFormat::Q3K => 0.2,
            QFormat::Q4K => 0.08,
            // The non-linear grid's outer steps are 24 of its 240 units wide.
            QFormat::Iq4Nl | QFormat::Iq4Xs => 0.1,
            _ => 0.04,
        };
        for (what, x) in &rows {
            let back = round_trip(f, x, None);
            let top = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = x
                .iter()
                .zip(&back)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(back.iter().all(|v| v.is_finite()), "{f} {what}");
            assert!(worst <= bound * top, "{f} {what}: error {worst} of {top}");
        }
    }
}

/// The blocks written are valid for the kernels' spec: sub-block codes within their fields'
/// ranges (the decoder's values reproduce each code) and the planes sized as the format says;
/// q3_k's and iq4_xs's signed codes use both signs of the scale when the data asks for it.
#[test]
fn planes_hold_valid_blocks() {
    let mut rng = Rng::new(5);
    for f in FORMATS {
        for rows in [1usize, 3] {
            let k = 3 * QK_K;
            let x: Vec<f32> = (0..rows * k).map(|_| rng.uniform(2.0)).collect();
            let nb = k / f.block_elems();
            let mut qs = vec![0u8; rows * nb * f.qs_bytes_per_block()];
            let mut aux = vec![0u8; rows * nb * f.aux_bytes_per_block()];
            let mut d = vec![f16::ZERO; rows * nb];
            let mut m = vec![f16::ZERO; rows * nb];
            for r in 0..rows {
                let (qb, ab) = (nb * f.qs_bytes_per_block(), nb * f.aux_bytes_per_block());
                quantize_row(
                    f,
                    &x[r * k..(r + 1) * k],
                    None,
                    &mut qs[r * qb..(r + 1) * qb],
                    &mut aux[r * ab..(r + 1) * ab],
                    &mut d[r * nb..(r + 1) * nb],
                    &mut m[r * nb..(r + 1) * nb],
                );
            }
            if !f.has_min() {
                m.clear();
            }
            assert!(d.iter().chain(&m).all(|v| v.is_finite()), "{f}");
            let w = QWeight::with_aux(f, rows, k, &qs, &aux, &d, &m).unwrap();
            let mut out = vec![0f32; k];
            for r in 0..rows {
                w.dequantize_row(r, &mut out);
                let e = rms(&x[r * k..(r + 1) * k], &out);
                assert!(e < 0.5, "{f} row {r}: rms {e}");
            }
        }
    }
}

/// q2_k's and q3_k's fields as the kernels' spec reads them: a block of one value per 16-element
/// sub-block (q3_k also with alternating signs) decodes to those values, within the precision of
/// the coded sub-block scales (4 bits for q2_k, 6 for q3_k, of the largest, 0.16).
#[test]
fn low_bit_fields_decode_by_hand() {
    let x: Vec<f32> = (0..QK_K).map(|i| (1 + i / 16) as f32 * 0.01).collect();
    for (f, bound) in [(QFormat::Q2K, 0.012), (QFormat::Q3K, 0.004)] {
        let back = round_trip(f, &x, None);
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            assert!((a - b).abs() < bound, "{f} element {i}: {a} vs {b}");
        }
    }
    let signed: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| if (i / 16) % 2 == 0 { *v } else { -*v })
        .collect();
    let back = round_trip(QFormat::Q3K, &signed, None);
    let e = rms(&signed, &back);
    assert!(e < 0.002, "q3_k signed sub-blocks: rms {e}");
}
