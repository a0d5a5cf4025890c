//! The session pool with the real model: a warm process does not grow (200 requests), concurrent
//! requests give the texts they give one at a time, the prefix cache skips a repeated system prompt,
//! and deadlines, cancel flags and a full pool end requests the way they should.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeinfer::{
    Error, FinishReason, GenerateOptions, Message, Model, ModelOptions, Prompt, SamplerConfig,
    SessionOptions, SessionPool,
};

fn model(threads: usize) -> Option<Arc<Model>> {
    let dir = common::real_model_dir()?;
    let opts = ModelOptions {
        threads: Some(threads),
        kernels: None,
    };
    Some(Model::load_with(dir, &opts).unwrap())
}

fn small_ctx() -> SessionOptions {
    SessionOptions {
        ctx: 256,
        ..SessionOptions::default()
    }
}

/// Resident set size of this process, in bytes (Linux; `None` elsewhere).
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Other tests allocate in this process at the same time, so the measurement runs alone in a child.
#[test]
fn two_hundred_requests_do_not_grow_the_process() {
    const CHILD: &str = "EDGEINFER_POOL_RSS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "two_hundred_requests_do_not_grow_the_process",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the measuring child failed");
        return;
    }
    let Some(model) = model(2) else { return };
    let pool = SessionPool::new(model, small_ctx(), 1).unwrap();
    let opts = GenerateOptions {
        max_tokens: 3,
        sampler: SamplerConfig {
            seed: 1,
            ..SamplerConfig::default()
        },
        ..GenerateOptions::default()
    };
    let mut after_warmup = 0;
    for i in 0..200 {
        // Digits are single tokens in SmolLM2's tokenizer: every prompt is new (no cached prefix
        // beyond the first word) but touches no embedding row the first ones did not.
        let prompt = format!("Order {} is ready", 1000 + i * 7);
        let g = pool
            .generate(&Prompt::Text(&prompt), &opts, |_| true)
            .unwrap();
        assert!(g.timings.generated_tokens >= 1);
        if i == 9 {
            after_warmup = rss_bytes().unwrap_or(0);
        }
    }
    let Some(end) = rss_bytes() else {
        eprintln!("SKIPPED: no /proc/self/status on this system");
        return;
    };
    let growth = end as i64 - after_warmup as i64;
    println!(
        "RSS after 10 requests {:.2} MB, after 200 {:.2} MB: growth {:+.1} KB",
        after_warmup as f64 / 1e6,
        end as f64 / 1e6,
        growth as f64 / 1024.0
    );
    assert!(
        growth < 1 << 20,
        "RSS grew by {growth} bytes over 190 warm requests"
    );
    assert_eq!(pool.stats().open, 1, "one session serves them all");
}

