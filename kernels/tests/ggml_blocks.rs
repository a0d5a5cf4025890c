//! Every format's blocks against an implementation we did not write: `tests/data/ggml-blocks.txt`
//! holds ggml block structs and the values the `gguf` Python package (llama.cpp's reader,
//! `gguf.quants.dequantize`) gives for them, made by `scripts/ggml-test-vectors.py`. Our planes,
//! split from those bytes, must dequantize to the same f32 bits and join back to the same bytes.
//!
//! Then the GGUF formats' products with q8 activations: the scalar spec against f64 math on the
//! dequantized operands, and every variant's kernel against the scalar spec.

use edgeinfer_kernels::quant::{
    kquant, quantize_acts, scalar as qscalar, Q8Acts, QFormat, QWeight, QK,
};
use edgeinfer_kernels::testing::{seed, variants_under_test, QPlanes, Rng, Unaligned};
use edgeinfer_kernels::Kernels;

const VECTORS: &str = include_str!("data/ggml-blocks.txt");

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex byte"))
        .collect()
}

/// The planes of the ggml blocks `blocks` (one row).
fn planes_of(format: QFormat, blocks: &[u8]) -> QPlanes {
    let mut p = QPlanes {
        format,
        rows: 1,
        k: blocks.len() / format.bytes_per_block() * format.block_elems(),
        qs: Vec::new(),
        aux: Vec::new(),
        d: Vec::new(),
        m: Vec::new(),
    };
    kquant::split_ggml_blocks(format, blocks, &mut p.qs, &mut p.aux, &mut p.d, &mut p.m);
    p
}

#[test]
fn dequantized_blocks_equal_gguf_py_bit_for_bit() {
    let mut seen = std::collections::BTreeMap::new();
    for (i, line) in VECTORS.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let name = fields.next().expect("type");
        let format = QFormat::from_name(name).unwrap_or_else(|| panic!("line {}: {name}", i + 1));
        let block = hex_bytes(fields.next().expect("block bytes"));
        let want: Vec<u32> = fields
            .map(|h| u32::from_str_radix(h, 16).expect("f32 bits"))
            .collect();
        assert_eq!(block.len(), format.bytes_per_block(), "line {}", i + 1);
        assert_eq!(want.len(), format.block_elems(), "line {}", i + 1);
        let p = planes_of(format, &block);
        let w = p.view();
        let mut got = vec![f32::NAN; w.k];
        w.dequantize_row(0, &mut got);
        for (j, (&g, &e)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                e,
                "{name} line {} element {j}: ours {g:e} ({:08x}), gguf-py {:e}",
                i + 1,
                g.to_bits(),
                f32::from_bits(e)
            );
        }
        let mut back = Vec::new();
        kquant::ggml_block(&w, 0, &mut back);
        assert_eq!(back, block, "{name} line {}: planes join back", i + 1);
        *seen.entry(format.name()).or_insert(0) += 1;
    }
    for f in QFormat::ALL {
        assert!(
            seen.get(f.name()).is_some_and(|&n| n >= 8),
            "{f}: no vectors"
        );
    }
}

/// Random weights of a GGUF format: every bit pattern of quants and sub-block scales.
fn random_weight(rng: &mut Rng, format: QFormat, rows: usize, k: usize) -> QPlanes {
    QPlanes::random(rng, format, rows, k, 0.05, 0.02)
}

/// `(value, minimum part)` of every element of row `r`: the minimum part is what the `m` plane
/// adds (the value less the value with `m` zeroed).
fn parts(w: &QPlanes, r: usize) -> (Vec<f32>, Vec<f32>) {
    let mut v = vec![0.0; w.k];
    w.view().dequantize_row(r, &mut v);
    let mut nomin = w.clone();
    nomin.m.iter_mut().for_each(|m| *m = half::f16::ZERO);
    let mut base = vec![0.0; w.k];
    nomin.view().dequantize_row(r, &mut base);
    let mins = v.iter().zip(&base).map(|(a, b)| a - b).collect();
    (base, mins)
}

fn acts(rng: &mut Rng, n: usize, k: usize) -> (Vec<f32>, Q8Acts) {
    let x = rng.vec(n * k, 1.0);
    let mut a = Q8Acts::new(n, k);
    quantize_acts(&Kernels::SCALAR, &x, n, k, &mut a);
    (x, a)
}

