//! Every kernel variant this CPU can run against the scalar spec, for the quantized kernels.
//!
//! Products (`matmul_q8_0_q8`, `matmul_q4_0_q8`, `matmul_q4_1_q8` and their `matmul_tokens_*`): integer
//! block dots must be exact and the f32 result within 1e-5 of
//! scalar relative to `Σ_b |dw·dx·idot_b|` (plus `|m·dx·Σx|` for q4_1), so one unit off in any block dot
//! fails. Activation quantization must match scalar bit for bit. Inputs are seeded random (the seed is
//! printed on failure; `EDGEINFER_TEST_SEED=<seed>` replays it), every plane is offset from its
//! allocation, and `EDGEINFER_REQUIRE_VARIANTS=avx2,avx512_vnni` (say) turns a skipped variant into a
//! failure.

use edgeinfer_kernels::quant::{
    self, scalar as qscalar, Q8Acts, Q8ActsRef, QFormat, QLayout, QWeight, QK,
};
use edgeinfer_kernels::testing::{close, pool, seed, variants_under_test, QPlanes, Rng, Unaligned};
use edgeinfer_kernels::{par, Kernels};
use half::f16;

const REL: f32 = 1e-5;

const ROWS: [usize; 14] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 129];
const TOKENS: [usize; 7] = [1, 2, 3, 4, 5, 8, 17];

/// Random planes with q4_1 minimums in ±`8·scale` (kept inside the f16 range).
fn random_weight(rng: &mut Rng, format: QFormat, rows: usize, k: usize, scale: f32) -> QPlanes {
    QPlanes::random(rng, format, rows, k, scale, (8.0 * scale).min(6.0e4))
}

/// Owned q8 activation planes.
#[derive(Clone)]
struct Acts {
    n: usize,
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
}

impl Acts {
    /// Scalar-quantized random activations of magnitude `scale`; one block in five is all zero.
    fn quantized(rng: &mut Rng, n: usize, k: usize, scale: f32) -> Acts {
        let mut x = rng.vec(n * k, scale);
        for blk in x.chunks_exact_mut(QK) {
            if rng.below(5) == 0 {
                blk.fill(0.0);
            }
        }
        let mut a = Q8Acts::new(n, k);
        quant::quantize_acts(&Kernels::SCALAR, &x, n, k, &mut a);
        let r = a.as_ref();
        Acts {
            n,
            k,
            qs: r.qs.to_vec(),
            d: r.d.to_vec(),
            sum: r.sum.to_vec(),
        }
    }

    /// An owned copy of `x`.
    fn from_ref(x: &Q8ActsRef<'_>) -> Acts {
        Acts {
            n: x.n,
            k: x.k,
            qs: x.qs.to_vec(),
            d: x.d.to_vec(),
            sum: x.sum.to_vec(),
        }
    }

    /// Quants all `q` (in −127..=127), scales `d`.
    fn constant(n: usize, k: usize, q: i8, d: f32) -> Acts {
        let nb = n * k / QK;
        Acts {
            n,
            k,
            qs: vec![q; n * k],
            d: vec![d; nb],
            sum: vec![i32::from(q) * QK as i32; nb],
        }
    }
}

/// `Σ_b |dw·dx·idot_b| (+ |m·dx·sx|)` for row `r`, token `t`: the magnitude the f32 bar is relative to.
fn magnitude(w: &QPlanes, x: &Acts, r: usize, t: usize) -> f32 {
    let (k, nb) = (w.k, w.k / QK);
    let mut mag = 0.0f64;
    for b in 0..nb {
        let (dw, dx) = (
            f64::from(f32::from(w.d[r * nb + b])),
            f64::from(x.d[t * nb + b]),
        );
        let qx = &x.qs[t * k + b * QK..][..QK];
        let sx: i64 = qx.iter().map(|&q| i64::from(q)).sum();
        let idot: i64 = match w.format {
            QFormat::Q8_0 => w.qs[r * k + b * QK..][..QK]
                .iter()
                .zip(qx)
                .map(|(&a, &c)| i64::from(a as i8) * i64::from(c))
                .sum(),
            QFormat::Q4_0 | QFormat::Q4_1 => {
                let qw = &w.qs[(r * k + b * QK) / 2..][..QK / 2];
                let off = if w.format == QFormat::Q4_0 { 8 } else { 0 };
                (0..QK / 2)
                    .map(|j| {
                        (i64::from(qw[j] & 15) - off) * i64::from(qx[j])
                            + (i64::from(qw[j] >> 4) - off) * i64::from(qx[j + QK / 2])
                    })
                    .sum()
            }
            _ => unreachable!("{} is checked by the kquant tests", w.format),
        };
        mag += (dw * dx * idot as f64).abs();
        if w.format.has_min() {
            mag += (f64::from(f32::from(w.m[r * nb + b])) * dx * sx as f64).abs();
        }
    }
    mag as f32
}

