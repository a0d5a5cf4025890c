//! Weight quantizers that search each block's scale for the least squared error, for the conversion
//! tool (`infer quantize`). The reference quantizers in `edgeinfer_kernels::quant::scalar` fix the
//! scale from the block's extreme value (ggml's choice); on weights that already lie on another grid
//! — a dequantized q4_1 checkpoint requantized to q4_0 — that scale can be far from the best one.
//! Output bytes have the same format and meaning either way; only which valid encoding is chosen
//! differs.

use half::f16;

use edgeinfer_kernels::quant::scalar::{quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0};
use edgeinfer_kernels::quant::{QFormat, QK};

/// One row in `format` the way the conversion tool rounds plainly: q8_0 and q4_1 by the reference
/// quantizers, q4_0 with the scale search below. `m` is written for q4_1 only.
pub fn quantize_row(format: QFormat, x: &[f32], qs: &mut [u8], d: &mut [f16], m: &mut [f16]) {
    match format {
        QFormat::Q8_0 => quantize_row_q8_0(x, qs, d),
        QFormat::Q4_0 => quantize_row_q4_0_search(x, qs, d),
        QFormat::Q4_1 => quantize_row_q4_1(x, qs, d, m),
        _ => unreachable!("quantize_checkpoint refuses {format}"),
    }
}

/// Candidate divisors of the signed extreme value tried for q4_0 (the reference uses −8).
const Q4_0_DIVISORS: [f32; 9] = [-8.0, -7.75, -7.5, -7.25, -7.0, -6.75, -6.5, 7.0, 7.5];

/// q4_0 with the block scale chosen among `max / c` for the divisors above (and the nibbles rounded
/// to nearest for each), keeping the one whose dequantized block has the least squared error.
/// Never worse than [`quantize_row_q4_0`] in squared error per block.
pub fn quantize_row_q4_0_search(x: &[f32], qs: &mut [u8], d: &mut [f16]) {
    // Start from the reference encoding (which also checks the plane lengths), so the search can
    // only improve on it.
    quantize_row_q4_0(x, qs, d);
    for ((xb, qb), db) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK / 2))
        .zip(d.iter_mut())
    {
        let mut best = sse_q4_0(xb, qb, *db);
        let max = xb
            .iter()
            .fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        if max == 0.0 {
            continue;
        }
        let mut cand = [0u8; QK / 2];
        for c in Q4_0_DIVISORS {
            let scale = f16::from_f32(max / c);
            let s = f32::from(scale);
            if s == 0.0 || !s.is_finite() {
                continue;
            }
            let nib = |v: f32| (v / s + 8.0).round().clamp(0.0, 15.0) as u8;
            for (j, q) in cand.iter_mut().enumerate() {
                *q = nib(xb[j]) | (nib(xb[j + QK / 2]) << 4);
            }
            let err = sse_q4_0(xb, &cand, scale);
            if err < best {
                best = err;
                qb.copy_from_slice(&cand);
                *db = scale;
            }
        }
    }
}

/// Squared error of one q4_0 block against `x`.
fn sse_q4_0(x: &[f32], qs: &[u8], d: f16) -> f64 {
    let d = f32::from(d);
    let mut e = 0.0f64;
    for (j, &q) in qs.iter().enumerate() {
        let lo = d * (f32::from(q & 15) - 8.0) - x[j];
        let hi = d * (f32::from(q >> 4) - 8.0) - x[j + QK / 2];
        e += f64::from(lo * lo) + f64::from(hi * hi);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_kernels::testing::Rng;

    #[test]
    fn never_worse_than_the_reference_and_better_on_a_shifted_grid() {
        let mut rng = Rng::new(7);
        let (mut better, mut total) = (0, 0);
        for case in 0..200 {
            // Half the blocks lie on a q4_1-style grid (offset levels), half are random.
            let x: Vec<f32> = if case % 2 == 0 {
                let (dd, m) = (rng.uniform(0.1).abs() + 0.01, rng.uniform(0.5));
                (0..QK).map(|_| m + dd * rng.below(16) as f32).collect()
            } else {
                rng.vec(QK, 1.0)
            };
            let (mut q_ref, mut d_ref) = ([0u8; QK / 2], [f16::ZERO]);
            let (mut q_s, mut d_s) = ([0u8; QK / 2], [f16::ZERO]);
            quantize_row_q4_0(&x, &mut q_ref, &mut d_ref);
            quantize_row_q4_0_search(&x, &mut q_s, &mut d_s);
            let (e_ref, e_s) = (sse_q4_0(&x, &q_ref, d_ref[0]), sse_q4_0(&x, &q_s, d_s[0]));
            assert!(
                e_s <= e_ref,
                "case {case}: search {e_s} > reference {e_ref}"
            );
            better += usize::from(e_s < e_ref * 0.9);
            total += 1;
        }
        assert!(
            better * 4 > total,
            "the search improved only {better} of {total} blocks by 10%"
        );
    }
}
