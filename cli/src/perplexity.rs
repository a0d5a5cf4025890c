//! `infer perplexity`: teacher-forced negative log-likelihood of a text over one context window.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeinfer::SessionOptions;

use crate::ModelArgs;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Window length in tokens; the text is cut to it [default: the model's context, at most 4096].
    #[arg(
        short = 'c',
        long = "ctx-size",
        default_value_t = 0,
        hide_default_value = true
    )]
    ctx_size: usize,
    /// Print {"perplexity", "mean_nll", "tokens"} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let model = args.model.load()?;
    let tok = model.tokenizer();
    // A BOS only where the model's tokenizer config asks for one.
    let mut ids = tok.encode(&text, tok.add_bos_token())?;
    let limit = match args.ctx_size {
        0 => model
            .config()
            .max_position_embeddings
            .min(SessionOptions::DEFAULT_MAX_CTX),
        n => n,
    };
    if ids.len() > limit {
        eprintln!(
            "note: {} tokens; scoring the first {limit} (one window)",
            ids.len()
        );
        ids.truncate(limit);
    }
    if ids.len() < 2 {
        bail!(
            "{} has {} token(s); perplexity needs at least 2",
            args.file.display(),
            ids.len()
        );
    }
    let mut session = model.session(SessionOptions {
        ctx: ids.len(),
        all_logits: true,
        ..args.model.session_options()
    })?;
    let started = std::time::Instant::now();
    let mut nll = 0.0f64;
    // Logits after token i predict token i + 1.
    session.evaluate(&ids[..ids.len() - 1], |i, logits| {
        nll -= log_softmax_at(logits, ids[i + 1] as usize)
    })?;
    let scored = ids.len() - 1;
    let mean_nll = nll / scored as f64;
    let ppl = mean_nll.exp();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "perplexity": ppl, "mean_nll": mean_nll, "tokens": scored })
        );
    } else {
        println!(
            "perplexity {ppl:.4} (mean NLL {mean_nll:.5} nats over {scored} predicted tokens)"
        );
    }
    if args.model.verbose {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "edgeinfer: evaluated {} tokens in {:.2} s ({:.1} tok/s)",
            ids.len() - 1,
            secs,
            scored as f64 / secs
        );
    }
    Ok(())
}

/// ln softmax(logits)[target], in f64.
fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}