fn reference(format: QFormat) -> quant::QMatmulFn {
    match format {
        QFormat::Q8_0 => qscalar::matmul_q8_0_q8,
        QFormat::Q4_0 => qscalar::matmul_q4_0_q8,
        QFormat::Q4_1 => qscalar::matmul_q4_1_q8,
        _ => quant::kquant::matmul_q8,
    }
}

/// Runs one product through `kern` (every plane offset from its allocation) and scalar; compares.
fn product_case(kern: &Kernels, rng: &mut Rng, w: &QPlanes, x: &Acts, seed: u64, what: &str) {
    let (rows, n) = (w.rows, x.n);
    let mut want = vec![f32::NAN; rows * n];
    reference(w.format)(
        &w.view(),
        &Q8ActsRef {
            qs: &x.qs,
            d: &x.d,
            sum: &x.sum,
            n,
            k: x.k,
        },
        &mut want,
    );

    let offs = [
        rng.below(32),
        rng.below(4),
        rng.below(4),
        rng.below(32),
        rng.below(4),
        rng.below(4),
        rng.below(4),
    ];
    let (wq, wd, wm) = (
        Unaligned::new(&w.qs, offs[0]),
        Unaligned::new(&w.d, offs[1]),
        Unaligned::new(&w.m, offs[2]),
    );
    let (xq, xd, xs) = (
        Unaligned::new(&x.qs, offs[3]),
        Unaligned::new(&x.d, offs[4]),
        Unaligned::new(&x.sum, offs[5]),
    );
    let mut got = Unaligned::new(&vec![f32::NAN; rows * n], offs[6]);
    let wv = QWeight::new(w.format, rows, w.k, wq.get(), wd.get(), wm.get()).expect("valid");
    let xv = Q8ActsRef {
        qs: xq.get(),
        d: xd.get(),
        sum: xs.get(),
        n,
        k: x.k,
    };
    (kern.matmul_q(w.format))(&wv, &xv, got.get_mut());
    // The token-major kernel, where the variant has one: the same sums at y[t·rows + r].
    let mut got_tm = Unaligned::new(&vec![f32::NAN; rows * n], offs[6]);
    let tm = kern.matmul_tokens_q(w.format);
    if let Some(f) = tm {
        f(&wv, &xv, got_tm.get_mut());
    }

    if QLayout::Rows8.holds(w.format) && rows >= quant::rows8::GROUP {
        rows8_case(kern, w, &xv, &want, &offs, seed, what);
    }

    for r in 0..rows {
        for t in 0..n {
            let (g, e) = (got.get()[r * n + t], want[r * n + t]);
            let mag = magnitude(w, x, r, t);
            assert!(
                close(g, e, mag, REL),
                "matmul_{}_q8 variant {} {what} rows={rows} k={} n={n} offsets={offs:?}: yt[{r}*n+{t}] = {g:e}, \
                 scalar {e:e}, magnitude {mag:e}; seed {seed} (replay: EDGEINFER_TEST_SEED={seed})",
                w.format,
                kern.variant,
                w.k,
            );
            if tm.is_some() {
                let g = got_tm.get()[t * rows + r];
                assert!(
                    close(g, e, mag, REL),
                    "matmul_tokens_{}_q8 variant {} {what} rows={rows} k={} n={n} offsets={offs:?}: \
                     y[{t}*rows+{r}] = {g:e}, scalar {e:e}; seed {seed} (replay: EDGEINFER_TEST_SEED={seed})",
                    w.format,
                    kern.variant,
                    w.k,
                );
            }
        }
    }
}

