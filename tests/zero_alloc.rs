//! Decoding a token allocates nothing: a counting global allocator watches `Session::step`, the
//! sampler (greedy and filtered random) and the streaming detokenizer over 32 steps after a warm-up,
//! for dense weights and for q8_0 weights with one- and two-pass activations. A second test counts
//! (without requiring zero) what a JSON Schema constraint's masks allocate inside llguidance.
//!
//! Counting is per thread and switched on only around the measured loop, so the test harness and
//! other tests never disturb the count. The model runs with one thread, so all work is on this one.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{temp_dir, TinyLlama};
use edgeinfer::sampler::Sampler;
use edgeinfer::tokenizer::StreamDecoder;
use edgeinfer::{ActQuant, Model, ModelOptions, SamplerConfig, SessionOptions};
use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeOptions};
use edgeinfer_kernels::QFormat;

/// Wraps `System`, counting calls made while the calling thread is measuring. Touches only
/// const-initialised thread-locals without destructors, so counting itself never allocates.
struct Counting;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    allocs: usize,
    reallocs: usize,
    deallocs: usize,
}

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static COUNTS: Cell<Counts> = const { Cell::new(Counts { allocs: 0, reallocs: 0, deallocs: 0 }) };
}

fn record(f: impl FnOnce(&mut Counts)) {
    // `try_with` because the allocator also runs while thread-locals are being torn down.
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNTS.try_with(|c| {
            let mut v = c.get();
            f(&mut v);
            c.set(v);
        });
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc` contract;
// the bookkeeping around it neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(|c| c.allocs += 1);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(|c| c.allocs += 1);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(|c| c.reallocs += 1);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(|c| c.deallocs += 1);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with counting on for this thread; returns its result and the calls it made.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    COUNTS.with(|c| c.set(Counts::default()));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, COUNTS.with(Cell::get))
}

const SHAPE: TinyLlama = TinyLlama::small(11);

const STEPS: usize = 32;

/// Greedy, the default filter chain with a repeat penalty, and top-p alone (sorts every candidate).
fn sampler_configs() -> Vec<(&'static str, SamplerConfig)> {
    let filtered = SamplerConfig {
        repeat_penalty: 1.1,
        seed: 3,
        ..SamplerConfig::default()
    };
    let top_p_only = SamplerConfig {
        temperature: 1.2,
        top_k: 0,
        top_p: 0.9,
        min_p: 0.0,
        seed: 4,
        ..SamplerConfig::default()
    };
    vec![
        ("greedy", SamplerConfig::greedy()),
        ("top-k/top-p/min-p/penalty", filtered),
        ("top-p only", top_p_only),
    ]
}

#[test]
fn decode_steps_do_not_allocate() {
    // The measuring switch itself must work, or a zero below would prove nothing.
    let (v, counts) = measure(|| std::hint::black_box(vec![1u8; 100]));
    drop(v);
    assert_eq!(counts.allocs, 1, "the counting allocator does not count");

    let dir = temp_dir("zero-alloc");
    SHAPE.write_with_tokenizer(&dir);
    let q8 = temp_dir("zero-alloc-q8_0");
    quantize_checkpoint(&dir, &q8, &QuantizeOptions::new(QFormat::Q8_0), &mut |_| {}).unwrap();
    let models = [
        (&dir, ActQuant::Q8),
        (&q8, ActQuant::Q8),
        (&q8, ActQuant::Q8x2),
    ];

    let mut kernels = vec![None];
    if edgeinfer_kernels::Kernels::detect().variant != edgeinfer_kernels::Kernels::SCALAR.variant {
        kernels.push(Some("scalar".to_string()));
    }
    for (kern, (dir, acts)) in kernels
        .iter()
        .flat_map(|k| models.iter().map(move |m| (k, m)))
    {
        let model = Model::load_with(
            dir,
            &ModelOptions {
                threads: Some(1),
                kernels: kern.clone(),
            },
        )
        .unwrap();
        let tok = model.tokenizer();
        for (name, cfg) in sampler_configs() {
            let label = format!(
                "{}, kernels {:?}, {acts} activations, sampler {name}",
                dir.display(),
                model.kernels().variant
            );
            let mut session = model
                .session(SessionOptions {
                    ctx: 64,
                    batch: 8,
                    acts: *acts,
                    ..SessionOptions::default()
                })
                .unwrap();
            let mut sampler = Sampler::new(cfg, SHAPE.vocab).unwrap();
            let mut decoder = StreamDecoder::new(tok);
            let mut history: Vec<u32> = Vec::with_capacity(64);

            let prompt = [1u32, 270, 5, 12, 42];
            session.prefill(&prompt).unwrap();
            history.extend_from_slice(&prompt);
            // Warm-up: one sample, step and detokenized piece outside the measurement.
            let mut next = sampler.sample(&mut session.logits().to_vec(), &history);
            history.push(next);
            let logits = session.step(next).unwrap();
            next = sampler.sample(logits, &history);
            history.push(next);
            decoder.push(tok, next);

            let (text_bytes, counts) = measure(|| {
                let mut text_bytes = 0;
                for _ in 0..STEPS {
                    let logits = session.step(next).unwrap();
                    next = sampler.sample(logits, &history);
                    history.push(next);
                    if let Some(piece) = decoder.push(tok, next) {
                        text_bytes += piece.len();
                    }
                }
                text_bytes
            });
            assert_eq!(
                counts,
                Counts::default(),
                "{label}: {STEPS} decode steps touched the heap"
            );
            assert_eq!(session.tokens().len(), prompt.len() + 1 + STEPS, "{label}");
            std::hint::black_box(text_bytes);
        }
    }
}

/// Not a zero: what a JSON Schema constraint adds per decode step on the real model. Applying the
/// mask to the logits allocates nothing on our side, but llguidance's `compute_mask` returns a new
/// bit set and allocates inside its parser; this prints the count (docs/constrained.md quotes it)
/// and checks only that it stays bounded, so a regression to per-token recompilation shows.
#[test]
fn constrained_steps_allocate_only_in_llguidance() {
    let Some(dir) = common::real_model_dir() else {
        return;
    };
    let model = Model::load_with(
        &dir,
        &ModelOptions {
            threads: Some(1),
            kernels: None,
        },
    )
    .unwrap();
    let tok = model.tokenizer();
    let grammars =
        edgeinfer::Grammars::new(tok, model.config().vocab_size, model.eos_ids()).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "tags"]
    });
    let c = edgeinfer::Constraint::JsonSchema(schema);
    let text =
        r#"{"name": "Ada Lovelace", "age": 36, "tags": ["mathematician", "writer", "analyst"]}"#;
    let ids = tok.encode(text, false).unwrap();
    let mut logits = vec![0.0f32; model.config().vocab_size];
    // Warm-up pass: the shared lexer builds its states once.
    let mut guide = grammars.matcher(&c).unwrap();
    for &id in &ids {
        guide.mask(&mut logits).unwrap();
        guide.commit(id).unwrap();
    }
    let mut guide = grammars.matcher(&c).unwrap();
    let (_, counts) = measure(|| {
        for &id in &ids {
            guide.mask(&mut logits).unwrap();
            guide.commit(id).unwrap();
        }
    });
    let per_token = counts.allocs as f64 / ids.len() as f64;
    eprintln!(
        "constrained steps: {} tokens, {} allocations, {} reallocations, {} frees ({per_token:.1} allocations per token, all inside llguidance)",
        ids.len(),
        counts.allocs,
        counts.reallocs,
        counts.deallocs
    );
    assert!(
        per_token < 200.0,
        "{per_token} allocations per constrained token"
    );
}
