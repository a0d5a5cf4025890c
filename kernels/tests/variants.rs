//! Every kernel variant this CPU can run, against the scalar reference.
//!
//! Inputs are seeded random (the seed is printed on failure; `EDGEINFER_TEST_SEED=<seed>` replays it),
//! sizes ragged around every SIMD width and tile, slices offset by 0..3 elements from their allocation.
//! f32 results must lie within 1e-5 of the scalar result relative to the summed magnitudes.
//! `EDGEINFER_REQUIRE_VARIANTS=avx2,avx512_vnni` (say) turns a skipped variant into a failure.

use edgeinfer_kernels::dispatch::MatmulFn;
use edgeinfer_kernels::testing::{
    close, pool, required_variants, seed, variants_under_test, Rng, Unaligned, K_SIZES, RAGGED,
};
use edgeinfer_kernels::{par, scalar, Kernels, WeightRef};
use half::{bf16, f16};

const REL: f32 = 1e-5;

/// One weight format: conversions, the table entry under test, and the largest magnitude it holds.
struct Format<T> {
    name: &'static str,
    from_f32: fn(f32) -> T,
    to_f32: fn(T) -> f32,
    entry: fn(&Kernels) -> MatmulFn<T>,
    reference: MatmulFn<T>,
    big: f32,
}

const F32: Format<f32> = Format {
    name: "f32",
    from_f32: |v| v,
    to_f32: |v| v,
    entry: |k| k.matmul_f32,
    reference: scalar::matmul_f32,
    big: 1e15,
};
const F16: Format<f16> = Format {
    name: "f16",
    from_f32: f16::from_f32,
    to_f32: f16::to_f32,
    entry: |k| k.matmul_f16,
    reference: scalar::matmul_f16,
    big: 6.0e4,
};
const BF16: Format<bf16> = Format {
    name: "bf16",
    from_f32: bf16::from_f32,
    to_f32: bf16::to_f32,
    entry: |k| k.matmul_bf16,
    reference: scalar::matmul_bf16,
    big: 1e15,
};

/// Magnitudes of weights and activations: ordinary, huge (products near 1e30) and tiny.
fn scales<T>(f: &Format<T>) -> [(f32, f32); 3] {
    [(1.0, 1.0), (f.big, 1e15), (1e-3, 1e-12)]
}

/// Runs one `rows × k` by `n × k` product through `kern` and scalar, and compares every output.
#[allow(clippy::too_many_arguments)]
fn matmul_case<T: Copy + Default>(
    f: &Format<T>,
    kern: &Kernels,
    rng: &mut Rng,
    rows: usize,
    k: usize,
    n: usize,
    (w_scale, x_scale): (f32, f32),
    zero_weights: bool,
    seed: u64,
) {
    let w: Vec<T> = (0..rows * k)
        .map(|_| {
            (f.from_f32)(if zero_weights {
                0.0
            } else {
                rng.uniform(w_scale)
            })
        })
        .collect();
    let x = rng.vec(n * k, x_scale);
    let mut want = vec![f32::NAN; rows * n];
    (f.reference)(&w, k, &x, n, &mut want);

    let (ow, ox, oy) = (rng.below(4), rng.below(4), rng.below(4));
    let (wu, xu) = (Unaligned::new(&w, ow), Unaligned::new(&x, ox));
    let mut got = Unaligned::new(&vec![f32::NAN; rows * n], oy);
    ((f.entry)(kern))(wu.get(), k, xu.get(), n, got.get_mut());

    for r in 0..rows {
        for t in 0..n {
            let mag: f32 = (0..k)
                .map(|j| ((f.to_f32)(w[r * k + j]) * x[t * k + j]).abs())
                .sum();
            let (g, e) = (got.get()[r * n + t], want[r * n + t]);
            assert!(
                close(g, e, mag, REL),
                "matmul_{} variant {} rows={rows} k={k} n={n} offsets=({ow},{ox},{oy}) \
                 scale=({w_scale:e},{x_scale:e}): yt[{r}*n+{t}] = {g:e}, scalar {e:e}, Σ|w||x| = {mag:e}; \
                 seed {seed} (replay: EDGEINFER_TEST_SEED={seed})",
                f.name,
                kern.variant,
            );
        }
    }
}