/// The first `8·⌊rows/8⌋` rows of `w` in the `rows8` layout (planes offset from their
/// allocations) through the variant's `matmul_<format>_rows8_q8`, against the scalar `rowsplit`
/// result.
fn rows8_case(
    kern: &Kernels,
    w: &QPlanes,
    x: &Q8ActsRef<'_>,
    want: &[f32],
    offs: &[usize],
    seed: u64,
    what: &str,
) {
    let g = quant::rows8::GROUP;
    let (rows, n, nb) = (w.rows / g * g, x.n, w.k / QK);
    let bb = w.format.qs_bytes_per_block();
    let (qs, d) = (&w.qs[..rows * nb * bb], &w.d[..rows * nb]);
    let (mut q8, mut d8) = (vec![0u8; qs.len()], vec![f16::ZERO; d.len()]);
    quant::rows8::from_rowsplit(w.format, rows, w.k, qs, d, &mut q8, &mut d8);
    let mut m8 = vec![f16::ZERO; if w.format.has_min() { d.len() } else { 0 }];
    if w.format.has_min() {
        quant::rows8::scales_from_rowsplit(rows, nb, &w.m[..rows * nb], &mut m8);
    }
    let (wq, wd, wm) = (
        Unaligned::new(&q8, offs[0]),
        Unaligned::new(&d8, offs[1]),
        Unaligned::new(&m8, offs[2]),
    );
    let wv = QWeight::new(w.format, rows, w.k, wq.get(), wd.get(), wm.get())
        .and_then(|v| v.in_layout(QLayout::Rows8))
        .expect("valid rows8 planes");
    let mut got = Unaligned::new(&vec![f32::NAN; rows * n], offs[6]);
    let f = match w.format {
        QFormat::Q8_0 => kern.matmul_q8_0_rows8_q8,
        QFormat::Q4_0 => kern.matmul_q4_0_rows8_q8,
        QFormat::Q4_1 => kern.matmul_q4_1_rows8_q8,
        _ => unreachable!("rows8 holds only q8_0, q4_0 and q4_1"),
    };
    f(&wv, x, got.get_mut());
    for r in 0..rows {
        for t in 0..n {
            let (g, e) = (got.get()[r * n + t], want[r * n + t]);
            let mag = magnitude(w, &Acts::from_ref(x), r, t);
            assert!(
                close(g, e, mag, REL),
                "matmul_{}_rows8_q8 variant {} {what} rows={rows} k={} n={n} offsets={offs:?}: \
                 yt[{r}*n+{t}] = {g:e}, scalar rowsplit {e:e}, magnitude {mag:e}; seed {seed} \
                 (replay: EDGEINFER_TEST_SEED={seed})",
                w.format,
                kern.variant,
                w.k,
            );
        }
    }
}

/// Ragged rows × k of one to three blocks (and real widths on some) × a rotating token count.
#[test]
fn matmul_q_ragged() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for format in QFormat::BASIC {
            for (ri, &rows) in ROWS.iter().enumerate() {
                let mut ks = vec![32, 64, 96];
                if ri % 3 == 0 {
                    ks.push(576);
                }
                if rows == 17 {
                    ks.push(1536);
                }
                for (ki, &k) in ks.iter().enumerate() {
                    let n = TOKENS[(ri + ki) % TOKENS.len()];
                    let (ws, xs) = [(1.0, 1.0), (1e-3, 1e-2), (6e4, 1e15)][(ri + 2 * ki) % 3];
                    let w = random_weight(&mut rng, format, rows, k, ws);
                    let x = Acts::quantized(&mut rng, n, k, xs);
                    product_case(&kern, &mut rng, &w, &x, seed, "random");
                }
            }
            // Every token count on a few shapes (tile and token tails).
            for &n in &TOKENS {
                for &(rows, k) in &[(1, 32), (4, 64), (5, 96), (9, 576), (8, 288), (17, 4160)] {
                    let w = random_weight(&mut rng, format, rows, k, 1.0);
                    let x = Acts::quantized(&mut rng, n, k, 1.0);
                    product_case(&kern, &mut rng, &w, &x, seed, "tokens");
                }
            }
        }
    }
}

