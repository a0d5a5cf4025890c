//! Kernel benchmarks: every variant this CPU can run, on the weight shapes of real models, with
//! candle-core's quantized matmul beside ours in the same groups.
//!
//! Ids are `<kernel>/<variant>/<rows>x<cols>_n<tokens>`: the kernel's name as in the `Kernels` table
//! (see the kernels crate docs for the naming), variant `candle` for candle-core, and the token count
//! in the shape (one token is decode, the same kernel as prefill):
//! - `matmul_<fmt>_q8`: a q8_0/q4_0/q4_1 weight against 1 (decode), 64 and 512 tokens (prefill).
//! - `matmul_<fmt>_q8` for the GGUF formats (q5_0 … iq4_xs, kept as stored): 1 and 64 tokens, on
//!   [`GGUF_SHAPES`] (the K-quants only where `k` is a multiple of 256). The weights are candle's
//!   quantization split into our planes, so both sides read the same blocks; candle has no IQ4
//!   quantizer, so iq4_nl and iq4_xs get random planes and no candle peer.
//! - `matmul_f32`, `matmul_f16`: the dense kernels on the SmolLM2 shapes, one token (no candle peer).
//!
//! Shapes: SmolLM2-135M 576×576, 1536×576, 576×1536, 49152×576 (lm_head); Qwen2.5-0.5B 4864×896,
//! 896×4864; TinyLlama 5632×2048; and 1000×608 (rows not a multiple of a SIMD tile, an odd number of
//! blocks per row), so tails are timed too.
//!
//! Throughput is bytes of weights read per call (quants plus scales, the same bytes as ggml's blocks,
//! which is also what candle reads), so criterion prints GB/s: decode is bound by memory bandwidth.
//!
//! What one iteration is, for both sides: f32 activations `[n, k]` in, f32 outputs out, with the
//! activations quantized to q8 inside the timed call (candle's `QMatMul::forward` does that too).
//! Ours calls the variant's `quantize_q8` and `matmul_<fmt>_q8` directly, writing the row-major `yt`
//! (`[rows, n]`) the kernels produce; the transpose to token-major that `par::matmul` adds for n > 1
//! is not timed (it is O(rows·n), against O(rows·n·k) for the product). Candle allocates its output
//! tensor each call, as a model using it would.
//!
//! Threads: everything runs on one thread, so the numbers compare kernel to kernel. Our kernels are
//! called outside any rayon pool (nothing here splits rows); candle's quantized matmul runs on its own
//! barrier pool, sized by `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the physical cores) when
//! first used: `main` sets `CANDLE_NUM_THREADS=1` (unless already set) before touching candle, which
//! gives that pool no workers, and `RAYON_NUM_THREADS=1` for anything else that reaches rayon.
//!
//! Cost: 1 s of measurement after 0.3 s of warm-up, 10 samples (flat sampling for several tokens, so a
//! slow variant runs 10 iterations, not 55). The scalar variant is skipped at n = 512 (about a
//! minute per format on the 2-core reference machine for no new information). Before timing, each shape's
//! output is checked against candle's, so both sides are known to compute the same product.
//!
//! Run: `cargo bench --bench kernels` (all), `cargo bench --bench kernels -- matmul_q4_0_q8` (a filter;
//! `'matmul_q4_0_q8/avx2/.*_n1$'` for one variant's decode), then `python3 benches/summarize.py` for
//! the ours-vs-candle tables.

use std::hint::black_box;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use edgeinfer_kernels::quant::{self, scalar as qscalar, Q8Acts, QFormat, QWeight, QK};
use edgeinfer_kernels::testing::{QPlanes, Rng};
use edgeinfer_kernels::{Kernels, Variant};
use half::f16;

