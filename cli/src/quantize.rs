//! `infer quantize`: an F32/F16/BF16 checkpoint directory → the same model with quantized matrices.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use edgeinfer_convert::quantize::{
    quantize_checkpoint, Calibration, QuantizeOptions, StoreType, TensorOverride, WRITABLE,
};
use edgeinfer_kernels::quant::QLayout;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
#[command(
    after_help = "Quantized: every 2-D matmul weight (q/k/v/o_proj, gate/up/down_proj), the token embedding \
and an untied lm_head (the embedding and lm_head in q8_0 under the 32-element 4- and 5-bit formats, q6_k under \
the 256-element ones).\n\
Rounding: every block on its own (q4_0 with a least-squares scale search; the GGUF formats by weighted least \
squares). With --calibration FILE the input model runs over the text: q8_0/q4_0/q4_1 are rounded GPTQ-style \
(each rounding error is compensated in the weights of the row not yet rounded so that the matrix's products \
with those activations change least), the GGUF formats weigh each column's error by its activations' mean \
square (an importance matrix); ordinary blocks either way. Give it text like what the \
model will see, at least ~10,000 tokens (~40 KB of English); paragraphs separated by blank lines run as \
separate sequences. Too little text makes it worse than plain rounding.\n\
Kept in F32: the RMSNorm weights (a few KB; each scales one channel of every activation, so their error \
would not average out).\n\
Kept dense in the input's dtype: any matrix whose row length is not a multiple of 32 (the block size).\n\
--tensor-type PATTERN=TYPE overrides any of this for the matrices whose name contains PATTERN.\n\
config.json gets a `quantization_config`; tokenizer.json, tokenizer_config.json and generation_config.json \
are copied. Nothing is published in OUT_DIR unless every file was written."
)]
pub struct QuantizeArgs {
    /// Input model directory (config.json, model.safetensors, tokenizer files), F32, F16 or BF16.
    in_dir: PathBuf,
    /// Output directory (created if missing; files of the same names are replaced atomically).
    out_dir: PathBuf,
    /// Format of the quantized matrices: q8_0 (8.5 bits/weight), q4_0 (4.5), q4_1 (5), q5_0 (5.5),
    /// q5_1 (6), iq4_nl (4.5), q2_k (2.63), q3_k (3.44), q4_k (4.5), q5_k (5.5), q6_k (6.56),
    /// iq4_xs (4.25), or the mixtures q4_k_m / q5_k_m (q4_k / q5_k with the value and down
    /// projections of about a third of the layers in q6_k). A 256-element format needs rows that
    /// are a multiple of 256: other matrices fall back on q4_0 (q2_k, q3_k), q4_1 (q4_k), q5_1
    /// (q5_k), q8_0 (q6_k) or iq4_nl (iq4_xs). See docs/formats.md.
    #[arg(long = "type", value_parser = parse_type)]
    format: QuantizeOptions,
    /// Store the matrices whose name contains PATTERN as TYPE (any format of --type, f32, f16,
    /// bf16) instead; repeatable, the first matching flag wins. E.g. `--tensor-type mlp.down_proj=q8_0`,
    /// `--tensor-type layers.0.=f16` (a dense matrix multiplies f32 activations, not 8-bit ones).
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    tensor_type: Vec<TensorOverride>,
    /// Round GPTQ-style, weighted by the input model's activations on this UTF-8 text file (needs
    /// the input's tokenizer; at least ~10,000 tokens of text like what the model will see).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Layout of the quantized matrices: rowsplit (every kernel reads it as stored) or rows8
    /// (blocks of eight rows interleaved: the fast one-token layout on ARM CPUs with dotprod; other
    /// CPUs reorder it on the fly, so keep rowsplit for x86). See docs/formats.md.
    #[arg(long, default_value = "rowsplit", value_parser = parse_layout)]
    layout: QLayout,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `rowsplit` or `rows8`, for `--layout`.
pub fn parse_layout(s: &str) -> Result<QLayout> {
    QLayout::from_name(s)
        .ok_or_else(|| anyhow!("unknown layout `{s}` (expected rowsplit or rows8)"))
}

fn parse_type(s: &str) -> Result<QuantizeOptions> {
    QuantizeOptions::from_type_name(s)
        .ok_or_else(|| anyhow!("unknown format `{s}` (expected {WRITABLE}, q4_k_m or q5_k_m)"))
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} quantizing [{bar:30}] {pos}/{len} tensors {wide_msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let calibration = match &args.calibration {
        None => Calibration::Plain,
        Some(path) => Calibration::Text(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the calibration text {}", path.display()))?,
        ),
    };
    let opts = QuantizeOptions {
        overrides: args.tensor_type,
        calibration,
        layout: args.layout,
        ..args.format
    };
    let summary = quantize_checkpoint(&args.in_dir, &args.out_dir, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64 + 1);
        bar.set_message(p.name);
    });
    bar.finish_and_clear();
    let s = summary.with_context(|| format!("quantizing {}", args.in_dir.display()))?;
    for name in &s.kept_dense {
        println!("kept dense: {name} (its row length is not a multiple of 32)");
    }
    for (name, to) in &s.overridden {
        let to = match to {
            StoreType::Quant(f) => f.name(),
            StoreType::Dense(d) => d.name(),
        };
        println!("--tensor-type: {name} stored as {to}");
    }
    match s.calibration_tokens {
        Some(n) => println!(
            "rounding: calibrated on {n} tokens of text (GPTQ for q8_0, q4_0, q4_1; importance weights for the GGUF formats)"
        ),
        None => println!("rounding: every block on its own (--calibration FILE for GPTQ)"),
    }
    for name in &s.skipped {
        println!("not copied: {name} (the model does not read it)");
    }
    println!(
        "wrote {} in {:.1} s: {} tensors, matrices in {}, {:.1} M parameters; weights {:.1} MB -> {:.1} MB ({:.2}x smaller)",
        s.out_dir.display(),
        started.elapsed().as_secs_f64(),
        s.tensors,
        s.formats
            .iter()
            .map(|(f, n)| format!("{f} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.parameters as f64 / 1e6,
        s.input_bytes as f64 / 1e6,
        s.output_bytes as f64 / 1e6,
        s.input_bytes as f64 / s.output_bytes.max(1) as f64,
    );
    Ok(())
}