/// Extreme quants (±127/−128, nibbles 0 and 15), zero blocks and f16 scales from subnormal to max.
#[test]
fn matmul_q_extremes() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for format in QFormat::BASIC {
            let (rows, k) = (9, 160);
            for byte in [0x00u8, 0xff, 0x80, 0x7f, 0x0f, 0xf0, 0x81] {
                for dv in [0.0f32, 65504.0, -65504.0, 6.0e-8, 6.1e-5, 1.0] {
                    let mut w = random_weight(&mut rng, format, rows, k, 1.0);
                    w.qs.fill(byte);
                    w.d.fill(f16::from_f32(dv));
                    w.m.fill(f16::from_f32(-dv));
                    for &(q, dx) in &[(127i8, 1e20f32), (-127, 1.0), (0, 1.0), (1, 1e-30)] {
                        for n in [1, 3, 4] {
                            let x = Acts::constant(n, k, q, dx);
                            product_case(
                                &kern,
                                &mut rng,
                                &w,
                                &x,
                                seed,
                                &format!("qs=0x{byte:02x} d={dv:e} x={q}"),
                            );
                        }
                    }
                    // Alternating-sign saturated activations against the same weights.
                    let mut x = Acts::constant(4, k, 127, 0.5);
                    for (i, q) in x.qs.iter_mut().enumerate() {
                        if i % 3 == 1 {
                            *q = -127;
                        }
                    }
                    for (s, blk) in x.sum.iter_mut().zip(x.qs.chunks_exact(QK)) {
                        *s = blk.iter().map(|&q| i32::from(q)).sum();
                    }
                    product_case(
                        &kern,
                        &mut rng,
                        &w,
                        &x,
                        seed,
                        &format!("qs=0x{byte:02x} d={dv:e} alternating"),
                    );
                }
            }
            // Zero blocks inside random weights and activations.
            let mut w = random_weight(&mut rng, format, 17, 96, 1.0);
            let bb = format.qs_bytes_per_block();
            w.qs[bb..2 * bb].fill(if format == QFormat::Q8_0 { 0 } else { 0x88 });
            w.d[5] = f16::ZERO;
            let x = Acts::quantized(&mut rng, 5, 96, 1.0);
            product_case(&kern, &mut rng, &w, &x, seed, "zero blocks");
        }
    }
}

/// Zero rows or zero tokens: the product (row-major and token-major) takes an empty output and writes
/// nothing around it (raw stores past a slice would not be caught by bounds checks).
#[test]
fn matmul_q_empty() {
    const SENTINEL: f32 = -7.25;
    for kern in variants_under_test() {
        for format in QFormat::BASIC {
            let w0 = random_weight(&mut Rng::new(1), format, 0, 64, 1.0);
            let w5 = random_weight(&mut Rng::new(1), format, 5, 64, 1.0);
            let x3 = Acts::constant(3, 64, 1, 1.0);
            let x3 = Q8ActsRef {
                qs: &x3.qs,
                d: &x3.d,
                sum: &x3.sum,
                n: 3,
                k: 64,
            };
            let x0 = Q8ActsRef {
                qs: &[],
                d: &[],
                sum: &[],
                n: 0,
                k: 64,
            };
            let kernels = [Some(kern.matmul_q(format)), kern.matmul_tokens_q(format)];
            for (f, (w, x)) in kernels
                .into_iter()
                .flatten()
                .flat_map(|f| [(f, (&w0, &x3)), (f, (&w5, &x0))])
            {
                let what = format!(
                    "{format} variant {} rows={} n={}",
                    kern.variant, w.rows, x.n
                );
                // An empty slice in the middle of a sentinel-filled buffer: nothing around it may change.
                let mut buf = vec![SENTINEL; 16];
                f(&w.view(), x, &mut buf[8..8]);
                assert!(
                    buf.iter().all(|&v| v == SENTINEL),
                    "{what}: wrote around an empty output: {buf:?}"
                );
            }
        }
    }
}