/// Sweeps rows × k (ragged and real widths) with a rotating token count, then tokens × a few shapes.
fn matmul_sweep<T: Copy + Default>(f: &Format<T>) {
    const TOKENS: [usize; 9] = [1, 2, 3, 4, 5, 7, 8, 9, 17];
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        if cfg!(miri) {
            // Interpreted, the sweep below takes many minutes: shapes that reach every tail and
            // the one- and several-token paths, plus the empty ones.
            for &(rows, k, n) in &[(1, 1, 1), (7, 9, 2), (9, 33, 3), (2, 17, 0), (0, 7, 3)] {
                let sc = scales(f)[rows % 3];
                matmul_case(f, &kern, &mut rng, rows, k, n, sc, false, seed);
            }
            matmul_case(f, &kern, &mut rng, 3, 40, 2, (1.0, 1.0), true, seed);
            continue;
        }
        for (ri, &rows) in RAGGED.iter().enumerate() {
            for (ki, &k) in K_SIZES.iter().enumerate() {
                let n = TOKENS[(ri + ki) % TOKENS.len()];
                let sc = scales(f)[(ri * 5 + ki) % 3];
                matmul_case(f, &kern, &mut rng, rows, k, n, sc, false, seed);
            }
        }
        for &n in &RAGGED {
            for &(rows, k) in &[(1, 1), (3, 7), (4, 33), (5, 576), (9, 17)] {
                matmul_case(f, &kern, &mut rng, rows, k, n, (1.0, 1.0), false, seed);
            }
        }
        // Zero rows, zero tokens, all-zero weights, and every magnitude on a real width.
        for &(rows, k, n) in &[(0, 576, 1), (0, 7, 3), (5, 9, 0), (0, 1, 0)] {
            matmul_case(f, &kern, &mut rng, rows, k, n, (1.0, 1.0), false, seed);
        }
        matmul_case(f, &kern, &mut rng, 9, 1536, 3, (1.0, 1.0), true, seed);
        for sc in scales(f) {
            matmul_case(f, &kern, &mut rng, 17, 1536, 5, sc, false, seed);
        }
    }
}

#[test]
fn matmul_f32() {
    matmul_sweep(&F32);
}

#[test]
fn matmul_f16() {
    matmul_sweep(&F16);
}

#[test]
fn matmul_bf16() {
    matmul_sweep(&BF16);
}

/// Lengths for the vector ops: every tail up to 70, then real widths and an odd large one (under
/// Miri, every tail up to 34 and two widths).
fn vec_lengths() -> Box<dyn Iterator<Item = usize>> {
    match cfg!(miri) {
        true => Box::new((0..=34).chain([65, 576])),
        false => Box::new((0..=70).chain([127, 129, 576, 896, 1536, 4097])),
    }
}

#[test]
fn dot_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in vec_lengths() {
            for scale in [1.0, 1e15, 1e-12] {
                let (a, b) = (rng.vec(len, scale), rng.vec(len, scale));
                let (oa, ob) = (rng.below(4), rng.below(4));
                let got =
                    (kern.dot_f32)(Unaligned::new(&a, oa).get(), Unaligned::new(&b, ob).get());
                let want = scalar::dot_f32(&a, &b);
                let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
                assert!(
                    close(got, want, mag, REL),
                    "dot_f32 variant {} len={len} scale={scale:e} offsets=({oa},{ob}): {got:e} vs scalar {want:e}; \
                     seed {seed} (replay: EDGEINFER_TEST_SEED={seed})",
                    kern.variant
                );
            }
        }
        // Unequal lengths: the common length counts.
        let (a, b) = (rng.vec(37, 1.0), rng.vec(20, 1.0));
        assert!(
            close((kern.dot_f32)(&a, &b), scalar::dot_f32(&a, &b), 20.0, REL),
            "dot_f32 {}",
            kern.variant
        );
    }
}

