//! `infer import`: GGUF → Hugging Face checkpoint directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edgeinfer::import::{import_gguf, ImportDType, ImportOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct ImportArgs {
    /// The GGUF file to convert (Llama architecture).
    gguf: PathBuf,
    /// Output directory (created if missing; files of the same names are replaced atomically).
    out_dir: PathBuf,
    /// Element type of the written weights: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: ImportDType,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:30}] {pos}/{len} tensors {wide_msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let opts = ImportOptions { dtype: args.dtype };
    let summary = import_gguf(&args.gguf, &args.out_dir, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64 + 1);
        bar.set_message(p.name);
    });
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("importing {}", args.gguf.display()))?;
    println!(
        "wrote {} in {:.1} s: {} tensors, {:.1} M parameters, {} weights ({:.1} MB), vocab {}, {} embeddings",
        summary.out_dir.display(),
        started.elapsed().as_secs_f64(),
        summary.tensors,
        summary.parameters as f64 / 1e6,
        summary.dtype,
        summary.weights_bytes as f64 / 1e6,
        summary.vocab_size,
        if summary.tie_word_embeddings { "tied" } else { "untied" },
    );
    println!(
        "try it: infer run -m {} \"Once upon a time\"",
        summary.out_dir.display()
    );
    Ok(())
}