/// Activation quantization: identical quants, sums and scales to scalar.
#[test]
fn quantize_q8_exact() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for &(n, k) in &[(1, 32), (1, 576), (3, 64), (5, 1536), (17, 96), (2, 4096)] {
            for scale in [1.0f32, 1e-30, 1e30, 1e-40, 300.0] {
                let mut x = rng.vec(n * k, scale);
                let nb = n * k / QK;
                // Special blocks: all zero; exact halves with d = 1 (rounding ties); one huge outlier;
                // a subnormal block whose scale rounds down (quants clamp at ±127).
                x[..QK].fill(0.0);
                if nb > 1 {
                    for (j, v) in x[QK..2 * QK].iter_mut().enumerate() {
                        *v = j as f32 - 15.5;
                    }
                    x[QK] = 127.0;
                }
                if nb > 2 {
                    x[2 * QK + 7] = 1e35;
                }
                if nb > 3 {
                    x[3 * QK] = 143.0 * f32::from_bits(1);
                    x[3 * QK + 1] = -x[3 * QK];
                }
                let (mut qs, mut d, mut sum) = (vec![0i8; n * k], vec![0f32; nb], vec![0i32; nb]);
                qscalar::quantize_q8(&x, n, k, &mut qs, &mut d, &mut sum);

                let offs = [rng.below(8), rng.below(32), rng.below(4), rng.below(4)];
                let xu = Unaligned::new(&x, offs[0]);
                let (mut gq, mut gd, mut gs) = (
                    Unaligned::new(&vec![99i8; n * k], offs[1]),
                    Unaligned::new(&vec![f32::NAN; nb], offs[2]),
                    Unaligned::new(&vec![i32::MIN; nb], offs[3]),
                );
                (kern.quantize_q8)(xu.get(), n, k, gq.get_mut(), gd.get_mut(), gs.get_mut());
                let ctx = || {
                    format!(
                        "quantize_q8 variant {} n={n} k={k} scale={scale:e} offsets={offs:?}; seed {seed} \
                         (replay: EDGEINFER_TEST_SEED={seed})",
                        kern.variant
                    )
                };
                for b in 0..nb {
                    assert_eq!(
                        gd.get()[b].to_bits(),
                        d[b].to_bits(),
                        "block {b} scale: {}",
                        ctx()
                    );
                    assert_eq!(
                        gq.get()[b * QK..][..QK],
                        qs[b * QK..][..QK],
                        "block {b} quants: {}",
                        ctx()
                    );
                    assert_eq!(gs.get()[b], sum[b], "block {b} sum: {}", ctx());
                }
            }
        }
    }
}

/// `quant::quantize_acts` fills the arena through the table (split by tokens when there are many) and
/// `par::matmul_q` splits rows on a 3-thread pool (uneven on purpose); both against scalar.
#[test]
fn par_matmul_q_three_threads() {
    let pool = pool(3);
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        // Room for the 200-token case, which quantizes split across the pool.
        let mut arena = Q8Acts::new(200, 1536);
        for format in QFormat::BASIC {
            for &(rows, k, n) in &[
                (257, 576, 1),
                (129, 1536, 2),
                (65, 576, 4),
                (33, 64, 17),
                (7, 96, 2),
                (40, 4160, 9),
                (33, 96, 200),
            ] {
                let xf = rng.vec(n * k, 1.0);
                let w = random_weight(&mut rng, format, rows, k, 0.1);
                let mut small = Q8Acts::new(n, k);
                quant::quantize_acts(&Kernels::SCALAR, &xf, n, k, &mut small);
                let s = small.as_ref();
                let x = Acts {
                    n,
                    k,
                    qs: s.qs.to_vec(),
                    d: s.d.to_vec(),
                    sum: s.sum.to_vec(),
                };
                let mut want = vec![0.0; rows * n];
                reference(format)(&w.view(), &s, &mut want);

                let acts = if n * k <= arena.capacity() {
                    pool.install(|| quant::quantize_acts(&kern, &xf, n, k, &mut arena));
                    arena.as_ref()
                } else {
                    s
                };
                assert_eq!(
                    (acts.n, acts.k, acts.qs),
                    (n, k, s.qs),
                    "quantize_acts into the arena"
                );
                let mut got = vec![f32::NAN; rows * n];
                pool.install(|| par::matmul_q(&kern, &w.view(), &acts, &mut got));
                let mut got_tm = vec![f32::NAN; rows * n];
                let tm =
                    pool.install(|| par::matmul_tokens_q(&kern, &w.view(), &acts, &mut got_tm));
                assert_eq!(tm, kern.matmul_tokens_q(format).is_some());
                for r in 0..rows {
                    for t in 0..n {
                        let (g, e) = (got[r * n + t], want[r * n + t]);
                        assert!(
                            close(g, e, magnitude(&w, &x, r, t), REL),
                            "par::matmul_q {format} variant {} rows={rows} k={k} n={n} at (r={r}, t={t}): {g:e} vs \
                             scalar {e:e}; seed {seed}",
                            kern.variant
                        );
                        let g = got_tm[t * rows + r];
                        assert!(
                            !tm || close(g, e, magnitude(&w, &x, r, t), REL),
                            "par::matmul_tokens_q {format} variant {} rows={rows} k={k} n={n} at (r={r}, t={t}): \
                             {g:e} vs scalar {e:e}; seed {seed}",
                            kern.variant
                        );
                    }
                }
            }
        }
    }
}

