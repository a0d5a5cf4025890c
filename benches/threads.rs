//! What splitting one step of a forward pass across threads costs: decoding a token of SmolLM2-135M
//! runs ~240 such steps (seven matmuls and one attention per layer, plus the logits), each only a
//! few microseconds of work per thread, so a fixed cost per step is a large share of a token.
//!
//! Groups (`<group>/<executor>`), with 2 threads unless the executor says 1:
//! - `fork_join_empty`: one parallel step of 8 tasks that do nothing (each writes one float): the
//!   pure overhead of publishing a step, waking the other thread and waiting for it.
//! - `matvec_q4_0_576x576`, `matvec_q4_0_1536x576`: a decode-size matvec (SmolLM2's attention
//!   projection and MLP gate/up), rows split like the model splits them (`par::matmul_q`).
//!
//! Executors: `serial` (1 thread, no split), `rayon` (a 2-thread rayon pool, `install` around the
//! step, as the engine did before the team), `team` (edgeinfer's [`Team`], installed around the
//! step). The installed region is entered once per iteration, like a forward pass per token, and
//! each iteration runs the step 30 times back to back (as many as there are layers), so the numbers
//! include the wake-up of an idle worker once per 30 steps.
//!
//! Run: `cargo bench --bench threads`. Compare `team` with `rayon` in one run; on a busy 2-core
//! machine the second thread may not be there at all, which is what the spin-then-yield waits are
//! for.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use edgeinfer_kernels::quant::{self, Q8Acts, QFormat};
use edgeinfer_kernels::testing::{QPlanes, Rng};
use edgeinfer_kernels::{par, Kernels, Team};

const THREADS: usize = 2;
const STEPS: usize = 30;

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("rayon pool");
    let team = Team::new(THREADS).expect("team");

    {
        let mut g = c.benchmark_group("fork_join_empty");
        g.throughput(Throughput::Elements(STEPS as u64));
        let mut out = vec![0.0f32; 8];
        let step = |out: &mut [f32]| {
            for _ in 0..STEPS {
                par::for_each_chunk(out, 1, |i, o| o[0] = black_box(i as f32));
            }
        };
        g.bench_function("serial", |b| b.iter(|| step(&mut out)));
        g.bench_function("rayon", |b| {
            b.iter(|| rayon_pool.install(|| step(&mut out)))
        });
        g.bench_function("team", |b| b.iter(|| team.install(|| step(&mut out))));
        g.finish();
    }

    let kern = Kernels::detect();
    for (rows, k) in [(576, 576), (1536, 576)] {
        let mut rng = Rng::new(7);
        let w = QPlanes::random(&mut rng, QFormat::Q4_0, rows, k, 0.01, 0.0);
        let x = rng.vec(k, 1.0);
        let mut acts = Q8Acts::new(1, k);
        quant::quantize_acts(&kern, &x, 1, k, &mut acts);
        let mut y = vec![0.0f32; rows];
        let mut g = c.benchmark_group(format!("matvec_q4_0_{rows}x{k}"));
        g.throughput(Throughput::Elements(STEPS as u64));
        let (wv, a) = (w.view(), acts.as_ref());
        let step = |y: &mut [f32]| {
            for _ in 0..STEPS {
                par::matmul_q(&kern, &wv, &a, y);
            }
        };
        g.bench_function("serial", |b| b.iter(|| step(&mut y)));
        g.bench_function("rayon", |b| b.iter(|| rayon_pool.install(|| step(&mut y))));
        g.bench_function("team", |b| b.iter(|| team.install(|| step(&mut y))));
        g.finish();
    }
    c.final_summary();
}
