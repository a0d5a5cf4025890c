//! `infer bench`: prefill and decode speed with llama-bench's definitions, so the numbers compare
//! directly with llama.cpp's.
//!
//! - `pp<N>`: a prompt of N tokens processed from an empty context; tokens/s = N / time.
//! - `tg<N>`: N tokens decoded one at a time after a one-token context; tokens/s = N / time.
//!   As in llama-bench, no sampling: each step feeds a fixed token.
//!
//! Each test runs once to warm up, then `-r` times; the mean and standard deviation of tokens/s over
//! the repetitions are reported (`avg_ts`, `stddev_ts`), and the per-repetition times (`samples_ns`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use edgeinfer::{ActQuant, Model, ModelOptions, SessionOptions};

mod constrained;

#[derive(Args)]
pub struct BenchArgs {
    /// Model directory.
    #[arg(short = 'm', long = "model", env = "EDGEINFER_MODEL", default_value = crate::DEFAULT_MODEL)]
    model: PathBuf,
    /// Thread counts to test (comma-separated, e.g. 1,2) [default: the CPUs this process may use].
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Kernel variant (see `infer run --help`).
    #[arg(long)]
    kernels: Option<String>,
    /// Activation quantization, q8 or q8x2 (see `infer run --help`).
    #[arg(long = "acts", env = "EDGEINFER_ACTS", default_value = "q8", value_parser = crate::parse_acts)]
    acts: ActQuant,
    /// Prompt lengths to prefill (comma-separated; 0 to skip).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Tokens to decode (comma-separated; 0 to skip).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Tokens already in the context before each test (comma-separated), as llama-bench's `-d`.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Prompt tokens per forward call during prefill.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    batch: usize,
    /// Print a JSON list of records with llama-bench's field names.
    #[arg(long)]
    json: bool,
    /// Also measure a JSON Schema constraint: greedy chat decoding of the first --n-gen tokens
    /// with and without it (alternating, -r runs each), its time per token, and its masks alone
    /// per tokenizer (see --mask-tokenizer). Tables go to stderr with --json.
    #[arg(long = "json-schema", value_name = "FILE")]
    json_schema: Option<PathBuf>,
    /// With --json-schema: also time the masks with the tokenizer in DIR (tokenizer.json, and
    /// tokenizer_config.json for its EOS), e.g. a Qwen2 one; repeatable.
    #[arg(long = "mask-tokenizer", value_name = "DIR", requires = "json_schema")]
    mask_tokenizer: Vec<PathBuf>,
    /// Logit rows for --mask-tokenizer (a model's vocab_size, e.g. 151936 for Qwen2, above the
    /// tokenizer's 151,665 ids) [default: the tokenizer's ids].
    #[arg(long = "mask-vocab", requires = "mask_tokenizer")]
    mask_vocab: Option<usize>,
}

struct Record {
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    samples_ns: Vec<f64>,
    load_ms: f64,
}

impl Record {
    fn tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    fn ts(&self) -> Vec<f64> {
        self.samples_ns
            .iter()
            .map(|ns| self.tokens() as f64 * 1e9 / ns)
            .collect()
    }

