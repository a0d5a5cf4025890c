//! Which matrix gets which format: the shapes' fallbacks ([`fitting_format`]), the embedding's
//! format ([`output_format`]) and the mixtures ([`Recipe`]).

use edgeinfer_kernels::quant::QFormat;
use edgeinfer_models::{Llama, Matrix};

/// Which matrices get which format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recipe {
    /// Every layer matrix in `format` (the embedding and an untied lm_head as [`output_format`]).
    #[default]
    Uniform,
    /// llama.cpp's `_M` mixtures (`q4_k_m`, `q5_k_m` with `format` q4_k, q5_k): the value
    /// projection and the down projection of the first and last eighth of the layers and of every
    /// third layer between them ([`more_bits`]) in q6_k, the rest in `format`, within a size
    /// budget ([`medium_upgrades`]): an upgrade is taken only where the row holds q6_k's
    /// super-blocks, and only while the layers' matrices stay within [`medium_budget`] bits per
    /// weight. On models whose rows all hold super-blocks the budget is not reached (llama.cpp's
    /// rule as it is); where fallbacks already cost bits (SmolLM2's 576-wide rows in q4_1), it
    /// keeps the mixture at its nominal size.
    Medium,
}

/// Whether layer `i` of `n` gets more bits under [`Recipe::Medium`]: llama.cpp's rule (the first
/// and last eighth of the layers, and every third one between).
pub fn more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The most bits per weight of the layers' matrices [`Recipe::Medium`] spends on upgrades over
/// `format` (q4_k: 4.9, q5_k: 5.7; llama.cpp's rule costs some 4.8 and 5.65 on models whose rows
/// all hold 256-element super-blocks).
pub fn medium_budget(format: QFormat) -> f64 {
    match format {
        QFormat::Q4K => 4.9,
        QFormat::Q5K => 5.7,
        _ => f64::INFINITY,
    }
}

/// Under [`Recipe::Medium`] with base `format`: per layer, whether its value and its down
/// projection go to q6_k. Candidates are llama.cpp's ([`more_bits`] layers, in layer order, the
/// value projection before the down projection); one is skipped when its rows do not hold q6_k (it
/// keeps `format`, or the fallback of `format`, never q6_k's q8_0) or when taking it would lift
/// the layers' matrices above [`medium_budget`] bits per weight.
pub fn medium_upgrades(llama: &Llama, format: QFormat) -> Vec<[bool; 2]> {
    let dims = |m: &Matrix| match m.shape()[..] {
        [rows, k] => (rows, k),
        _ => (0, 0),
    };
    let bits = |m: &Matrix, f: QFormat| {
        let (rows, k) = dims(m);
        (rows * k) as f64 * fitting_format(f, k).bits_per_weight()
    };
    let (mut total, mut params) = (0f64, 0f64);
    for l in &llama.layers {
        for m in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
            total += bits(m, format);
            params += (dims(m).0 * dims(m).1) as f64;
        }
    }
    let budget = medium_budget(format) * params;
    let n = llama.layers.len();
    let mut up = vec![[false; 2]; n];
    for (i, l) in llama.layers.iter().enumerate() {
        if !more_bits(i, n) {
            continue;
        }
        for (slot, m) in [&l.wv, &l.w_down].into_iter().enumerate() {
            if fitting_format(QFormat::Q6K, dims(m).1) != QFormat::Q6K {
                continue;
            }
            let extra = bits(m, QFormat::Q6K) - bits(m, format);
            if total + extra <= budget {
                total += extra;
                up[i][slot] = true;
            }
        }
    }
    up
}

/// The format a `[rows, k]` matrix gets when `format` is asked for: `format` when `k` is a whole
/// number of its blocks, else a format of 32-element blocks (llama.cpp's fallbacks, except q4_k,
/// which falls back on q4_1 at 5 bits where llama.cpp takes q5_0 at 5.5: q4_1 holds a 4-bit
/// source's grid, and costs less): q2_k, q3_k → q4_0; q4_k → q4_1; q5_k → q5_1; q6_k → q8_0;
/// iq4_xs → iq4_nl.
pub fn fitting_format(format: QFormat, k: usize) -> QFormat {
    if k.is_multiple_of(format.block_elems()) {
        return format;
    }
    match format {
        QFormat::Q2K | QFormat::Q3K => QFormat::Q4_0,
        QFormat::Q4K => QFormat::Q4_1,
        QFormat::Q5K => QFormat::Q5_1,
        QFormat::Q6K => QFormat::Q8_0,
        QFormat::Iq4Xs => QFormat::Iq4Nl,
        other => other,
    }
}

/// Format of the embedding and lm_head for a checkpoint quantized to `format`: q8_0 under the
/// 32-element 4- and 5-bit formats, q6_k under the K-quants and iq4_xs (as llama.cpp's output
/// tensor), else `format`
/// (then [`fitting_format`] for the shape).
pub fn output_format(format: QFormat) -> QFormat {
    match format {
        QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Iq4Nl => {
            QFormat::Q8_0
        }
        QFormat::Q2K | QFormat::Q3K | QFormat::Q4K | QFormat::Q5K | QFormat::Iq4Xs => QFormat::Q6K,
        other => other,
    }
}