/// `(rows, cols)` of the weights benchmarked in the quantized groups.
const QUANT_SHAPES: [(usize, usize); 8] = [
    (576, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
    (4864, 896),
    (896, 4864),
    (5632, 2048),
    (1000, 608),
];

/// `(rows, cols)` of the GGUF-format weights: SmolLM2-135M's down projection (576×1536), its
/// gate/up and attention shapes (1536×576, 576×576; 32-element formats only: 576 is not a multiple of
/// 256), a 768-column stand-in for K-quants on SmolLM2's width, Qwen2.5-0.5B's down projection and
/// TinyLlama's gate/up.
const GGUF_SHAPES: [(usize, usize); 6] = [
    (576, 1536),
    (1536, 768),
    (1536, 576),
    (576, 576),
    (896, 4864),
    (5632, 2048),
];

/// Token counts of the GGUF formats: decode, and one prefill length.
const GGUF_TOKENS: [usize; 2] = [1, 64];

/// SmolLM2-135M's shapes, for the dense kernels.
const DENSE_SHAPES: [(usize, usize); 4] = [(576, 576), (1536, 576), (576, 1536), (49152, 576)];

/// Token counts: decode, and two prefill lengths.
const TOKENS: [usize; 3] = [1, 64, 512];

fn main() {
    // Read by candle when its pool is first built, which is after this point (nothing before touches it).
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    let variants: Vec<Kernels> = Kernels::available()
        .into_iter()
        .map(|v| Kernels::new(v).expect("available variant"))
        .collect();
    quantized(&mut c, &variants);
    gguf(&mut c, &variants);
    dense(&mut c, &variants);
    c.final_summary();
}

/// One quantized weight in our planes and as candle's `QMatMul`, made from the same f32 values.
struct QPair {
    format: QFormat,
    rows: usize,
    k: usize,
    qs: Vec<u8>,
    d: Vec<f16>,
    m: Vec<f16>,
    candle: QMatMul,
}

impl QPair {
    fn new(format: QFormat, rows: usize, k: usize, w: &[f32]) -> QPair {
        let nb = rows * k / QK;
        let mut qs = vec![0u8; nb * format.qs_bytes_per_block()];
        let mut d = vec![f16::ZERO; nb];
        let mut m = vec![f16::ZERO; if format.has_min() { nb } else { 0 }];
        let (rb, sb) = (k / QK * format.qs_bytes_per_block(), k / QK);
        for r in 0..rows {
            let (x, q, s) = (
                &w[r * k..][..k],
                &mut qs[r * rb..][..rb],
                &mut d[r * sb..][..sb],
            );
            match format {
                QFormat::Q8_0 => qscalar::quantize_row_q8_0(x, q, s),
                QFormat::Q4_0 => qscalar::quantize_row_q4_0(x, q, s),
                QFormat::Q4_1 => qscalar::quantize_row_q4_1(x, q, s, &mut m[r * sb..][..sb]),
                _ => unreachable!("the bench quantizes to the basic formats"),
            }
        }
        let dtype = match format {
            QFormat::Q8_0 => GgmlDType::Q8_0,
            QFormat::Q4_0 => GgmlDType::Q4_0,
            QFormat::Q4_1 => GgmlDType::Q4_1,
            _ => unreachable!("the bench quantizes to the basic formats"),
        };
        let t = Tensor::from_slice(w, (rows, k), &Device::Cpu).expect("weight tensor");
        let qt = QTensor::quantize(&t, dtype).expect("candle quantize");
        let candle = QMatMul::from_qtensor(qt).expect("candle QMatMul");
        QPair {
            format,
            rows,
            k,
            qs,
            d,
            m,
            candle,
        }
    }

    fn weight(&self) -> QWeight<'_> {
        QWeight::new(self.format, self.rows, self.k, &self.qs, &self.d, &self.m)
            .expect("valid planes")
    }

    /// Bytes one product reads from the weight.
    fn bytes(&self) -> u64 {
        (self.qs.len() + 2 * (self.d.len() + self.m.len())) as u64
    }
}

/// The timed call on our side: quantize `x` (`[n, k]`), then the product into `yt` (`[rows, n]`).
fn ours(kern: &Kernels, w: &QWeight<'_>, x: &[f32], n: usize, acts: &mut Q8Acts, yt: &mut [f32]) {
    quant::quantize_acts(kern, x, n, w.k, acts);
    (kern.matmul_q(w.format))(w, &acts.as_ref(), yt);
}

/// Our best variant's output against candle's, so the two sides are known to compute one product.
/// The two differ only in rounding (candle keeps q8 activation scales in f16, we keep them in f32).
fn check_against_candle(kern: &Kernels, p: &QPair, x: &[f32], n: usize, xt: &Tensor) {
    check_candle(kern, &p.weight(), &p.candle, x, n, xt);
}