/// q4_0, q8_0 and q4_1 in the `rows8` layout through the pool: `par::matmul_q` (rows split in multiples of 16),
/// `par::matmul_q_group` (one token and two passes) and `par::matmul_q_passes`, against scalar
/// `rowsplit` products of the same weights.
#[test]
fn par_rows8_three_threads() {
    let pool = pool(3);
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let shapes = [(256, 576, 1), (136, 1536, 1), (72, 576, 3), (1024, 64, 1)];
        for (&(rows, k, n), format) in shapes.iter().flat_map(|s| QFormat::BASIC.map(|f| (s, f))) {
            let xf = rng.vec(2 * n * k, 1.0);
            let mut passes = Q8Acts::with_quant(n, k, quant::ActQuant::Q8x2);
            quant::quantize_acts(&Kernels::SCALAR, &xf[..n * k], n, k, &mut passes);
            let x2 = passes.as_ref();
            let planes: Vec<QPlanes> = (0..2)
                .map(|_| random_weight(&mut rng, format, rows, k, 0.1))
                .collect();
            type Stored = (Vec<u8>, Vec<f16>, Vec<f16>);
            let stored: Vec<Stored> = planes
                .iter()
                .map(|w| {
                    let (mut q, mut d) = (vec![0; w.qs.len()], vec![f16::ZERO; w.d.len()]);
                    quant::rows8::from_rowsplit(format, rows, k, &w.qs, &w.d, &mut q, &mut d);
                    let mut m = vec![f16::ZERO; w.m.len()];
                    if format.has_min() {
                        quant::rows8::scales_from_rowsplit(rows, k / QK, &w.m, &mut m);
                    }
                    (q, d, m)
                })
                .collect();
            let views: Vec<QWeight<'_>> = stored
                .iter()
                .map(|(q, d, m)| {
                    QWeight::new(format, rows, k, q, d, m)
                        .and_then(|v| v.in_layout(QLayout::Rows8))
                        .expect("valid")
                })
                .collect();
            let check = |got: &[f32], want: &[f32], what: &str| {
                for (i, (g, e)) in got.iter().zip(want).enumerate() {
                    let mag = want.iter().map(|v| v.abs()).fold(0.0, f32::max) + 1e-30;
                    assert!(
                        close(*g, *e, mag, 1e-4),
                        "{what} {format} rows8 variant {} rows={rows} k={k} n={n} [{i}]: {g:e} vs scalar {e:e}; \
                         seed {seed}",
                        kern.variant
                    );
                }
            };
            // One pass, n tokens.
            let x1 = x2.tokens(0..n);
            let mut want = vec![0.0; rows * n];
            reference(format)(&planes[0].view(), &x1, &mut want);
            let mut got = vec![f32::NAN; rows * n];
            pool.install(|| par::matmul_q(&kern, &views[0], &x1, &mut got));
            check(&got, &want, "par::matmul_q");
            if n != 1 {
                continue;
            }
            // Two passes of one token: the sum of both rows' products.
            let mut want2 = vec![0.0; rows * 2];
            reference(format)(&planes[1].view(), &x2, &mut want2);
            let want2: Vec<f32> = want2.chunks_exact(2).map(|p| p[0] + p[1]).collect();
            let mut got2 = vec![f32::NAN; rows];
            pool.install(|| par::matmul_q_passes(&kern, &views[1], &x2, &mut got2, &mut []));
            check(&got2, &want2, "par::matmul_q_passes");
            let (mut a, mut b) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
            pool.install(|| par::matmul_q_group(&kern, &views, &x1, &mut [&mut a, &mut b]));
            check(&a, &want, "par::matmul_q_group");
            let mut want_b = vec![0.0; rows];
            reference(format)(&planes[1].view(), &x1, &mut want_b);
            check(&b, &want_b, "par::matmul_q_group");
        }
    }
}