fn prompts() -> Vec<String> {
    [
        "Once upon a time",
        "The best way to cook rice is",
        "In 1969, astronauts",
        "My favourite programming language",
        "Here is a list of fruits:",
        "Quantum computers are",
        "Dear diary, today",
        "The recipe calls for",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn sampled(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 8,
        sampler: SamplerConfig {
            temperature: 0.9,
            seed,
            ..SamplerConfig::default()
        },
        stop_at_eos: false,
        ..GenerateOptions::default()
    }
}

#[test]
fn eight_concurrent_requests_match_one_at_a_time() {
    let Some(model) = model(2) else { return };
    let prompts = prompts();
    // One at a time, each on a fresh session (every prompt starts with a different token, so no
    // cached prefix is involved either way).
    let alone: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut s = model.session(small_ctx()).unwrap();
            s.generate(&Prompt::Text(p), &sampled(i as u64), |_| true)
                .unwrap()
                .text
        })
        .collect();
    let pool = SessionPool::new(model, small_ctx(), 8).unwrap();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let pool = pool.clone();
                scope.spawn(move || {
                    pool.generate(&Prompt::Text(p), &sampled(i as u64), |_| true)
                        .unwrap()
                        .text
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    assert!(pool.stats().open <= 8);
}

#[test]
fn a_repeated_system_prompt_is_not_prefilled_again() {
    let Some(model) = model(2) else { return };
    let pool = SessionPool::new(model, small_ctx(), 2).unwrap();
    let system = Message::new(
        "system",
        "You are a terse assistant for a bakery. Answer in one short sentence.",
    );
    let ask = |q: &str| {
        let messages = [system.clone(), Message::new("user", q)];
        let opts = GenerateOptions {
            max_tokens: 2,
            sampler: SamplerConfig::greedy(),
            ..GenerateOptions::default()
        };
        pool.generate(&Prompt::Chat(&messages), &opts, |_| true)
            .unwrap()
    };
    let first = ask("When do you open?");
    assert_eq!(
        first.timings.prompt_tokens_evaluated,
        first.timings.prompt_tokens
    );
    let second = ask("Do you sell rye bread?");
    let system_tokens = pool
        .tokenize(&Prompt::Chat(std::slice::from_ref(&system)))
        .unwrap()
        .len();
    println!(
        "second request: {} of {} prompt tokens computed (system prompt {system_tokens} tokens)",
        second.timings.prompt_tokens_evaluated, second.timings.prompt_tokens
    );
    assert!(
        second.timings.prompt_tokens_evaluated + system_tokens / 2 <= second.timings.prompt_tokens,
        "the shared system prompt was prefilled again"
    );
}

#[test]
fn a_deadline_ends_generation_with_partial_text() {
    let Some(model) = model(2) else { return };
    let pool = SessionPool::new(model, small_ctx(), 1).unwrap();
    let mut opts = GenerateOptions {
        max_tokens: 240,
        sampler: SamplerConfig::greedy(),
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    // Already passed: nothing runs.
    opts.deadline = Some(Instant::now());
    let g = pool
        .generate(&Prompt::Text("The history of Rome"), &opts, |_| true)
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Deadline);
    assert_eq!((g.text.as_str(), g.timings.generated_tokens), ("", 0));

    // Mid-generation: text so far, on time.
    let start = Instant::now();
    let budget = Duration::from_millis(700);
    opts.deadline = Some(start + budget);
    let mut streamed = String::new();
    let g = pool
        .generate(&Prompt::Text("The history of Rome"), &opts, |p| {
            streamed.push_str(p);
            true
        })
        .unwrap();
    let took = start.elapsed();
    println!(
        "deadline {budget:?}: {} tokens in {took:?}: {:?}",
        g.timings.generated_tokens, g.text
    );
    assert_eq!(g.finish_reason, FinishReason::Deadline);
    assert!(g.timings.generated_tokens > 0 && g.timings.generated_tokens < 240);
    assert!(!g.text.is_empty());
    assert_eq!(streamed, g.text, "the partial text is streamed in full");
    assert!(
        took < budget + Duration::from_millis(500),
        "stopped {took:?} after a {budget:?} deadline"
    );
}

#[test]
fn a_cancel_flag_ends_generation() {
    let Some(model) = model(1) else { return };
    let pool = SessionPool::new(model, small_ctx(), 1).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let opts = GenerateOptions {
        max_tokens: 200,
        sampler: SamplerConfig::greedy(),
        stop_at_eos: false,
        cancel: Some(flag.clone()),
        ..GenerateOptions::default()
    };
    let mut pieces = 0;
    let g = pool
        .generate(&Prompt::Text("Once upon a time"), &opts, |_| {
            pieces += 1;
            if pieces == 3 {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            true
        })
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Cancelled);
    assert!(g.timings.generated_tokens >= 3 && g.timings.generated_tokens < 10);
}

#[test]
fn a_full_pool_waits_until_the_deadline() {
    let Some(model) = model(1) else { return };
    let pool = SessionPool::new(model.clone(), small_ctx(), 1).unwrap();
    let held = pool.acquire(&[], None).unwrap();
    let start = Instant::now();
    let err = pool
        .acquire(&[], Some(start + Duration::from_millis(50)))
        .err()
        .expect("the only session is lent out");
    assert!(matches!(err, Error::PoolBusy { max_sessions: 1 }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    drop(held);
    let again = pool.acquire(&[], None).unwrap();
    let m = again.memory();
    assert_eq!(m.weights_mapped, model.mapped_bytes());
    assert!(m.kv_cache > 0 && m.kv_cache < m.arena, "{m:?}");
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (1, 0));
    assert_eq!(
        stats.memory, m,
        "one session open: its memory is the pool's"
    );
    assert!(SessionPool::new(model, small_ctx(), 0).is_err());
}