/// [`check_against_candle`] for any of our weights and candle's `QMatMul` of the same blocks.
fn check_candle(
    kern: &Kernels,
    w: &QWeight<'_>,
    candle: &QMatMul,
    x: &[f32],
    n: usize,
    xt: &Tensor,
) {
    let rows = w.rows;
    let mut acts = Q8Acts::new(n, w.k);
    let mut yt = vec![0.0f32; rows * n];
    ours(kern, w, x, n, &mut acts, &mut yt);
    let theirs: Vec<f32> = candle
        .forward(xt)
        .and_then(|y| y.flatten_all())
        .and_then(|y| y.to_vec1())
        .expect("candle forward");
    let scale = theirs.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-6);
    for t in 0..n {
        for r in 0..rows {
            let (a, b) = (yt[r * n + t], theirs[t * rows + r]);
            assert!(
                (a - b).abs() <= 2e-2 * scale,
                "{} {rows}x{} n={n}: row {r} token {t}: ours {a} vs candle {b} (max |y| {scale})",
                w.format,
                w.k
            );
        }
    }
}

/// The shape part of an id: `<rows>x<cols>_n<tokens>`.
fn shape_id(rows: usize, k: usize, n: usize) -> String {
    format!("{rows}x{k}_n{n}")
}

fn quantized(c: &mut Criterion, variants: &[Kernels]) {
    let best = *variants.last().expect("scalar is always available");
    // Token counts outermost, so that all of decode runs first.
    for &n in &TOKENS {
        for format in QFormat::BASIC {
            let group_name = format!("matmul_{format}_q8");
            // Skip building weights for a group the command-line filter excludes entirely.
            if !group_may_run(&group_name) {
                continue;
            }
            let mut group = c.benchmark_group(&group_name);
            if n > 1 {
                group.sampling_mode(SamplingMode::Flat);
            }
            for &(rows, k) in &QUANT_SHAPES {
                let mut rng = Rng::new(0x5eed ^ (rows * 131 + k) as u64);
                let p = {
                    let w = rng.vec(rows * k, 1.0);
                    QPair::new(format, rows, k, &w)
                };
                let x = rng.vec(n * k, 1.0);
                let xt = Tensor::from_slice(&x, (n, k), &Device::Cpu).expect("input tensor");
                check_against_candle(&best, &p, &x, n, &xt);
                let w = p.weight();
                let shape = shape_id(rows, k, n);
                group.throughput(Throughput::Bytes(p.bytes()));
                let mut acts = Q8Acts::new(n, k);
                let mut yt = vec![0.0f32; rows * n];
                for kern in variants {
                    if kern.variant == Variant::Scalar && n >= 512 {
                        continue;
                    }
                    let id = BenchmarkId::new(kern.variant.name(), &shape);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            ours(kern, &w, black_box(&x), n, &mut acts, &mut yt);
                            black_box(&yt);
                        })
                    });
                }
                group.bench_function(BenchmarkId::new("candle", &shape), |b| {
                    b.iter(|| black_box(p.candle.forward(black_box(&xt)).expect("forward")))
                });
            }
            group.finish();
        }
    }
}