/// Shapes `(rows, blocks per row, tokens)`: one block, ragged row and token counts, several blocks.
const SHAPES: [(usize, usize, usize); 5] = [(1, 1, 1), (3, 2, 1), (5, 3, 4), (2, 1, 7), (17, 2, 3)];

/// The exact product (f64 on the dequantized operands) and its magnitude `Σ |w·x|`, counting the
/// minimum parts separately, for every output `r·n + t`.
fn exact(w: &QPlanes, x: &edgeinfer_kernels::quant::Q8ActsRef<'_>) -> Vec<(f64, f64)> {
    let (k, n) = (w.k, x.n);
    let mut out = vec![(0.0, 0.0); w.rows * n];
    for r in 0..w.rows {
        let (base, mins) = parts(w, r);
        for t in 0..n {
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for j in 0..k {
                let xv = f64::from(x.d[(t * k + j) / QK]) * f64::from(x.qs[t * k + j]);
                let (b, m) = (f64::from(base[j]) * xv, f64::from(mins[j]) * xv);
                want += b + m;
                mag += b.abs() + m.abs();
            }
            out[r * n + t] = (want, mag);
        }
    }
    out
}

#[test]
fn gguf_formats_product_matches_f64_math() {
    let s = seed();
    let mut rng = Rng::new(s);
    for format in QFormat::GGUF {
        for (rows, blocks, n) in SHAPES {
            let k = blocks * format.block_elems();
            let w = random_weight(&mut rng, format, rows, k);
            let (_, a) = acts(&mut rng, n, k);
            let x = a.as_ref();
            let mut yt = vec![f32::NAN; rows * n];
            kquant::matmul_q8(&w.view(), &x, &mut yt);
            for (i, (&got, &(want, mag))) in yt.iter().zip(&exact(&w, &x)).enumerate() {
                let bound = 1e-5 * mag + 1e-30;
                assert!(
                    (f64::from(got) - want).abs() <= bound,
                    "{format} [{rows}, {k}] n={n} output {i}: {got:e} vs {want:e} (bound {bound:e}); seed {s}"
                );
            }
        }
    }
}

/// `kern`'s product of `w` and `a` against the scalar spec within `1e-5 · Σ |w·x|`, with every
/// plane and the activations `off` elements from their allocations (unaligned).
fn check_against_scalar(kern: &Kernels, w: &QPlanes, a: &Q8Acts, off: usize, what: &str) {
    let (format, rows, k, n) = (w.format, w.rows, w.k, a.as_ref().n);
    let mut want = vec![f32::NAN; rows * n];
    kquant::matmul_q8(&w.view(), &a.as_ref(), &mut want);
    let (qs, aux) = (Unaligned::new(&w.qs, off), Unaligned::new(&w.aux, off));
    let (d, m) = (Unaligned::new(&w.d, off), Unaligned::new(&w.m, off));
    let view = QWeight::with_aux(format, rows, k, qs.get(), aux.get(), d.get(), m.get())
        .expect("valid planes");
    let xq = Unaligned::new(a.as_ref().qs, off);
    let xd = Unaligned::new(a.as_ref().d, off);
    let xs = Unaligned::new(a.as_ref().sum, off);
    let x = edgeinfer_kernels::quant::Q8ActsRef {
        qs: xq.get(),
        d: xd.get(),
        sum: xs.get(),
        ..a.as_ref()
    };
    let mut got = vec![f32::NAN; rows * n];
    (kern.matmul_q(format))(&view, &x, &mut got);
    for (i, ((&g, &e), &(_, mag))) in got.iter().zip(&want).zip(&exact(w, &x)).enumerate() {
        let bound = 1e-5 * mag + 1e-30;
        assert!(
            (f64::from(g) - f64::from(e)).abs() <= bound,
            "{} {format} [{rows}, {k}] n={n} output {i} (row {}, token {}): {g:e} vs scalar {e:e} \
             (bound {bound:e}); {what}",
            kern.variant,
            i / n,
            i % n
        );
    }
}

