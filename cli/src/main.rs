//! `infer`: run, evaluate, import and inspect tiny LLMs with edgeinfer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use edgeinfer::{ActQuant, Model, ModelOptions, SessionOptions};

mod bench;
#[cfg(feature = "import")]
mod import;
mod inspect;
mod perplexity;
mod quantize;
mod run;
#[cfg(feature = "serve")]
mod serve;

/// Where `scripts/fetch-model.sh` puts the default model.
const DEFAULT_MODEL: &str = "weights/SmolLM2-135M-Instruct";

#[derive(Parser)]
#[command(
    name = "infer",
    version,
    about = "Run tiny LLMs (SmolLM2, Llama-family) on ARM and x86 CPUs with edgeinfer",
    after_help = "Examples:\n  infer run \"The capital of France is\"\n  infer run --chat \"What is the capital of France?\"\n  infer perplexity -f README.md --json\n  infer import model.gguf weights/my-model\n  infer quantize weights/my-model-f32 weights/my-model-q8 --type q8_0\n  infer inspect -m weights/my-model -c 2048"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Perplexity of a text file under the model (teacher-forced, one window).
    Perplexity(perplexity::PerplexityArgs),
    /// Convert a GGUF file (Llama family) into a Hugging Face checkpoint directory.
    #[cfg(feature = "import")]
    Import(import::ImportArgs),
    /// Quantize an F32/F16/BF16 checkpoint directory (q8_0, q4_0, q4_1, the GGUF block formats, q4_k_m/q5_k_m).
    Quantize(quantize::QuantizeArgs),
    /// Show a model's tensors, kernels and memory needs.
    Inspect(inspect::InspectArgs),
    /// Prefill and decode speed, with llama-bench's test definitions (pp512, tg128).
    Bench(bench::BenchArgs),
    /// HTTP server: Alibaba FC custom runtime (/invoke) and OpenAI-compatible API (/v1/...).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
}

/// How to load the model; shared by every subcommand that runs one.
#[derive(Args, Clone, Debug)]
struct ModelArgs {
    /// Model directory (Hugging Face layout: config.json, model.safetensors, tokenizer.json, …).
    #[arg(short = 'm', long = "model", env = "EDGEINFER_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Worker threads [default: the CPUs this process may use].
    #[arg(short = 't', long = "threads", env = "EDGEINFER_THREADS")]
    threads: Option<usize>,
    /// Kernel variant: auto, scalar, avx2, avx512_vnni, neon, neon_dotprod, neon_i8mm [default: $EDGEINFER_KERNELS, else auto].
    #[arg(long = "kernels")]
    kernels: Option<String>,
    /// Activations of products with quantized weights: q8 (8-bit blocks, fastest) or q8x2 (a second
    /// 8-bit pass over the rounding error: logits as with f32 activations, products up to 2× slower).
    #[arg(long = "acts", env = "EDGEINFER_ACTS", default_value = "q8", value_parser = parse_acts)]
    acts: ActQuant,
    /// Print load details and timings to stderr.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

/// `q8` or `q8x2`.
fn parse_acts(s: &str) -> Result<ActQuant> {
    ActQuant::from_name(s).ok_or_else(|| {
        anyhow::anyhow!("unknown activation quantization `{s}` (expected q8 or q8x2)")
    })
}

impl ModelArgs {
    /// Session options with what these flags say (the activation quantization), the rest default.
    fn session_options(&self) -> SessionOptions {
        SessionOptions {
            acts: self.acts,
            ..SessionOptions::default()
        }
    }

    fn load(&self) -> Result<Arc<Model>> {
        let dir = resolve_model_dir(&self.model);
        check_model_dir(&dir)?;
        let opts = ModelOptions {
            threads: self.threads,
            kernels: self.kernels.clone(),
        };
        let model =
            Model::load_with(&dir, &opts).with_context(|| format!("loading {}", dir.display()))?;
        if let Some(warning) = model.layout_warning() {
            eprintln!("warning: {warning}");
        }
        if self.verbose {
            let cfg = model.config();
            eprintln!(
                "edgeinfer: loaded {} in {:.1} ms: {} layers, hidden {}, vocab {}, {:.1} MB of weights mapped; kernels {}, {} thread(s), {} activations",
                dir.display(),
                model.load_time().as_secs_f64() * 1e3,
                cfg.num_layers,
                cfg.hidden_size,
                cfg.vocab_size,
                model.mapped_bytes() as f64 / 1e6,
                model.kernels().variant.name(),
                model.threads(),
                self.acts
            );
        }
        Ok(model)
    }
}

/// The model directory; the default one is also looked for at the repository root when `infer` runs
/// from `target/<profile>/` outside the repository.
fn resolve_model_dir(model: &Path) -> PathBuf {
    if model.exists() || model != Path::new(DEFAULT_MODEL) {
        return model.to_path_buf();
    }
    let beside_repo = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(DEFAULT_MODEL)));
    match beside_repo {
        Some(dir) if dir.join("config.json").is_file() => dir,
        _ => model.to_path_buf(),
    }
}

/// A missing model directory, with what to do about it.
fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    if dir == Path::new(DEFAULT_MODEL) {
        bail!(
            "the default model is not here yet ({DEFAULT_MODEL} does not exist).\n\
             Fetch and import it with `scripts/fetch-model.sh` (or `make model`), \
             or point -m/--model (or $EDGEINFER_MODEL) at a model directory."
        );
    }
    bail!(
        "model directory {} does not exist; pass -m/--model with a directory holding config.json, \
         model.safetensors and tokenizer.json (GGUF files can be converted with `infer import`)",
        dir.display()
    );
}

/// Restores the default SIGPIPE action, so `infer … | head` ends quietly like other Unix tools
/// instead of panicking in `println!` (Rust starts programs with SIGPIPE ignored).
#[cfg(unix)]
fn default_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: `signal` with SIG_DFL installs no Rust code as a handler; it runs before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        #[cfg(feature = "import")]
        Command::Import(args) => import::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