/// candle's quantizer for a GGUF format, where it has one.
fn candle_dtype(format: QFormat) -> Option<GgmlDType> {
    Some(match format {
        QFormat::Q5_0 => GgmlDType::Q5_0,
        QFormat::Q5_1 => GgmlDType::Q5_1,
        QFormat::Q2K => GgmlDType::Q2K,
        QFormat::Q3K => GgmlDType::Q3K,
        QFormat::Q4K => GgmlDType::Q4K,
        QFormat::Q5K => GgmlDType::Q5K,
        QFormat::Q6K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// A GGUF-format weight as our planes, and candle's `QMatMul` of the same blocks where candle can
/// quantize the format (else random planes).
fn gguf_pair(rng: &mut Rng, format: QFormat, rows: usize, k: usize) -> (QPlanes, Option<QMatMul>) {
    let Some(dtype) = candle_dtype(format) else {
        return (QPlanes::random(rng, format, rows, k, 0.05, 0.02), None);
    };
    let w = rng.vec(rows * k, 1.0);
    let t = Tensor::from_slice(&w, (rows, k), &Device::Cpu).expect("weight tensor");
    let qt = QTensor::quantize(&t, dtype).expect("candle quantize");
    let mut p = QPlanes {
        format,
        rows,
        k,
        qs: Vec::new(),
        aux: Vec::new(),
        d: Vec::new(),
        m: Vec::new(),
    };
    let blocks = qt.data().expect("candle blocks");
    quant::kquant::split_ggml_blocks(format, &blocks, &mut p.qs, &mut p.aux, &mut p.d, &mut p.m);
    let candle = QMatMul::from_qtensor(qt).expect("candle QMatMul");
    (p, Some(candle))
}

/// The GGUF formats' groups (see the module docs).
fn gguf(c: &mut Criterion, variants: &[Kernels]) {
    let best = *variants.last().expect("scalar is always available");
    for &n in &GGUF_TOKENS {
        for format in QFormat::GGUF {
            let group_name = format!("matmul_{format}_q8");
            if !group_may_run(&group_name) {
                continue;
            }
            let mut group = c.benchmark_group(&group_name);
            if n > 1 {
                group.sampling_mode(SamplingMode::Flat);
            }
            for &(rows, k) in &GGUF_SHAPES {
                if k % format.block_elems() != 0 {
                    continue;
                }
                let mut rng = Rng::new(0x9_9f ^ (rows * 131 + k) as u64);
                let (p, candle) = gguf_pair(&mut rng, format, rows, k);
                let w = p.view();
                let x = rng.vec(n * k, 1.0);
                let xt = Tensor::from_slice(&x, (n, k), &Device::Cpu).expect("input tensor");
                if let Some(candle) = &candle {
                    check_candle(&best, &w, candle, &x, n, &xt);
                }
                let shape = shape_id(rows, k, n);
                let bytes = p.qs.len() + p.aux.len() + 2 * (p.d.len() + p.m.len());
                group.throughput(Throughput::Bytes(bytes as u64));
                let mut acts = Q8Acts::new(n, k);
                let mut yt = vec![0.0f32; rows * n];
                for kern in variants {
                    let id = BenchmarkId::new(kern.variant.name(), &shape);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            ours(kern, &w, black_box(&x), n, &mut acts, &mut yt);
                            black_box(&yt);
                        })
                    });
                }
                if let Some(candle) = &candle {
                    group.bench_function(BenchmarkId::new("candle", &shape), |b| {
                        b.iter(|| black_box(candle.forward(black_box(&xt)).expect("forward")))
                    });
                }
            }
            group.finish();
        }
    }
}

fn dense(c: &mut Criterion, variants: &[Kernels]) {
    for name in ["matmul_f32", "matmul_f16"] {
        if !group_may_run(name) {
            continue;
        }
        let mut group = c.benchmark_group(name);
        for &(rows, k) in &DENSE_SHAPES {
            let mut rng = Rng::new(0xde75e ^ (rows * 131 + k) as u64);
            let w32 = rng.vec(rows * k, 1.0);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let x = rng.vec(k, 1.0);
            let mut y = vec![0.0f32; rows];
            let shape = shape_id(rows, k, 1);
            let elem = if name == "matmul_f32" { 4 } else { 2 };
            group.throughput(Throughput::Bytes((rows * k * elem) as u64));
            for kern in variants {
                let id = BenchmarkId::new(kern.variant.name(), &shape);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        if name == "matmul_f32" {
                            (kern.matmul_f32)(&w32, k, black_box(&x), 1, &mut y);
                        } else {
                            (kern.matmul_f16)(&w16, k, black_box(&x), 1, &mut y);
                        }
                        black_box(&y);
                    })
                });
            }
        }
        group.finish();
    }
}

/// Whether a benchmark of group `group` could match the command-line filter (the first argument that
/// is not a flag, as criterion reads it): a substring test on the group name or any id in it. Only used
/// to skip the setup (weights of up to 113 MB quantized twice) of groups that would run nothing.
fn group_may_run(group: &str) -> bool {
    let mut args = std::env::args().skip(1);
    let mut filter = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            // Criterion's flags that take a value.
            "--save-baseline"
            | "--baseline"
            | "--baseline-lenient"
            | "--load-baseline"
            | "--color"
            | "-c"
            | "--sample-size"
            | "--warm-up-time"
            | "--measurement-time"
            | "--nresamples"
            | "--noise-threshold"
            | "--confidence-level"
            | "--significance-level"
            | "--profile-time"
            | "--plotting-backend"
            | "--format" => {
                args.next();
            }
            s if s.starts_with('-') => {}
            s => {
                filter = Some(s.to_string());
                break;
            }
        }
    }
    match filter {
        None => true,
        // Ids are `group/variant/shape` and no variant or shape contains "mat", so a plain word (no
        // regex syntax, no `/`) starting with "mat" can only match inside the group name.
        Some(f) => {
            let head = f.split('/').next().unwrap_or("");
            let literal = head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            !(literal && head.starts_with("mat")) || group.contains(head)
        }
    }
}