/// Shapes `(rows, blocks per row, tokens)` for the SIMD kernels' paths: a whole group of eight
/// 32-element blocks, a group and a partial one, SmolLM2's 576 and a K-quant's 1536 columns, more
/// tokens than a token chunk (8) and two chunks with a remainder, rows past a 16-row task; for
/// AVX-512's prefill kernel (eight tokens or more) a whole 16-row tile, two and a 1-row tail, and
/// token tiles of 8 with remainders.
const KERNEL_SHAPES: [(usize, usize, usize); 12] = [
    (16, 1, 16),
    (33, 9, 8),
    (17, 3, 23),
    (1, 8, 1),
    (3, 9, 1),
    (2, 18, 1),
    (33, 6, 1),
    (4, 3, 9),
    (3, 17, 17),
    (19, 2, 8),
    (2, 16, 2),
    (1, 15, 3),
];

/// Every variant's kernel of every GGUF format against the scalar spec within `1e-5 · Σ |w·x|`,
/// with every plane and the activations offset from their allocations (unaligned).
#[test]
fn gguf_formats_every_variant_matches_scalar() {
    edgeinfer_kernels::testing::report_variants();
    let s = seed();
    let mut rng = Rng::new(s ^ 0x5eed);
    for kern in variants_under_test() {
        for format in QFormat::GGUF {
            for (rows, blocks, n) in SHAPES.into_iter().chain(KERNEL_SHAPES) {
                let k = blocks * format.block_elems();
                let w = random_weight(&mut rng, format, rows, k);
                let (_, a) = acts(&mut rng, n, k);
                let off = 1 + rng.below(15);
                check_against_scalar(&kern, &w, &a, off, &format!("seed {s}"));
            }
        }
    }
}

/// Rows longer than the kernels' column chunk (8192): the chunks' sums add up, and a 32-element
/// format's row ends in a partial group.
#[test]
fn gguf_formats_long_rows_match_scalar() {
    let s = seed();
    let mut rng = Rng::new(s ^ 0x10_9e);
    for kern in variants_under_test() {
        for format in QFormat::GGUF {
            let k = match format.block_elems() {
                QK => 8192 + 13 * QK,
                b => 8192 + 2 * b,
            };
            // One token, a few (group driver), and a prefill tile with a remainder.
            for (rows, n) in [(3, 1), (3, 3), (17, 9)] {
                let w = random_weight(&mut rng, format, rows, k);
                let (_, a) = acts(&mut rng, n, k);
                check_against_scalar(&kern, &w, &a, 1 + rng.below(15), &format!("seed {s}"));
            }
        }
    }
}

/// Whether the quant of token `t`, column `j` is negative.
type Sign = fn(usize, usize) -> bool;

/// Activations of `n` tokens whose quants are all ±127: `sign(t, j)` picks each one's sign.
fn extreme_acts(n: usize, k: usize, sign: Sign) -> Q8Acts {
    let x: Vec<f32> = (0..n * k)
        .map(|i| if sign(i / k, i % k) { -1.0 } else { 1.0 })
        .collect();
    let mut a = Q8Acts::new(n, k);
    quantize_acts(&Kernels::SCALAR, &x, n, k, &mut a);
    a
}

/// Extremes: every quant and scale bit set (or clear) against activations of ±127 (all one sign,
/// alternating, in runs of 16), so every integer sum is as large as it gets, plus zero and
/// negative f16 scales.
#[test]
fn gguf_formats_extreme_values_match_scalar() {
    let s = seed();
    let mut rng = Rng::new(s ^ 0xe87e);
    let signs: [(&str, Sign); 4] = [
        ("x = +127", |_, _| false),
        ("x = -127", |_, _| true),
        ("x = ±127 alternating", |t, j| (t + j) % 2 == 1),
        ("x = ±127 in runs of 16", |_, j| j / 16 % 2 == 1),
    ];
    for kern in variants_under_test() {
        for format in QFormat::GGUF {
            let rows = 5;
            let k = 3 * format.block_elems().max(256);
            for byte in [0xff, 0x00, 0x55, 0xaa] {
                for (d, m) in [(0.5, 0.25), (-3.0, 2.0), (0.0, 0.0), (0.0, -1.0)] {
                    let mut w = random_weight(&mut rng, format, rows, k);
                    w.qs.fill(byte);
                    w.aux.fill(byte);
                    w.d.fill(half::f16::from_f32(d));
                    w.m.fill(half::f16::from_f32(m));
                    for (name, sign) in signs {
                        // One token (decode kernels), two, and nine (prefill).
                        for n in [1, 2, 9] {
                            let a = extreme_acts(n, k, sign);
                            let what = format!("bytes {byte:#x}, d {d}, m {m}, {name}");
                            check_against_scalar(&kern, &w, &a, 1 + rng.below(15), &what);
                        }
                    }
                }
            }
            // Random quants with some blocks' scales zero.
            let mut w = random_weight(&mut rng, format, rows, k);
            for (i, d) in w.d.iter_mut().enumerate() {
                if i % 3 == 1 {
                    *d = half::f16::ZERO;
                }
            }
            for n in [2, 9] {
                let (_, a) = acts(&mut rng, n, k);
                check_against_scalar(&kern, &w, &a, 1, &format!("zero scales; seed {s}"));
            }
        }
    }
}