    fn name(&self) -> String {
        let test = if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        match self.n_depth {
            0 => test,
            d => format!("{test} @ d{d}"),
        }
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.repetitions == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    let thread_counts = match &args.threads[..] {
        [] => vec![edgeinfer::model::default_threads()],
        list => list.to_vec(),
    };
    let mut records = Vec::new();
    let dir = crate::resolve_model_dir(&args.model);
    crate::check_model_dir(&dir)?;
    for &threads in &thread_counts {
        let started = Instant::now();
        let model = Model::load_with(
            &dir,
            &ModelOptions {
                threads: Some(threads),
                kernels: args.kernels.clone(),
            },
        )?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        for &depth in &args.n_depth {
            let tests = args.n_prompt.iter().filter(|&&n| n > 0).map(|&n| (n, 0));
            let tests = tests.chain(args.n_gen.iter().filter(|&&n| n > 0).map(|&n| (0, n)));
            for (n_prompt, n_gen) in tests {
                let samples_ns = repeat(args.repetitions, || {
                    run_test(&model, depth, n_prompt, n_gen, args.batch, args.acts)
                })?;
                records.push(Record {
                    threads,
                    n_prompt,
                    n_gen,
                    n_depth: depth,
                    samples_ns,
                    load_ms,
                });
                report(&records, &model, args.json, args.acts);
            }
        }
        if let Some(schema) = &args.json_schema {
            let n_gen = args.n_gen.iter().copied().find(|&n| n > 0).unwrap_or(128);
            constrained::run(
                &model,
                schema,
                &args.mask_tokenizer,
                args.mask_vocab,
                n_gen,
                args.repetitions,
                args.json,
            )?;
        }
    }
    if args.json {
        let model = Model::load_with(
            &dir,
            &ModelOptions {
                threads: Some(1),
                kernels: args.kernels.clone(),
            },
        )?;
        let peak_rss = peak_rss_bytes();
        let list: Vec<_> = records
            .iter()
            .map(|r| {
                let ts = r.ts();
                let (avg_ts, stddev_ts) = mean_std(&ts);
                let (avg_ns, stddev_ns) = mean_std(&r.samples_ns);
                serde_json::json!({
                    "model_filename": model.dir().display().to_string(),
                    "model_type": format!("{} {}", model.config().arch.name(), model.weights().find(|w| w.name.ends_with("q_proj.weight")).map_or("?", |w| w.type_name)),
                    "model_size": model.weight_bytes(),
                    "model_n_params": model.weights().map(|w| w.shape.iter().product::<usize>()).sum::<usize>(),
                    "backends": "CPU",
                    "kernels": model.kernels().variant.name(),
                    "n_batch": 512,
                    "n_threads": r.threads,
                    // The sessions' KV cache (SessionOptions' default).
                    "type_k": "f16",
                    "type_v": "f16",
                    "acts": args.acts.name(),
                    "use_mmap": true,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.n_depth,
                    "avg_ns": avg_ns as u64,
                    "stddev_ns": stddev_ns as u64,
                    "avg_ts": avg_ts,
                    "stddev_ts": stddev_ts,
                    "samples_ns": r.samples_ns.iter().map(|&n| n as u64).collect::<Vec<_>>(),
                    "samples_ts": ts,
                    "load_ms": r.load_ms,
                    "peak_rss_bytes": peak_rss,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    }
    Ok(())
}

fn repeat(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    f()?; // warm-up: page in the weights, settle the thread pool
    (0..reps).map(|_| f()).collect()
}

/// A deterministic, valid token sequence (llama-bench feeds random ids).
fn tokens(model: &Model, n: usize) -> Vec<u32> {
    let vocab = model.config().vocab_size as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect()
}

/// One pp or tg test after `depth` tokens of context; returns the nanoseconds of the timed part.
fn run_test(
    model: &std::sync::Arc<Model>,
    depth: usize,
    n_prompt: usize,
    n_gen: usize,
    batch: usize,
    acts: ActQuant,
) -> Result<f64> {
    // The context: `depth` tokens, or for tg at least one so that decoding has something to continue.
    let context_len = if n_gen > 0 { depth.max(1) } else { depth };
    let ctx = context_len + n_prompt + n_gen;
    let mut session = model.session(SessionOptions {
        ctx,
        batch: batch.max(1),
        acts,
        ..SessionOptions::default()
    })?;
    let ids = tokens(model, ctx);
    let (context, rest) = ids.split_at(context_len);
    session.prefill(context)?;
    let t = Instant::now();
    if n_gen == 0 {
        session.prefill(&rest[..n_prompt])?;
    } else {
        for &id in &rest[..n_gen] {
            session.step(id)?;
        }
    }
    Ok(t.elapsed().as_nanos() as f64)
}

fn report(records: &[Record], model: &Model, json: bool, acts: ActQuant) {
    if json {
        return;
    }
    if records.len() == 1 {
        println!("| model | size | kernels | threads | test | t/s |");
        println!("| --- | ---: | --- | ---: | ---: | ---: |");
    }
    let r = records.last().expect("one record");
    let (avg, std) = mean_std(&r.ts());
    let qtype = model
        .weights()
        .find(|w| w.name.ends_with("q_proj.weight"))
        .map_or("?", |w| w.type_name);
    println!(
        "| {} {} | {:.1} MiB | {}{} | {} | {} | {:.2} ± {:.2} |",
        model.config().arch.name(),
        qtype,
        model.weight_bytes() as f64 / (1024.0 * 1024.0),
        model.kernels().variant.name(),
        if acts == ActQuant::Q8 {
            ""
        } else {
            ", q8x2 acts"
        },
        r.threads,
        r.name(),
        avg,
        std
    );
}

/// Peak resident set size of this process (`VmHWM`), in bytes; 0 where /proc is unavailable.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