#[test]
fn axpy_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in vec_lengths() {
            let (alpha, x, y) = (rng.uniform(2.0), rng.vec(len, 1.0), rng.vec(len, 1.0));
            let mut want = y.clone();
            scalar::axpy_f32(alpha, &x, &mut want);
            let (ox, oy) = (rng.below(4), rng.below(4));
            let mut got = Unaligned::new(&y, oy);
            (kern.axpy_f32)(alpha, Unaligned::new(&x, ox).get(), got.get_mut());
            for i in 0..len {
                let mag = y[i].abs() + (alpha * x[i]).abs();
                assert!(
                    close(got.get()[i], want[i], mag, REL),
                    "axpy_f32 variant {} len={len} offsets=({ox},{oy}) at {i}: {} vs scalar {}; seed {seed}",
                    kern.variant,
                    got.get()[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn axpy_f16() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in vec_lengths() {
            let (alpha, y) = (rng.uniform(2.0), rng.vec(len, 1.0));
            let x: Vec<f16> = rng.vec(len, 1.0).into_iter().map(f16::from_f32).collect();
            let mut want = y.clone();
            scalar::axpy_f16(alpha, &x, &mut want);
            let (ox, oy) = (rng.below(4), rng.below(4));
            let mut got = Unaligned::new(&y, oy);
            (kern.axpy_f16)(alpha, Unaligned::new(&x, ox).get(), got.get_mut());
            for i in 0..len {
                let mag = y[i].abs() + (alpha * f32::from(x[i])).abs();
                assert!(
                    close(got.get()[i], want[i], mag, REL),
                    "axpy_f16 variant {} len={len} offsets=({ox},{oy}) at {i}: {} vs scalar {}; seed {seed}",
                    kern.variant,
                    got.get()[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn rmsnorm_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in RAGGED.into_iter().chain([576, 896]) {
            let (x, wf) = (rng.vec(len, 3.0), rng.vec(len, 2.0));
            let (w16, wb16): (Vec<f16>, Vec<bf16>) = (
                wf.iter().map(|&v| f16::from_f32(v)).collect(),
                wf.iter().map(|&v| bf16::from_f32(v)).collect(),
            );
            for w in [
                WeightRef::F32(&wf),
                WeightRef::F16(&w16),
                WeightRef::BF16(&wb16),
            ] {
                let mut want = vec![0.0; len];
                scalar::rmsnorm_f32(&x, w, 1e-6, &mut want);
                let mut got = Unaligned::new(&vec![0.0; len], rng.below(4));
                (kern.rmsnorm_f32)(
                    Unaligned::new(&x, rng.below(4)).get(),
                    w,
                    1e-6,
                    got.get_mut(),
                );
                for (i, (&g, &e)) in got.get().iter().zip(&want).enumerate() {
                    assert!(
                        close(g, e, e.abs(), REL),
                        "rmsnorm_f32 variant {} {} len={len} at {i}: {g} vs scalar {e}; seed {seed}",
                        kern.variant,
                        w.dtype(),
                    );
                }
            }
        }
    }
}

#[test]
fn softmax_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in RAGGED.into_iter().chain([576, 1000]) {
            for scale in [1.0, 30.0, 1e4] {
                let x = rng.vec(len, scale);
                let mut want = x.clone();
                scalar::softmax_f32(&mut want);
                let mut got = Unaligned::new(&x, rng.below(4));
                (kern.softmax_f32)(got.get_mut());
                for (i, (&g, &e)) in got.get().iter().zip(&want).enumerate() {
                    // Outputs sum to one: a small absolute floor covers values that underflow.
                    assert!(
                        close(g, e, e + 1e-7, REL),
                        "softmax_f32 variant {} len={len} scale={scale:e} at {i}: {g} vs scalar {e}; seed {seed}",
                        kern.variant,
                    );
                }
            }
        }
    }
}

#[test]
fn silu_mul_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for len in vec_lengths() {
            let (g, u) = (rng.vec(len, 12.0), rng.vec(len, 4.0));
            let mut want = g.clone();
            scalar::silu_mul_f32(&mut want, &u);
            let mut got = Unaligned::new(&g, rng.below(4));
            (kern.silu_mul_f32)(got.get_mut(), Unaligned::new(&u, rng.below(4)).get());
            for i in 0..len {
                assert!(
                    close(
                        got.get()[i],
                        want[i],
                        want[i].abs() + 1e-7 * u[i].abs(),
                        REL
                    ),
                    "silu_mul_f32 variant {} len={len} at {i}: {} vs scalar {}; seed {seed}",
                    kern.variant,
                    got.get()[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn rope_f32() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for (head_dim, heads) in [(2, 1), (8, 3), (14, 2), (32, 5), (64, 9), (128, 2)] {
            let half = head_dim / 2;
            let pos = rng.below(4096) as f32;
            let angle: Vec<f32> = (0..half)
                .map(|i| pos * 10000f32.powf(-((2 * i) as f32) / head_dim as f32))
                .collect();
            let (cos, sin): (Vec<f32>, Vec<f32>) = angle.iter().map(|a| (a.cos(), a.sin())).unzip();
            let x = rng.vec(head_dim * heads, 2.0);
            let mut want = x.clone();
            scalar::rope_f32(&mut want, head_dim, &cos, &sin);
            let mut got = Unaligned::new(&x, rng.below(4));
            (kern.rope_f32)(got.get_mut(), head_dim, &cos, &sin);
            for (i, (&g, &e)) in got.get().iter().zip(&want).enumerate() {
                let (h, j) = (i / head_dim * head_dim, i % head_dim % half);
                let mag = (x[h + j] * cos[j]).abs()
                    + (x[h + j + half] * sin[j]).abs()
                    + (x[h + j] * sin[j]).abs();
                assert!(
                    close(g, e, mag + (x[h + j + half] * cos[j]).abs(), REL),
                    "rope_f32 variant {} head_dim={head_dim} heads={heads} at {i}: {g} vs scalar {e}; seed {seed}",
                    kern.variant
                );
            }
        }
    }
}

/// `par::matmul_t` and `par::matmul` on a 3-thread pool (uneven split on purpose) against scalar.
#[test]
#[cfg_attr(
    miri,
    ignore = "splits large shapes over a thread pool: hours interpreted"
)]
fn par_matmul_three_threads() {
    let pool = pool(3);
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for &(rows, k, n) in &[
            (257, 576, 1),
            (257, 576, 3),
            (129, 1536, 2),
            (33, 64, 17),
            (7, 9, 2),
            (65, 100, 5),
            // Enough rows × tokens for `par::transpose` to split too.
            (300, 64, 130),
        ] {
            let wf = rng.vec(rows * k, 1.0);
            let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
            let wb16: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let x = rng.vec(n * k, 1.0);
            for w in [
                WeightRef::F32(&wf),
                WeightRef::F16(&w16),
                WeightRef::BF16(&wb16),
            ] {
                let mut wq = vec![0.0; rows * k];
                w.to_f32(&mut wq);
                let mut want_t = vec![0.0; rows * n];
                scalar::matmul_f32(&wq, k, &x, n, &mut want_t);

                let mut got_t = vec![f32::NAN; rows * n];
                let mut got = vec![f32::NAN; rows * n];
                let mut scratch = vec![f32::NAN; rows * n];
                pool.install(|| {
                    par::matmul_t(&kern, w, k, &x, n, &mut got_t);
                    par::matmul(&kern, w, k, &x, n, &mut got, &mut scratch);
                });
                for r in 0..rows {
                    for t in 0..n {
                        let mag: f32 = (0..k).map(|j| (wq[r * k + j] * x[t * k + j]).abs()).sum();
                        let e = want_t[r * n + t];
                        let (gt, g) = (got_t[r * n + t], got[t * rows + r]);
                        assert!(
                            close(gt, e, mag, REL) && close(g, e, mag, REL),
                            "par matmul {} variant {} rows={rows} k={k} n={n} at (r={r}, t={t}): matmul_t {gt:e}, \
                             matmul {g:e}, scalar {e:e}; seed {seed}",
                            w.dtype(),
                            kern.variant
                        );
                    }
                }
            }
        }
    }
}

/// Fails when a variant named in `EDGEINFER_REQUIRE_VARIANTS` cannot run here.
#[test]
fn required_variants_available() {
    let available = Kernels::available();
    for v in required_variants() {
        assert!(
            available.contains(&v),
            "required kernel variant {v} is not available on this CPU ({available:?})"
        );
    }
}

/// Prints which variants this run tests and asserts they are the ones this CPU runs (see
/// [`edgeinfer_kernels::testing::report_variants`]).
#[test]
fn report_variants() {
    edgeinfer_kernels::testing::report_variants();
}

#[test]
fn weighted_sum() {
    for kern in variants_under_test() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        // Interpreted (Miri), the full sweep takes many minutes: tails around 8 and 32 lanes only.
        let (hds, positions): (&[usize], &[usize]) = match cfg!(miri) {
            true => (&[1, 7, 8, 9, 33, 64], &[1, 2, 17]),
            false => (
                &[1, 7, 8, 9, 31, 32, 33, 40, 64, 65, 96, 128, 130],
                &[1, 2, 3, 17, 64, 257],
            ),
        };
        for &hd in hds {
            for &seen in positions {
                // Weight rows (query heads sharing the values): one, each grouping, and past a group.
                let rows = [1, 2, 3, 4, 5, 7][rng.below(6)];
                let p: Vec<f32> = rng.vec(rows * seen, 1.0).iter().map(|x| x.abs()).collect();
                let v32 = rng.vec(seen * hd, 4.0);
                let v16: Vec<f16> = v32.iter().map(|&x| f16::from_f32(x)).collect();
                // Each output's error scales with Σ_j |p_ij·v_jd|.
                let mag = |v: &dyn Fn(usize) -> f32, i: usize, d: usize| {
                    (0..seen)
                        .map(|j| (p[i * seen + j] * v(j * hd + d)).abs())
                        .sum::<f32>()
                };
                let (op, ov) = (rng.below(4), rng.below(4));
                let mut want = vec![f32::NAN; rows * hd];
                let mut got = Unaligned::new(&vec![f32::NAN; rows * hd], rng.below(4));
                for f16_values in [false, true] {
                    let (name, value): (_, &dyn Fn(usize) -> f32) = if f16_values {
                        scalar::weighted_sum_f16(&p, rows, &v16, &mut want);
                        (kern.weighted_sum_f16)(
                            Unaligned::new(&p, op).get(),
                            rows,
                            Unaligned::new(&v16, ov).get(),
                            got.get_mut(),
                        );
                        ("weighted_sum_f16", &|i| f32::from(v16[i]))
                    } else {
                        scalar::weighted_sum_f32(&p, rows, &v32, &mut want);
                        (kern.weighted_sum_f32)(
                            Unaligned::new(&p, op).get(),
                            rows,
                            Unaligned::new(&v32, ov).get(),
                            got.get_mut(),
                        );
                        ("weighted_sum_f32", &|i| v32[i])
                    };
                    for (k, &e) in want.iter().enumerate() {
                        let (i, d) = (k / hd, k % hd);
                        assert!(
                            close(got.get()[k], e, mag(value, i, d), REL),
                            "{name} variant {} hd={hd} seen={seen} rows={rows} at row {i} column {d}: {} vs scalar {e}; seed {seed}",
                            kern.variant,
                            got.get()[k],
                        );
                    }
                }
            }
        }
    }
}

/// Shapes a weighted sum must refuse: rows that do not divide the lengths, too few values.
#[test]
fn weighted_sum_checks_shapes() {
    for kern in variants_under_test() {
        let v = vec![1.0f32; 8];
        let refused = |p: &[f32], rows: usize, out_len: usize| {
            let p = p.to_vec();
            let v = v.clone();
            let f = kern.weighted_sum_f32;
            std::panic::catch_unwind(move || f(&p, rows, &v, &mut vec![0.0; out_len])).is_err()
        };
        assert!(refused(&[1.0; 4], 0, 4), "{}: zero rows", kern.variant);
        assert!(
            refused(&[1.0; 3], 2, 4),
            "{}: weights not in 2 rows",
            kern.variant
        );
        assert!(
            refused(&[1.0; 4], 2, 3),
            "{}: outputs not in 2 rows",
            kern.variant
        );
        assert!(
            refused(&[1.0; 6], 2, 6),
            "{}: 3 × 3 > 8 values",
            kern.variant
        );
        // No positions: zeros.
        let mut out = vec![f32::NAN; 4];
        (kern.weighted_sum_f32)(&[], 2, &v, &mut out);
        assert_eq!(out, [0.0; 4], "{}", kern.variant);
    }
}
