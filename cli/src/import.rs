//! `infer import`: GGUF → Hugging Face checkpoint directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edgeinfer_convert::import::{import_gguf, ImportDType, ImportOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
#[command(
    after_help = "Weights (--dtype native, the default): GGUF Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, \
Q4_K, Q5_K, Q6_K and IQ4_XS matrices are kept bit-exact in the same format (a Q4_K_M file stays Q4_K_M); \
F32/F16/BF16 matrices keep their dtype; other ggml types are refused by tensor name; norms (1-D tensors) \
are written as F32.\n\
With --dtype f32|f16|bf16 every tensor is dequantized to that type."
)]
pub struct ImportArgs {
    /// The GGUF file to convert (architecture llama, qwen2 or qwen3).
    gguf: PathBuf,
    /// Output directory (created if missing; files of the same names are replaced atomically).
    out_dir: PathBuf,
    /// Element type of the written weights: native (keep the GGUF's quantization), f32, f16 or bf16.
    #[arg(long, default_value = "native")]
    dtype: ImportDType,
    /// Layout of the Q4_0, Q4_1 and Q8_0 matrices kept native: rowsplit (every kernel reads it as stored)
    /// or rows8 (blocks of eight rows interleaved, same values: the fast one-token layout on ARM CPUs
    /// with dotprod; other CPUs reorder it on the fly, so keep rowsplit for x86). See docs/formats.md.
    #[arg(long, default_value = "rowsplit", value_parser = crate::quantize::parse_layout)]
    layout: edgeinfer_kernels::quant::QLayout,
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
    let opts = ImportOptions {
        dtype: args.dtype,
        layout: args.layout,
    };
    let summary = import_gguf(&args.gguf, &args.out_dir, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64 + 1);
        bar.set_message(p.name);
    });
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("importing {}", args.gguf.display()))?;
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    println!(
        "wrote {} in {:.1} s: {} tensors ({}), {:.1} M parameters, {:.1} MB of weights, vocab {}, {} embeddings",
        summary.out_dir.display(),
        started.elapsed().as_secs_f64(),
        summary.tensors,
        types.join(", "),
        summary.parameters as f64 / 1e6,
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