/// A 32-element format's partial last group reads past the row's end (into the next row's blocks)
/// where the planes go on; whatever it reads there must add nothing, even infinite and NaN scales.
#[test]
fn gguf_formats_partial_groups_ignore_the_next_row() {
    let s = seed();
    let mut rng = Rng::new(s ^ 0x7a11);
    for kern in variants_under_test() {
        for format in QFormat::GGUF.into_iter().filter(|f| f.block_elems() == QK) {
            let (rows, k, n) = (3, 9 * QK, 2);
            let mut w = random_weight(&mut rng, format, rows, k);
            let nb = k / QK;
            for (i, v) in [half::f16::INFINITY, half::f16::NAN]
                .into_iter()
                .enumerate()
            {
                w.d[(i + 1) * nb..(i + 2) * nb].fill(v);
                if format.has_min() {
                    w.m[(i + 1) * nb..(i + 2) * nb].fill(v);
                }
            }
            let (_, a) = acts(&mut rng, n, k);
            let mut want = vec![f32::NAN; rows * n];
            kquant::matmul_q8(&w.view(), &a.as_ref(), &mut want);
            let mut got = vec![f32::NAN; rows * n];
            (kern.matmul_q(format))(&w.view(), &a.as_ref(), &mut got);
            let x = a.as_ref();
            for (t, &(_, mag)) in exact(&w, &x).iter().enumerate().take(n) {
                let (g, e) = (got[t], want[t]);
                assert!(
                    g.is_finite() && (f64::from(g) - f64::from(e)).abs() <= 1e-5 * mag + 1e-30,
                    "{} {format} row 0 token {t}: {g:e} vs scalar {e:e}; seed {s}",
                    kern.variant
                );
            }
        }
    }
}

/// `got` (one variant's output) against the scalar spec's `want` within `1e-5 · Σ |w·x|`.
fn assert_close(
    what: &str,
    w: &QPlanes,
    x: &edgeinfer_kernels::quant::Q8ActsRef<'_>,
    got: &[f32],
    want: &[f32],
) {
    for (i, ((&g, &e), &(_, mag))) in got.iter().zip(want).zip(&exact(w, x)).enumerate() {
        let bound = 1e-5 * mag + 1e-30;
        assert!(
            (f64::from(g) - f64::from(e)).abs() <= bound,
            "{what} {} [{}, {}] n={} output {i}: {g:e} vs scalar {e:e} (bound {bound:e})",
            w.format,
            w.rows,
            w.k,
            x.n
        );
    }
}

/// The aarch64 kernels' tiles: decode (one token) in 4-row tiles with 1-, 2- and 3-row tails, and
/// several tokens in 4-token tiles (super-block formats) or 2 × 2 tiles with their tails; rows as
/// wide as a real model's (Qwen2.5-0.5B's 4864) and wider than one chunk of the super-block kernels.
#[test]
fn gguf_formats_every_tile_shape() {
    let s = seed();
    let mut rng = Rng::new(s ^ 0x7113);
    let shapes = [
        (4, 1, 1),
        (5, 2, 1),
        (6, 1, 1),
        (7, 3, 1),
        (9, 1, 1),
        (1, 2, 5),
        (2, 1, 6),
        (3, 1, 8),
        (4, 2, 9),
    ];
    for kern in variants_under_test() {
        for format in QFormat::GGUF {
            // Qwen2.5-0.5B's intermediate width (19 super-blocks, 152 blocks), and rows longer
            // than the super-block kernels' chunk of 8192 elements (33 super-blocks).
            let wide = 4864 / format.block_elems();
            let long = 8448 / format.block_elems();
            let more = [(5, wide, 1), (2, wide, 3), (3, long, 1), (2, long, 5)];
            for (rows, blocks, n) in shapes.into_iter().chain(more) {
                let k = blocks * format.block_elems();
                let w = random_weight(&mut rng, format, rows, k);
                let (_, a) = acts(&mut rng, n, k);
                let x = a.as_ref();
                let mut want = vec![f32::NAN; rows * n];
                kquant::matmul_q8(&w.view(), &x, &mut want);
                let mut got = vec![f32::NAN; rows * n];
                (kern.matmul_q(format))(&w.view(), &x, &mut got);
                assert_close(&format!("{} seed {s}", kern.variant), &w, &x, &got, &want);
            }
        }
    }
}

