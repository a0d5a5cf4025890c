//! `infer run`: generate text.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeinfer::{Constraint, GenerateOptions, Message, Prompt, SamplerConfig, SessionOptions};

use crate::ModelArgs;

#[derive(Args)]
pub struct RunArgs {
    /// The prompt (or use -f FILE).
    #[arg(conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Context size in tokens [default: the model's, at most 4096].
    #[arg(
        short = 'c',
        long = "ctx-size",
        default_value_t = 0,
        hide_default_value = true
    )]
    ctx_size: usize,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to p (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for tokens among the last --repeat-last-n (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens --repeat-penalty looks at.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed: the same seed and settings give the same text.
    #[arg(short = 's', long, default_value_t = 0x5EED)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Print one JSON object (text, finish_reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Constrain the text to JSON valid under the JSON Schema in FILE (it ends when the value is
    /// complete). Whitespace between JSON tokens is one space, or a newline and up to 20 spaces of
    /// indentation, unless the schema sets llguidance's "x-guidance" options.
    #[arg(long = "json-schema", value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// Constrain the text to any JSON object (OpenAI's json_object; not to be confused with
    /// --json, which is the output format).
    #[arg(long = "json-object", group = "constraint")]
    json_object: bool,
    /// Constrain the text to the grammar in FILE: llguidance's Lark syntax (start rule `start`),
    /// or llama.cpp's GBNF (start rule `root`) when FILE ends in .gbnf.
    #[arg(long = "grammar", value_name = "FILE", group = "constraint")]
    grammar: Option<PathBuf>,
    /// Constrain the whole text to match the regular expression RE (Rust regex syntax, anchored at
    /// both ends), e.g. --regex '[0-9]{4}-[0-9]{2}-[0-9]{2}'.
    #[arg(long = "regex", value_name = "RE", group = "constraint")]
    regex: Option<String>,
    /// Write the logits of the last prompt position and of each generated step to PATH
    /// (little-endian f32, one row of vocab_size values per step).
    #[arg(long = "dump-logits")]
    dump_logits: Option<PathBuf>,
}

impl RunArgs {
    fn prompt_text(&self) -> Result<String> {
        match (&self.prompt, &self.file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading prompt file {}", f.display())),
            (None, None) => bail!("no prompt: give it as an argument (infer run \"Once upon a time\") or with -f FILE"),
        }
    }

    /// The constraint the flags ask for, its file read and (for a schema) parsed.
    fn constraint(&self) -> Result<Option<Constraint>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        if let Some(path) = &self.json_schema {
            let schema = serde_json::from_str(&read(path)?)
                .with_context(|| format!("--json-schema {}: not JSON", path.display()))?;
            return Ok(Some(Constraint::JsonSchema(schema)));
        }
        if self.json_object {
            return Ok(Some(Constraint::JsonObject));
        }
        if let Some(path) = &self.grammar {
            let text = read(path)?;
            let gbnf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gbnf"));
            return Ok(Some(if gbnf {
                Constraint::Gbnf(text)
            } else {
                Constraint::Lark(text)
            }));
        }
        Ok(self.regex.clone().map(Constraint::Regex))
    }

    fn sampler(&self) -> SamplerConfig {
        if self.temp <= 0.0 {
            return SamplerConfig {
                seed: self.seed,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                ..SamplerConfig::greedy()
            };
        }
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            ..SamplerConfig::default()
        }
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let text = args.prompt_text()?;
    let constraint = args.constraint()?;
    let model = args.model.load()?;
    let mut session = model.session(SessionOptions {
        ctx: args.ctx_size,
        ..args.model.session_options()
    })?;
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        sampler: args.sampler(),
        stop: args.stop.clone(),
        stop_at_eos: !args.ignore_eos,
        constraint,
        ..GenerateOptions::default()
    };

    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system.as_str()));
    }
    messages.push(Message::new("user", text.as_str()));
    let prompt = if args.chat {
        Prompt::Chat(&messages)
    } else {
        Prompt::Text(&text)
    };

    let mut logits_out = match &args.dump_logits {
        Some(path) => Some(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut logits_err: Option<std::io::Error> = None;
    let on_logits = |row: &[f32]| {
        if let (Some(w), None) = (logits_out.as_mut(), logits_err.as_ref()) {
            if let Err(e) = row.iter().try_for_each(|v| w.write_all(&v.to_le_bytes())) {
                logits_err = Some(e);
            }
        }
    };

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stream = !args.json;
    if stream && !args.chat {
        // Echo the prompt so the continuation reads naturally, as llama.cpp does.
        write!(out, "{text}")?;
        out.flush()?;
    }
    let mut write_err: Option<std::io::Error> = None;
    let generation = session.generate_observed(
        &prompt,
        &opts,
        |piece| {
            if !stream {
                return true;
            }
            match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    // stdout closed (e.g. piped into `head`): stop generating.
                    write_err = Some(e);
                    false
                }
            }
        },
        on_logits,
    )?;
    if let Some(e) = logits_err {
        return Err(e).context("writing --dump-logits file");
    }
    if let Some(mut w) = logits_out {
        w.flush().context("writing --dump-logits file")?;
    }
    if let Some(e) = write_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("writing to stdout");
    }

    let t = &generation.timings;
    if args.json {
        let json = serde_json::json!({
            "text": generation.text,
            "finish_reason": generation.finish_reason.as_str(),
            "tokens": generation.tokens,
            "model": model.dir().display().to_string(),
            "kernels": model.kernels().variant.name(),
            "threads": model.threads(),
            "load_ms": model.load_time().as_secs_f64() * 1e3,
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "generated_tokens": t.generated_tokens,
                "prefill_ms": t.prefill_ms,
                "decode_ms": t.decode_ms,
                "ttft_ms": t.ttft_ms,
                "prefill_tokens_per_s": t.prefill_tokens_per_s(),
                "decode_tokens_per_s": t.decode_tokens_per_s(),
            },
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(out)?;
    }
    if args.model.verbose {
        eprintln!(
            "edgeinfer: prompt {} tokens in {:.1} ms ({:.1} tok/s); generated {} tokens, decode {:.1} tok/s; first token after {:.1} ms; finish: {}",
            t.prompt_tokens,
            t.prefill_ms,
            t.prefill_tokens_per_s(),
            t.generated_tokens,
            t.decode_tokens_per_s(),
            t.ttft_ms,
            generation.finish_reason.as_str()
        );
    }
    Ok(())
}