/// Prints which variants this run tests and asserts they are the ones this CPU runs (see
/// [`edgeinfer_kernels::testing::report_variants`]).
#[test]
fn report_variants() {
    edgeinfer_kernels::testing::report_variants();
}

/// `par::matmul_q_group`: two and three matrices of different formats and row counts (small ones
/// done on the caller, large ones in one region of a 3-thread pool) equal scalar per matrix.
#[test]
fn par_matmul_q_group_three_threads() {
    let pool = pool(3);
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let k = 576;
        let x = Acts::quantized(&mut rng, 1, k, 1.0);
        let xr = Q8ActsRef {
            qs: &x.qs,
            d: &x.d,
            sum: &x.sum,
            n: 1,
            k,
        };
        for shapes in [
            &[
                (QFormat::Q4_0, 576),
                (QFormat::Q4_0, 192),
                (QFormat::Q8_0, 195),
            ][..],
            &[(QFormat::Q4_1, 1536), (QFormat::Q4_0, 1536)][..],
            &[(QFormat::Q8_0, 17), (QFormat::Q4_0, 300)][..],
        ] {
            let ws: Vec<QPlanes> = shapes
                .iter()
                .map(|&(f, rows)| random_weight(&mut rng, f, rows, k, 0.1))
                .collect();
            let views: Vec<QWeight<'_>> = ws.iter().map(|w| w.view()).collect();
            let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; w.rows]).collect();
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            pool.install(|| par::matmul_q_group(&kern, &views, &xr, &mut refs));
            for (w, got) in ws.iter().zip(&outs) {
                let mut want = vec![0.0; w.rows];
                reference(w.format)(&w.view(), &xr, &mut want);
                for (r, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        close(g, e, magnitude(w, &x, r, 0), REL),
                        "par::matmul_q_group {} variant {} rows={} row {r}: {g:e} vs scalar {e:e}; seed {seed}",
                        w.format,
                        kern.variant,
                        w.rows
                    );
                }
            }
        }
    }
}