/// Extreme blocks: every quant and `aux` byte the same (all zeros, all ones, 0x80, alternating
/// bits), so that every quant and sub-block scale takes its largest magnitude somewhere (q6_k's
/// scale −128 with `q − 32 = −32`, q4_k's and q5_k's 63, iq4's ±127 values), against activations
/// of ±127 everywhere (one sign, or alternating): the integer sums reach their bounds (i16 lanes of
/// plain NEON, `A` up to 2²⁴) and must stay exact.
#[test]
fn gguf_formats_extreme_blocks() {
    for kern in variants_under_test() {
        // A few tokens (group driver), and a prefill tile with a remainder.
        for (format, (rows, n)) in QFormat::GGUF
            .into_iter()
            .flat_map(|f| [(f, (5, 3)), (f, (17, 9))])
        {
            let k = 2 * format.block_elems();
            for byte in [0x00u8, 0xFF, 0x80, 0x55, 0xAA, 0x0F] {
                let nb = rows * k / format.block_elems();
                let w = QPlanes {
                    format,
                    rows,
                    k,
                    qs: vec![byte; nb * format.qs_bytes_per_block()],
                    aux: vec![byte; nb * format.aux_bytes_per_block()],
                    d: vec![half::f16::from_f32(0.5); nb],
                    m: if format.has_min() {
                        vec![half::f16::from_f32(-0.25); nb]
                    } else {
                        Vec::new()
                    },
                };
                for pattern in 0..3 {
                    let x: Vec<f32> = (0..n * k)
                        .map(|i| match pattern {
                            0 => 1.0,
                            1 => -1.0,
                            _ => [1.0, -1.0][i % 2],
                        })
                        .collect();
                    let mut a = Q8Acts::new(n, k);
                    quantize_acts(&Kernels::SCALAR, &x, n, k, &mut a);
                    let x = a.as_ref();
                    let mut want = vec![f32::NAN; rows * n];
                    kquant::matmul_q8(&w.view(), &x, &mut want);
                    let mut got = vec![f32::NAN; rows * n];
                    (kern.matmul_q(format))(&w.view(), &x, &mut got);
                    let what = format!("{} bytes {byte:#04x} acts {pattern}", kern.variant);
                    assert_close(&what, &w, &x, &got, &want);
                }
            }
        }
    }
}

#[test]
fn gguf_formats_refuse_bad_shapes() {
    for format in QFormat::GGUF {
        let b = format.block_elems();
        let (qb, ab) = (format.qs_bytes_per_block(), format.aux_bytes_per_block());
        let qs = vec![0u8; 4 * qb];
        let aux = vec![0u8; 4 * ab];
        let d = vec![half::f16::ONE; 4];
        let m = if format.has_min() {
            d.clone()
        } else {
            Vec::new()
        };
        assert!(QWeight::with_aux(format, 2, 2 * b, &qs, &aux, &d, &m).is_ok());
        // k not a multiple of the block, a short aux plane, a missing m plane.
        assert!(QWeight::with_aux(format, 4, b + QK, &qs, &aux, &d, &m).is_err());
        if ab > 0 {
            assert!(QWeight::with_aux(format, 2, 2 * b, &qs, &aux[1..], &d, &m).is_err());
        }
        if format.has_min() {
            assert!(QWeight::with_aux(format, 2, 2 * b, &qs, &aux, &d, &[]).is_err());
        }
    }
    // q8_0 and the 32-element formats still take 32-wide rows; the K-quants do not.
    assert!(QFormat::Q4K.block_elems() == 256 && QFormat::Q5_0.block_elems() == QK);
    let _ = qscalar::check_quantize_q8;
}
