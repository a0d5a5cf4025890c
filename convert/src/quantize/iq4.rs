//! The non-linear 4-bit formats: iq4_nl (32-element blocks, `d·K[q]`) and iq4_xs (256-element
//! super-blocks of eight 32-element sub-blocks, `(d·(sc − 32))·K[q]`), `K` ggml's sixteen values.
//!
//! A block's scale is searched, not derived from its extreme value alone: `K` is asymmetric
//! (−127..113) and densest near zero, so which end of the grid the extreme lands on (the sign of
//! the scale) and how far in it lands both matter. Each candidate rounds every element to its
//! nearest grid value, then the scale is refitted by weighted least squares for those indices and
//! the elements rounded again, until the indices stop changing (a few rounds).

use half::f16;

use edgeinfer_kernels::quant::kquant::IQ4_NL_VALUES;
use edgeinfer_kernels::quant::{QK, QK_K};

use super::kquants::{signed_codes, weighted_sse};

/// The index of the grid value nearest `v` (the grid is sorted; a tie takes the lower value).
pub(crate) fn nearest(v: f32) -> u8 {
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

fn grid(i: u8) -> f32 {
    f32::from(IQ4_NL_VALUES[usize::from(i)])
}

/// The weighted error of `x ≈ s·K[nearest(x/s)]`.
pub(crate) fn grid_error(x: &[f32], w: &[f32], s: f32) -> f64 {
    match s != 0.0 {
        true => weighted_sse(x, w, |i| s * grid(nearest(x[i] / s))),
        false => weighted_sse(x, w, |_| 0.0),
    }
}

/// The best scale `s` of `x ≈ s·K[q]` (each `q` the nearest index for `s`), rounded by `round`
/// (f16 for iq4_nl's `d`; none for an iq4_xs sub-block, whose scale is coded afterwards).
///
/// Candidates map the extreme element `ext` to each end of the grid (`K[0] = −127` and
/// `K[15] = 113`, i.e. both signs of the scale) and to points up to one grid step inside it; each
/// is refined by alternating least-squares refits and re-rounding (up to three rounds).
pub(crate) fn fit_grid(x: &[f32], w: &[f32], round: impl Fn(f32) -> f32) -> f32 {
    let ext = x
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    if ext == 0.0 {
        return 0.0;
    }
    let sxx: f64 = x
        .iter()
        .zip(w)
        .map(|(&v, &wi)| f64::from(wi) * f64::from(v) * f64::from(v))
        .sum();
    let mut best = (f64::INFINITY, 0f32);
    for end in [grid(0), grid(15)] {
        // `end` moved inward by up to one of the grid's outer steps (24), two units at a time.
        let inward = -end.signum();
        for step in -1..=12 {
            let mut s = ext / (end + inward * 2.0 * step as f32);
            for _ in 0..3 {
                let (mut swkx, mut swkk) = (0f64, 0f64);
                for (&v, &wi) in x.iter().zip(w) {
                    let k = f64::from(grid(nearest(v / s)));
                    swkx += f64::from(wi) * k * f64::from(v);
                    swkk += f64::from(wi) * k * k;
                }
                if swkk == 0.0 {
                    break;
                }
                let refit = round((swkx / swkk) as f32);
                if refit == 0.0 {
                    break;
                }
                // The error with these indices at the refitted scale: an upper bound of the error
                // once every element is rounded to its nearest value again.
                let r = f64::from(refit);
                let err = sxx - 2.0 * r * swkx + r * r * swkk;
                if err < best.0 {
                    best = (err, refit);
                }
                if refit == s {
                    break;
                }
                s = refit;
            }
        }
    }
    best.1
}

fn f16_round(v: f32) -> f32 {
    f32::from(f16::from_f32(v))
}

/// One iq4_nl block (`qs` 16 bytes); returns `d`.
pub(crate) fn iq4_nl(x: &[f32], w: &[f32], qs: &mut [u8]) -> f16 {
    let d = f16::from_f32(fit_grid(x, w, f16_round));
    pack_nibbles(x, f32::from(d), qs);
    d
}

/// Element `j` of the 32 in `x` at its nearest grid index for scale `s`: low nibble of byte `j`
/// (j < 16) or high nibble of byte `j − 16`; a zero scale writes the index of `K = 1` (≈ 0).
fn pack_nibbles(x: &[f32], s: f32, qs: &mut [u8]) {
    for (j, q) in qs[..16].iter_mut().enumerate() {
        let (a, b) = match s != 0.0 {
            true => (nearest(x[j] / s), nearest(x[j + 16] / s)),
            false => (8, 8),
        };
        *q = a | (b << 4);
    }
}

/// One iq4_xs super-block: `qs` 128 bytes, `aux` 6 (`scales_h` u16 LE, then `scales_l`); returns
/// `d`. Each sub-block's scale is fitted as an iq4_nl block's, then all eight are coded as
/// `d·(sc − 32)`, `sc` 6 bits, by [`signed_codes`].
pub(crate) fn iq4_xs(x: &[f32], w: &[f32], qs: &mut [u8], aux: &mut [u8]) -> f16 {
    let mut scales = [0f32; QK_K / QK];
    for (j, s) in scales.iter_mut().enumerate() {
        let r = QK * j..QK * (j + 1);
        *s = fit_grid(&x[r.clone()], &w[r], |v| v);
    }
    let (d, codes) = signed_codes(&scales, -32, 31, |j, s| {
        let r = QK * j..QK * (j + 1);
        grid_error(&x[r.clone()], &w[r], s)
    });
    let df = f32::from(d);
    let mut high = 0u16;
    aux[2..6].fill(0);
    for (j, &c) in codes[..scales.len()].iter().enumerate() {
        let ls = (c + 32) as u8;
        high |= u16::from(ls >> 4) << (2 * j);
        aux[2 + j / 2] |= (ls & 0xF) << (4 * (j % 2));
        let s = df * c as f32;
        pack_nibbles(&x[QK * j..QK * (j + 1)], s, &mut qs[16 * j..16 * (j + 1)]);
    }
    aux[..2].copy_from_slice(&high.to_le_bytes());
    d
}
