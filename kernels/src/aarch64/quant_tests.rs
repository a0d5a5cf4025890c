//! What is specific to the aarch64 `quantize_q8`: `fcvtas` rounding ties away from zero, and the
//! ±127 clamp of a block whose subnormal scale rounds down (without it, `xtn` would wrap 140 to −116).
//! Everything else is compared with the scalar spec by `tests/quant_variants.rs` over all variants.

use crate::quant::scalar;
use crate::quant::QK;
use crate::testing::variants_under_test;
use crate::{Kernels, Variant};

fn simd_tables() -> Vec<Kernels> {
    variants_under_test()
        .into_iter()
        .filter(|k| k.variant != Variant::Scalar)
        .collect()
}

/// Quantizes with `kern` and with the scalar spec; every byte must agree.
fn same_acts(kern: &Kernels, x: &[f32], n: usize, k: usize, what: &str) {
    let nb = n * k / QK;
    let (mut q0, mut d0, mut s0) = (vec![0i8; n * k], vec![0f32; nb], vec![0i32; nb]);
    let (mut q1, mut d1, mut s1) = (vec![1i8; n * k], vec![1f32; nb], vec![1i32; nb]);
    scalar::quantize_q8(x, n, k, &mut q0, &mut d0, &mut s0);
    (kern.quantize_q8)(x, n, k, &mut q1, &mut d1, &mut s1);
    let v = kern.variant;
    assert_eq!(q0, q1, "{v} quantize_q8 {what}: quants differ");
    assert_eq!(
        d0.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
        d1.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
        "{v} {what}: scales differ"
    );
    assert_eq!(s0, s1, "{v} quantize_q8 {what}: sums differ");
}

#[test]
fn quantize_q8_ties_and_clamp() {
    for kern in simd_tables() {
        // amax 127 gives d == 1 exactly: x/d is x, so halves are exact ties (away from zero: 2.5 → 3).
        let mut x: Vec<f32> = (0..QK).map(|i| (i as f32 - 16.0) + 0.5).collect();
        x[0] = 127.0;
        x[1] = -126.5;
        same_acts(&kern, &x, 1, QK, "ties at d = 1");
        // d = 2: odd integers are ties of x/d.
        let x: Vec<f32> = (0..QK)
            .map(|i| {
                if i == 5 {
                    -254.0
                } else {
                    (2 * i) as f32 - 31.0
                }
            })
            .collect();
        same_acts(&kern, &x, 1, QK, "ties at d = 2");
        // Subnormal d: x/d can round past 127 and must clamp; all-zero and signed-zero blocks give d = 0.
        let mut x: Vec<f32> = (0..4 * QK).map(|i| (i as f32 - 64.0) * 1e-42).collect();
        x[QK..2 * QK].fill(0.0);
        x[2 * QK..3 * QK].fill(-0.0);
        x[3 * QK] = f32::from_bits(1);
        // amax = 698 subnormal units: d = 698/127 = 5.5 rounds to 5 units, and 698/5 = 139.6 rounds
        // to 140, which clamps to 127.
        for (i, v) in x[3 * QK + 1..4 * QK].iter_mut().enumerate() {
            *v = f32::from_bits(698 - 20 * i as u32) * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        same_acts(&kern, &x, 2, 2 * QK, "subnormal and zero blocks");
    }
}