/// Two-pass activations (`ActQuant::Q8x2`): quantized through every variant (split across a 3-thread
/// pool for many tokens) they equal scalar's quants bit for bit, rebuild each activation within
/// 1/64516 of its block's largest value (a q8 pass alone: 1/254), and `par::matmul_q_passes` (the
/// one-token path and both many-token paths) is within that rounding of the exact product of the
/// same weights, for every format; `par::matmul_q_group` gives each matrix the same.
#[test]
fn two_pass_acts_match_the_exact_product() {
    use edgeinfer_kernels::quant::ActQuant;
    // |x − (d₀q₀ + d₁q₁)| ≤ d₁/2 ≤ (d₀/2)/127/2 = max|x|/(127·127·4), plus f32 rounding.
    const REBUILD: f32 = 1.0 / 64516.0 * 1.01;
    let pool = pool(3);
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let mut arena = Q8Acts::with_quant(130, 1536, ActQuant::Q8x2);
        for format in QFormat::BASIC {
            for &(rows, k, n) in &[
                (257, 576, 1),
                (129, 1536, 1),
                (40, 96, 3),
                (33, 576, 17),
                (65, 64, 130),
            ] {
                let mut xf = rng.vec(n * k, 1.0);
                // An outlier in some blocks (what massive activations look like), zeros in others.
                for blk in xf.chunks_exact_mut(QK) {
                    match rng.below(6) {
                        0 => blk[rng.below(QK)] = 300.0,
                        1 => blk.fill(0.0),
                        _ => {}
                    }
                }
                let w = random_weight(&mut rng, format, rows, k, 0.1);
                let mut want_acts = Q8Acts::with_quant(n, k, ActQuant::Q8x2);
                quant::quantize_acts(&Kernels::SCALAR, &xf, n, k, &mut want_acts);
                pool.install(|| quant::quantize_acts(&kern, &xf, n, k, &mut arena));
                let (a, s) = (arena.as_ref(), want_acts.as_ref());
                let what = format!(
                    "variant {} {format} rows={rows} k={k} n={n}; seed {seed}",
                    kern.variant
                );
                assert_eq!(
                    (a.n, a.qs, a.d),
                    (2 * n, s.qs, s.d),
                    "quants vs scalar, {what}"
                );
                let nb = k / QK;
                for t in 0..n {
                    for b in 0..nb {
                        let xs = &xf[t * k + b * QK..][..QK];
                        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        let (d0, d1) = (a.d[t * nb + b], a.d[(n + t) * nb + b]);
                        for (j, &x) in xs.iter().enumerate() {
                            let (q0, q1) =
                                (a.qs[t * k + b * QK + j], a.qs[(n + t) * k + b * QK + j]);
                            let got = d0 * f32::from(q0) + d1 * f32::from(q1);
                            assert!(
                                (got - x).abs() <= amax * REBUILD,
                                "rebuilt {got:e} vs {x:e} (block max {amax}), {what}"
                            );
                        }
                    }
                }
                let mut y = vec![f32::NAN; rows * n];
                let mut scratch = vec![f32::NAN; rows * 2 * n];
                pool.install(|| par::matmul_q_passes(&kern, &w.view(), &a, &mut y, &mut scratch));
                if n == 1 {
                    // The grouped decode (q/k/v, gate/up) gives each matrix what it gives alone.
                    let w2 = random_weight(&mut rng, QFormat::Q4_0, 48, k, 0.1);
                    let mut y2 = vec![f32::NAN; 48];
                    pool.install(|| par::matmul_q_passes(&kern, &w2.view(), &a, &mut y2, &mut []));
                    let (mut g1, mut g2) = (vec![f32::NAN; rows], vec![f32::NAN; 48]);
                    let views = [w.view(), w2.view()];
                    pool.install(|| {
                        par::matmul_q_group(&kern, &views, &a, &mut [&mut g1[..], &mut g2[..]])
                    });
                    assert_eq!(
                        (&g1[..], &g2[..]),
                        (&y[..], &y2[..]),
                        "matmul_q_group, {what}"
                    );
                }
                let mut row = vec![0.0f32; k];
                for r in 0..rows {
                    w.view().dequantize_row(r, &mut row);
                    for t in 0..n {
                        let xs = &xf[t * k..][..k];
                        let exact: f64 = row
                            .iter()
                            .zip(xs)
                            .map(|(&w, &x)| f64::from(w) * f64::from(x))
                            .sum();
                        // The rebuild error of each block times its weights, plus f32 sums.
                        let mut bound = 0.0f64;
                        for (wb, xb) in row.chunks_exact(QK).zip(xs.chunks_exact(QK)) {
                            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                            let wsum: f64 = wb.iter().map(|w| f64::from(w.abs())).sum();
                            let mag: f64 = wb
                                .iter()
                                .zip(xb)
                                .map(|(&w, &x)| f64::from((w * x).abs()))
                                .sum();
                            bound += wsum * f64::from(amax * REBUILD) + mag * 1e-5;
                        }
                        let got = f64::from(y[t * rows + r]);
                        assert!(
                            (got - exact).abs() <= bound + 1e-30,
                            "matmul_q_passes at (r={r}, t={t}): {got:e} vs exact {exact:e} (bound {bound:e}), {what}"
                        );
                    }
                }
            }
        }
    }
}
