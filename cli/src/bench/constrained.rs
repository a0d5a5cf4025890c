//! `infer bench --json-schema FILE`: what a JSON Schema constraint costs a decode step.
//!
//! 1. Decode, side by side: the same chat prompt generated greedily without a constraint (EOS
//!    ignored, so all `-n` tokens) and with the schema (until the value is complete), alternating
//!    runs after one warm-up of each. Reported: decode tokens/s of each, and the constraint's time
//!    per token (mask + matcher update) against the unconstrained step.
//! 2. Masks alone, per tokenizer: the constrained run's text tokenized by the model's tokenizer and
//!    by each `--mask-tokenizer DIR` (e.g. a 151,936-token Qwen2 vocabulary), then replayed through
//!    a matcher, timing each mask. Also the trie build and the schema's first and cached compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use edgeinfer::tokenizer::Tokenizer;
use edgeinfer::{
    Constraint, GenerateOptions, Grammars, Message, Model, Prompt, SamplerConfig, SessionOptions,
};

const PROMPT: &str = "Describe a fictional person as JSON, with a short biography.";

/// Runs both parts and prints their tables (to stderr when `to_stderr`, so `--json` stays JSON).
pub fn run(
    model: &Arc<Model>,
    schema_path: &Path,
    tokenizers: &[PathBuf],
    mask_vocab: Option<usize>,
    n_gen: usize,
    reps: usize,
    to_stderr: bool,
) -> Result<()> {
    let text = std::fs::read_to_string(schema_path)
        .with_context(|| format!("reading {}", schema_path.display()))?;
    let schema: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--json-schema {}: not JSON", schema_path.display()))?;
    let constraint = Constraint::JsonSchema(schema);
    let print = |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };

    let messages = [Message::new("user", PROMPT)];
    let mut session = model.session(SessionOptions::default())?;
    let free = GenerateOptions {
        max_tokens: n_gen,
        sampler: SamplerConfig::greedy(),
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    let constrained = GenerateOptions {
        constraint: Some(constraint.clone()),
        stop_at_eos: true,
        ..free.clone()
    };
    let mut free_runs = Vec::new();
    let mut con_runs = Vec::new();
    let mut sample_text = String::new();
    for rep in 0..=reps {
        // A fresh context each time: the cached prompt would otherwise be reused by the next run.
        session.reset();
        let f = session.generate(&Prompt::Chat(&messages), &free, |_| true)?;
        session.reset();
        let c = session.generate(&Prompt::Chat(&messages), &constrained, |_| true)?;
        if c.timings.generated_tokens < 2 {
            bail!(
                "the constrained run generated {} tokens",
                c.timings.generated_tokens
            );
        }
        sample_text = c.text.clone();
        if rep > 0 {
            free_runs.push(f.timings);
            con_runs.push(c.timings);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let free_ts = mean(
        &free_runs
            .iter()
            .map(|t| t.decode_tokens_per_s())
            .collect::<Vec<_>>(),
    );
    let con_ts = mean(
        &con_runs
            .iter()
            .map(|t| t.decode_tokens_per_s())
            .collect::<Vec<_>>(),
    );
    let con_tokens = mean(
        &con_runs
            .iter()
            .map(|t| t.generated_tokens as f64)
            .collect::<Vec<_>>(),
    );
    let mask_us = mean(
        &con_runs
            .iter()
            .map(|t| t.constraint_ms * 1e3 / t.generated_tokens as f64)
            .collect::<Vec<_>>(),
    );
    let step_us = 1e6 / free_ts;
    print(format!(
        "\nconstrained decode ({} threads, {} kernels, {reps} runs each, alternating):",
        model.threads(),
        model.kernels().variant.name()
    ));
    print("| decode | tokens | t/s | constraint µs/token | share of a free step |".into());
    print("| --- | ---: | ---: | ---: | ---: |".into());
    print(format!("| free | {n_gen} | {free_ts:.2} | | |"));
    print(format!(
        "| json-schema | {con_tokens:.0} | {con_ts:.2} | {mask_us:.1} | {:.2}% |",
        100.0 * mask_us / step_us
    ));

    print(format!(
        "\nmasks alone over the constrained text ({} bytes):",
        sample_text.len()
    ));
    print("| tokenizer | vocab | trie ms | compile ms | cached ms | tokens | mask µs/token (mean) | max µs |".into());
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into());
    let own = mask_only(
        model.tokenizer(),
        model.config().vocab_size,
        model.eos_ids(),
        &constraint,
        &sample_text,
        reps,
    )?;
    print(own.row(&model.dir().display().to_string()));
    for dir in tokenizers {
        let tok = Tokenizer::from_dir(dir)
            .with_context(|| format!("--mask-tokenizer {}", dir.display()))?;
        let vocab = mask_vocab.unwrap_or(tok.vocab_size()).max(tok.vocab_size());
        let eos: Vec<u32> = tok
            .eos_token()
            .and_then(|e| tok.token_id(e))
            .into_iter()
            .collect();
        let m = mask_only(&tok, vocab, &eos, &constraint, &sample_text, reps)?;
        print(m.row(&dir.display().to_string()));
    }
    Ok(())
}

struct MaskTimes {
    vocab: usize,
    trie_ms: f64,
    compile_ms: f64,
    cached_ms: f64,
    tokens: usize,
    mean_us: f64,
    max_us: f64,
}

impl MaskTimes {
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.2} | {:.3} | {} | {:.1} | {:.1} |",
            self.vocab,
            self.trie_ms,
            self.compile_ms,
            self.cached_ms,
            self.tokens,
            self.mean_us,
            self.max_us
        )
    }
}

/// Replays `text`'s tokens through a matcher for `c`, timing each mask (a warm-up pass first).
fn mask_only(
    tok: &Tokenizer,
    vocab: usize,
    eos: &[u32],
    c: &Constraint,
    text: &str,
    reps: usize,
) -> Result<MaskTimes> {
    let t = Instant::now();
    let grammars = Grammars::new(tok, vocab, eos)?;
    let trie_ms = ms(t);
    let t = Instant::now();
    let _first = grammars.matcher(c)?;
    let compile_ms = ms(t);
    let t = Instant::now();
    let _cached = grammars.matcher(c)?;
    let cached_ms = ms(t);
    let ids = tok.encode(text, false)?;
    let mut logits = vec![0.0f32; vocab];
    let mut times = Vec::with_capacity(ids.len() * reps);
    for rep in 0..=reps {
        let mut guide = grammars.matcher(c)?;
        for &id in &ids {
            logits.fill(0.0);
            let t = Instant::now();
            guide.mask(&mut logits)?;
            let us = ms(t) * 1e3;
            if rep > 0 {
                times.push(us);
            }
            if logits[id as usize] == f32::NEG_INFINITY {
                bail!("token {id} of the sample text is masked out");
            }
            guide.commit(id)?;
        }
    }
    Ok(MaskTimes {
        vocab,
        trie_ms,
        compile_ms,
        cached_ms,
        tokens: ids.len(),
        mean_us: times.iter().sum::<f64>() / times.len().max(1) as f64,
        max_us: times.iter().copied().fold(0.0, f64::max),
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
